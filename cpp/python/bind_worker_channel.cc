// The worker's end of the channel (used only inside the sandbox).
#include "python/bindings.h"

#include "python/py_worker_channel.h"

namespace sandbox_exec::python {

void bind_worker_channel(py::module_& m) {
  py::class_<PyWorkerChannel>(m, "WorkerChannel")
      .def(py::init<std::tuple<int, int, int, int>>(), py::arg("fds"))
      .def("receive", &PyWorkerChannel::receive, py::arg("timeout_ms") = -1,
           "Next request as (type, flags, payload), or None on timeout or a signal.")
      .def("send", &PyWorkerChannel::send, py::arg("type"), py::arg("payload"),
           "Sends one whole message (split into frames as needed), after pending stream text.")
      .def("watch", &PyWorkerChannel::watch, py::arg("stdout_pipe"), py::arg("stderr_pipe"), py::arg("wake_fd"))
      .def(
          "make_writer",
          [](py::object self, uint16_t type, py::object forward) {
            return self.cast<PyWorkerChannel&>().make_writer(type, std::move(forward), self);
          },
          py::arg("type"), py::arg("forward_fd_output"),
          "A fast write(text) callable for one stream (what sys.stdout.write is bound to).")
      .def("take_dropped", &PyWorkerChannel::take_dropped,
           "Output bytes not sent since the last call because the supervisor closed output.")
      .def("flush", &PyWorkerChannel::flush)
      .def("flush_if_stale", &PyWorkerChannel::flush_if_stale)
      .def("seconds_to_stale", &PyWorkerChannel::seconds_to_stale)
      .def("fd_output_pending", &PyWorkerChannel::fd_output_pending);
}

}  // namespace sandbox_exec::python
