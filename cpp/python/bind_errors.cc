// _core.SandboxError and the translation of the C++ errors (common/sys_error.h) into Python's.
#include "python/bindings.h"

#include "common/sys_error.h"

namespace sandbox_exec::python {

void bind_errors(py::module_& m) {
  // Created once per interpreter; a borrowed pointer kept alive by the module attribute.
  static PyObject* sandbox_error = PyErr_NewExceptionWithDoc(
      "sandbox_exec._core.SandboxError", "The sandbox itself could not be provided.", PyExc_RuntimeError, nullptr);
  m.attr("SandboxError") = py::handle(sandbox_error);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const SandboxError& e) {
      py::object err = py::handle(sandbox_error)(py::str(e.what()));
      err.attr("layer") = e.layer();
      err.attr("call") = e.call();
      err.attr("errno") = e.error_number();
      PyErr_SetObject(sandbox_error, err.ptr());
    } catch (const ConfigError& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    } catch (const ProtocolViolation& e) {
      PyErr_SetString(sandbox_error, (std::string("protocol violation: ") + e.what()).c_str());
    }
  });
}

}  // namespace sandbox_exec::python
