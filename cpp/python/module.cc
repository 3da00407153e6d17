// sandbox_exec._core: the pybind11 module.
//
// Supervisor side (used by the backend): CellRunner, CellOutcome, SandboxError, host facts.
// Worker side (used by the worker bootstrap inside the sandbox): WorkerChannel.
// Every blocking call releases the GIL; events reach Python in batches, one GIL
// acquisition per batch. The groups of bindings live one file each (bindings.h).
#include "python/bindings.h"

namespace sandbox_exec::python {

std::string_view bytes_view(const py::bytes& b) {
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(b.ptr(), &data, &size) != 0) throw py::error_already_set();
  return {data, static_cast<std::size_t>(size)};
}

}  // namespace sandbox_exec::python

PYBIND11_MODULE(_core, m) {
  using namespace sandbox_exec::python;
  m.doc() = "sandbox_exec's C++ core: supervisor, launcher protocol and shared-memory rings";
  bind_errors(m);
  bind_constants(m);
  bind_host(m);
  bind_launch_settings(m);
  bind_cell_runner(m);
  bind_worker_channel(m);
}
