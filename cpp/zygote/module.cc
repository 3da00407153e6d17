// sandbox_exec._zygote: the zygote's Python face (python/sandbox_exec/_worker/zygote.py).
// Loaded only in a zygote process, never in the backend.
#include <Python.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <cstring>
#include <optional>
#include <string>

#include "common/sys_error.h"
#include "launcher/seccomp_filter.h"
#include "zygote/fork_server.h"

namespace py = pybind11;
using namespace sandbox_exec;

namespace {

std::optional<std::vector<std::string>> serve(int control) {
  // Runs with the GIL held: the zygote is single-threaded, and CPython's fork hooks need it.
  const fork_server::ForkHooks hooks{PyOS_BeforeFork, PyOS_AfterFork_Parent, PyOS_AfterFork_Child};
  fork_server::Served served;
  try {
    served = fork_server::serve(control, hooks);
  } catch (const SandboxError& e) {
    throw std::runtime_error(e.what());
  }
  if (!served.is_worker) return std::nullopt;
  return std::move(served.spec.env);
}

}  // namespace

PYBIND11_MODULE(_zygote, m) {
  m.doc() = "The zygote's fork server (sandbox_exec internal).";
  m.def("serve", &serve, py::arg("control"),
        "Serves fork requests until the supervisor closes the socket (returns None); in a forked "
        "session's worker, returns its environment as a list of KEY=value strings.");
  m.def("thread_count", &fork_server::thread_count, "The threads of this process (/proc/self/task).");
  m.def(
      "prepare_seccomp",
      [] {
        if (const int err = seccomp::prepare()) throw std::runtime_error(std::string("seccomp: ") + std::strerror(err));
      },
      "Builds the seccomp filter once, so each forked session loads it without compiling it.");
}
