// The facts Python and C++ share, defined once in C++ and read by Python from _core.
#include "python/bindings.h"

#include "ipc/channel.h"
#include "ipc/frame.h"
#include "launch/launcher_protocol.h"
#include "launch/spawn_spec.h"
#include "supervisor/cell_runner.h"

// CMakeLists.txt defines it from python/sandbox_exec/_version.py, the package's one version.
#ifndef SANDBOX_EXEC_VERSION
#error "SANDBOX_EXEC_VERSION is not defined: build _core through CMakeLists.txt"
#endif

namespace sandbox_exec::python {

void bind_constants(py::module_& m) {
  m.attr("__version__") = SANDBOX_EXEC_VERSION;
  m.attr("PROTOCOL_VERSION") = kProtocolVersion;
  py::module_ frame = m.def_submodule("frame", "frame type numbers (frame.h)");
  frame.attr("EXECUTE") = static_cast<int>(FrameType::kExecute);
  frame.attr("SHUTDOWN") = static_cast<int>(FrameType::kShutdown);
  frame.attr("READY") = static_cast<int>(FrameType::kReady);
  frame.attr("STDOUT") = static_cast<int>(FrameType::kStdout);
  frame.attr("STDERR") = static_cast<int>(FrameType::kStderr);
  frame.attr("MESSAGE") = static_cast<int>(FrameType::kMessage);
  frame.attr("CELL_DONE") = static_cast<int>(FrameType::kCellDone);
  m.attr("DROPPED_OUTPUT_EVENT") = static_cast<int>(kDroppedOutputEvent);
  m.attr("REJECTED_OUTPUT_EVENT") = static_cast<int>(kRejectedOutputEvent);
  m.attr("STALE_EVENT") = static_cast<int>(kStaleEvent);
  m.attr("MAX_MESSAGE_BYTES") = kMaxMessageBytes;
  m.attr("REQUEST_RING_BYTES") = ChannelGeometry{}.request_capacity;
  m.attr("EVENT_RING_BYTES") = ChannelGeometry{}.event_capacity;
  m.attr("MAX_FRAME_PAYLOAD_BYTES") = max_frame_payload(ChannelGeometry{}.event_capacity);
  m.attr("FRAME_MORE") = static_cast<int>(kFlagMore);
  m.attr("SANDBOX_HOSTNAME") = Isolation{}.hostname;
  py::tuple ends(std::size(kCellEndNames));
  for (std::size_t i = 0; i < std::size(kCellEndNames); ++i) ends[i] = py::str(kCellEndNames[i]);
  m.attr("CELL_ENDS") = ends;
  m.attr("WORKER_FDS") =
      py::make_tuple(launcher_fd::kRegion, launcher_fd::kRequestBell, launcher_fd::kEventBell, launcher_fd::kSpaceBell);
  // A session's worker keeps nothing at or above this (a zygote checks its own against it).
  m.attr("FIRST_FREE_FD") = launcher_fd::kFirstFree;
}

}  // namespace sandbox_exec::python
