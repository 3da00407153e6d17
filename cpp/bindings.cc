// sandbox_exec._core: the pybind11 module.
//
// Supervisor side (used by the backend): CellRunner, CellOutcome, SandboxError.
// Worker side (used by the worker bootstrap inside the sandbox): WorkerChannel.
// Every blocking call releases the GIL; events reach Python in batches, one GIL
// acquisition per batch.
#include <pybind11/functional.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <optional>

#include <mutex>

#include "cell_runner.h"
#include "disk_usage.h"
#include "channel.h"
#include "landlock.h"
#include "logging.h"
#include "py_worker_channel.h"
#include "stream_text.h"
#include "sys_error.h"
#include "workdir_image.h"

namespace py = pybind11;
using namespace sandbox_exec;

namespace {

std::string_view bytes_view(const py::bytes& b) {
  char* data = nullptr;
  Py_ssize_t size = 0;
  if (PyBytes_AsStringAndSize(b.ptr(), &data, &size) != 0) throw py::error_already_set();
  return {data, static_cast<std::size_t>(size)};
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "sandbox_exec's C++ core: supervisor, launcher protocol and shared-memory rings";

  // Created once per interpreter; a borrowed pointer kept alive by the module attribute.
  static PyObject* sandbox_error =
      PyErr_NewExceptionWithDoc("sandbox_exec._core.SandboxError",
                                "The sandbox itself could not be provided.", PyExc_RuntimeError,
                                nullptr);
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
  m.attr("WORKER_FDS") = py::make_tuple(launcher_fd::kRegion, launcher_fd::kRequestBell,
                                        launcher_fd::kEventBell, launcher_fd::kSpaceBell);

  m.def("cgroup_support", [] {
    CgroupSupport c;
    {
      py::gil_scoped_release release;
      c = Cgroups::detect();
    }
    py::dict d;
    d["version"] = c.version;
    d["memory"] = c.memory;
    d["pids"] = c.pids;
    d["cpu"] = c.cpu;
    d["detail"] = c.detail;
    return d;
  }, "What cgroup delegation this process can give sessions.");
  py::module_ image = m.def_submodule("workdir_image", "a workdir as a size-capped filesystem (workdir_image.h)");
  image.def("mount", &workdir_image::mount_image, py::arg("image"), py::arg("target"),
            py::call_guard<py::gil_scoped_release>(),
            "Attaches the image to a free loop device (autoclear) and mounts it (ext4, nosuid, nodev) "
            "at target; returns the loop device.");
  image.def("unmount", &workdir_image::unmount, py::arg("target"), py::call_guard<py::gil_scoped_release>(),
            "umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW); False when nothing was mounted there.");
  image.def("mounted_image", &workdir_image::mounted_image, py::arg("target"),
            "The image file behind the loop-device filesystem mounted at target, or ''.");
  m.def("disk_usage", [](const std::string& path) {
    std::optional<uint64_t> used;
    {
      py::gil_scoped_release release;
      used = disk_usage(path);
    }
    return used;
  }, py::arg("path"),
        "Bytes allocated under path, walked by descriptor (disk_usage.h); None when it is no directory; "
        "2**64-1 past a million entries.");
  m.def("landlock_abi", &landlock::abi_version, "The kernel's Landlock ABI version (0: unavailable).");
  m.def("set_log_level", &log::set_level, py::arg("level"),
        "Supervisor log level: trace, debug, info, warn, error or off.");

  py::class_<CellOutcome>(m, "CellOutcome")
      .def_property_readonly("end",
                             [](const CellOutcome& o) {
                               switch (o.end) {
                                 case CellEnd::kDone: return "done";
                                 case CellEnd::kTimeout: return "timeout";
                                 case CellEnd::kCrashed: return "crashed";
                                 case CellEnd::kMemory: return "memory";
                                 case CellEnd::kDisk: return "disk";
                                 case CellEnd::kViolation: return "violation";
                               }
                               return "?";
                             })
      .def_property_readonly("done_payload",
                             [](const CellOutcome& o) { return py::bytes(o.done_payload); })
      .def_readonly("reason", &CellOutcome::reason)
      .def_readonly("deadline_hit", &CellOutcome::deadline_hit)
      .def_readonly("disk_hit", &CellOutcome::disk_hit)
      .def_readonly("workdir_bytes", &CellOutcome::workdir_bytes)
      .def_readonly("duration_s", &CellOutcome::duration_s)
      .def_readonly("cpu_s", &CellOutcome::cpu_s)
      .def_readonly("peak_rss_bytes", &CellOutcome::peak_rss_bytes)
      .def_readonly("output_bytes", &CellOutcome::output_bytes)
      .def_readonly("dropped_output_bytes", &CellOutcome::dropped_output_bytes)
      .def_readonly("stale_bytes", &CellOutcome::stale_bytes);

  // The launch settings cross from Python as typed objects, never as a string-keyed dict:
  // a misspelled name is a TypeError, and every protection is on unless the caller names it
  // off (a dict with a missing key used to mean "layer off").
  py::class_<ResourceLimits>(m, "ResourceLimits", "The worker's rlimits (None: not set).")
      .def(py::init([](std::optional<uint64_t> cpu_seconds, std::optional<uint64_t> file_bytes,
                       std::optional<uint64_t> open_files, std::optional<uint64_t> address_space,
                       std::optional<uint64_t> processes) {
             return ResourceLimits{cpu_seconds, file_bytes, open_files, address_space, processes, false};
           }),
           py::kw_only(), py::arg("cpu_seconds"), py::arg("file_bytes"), py::arg("open_files"),
           py::arg("address_space"), py::arg("processes"))
      .def_readonly("cpu_seconds", &ResourceLimits::cpu_seconds)
      .def_readonly("file_bytes", &ResourceLimits::file_bytes)
      .def_readonly("open_files", &ResourceLimits::open_files)
      .def_readonly("address_space", &ResourceLimits::address_space)
      .def_readonly("processes", &ResourceLimits::processes);

  py::class_<Cgroups::Limits>(m, "CgroupLimits", "The session's cgroup limits (None: not set).")
      .def(py::init([](std::optional<uint64_t> memory_bytes, std::optional<uint64_t> max_processes) {
             return Cgroups::Limits{memory_bytes, max_processes};
           }),
           py::kw_only(), py::arg("memory_bytes"), py::arg("max_processes"))
      .def_readonly("memory_bytes", &Cgroups::Limits::memory_bytes)
      .def_readonly("max_processes", &Cgroups::Limits::max_processes);

  py::class_<Isolation>(m, "Isolation",
                        "The isolation layers; every protection defaults to on.")
      .def(py::init([](bool namespaces, bool network, bool drop_caps, bool landlock, bool seccomp,
                       std::string mountpoint, std::vector<std::string> readonly,
                       std::vector<std::pair<std::string, std::string>> symlinks,
                       uint64_t tmp_bytes, uint32_t outside_uid, uint32_t outside_gid,
                       std::string hostname) {
             Isolation iso;
             iso.namespaces = namespaces;
             iso.network = network;
             iso.drop_caps = drop_caps;
             iso.landlock = landlock;
             iso.seccomp = seccomp;
             if (namespaces && mountpoint.empty())
               throw ConfigError("Isolation: namespaces need a mountpoint");
             iso.mountpoint = std::move(mountpoint);
             iso.readonly = std::move(readonly);
             iso.symlinks = std::move(symlinks);
             iso.tmp_bytes = tmp_bytes;
             iso.outside_uid = outside_uid;
             iso.outside_gid = outside_gid;
             iso.hostname = std::move(hostname);
             return iso;
           }),
           py::kw_only(), py::arg("namespaces") = true, py::arg("network") = false,
           py::arg("drop_caps") = true, py::arg("landlock") = true, py::arg("seccomp") = true,
           py::arg("mountpoint") = std::string(), py::arg("readonly") = std::vector<std::string>(),
           py::arg("symlinks") = std::vector<std::pair<std::string, std::string>>(),
           py::arg("tmp_bytes") = Isolation{}.tmp_bytes, py::arg("outside_uid") = Isolation{}.outside_uid,
           py::arg("outside_gid") = Isolation{}.outside_gid, py::arg("hostname") = Isolation{}.hostname)
      .def_readonly("namespaces", &Isolation::namespaces)
      .def_readonly("network", &Isolation::network)
      .def_readonly("drop_caps", &Isolation::drop_caps)
      .def_readonly("landlock", &Isolation::landlock)
      .def_readonly("seccomp", &Isolation::seccomp)
      .def_readonly("mountpoint", &Isolation::mountpoint)
      .def_readonly("readonly", &Isolation::readonly)
      .def_readonly("tmp_bytes", &Isolation::tmp_bytes)
      .def_readonly("outside_uid", &Isolation::outside_uid)
      .def_readonly("outside_gid", &Isolation::outside_gid)
      .def_readonly("hostname", &Isolation::hostname);

  py::class_<CellRunner>(m, "CellRunner")
      .def(py::init([](std::string launcher, std::vector<std::string> argv,
                       std::vector<std::string> env, std::string workdir, const ResourceLimits& limits,
                       const Isolation& isolation, std::optional<Cgroups::Limits> cgroup,
                       uint64_t request_capacity, uint64_t event_capacity, double start_timeout_s) {
             SpawnSpec spec;
             spec.launcher = std::move(launcher);
             spec.argv = std::move(argv);
             spec.env = std::move(env);
             spec.workdir = std::move(workdir);
             spec.limits = limits;
             spec.isolation = isolation;
             py::gil_scoped_release release;
             return std::make_unique<CellRunner>(spec, ChannelGeometry{request_capacity, event_capacity},
                                                 start_timeout_s, cgroup);
           }),
           py::kw_only(), py::arg("launcher"), py::arg("argv"), py::arg("env"), py::arg("workdir"),
           py::arg("limits"), py::arg("isolation"), py::arg("cgroup"),
           py::arg("request_capacity") = 1u << 20, py::arg("event_capacity") = 4u << 20,
           py::arg("start_timeout_s") = 30.0,
           "Spawns the launcher and the worker; returns once the worker reported ready.")
      .def(
          "check_disk",
          [](CellRunner& r, const std::string& workdir, uint64_t limit) {
            CellRunner::DiskCheck c;
            {
              py::gil_scoped_release release;
              c = r.check_disk(workdir, limit);
            }
            return py::make_tuple(c.used ? py::object(py::int_(*c.used)) : py::object(py::none()), c.over);
          },
          py::arg("workdir"), py::arg("limit"),
          "(bytes used or None, grew past the limit): the workdir plus unlinked-but-open files.")
      .def_property_readonly("worker_pid", &CellRunner::worker_pid)
      .def_property_readonly("launcher_pid", &CellRunner::launcher_pid)
      .def(
          "run_cell",
          [](CellRunner& r, const py::bytes& request, double timeout_s, double grace_s,
             uint64_t max_output_bytes, uint64_t max_message_bytes, const py::function& sink,
             StreamText& stdout_text, StreamText& stderr_text, bool live, std::string workdir,
             uint64_t workdir_bytes, std::optional<int64_t> execution_count) {
            CellLimits limits{timeout_s, grace_s, max_output_bytes, max_message_bytes,
                              std::move(workdir), workdir_bytes, execution_count};
            const std::string req(bytes_view(request));
            EventSink cpp_sink = [&sink, &stdout_text, &stderr_text, live](EventBatch& batch) -> bool {
              py::gil_scoped_acquire acquire;
              py::list events(batch.size());
              for (std::size_t i = 0; i < batch.size(); ++i) {
                const Event& e = batch[i];
                // Stream text goes straight into the cell's StreamText; Python gets its
                // offsets, and a str of it only when someone listens live (on_output).
                if (is_stream_type(e.type)) {
                  StreamText& text = e.type == static_cast<uint16_t>(FrameType::kStdout) ? stdout_text : stderr_text;
                  const auto [start, end] = text.append(e.payload.data(), e.payload.size());
                  events[i] = py::make_tuple(e.type, start, end,
                                             live ? py::object(text.slice(start, end)) : py::none());
                } else {
                  events[i] = py::make_tuple(e.type, py::bytes(e.payload));
                }
              }
              return sink(events).cast<bool>();
            };
            // A signal for the backend (Ctrl-C) interrupts the cell; the KeyboardInterrupt is
            // raised in the caller once the cell has returned.
            std::optional<py::error_already_set> pending;
            Tick tick = [&pending]() -> bool {
              py::gil_scoped_acquire acquire;
              if (pending || PyErr_CheckSignals() == 0) return false;
              pending.emplace();  // takes the raised exception out of the interpreter
              return true;
            };
            CellOutcome outcome;
            {
              py::gil_scoped_release release;
              outcome = r.run_cell(req, limits, cpp_sink, tick);
            }
            if (pending) throw std::move(*pending);
            return outcome;
          },
          py::arg("request"), py::arg("timeout_s"), py::arg("grace_s"),
          py::arg("max_output_bytes"), py::arg("max_message_bytes"), py::arg("sink"),
          py::arg("stdout_text"), py::arg("stderr_text"), py::arg("live") = true,
          py::arg("workdir") = "", py::arg("workdir_bytes") = 0,
          py::arg("execution_count") = py::none())
      .def("interrupt", &CellRunner::interrupt, py::call_guard<py::gil_scoped_release>())
      .def("terminate", &CellRunner::terminate, py::call_guard<py::gil_scoped_release>())
      .def("alive", &CellRunner::alive, py::call_guard<py::gil_scoped_release>())
      .def("exit_description", &CellRunner::exit_description);

  py::class_<StreamText>(m, "StreamText")
      .def(py::init<>())
      .def("append", &StreamText::append_str, py::arg("text"),
           "Appends text (a supervisor marker); returns its (start, end) offsets.")
      .def("value", &StreamText::value, "The whole text; final afterwards.")
      .def_property_readonly("has_cr", &StreamText::has_cr)
      .def("__len__", &StreamText::length);

  py::class_<PyWorkerChannel>(m, "WorkerChannel")
      .def(py::init<std::tuple<int, int, int, int>>(), py::arg("fds"))
      .def("receive", &PyWorkerChannel::receive, py::arg("timeout_ms") = -1,
           "Next request as (type, flags, payload), or None on timeout or a signal.")
      .def("send", &PyWorkerChannel::send, py::arg("type"), py::arg("payload"),
           "Sends one whole message (split into frames as needed), after pending stream text.")
      .def("watch", &PyWorkerChannel::watch, py::arg("stdout_pipe"), py::arg("stderr_pipe"),
           py::arg("wake_fd"))
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
