// The supervisor's session: CellRunner, its CellOutcome, and the StreamText it fills.
#include "python/bindings.h"

#include <optional>
#include "python/stream_text.h"
#include "supervisor/cell_run.h"
#include "supervisor/cell_runner.h"
#include "supervisor/zygote_link.h"

namespace sandbox_exec::python {

namespace {
// The C++ sink of one cell: stream text goes straight into the cell's StreamText and Python
// gets its offsets (and a str of it only when someone listens live: on_output); other
// events as (type, bytes). One GIL acquisition per batch.
EventSink event_sink(py::function sink, StreamText& stdout_text, StreamText& stderr_text, bool live) {
  // Held by the C++ function beyond this call (a CellRun): owned, and released with the GIL.
  auto owned = std::shared_ptr<py::function>(new py::function(std::move(sink)), [](py::function* f) {
    py::gil_scoped_acquire acquire;
    delete f;
  });
  return [owned, &stdout_text, &stderr_text, live](EventBatch& batch) -> bool {
    py::gil_scoped_acquire acquire;
    py::list events(batch.size());
    for (std::size_t i = 0; i < batch.size(); ++i) {
      const Event& e = batch[i];
      if (is_stream_type(e.type)) {
        StreamText& text = e.type == static_cast<uint16_t>(FrameType::kStdout) ? stdout_text : stderr_text;
        const auto [start, end] = text.append(e.payload.data(), e.payload.size());
        events[i] = py::make_tuple(e.type, start, end, live ? py::object(text.slice(start, end)) : py::none());
      } else {
        events[i] = py::make_tuple(e.type, py::bytes(e.payload));
      }
    }
    return (*owned)(events).cast<bool>();
  };
}
// The cell as Python hands it to run_cell() and begin_cell() (the same arguments).
struct PyCell {
  std::string request;
  CellLimits limits;
  EventSink sink;
};

PyCell py_cell(const py::bytes& request, double timeout_s, double grace_s, uint64_t max_output_bytes,
               uint64_t max_message_bytes, const py::function& sink, StreamText& stdout_text, StreamText& stderr_text,
               bool live, std::string workdir, uint64_t workdir_bytes, std::optional<int64_t> execution_count,
               bool measure_image, bool discard_streams) {
  return {std::string(bytes_view(request)),
          CellLimits{timeout_s, grace_s, max_output_bytes, max_message_bytes, std::move(workdir), workdir_bytes,
                     execution_count, measure_image, discard_streams},
          event_sink(sink, stdout_text, stderr_text, live)};
}

// A cell run to its end on the calling thread, the GIL released while it waits. A signal for
// the backend (Ctrl-C) interrupts the cell; the KeyboardInterrupt is raised in the caller
// once the cell has returned. The signal is seen by the tick while the core waits, or by
// the interpreter while the sink runs Python (the output collector, the caller's on_output):
// an exception raised there is kept the same way and the cell interrupted. Were it let
// through the core, run() would raise while the cell ran on in the worker, and the next
// cell would wait behind it.
CellOutcome run_cell(CellRunner& runner, const PyCell& cell) {
  std::optional<py::error_already_set> pending;
  const Tick tick = [&pending]() -> bool {
    if (pending) return false;  // only this thread sets it
    py::gil_scoped_acquire acquire;
    if (PyErr_CheckSignals() == 0) return false;
    pending.emplace();  // takes the raised exception out of the interpreter
    return true;
  };
  const EventSink sink = [&pending, &runner, &cell](EventBatch& batch) -> bool {
    if (pending) return true;  // the cell is being interrupted: what it sends now is dropped
    try {
      return cell.sink(batch);
    } catch (py::error_already_set& e) {
      pending.emplace(std::move(e));
      runner.interrupt();
      return true;
    }
  };
  CellOutcome outcome;
  {
    py::gil_scoped_release release;
    outcome = runner.run_cell(cell.request, cell.limits, sink, tick);
  }
  if (pending) throw std::move(*pending);
  return outcome;
}

// A cell sent, returned as a CellRun for an event loop to step.
std::unique_ptr<CellRun> begin_cell(CellRunner& runner, PyCell cell) {
  py::gil_scoped_release release;
  return std::make_unique<CellRun>(runner, cell.request, std::move(cell.limits), std::move(cell.sink));
}

// Defines `name` as `action(runner, the cell's arguments as a PyCell)`: one parameter list
// for both methods.
template <typename Action, typename... Extra>
void def_cell_method(py::class_<CellRunner>& cls, const char* name, Action action, const Extra&... extra) {
  cls.def(
      name,
      [action](CellRunner& r, const py::bytes& request, double timeout_s, double grace_s, uint64_t max_output_bytes,
               uint64_t max_message_bytes, const py::function& sink, StreamText& stdout_text, StreamText& stderr_text,
               bool live, std::string workdir, uint64_t workdir_bytes, std::optional<int64_t> execution_count,
               bool measure_image, bool discard_streams) {
        return action(
            r, py_cell(request, timeout_s, grace_s, max_output_bytes, max_message_bytes, sink, stdout_text, stderr_text,
                       live, std::move(workdir), workdir_bytes, execution_count, measure_image, discard_streams));
      },
      extra..., py::arg("request"), py::arg("timeout_s"), py::arg("grace_s"), py::arg("max_output_bytes"),
      py::arg("max_message_bytes"), py::arg("sink"), py::arg("stdout_text"), py::arg("stderr_text"),
      py::arg("live") = true, py::arg("workdir") = "", py::arg("workdir_bytes") = 0,
      py::arg("execution_count") = py::none(), py::arg("measure_image") = false, py::arg("discard_streams") = false);
}

void bind_cell_outcome(py::module_& m) {
  py::class_<CellOutcome>(m, "CellOutcome")
      .def_property_readonly("end", [](const CellOutcome& o) { return cell_end_name(o.end); })
      .def_property_readonly("done_payload", [](const CellOutcome& o) { return py::bytes(o.done_payload); })
      .def_readonly("reason", &CellOutcome::reason)
      .def_readonly("deadline_hit", &CellOutcome::deadline_hit)
      .def_readonly("disk_hit", &CellOutcome::disk_hit)
      .def_readonly("workdir_bytes", &CellOutcome::workdir_bytes)
      .def_readonly("duration_s", &CellOutcome::duration_s)
      .def_readonly("cpu_s", &CellOutcome::cpu_s)
      .def_readonly("peak_rss_bytes", &CellOutcome::peak_rss_bytes)
      .def_readonly("output_bytes", &CellOutcome::output_bytes)
      .def_readonly("dropped_output_bytes", &CellOutcome::dropped_output_bytes)
      .def_readonly("worker_dropped_bytes", &CellOutcome::worker_dropped_bytes)
      .def_readonly("stale_bytes", &CellOutcome::stale_bytes)
      .def_readonly("image_used_before", &CellOutcome::image_used_before)
      .def_readonly("image_used", &CellOutcome::image_used)
      .def_readonly("image_avail", &CellOutcome::image_avail);
}

void bind_zygote_link(py::module_& m) {
  py::class_<ZygoteLink, std::shared_ptr<ZygoteLink>>(m, "ZygoteLink")
      .def(py::init<int>(), py::arg("control"),
           "The supervisor's end of a zygote's control socket (a duplicate of `control` is kept).")
      .def("close", &ZygoteLink::close, py::call_guard<py::gil_scoped_release>(),
           "Closes the link: the zygote exits; sessions it forked go on.");
}

void bind_runner(py::module_& m) {
  py::class_<CellRunner> cls(m, "CellRunner");
  cls.def(py::init([](std::string launcher, std::vector<std::string> argv, std::vector<std::string> env,
                      std::string workdir, const ResourceLimits& limits, const Isolation& isolation,
                      std::optional<Cgroups::Limits> cgroup, uint64_t request_capacity, uint64_t event_capacity,
                      double start_timeout_s, std::shared_ptr<ZygoteLink> zygote) {
            SpawnSpec spec;
            spec.launcher = std::move(launcher);
            spec.argv = std::move(argv);
            spec.env = std::move(env);
            spec.workdir = std::move(workdir);
            spec.limits = limits;
            spec.isolation = isolation;
            py::gil_scoped_release release;
            return std::make_unique<CellRunner>(spec, ChannelGeometry{request_capacity, event_capacity},
                                                start_timeout_s, cgroup, zygote.get());
          }),
          py::kw_only(), py::arg("launcher"), py::arg("argv"), py::arg("env"), py::arg("workdir"), py::arg("limits"),
          py::arg("isolation"), py::arg("cgroup"), py::arg("request_capacity") = ChannelGeometry{}.request_capacity,
          py::arg("event_capacity") = ChannelGeometry{}.event_capacity, py::arg("start_timeout_s") = 30.0,
          py::arg("zygote") = nullptr,
          "Spawns the launcher and the worker (or has `zygote` fork them); returns once the worker reported ready.")
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
      .def("interrupt", &CellRunner::interrupt, py::call_guard<py::gil_scoped_release>())
      .def("terminate", &CellRunner::terminate, py::call_guard<py::gil_scoped_release>())
      .def("alive", &CellRunner::alive, py::call_guard<py::gil_scoped_release>())
      .def("exit_description", &CellRunner::exit_description);
  def_cell_method(cls, "run_cell", &run_cell);
  // The cell keeps its runner and its two texts alive (the sink refers to them).
  def_cell_method(cls, "begin_cell", &begin_cell, py::keep_alive<0, 1>(), py::keep_alive<0, 8>(),
                  py::keep_alive<0, 9>(), "Sends the cell and returns it as a CellRun to step from an event loop.");
}

void bind_cell_run(py::module_& m) {
  // A cell in progress for an event loop: wait until one of wait_fds() is readable or
  // next_timer_ms() passed, then step(0); arm() first (False: step again without waiting).
  py::class_<CellRun>(m, "CellRun")
      .def("step", &CellRun::step, py::arg("max_wait_ms") = 0, py::call_guard<py::gil_scoped_release>(),
           "The CellOutcome once the cell ended, else None.")
      .def("arm", &CellRun::arm, py::call_guard<py::gil_scoped_release>())
      .def("wait_fds", &CellRun::wait_fds)
      .def("next_timer_ms", &CellRun::next_timer_ms)
      .def_property_readonly("finished", &CellRun::finished);
}

void bind_stream_text(py::module_& m) {
  py::class_<StreamText>(m, "StreamText")
      .def(py::init<>())
      .def("append", &StreamText::append_str, py::arg("text"),
           "Appends text (a supervisor marker); returns its (start, end) offsets.")
      .def("value", &StreamText::value, "The whole text; final afterwards.")
      .def_property_readonly("has_cr", &StreamText::has_cr)
      .def("__len__", &StreamText::length);
}

}  // namespace

void bind_cell_runner(py::module_& m) {
  bind_cell_outcome(m);
  bind_zygote_link(m);
  bind_runner(m);
  bind_cell_run(m);
  bind_stream_text(m);
}

}  // namespace sandbox_exec::python
