#include "supervisor/cell_runner.h"

#include <poll.h>

#include <algorithm>

#include "supervisor/disk_usage.h"
#include "supervisor/json_guard.h"
#include "supervisor/logging.h"
#include "common/sys_error.h"

namespace sandbox_exec {

namespace {
using Clock = std::chrono::steady_clock;

// The read rate for a worker that keeps sending past its output cap: 1 MiB per 2 ms pause.
constexpr uint64_t kClosedDrainBytes = 1 << 20;
constexpr int kClosedDrainPauseMs = 2;
// The largest end-of-cell report read (the worker cuts an exception's message to 64 KiB; its
// traceback lines add to that); a larger one ends the cell as a rejected report.
constexpr uint64_t kMaxCellDoneBytes = 1 << 20;

Clock::time_point after(Clock::time_point t, double seconds) {
  return t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int ms_until(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// Cuts `text` to at most `limit` bytes without splitting a UTF-8 sequence.
std::size_t utf8_prefix(const std::string& text, std::size_t limit) {
  if (limit >= text.size()) return text.size();
  std::size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}
}  // namespace

CellRunner::CellRunner(const SpawnSpec& spec, ChannelGeometry geometry, double start_timeout_s,
                       std::optional<Cgroups::Limits> cgroup_limits)
    : channel_(std::make_unique<SupervisorChannel>(geometry)) {
  const auto start_ms = std::chrono::milliseconds(static_cast<long long>(start_timeout_s * 1000));
  std::unique_ptr<Cgroups> cgroups;
  if (cgroup_limits) {
    static std::atomic<uint64_t> counter{0};
    cgroups = std::make_unique<Cgroups>(std::to_string(::getpid()) + "-" + std::to_string(++counter),
                                        *cgroup_limits);
  }
  process_ = std::make_unique<WorkerProcess>(spec, *channel_, start_ms, std::move(cgroups));
  if (process_->cgroups()) oom_baseline_ = process_->cgroups()->oom_kills();
  FrameHeader header{};
  const auto deadline = after(Clock::now(), start_timeout_s);
  MessageAssembler assembler(1 << 16);
  for (;;) {
    std::string payload;
    const auto wait = channel_->next_frame(header, payload, ms_until(deadline), process_->pidfd());
    if (wait == SupervisorChannel::Wait::kFrame) {
      if (header.type != static_cast<uint16_t>(FrameType::kReady)) {
        terminate();
        throw SandboxError("worker", "startup handshake", 0,
                           "the worker sent frame type " + std::to_string(header.type) +
                               " before kReady");
      }
      if (assembler.feed(header, payload.data(), payload.size()) ==
          MessageAssembler::Result::kIncomplete)
        continue;
      ready_ = assembler.message();
      return;
    }
    if (wait == SupervisorChannel::Wait::kPeerExited) {
      process_->terminate();
      throw SandboxError("worker", "interpreter start", 0,
                         "the worker " + process_->exit_info().describe() +
                             " before it was ready (is sandbox_exec importable by " +
                             spec.argv.front() + "?)");
    }
    if (Clock::now() >= deadline) {
      terminate();
      throw SandboxError("worker", "interpreter start", ETIMEDOUT,
                         "the worker was not ready within " + std::to_string(start_timeout_s) +
                             " s");
    }
  }
}

CellRunner::~CellRunner() { terminate(); }

void CellRunner::interrupt() noexcept {
  std::lock_guard lock(lifecycle_);
  if (!dead_) process_->interrupt();
}

void CellRunner::terminate() noexcept {
  std::lock_guard lock(lifecycle_);
  process_->terminate();
  dead_ = true;
}


bool CellRunner::alive() noexcept {
  std::lock_guard lock(lifecycle_);
  if (dead_) return false;
  if (process_->reap()) dead_ = true;
  return !dead_;
}

CellRunner::DiskCheck CellRunner::check_disk(const std::string& workdir, uint64_t limit) {
  {
    std::lock_guard lock(lifecycle_);
    if (dead_) return {};
  }
  return measure_disk(workdir, limit);
}

CellRunner::DiskCheck CellRunner::measure_disk(const std::string& workdir, uint64_t limit) {
  // The one disk rule, for cells and between them: the workdir is over when it holds more
  // than `limit`, whatever it held before. No baseline: the Python Session refuses new
  // cells while the workdir is over (a restart must not take an over-full workdir as its
  // new normal), so a cell always starts within the cap.
  DiskCheck check;
  const Cgroups* cgroups = process_->cgroups();
  const std::vector<pid_t> pids =
      session_pids(cgroups ? cgroups->dirs() : std::vector<std::string>{}, process_->worker_parent());
  check.used = workdir_usage(workdir, pids);
  check.over = check.used && *check.used > limit;
  return check;
}


std::string CellRunner::exit_description() {
  std::lock_guard lock(lifecycle_);
  return process_->exit_info().describe();
}

CellOutcome CellRunner::run_cell(const std::string& request, const CellLimits& limits,
                                 const EventSink& sink, const Tick& tick) {
  CellOutcome out;
  const auto start = Clock::now();
  auto finish = [&](CellEnd end, std::string reason = {}) {
    out.end = end;
    out.reason = std::move(reason);
    out.duration_s = std::chrono::duration<double>(Clock::now() - start).count();
    return out;
  };
  if (!alive()) return finish(CellEnd::kCrashed, "the session's worker is not running");

  const bool has_deadline = limits.timeout_s > 0;
  auto deadline = has_deadline ? after(start, limits.timeout_s) : Clock::time_point::max();
  const Cgroups* cgroups = process_->cgroups();
  // With cgroups the session's own counters give CPU and peak memory (subprocesses
  // included); /proc is read only without them. The OOM counter is only read when the
  // worker dies: it is compared with its value at the session's start.
  const Usage before = cgroups ? Usage{} : process_->usage(false);
  if (!cgroups) process_->reset_peak_rss();
  const std::optional<double> cg_cpu_before = cgroups ? cgroups->cpu_seconds() : std::nullopt;
  if (cgroups) cgroups->reset_peak_memory();

  EventBatch batch;
  auto flush = [&] {
    if (!batch.empty()) {
      const bool valid = sink(batch);
      batch.clear();
      if (!valid) throw ProtocolViolation("the worker sent a malformed output message");
    }
  };
  // One assembler for every message; its cap admits an end-of-cell report up to
  // kMaxCellDoneBytes whatever the per-output limit (the report is rebuilt and cut to the
  // cell's output budget below, so a huge exception message still ends as its own error);
  // other messages over max_message_bytes are dropped whole.
  const uint64_t max_message = limits.max_message_bytes;
  MessageAssembler assembler(std::max(max_message, kMaxCellDoneBytes));
  bool interrupted = false;
  // Past the output cap the worker is told to stop sending (a cooperative one does: its
  // flood then costs no copies at all); what still comes is read at most kClosedDrainBytes
  // per kClosedDrainPause, so a worker that ignores it spends its own time, not the
  // backend's, waiting for ring space.
  channel_->set_output_closed(false);
  bool output_closed = false;
  uint64_t drained_since_pause = 0;
  auto close_output = [&] {
    if (!output_closed) channel_->set_output_closed(true);
    output_closed = true;
  };
  // The disk watchdog walks the workdir once a cell has run 200 ms, then every 200 ms, and
  // at the end of EVERY cell: what a short cell wrote (fallocate reserves a GiB in a few
  // ms) is seen before the next cell runs, and the Python Session refuses cells while the
  // workdir is over. The overshoot of one cell is what it writes between two looks.
  const bool watch_disk = limits.workdir_bytes > 0 && !limits.workdir.empty();
  auto next_disk_check = start + std::chrono::milliseconds(200);
  auto disk_over = [&]() -> bool {
    const DiskCheck check = measure_disk(limits.workdir, limits.workdir_bytes);
    out.workdir_bytes = check.used;
    return check.over;
  };
  FrameHeader header{};
  std::string payload;

  // Accepts one frame; returns true when it was the cell's kCellDone.
  auto accept = [&](const FrameHeader& h, std::string& p) -> bool {
    const uint16_t type = h.type;
    if (!is_event_type(type) || type == static_cast<uint16_t>(FrameType::kReady))
      throw ProtocolViolation("unexpected event frame type " + std::to_string(type));
    if (is_stream_type(type)) {
      if (assembler.in_progress())
        throw ProtocolViolation("stream frame inside a continued message");
      const uint64_t charged = out.output_bytes + kEventOverheadBytes;
      const uint64_t room = limits.max_output_bytes - std::min(limits.max_output_bytes, charged);
      const std::size_t keep = utf8_prefix(p, room);
      out.dropped_output_bytes += p.size() - keep;
      if (keep < p.size()) {
        close_output();
        drained_since_pause += p.size() - keep;
      }
      if (keep) {
        p.resize(keep);
        out.output_bytes += keep + kEventOverheadBytes;
        batch.push_back({type, std::move(p)});
      }
      return false;
    }
    const auto r = assembler.feed(h, p.data(), p.size());
    if (r == MessageAssembler::Result::kIncomplete) return false;
    const bool is_done = type == static_cast<uint16_t>(FrameType::kCellDone);
    const uint64_t budget = limits.max_output_bytes - std::min(limits.max_output_bytes, out.output_bytes);
    if (r == MessageAssembler::Result::kTooLarge) {
      out.dropped_output_bytes += assembler.dropped_bytes();
      if (!is_done) {
        batch.push_back({kDroppedOutputEvent, std::to_string(assembler.dropped_bytes())});
        return false;
      }
      // An oversized done report still ends the cell (waiting on would hang it), as an
      // error that says why.
      out.done_payload = rejected_cell_done("it was larger than the per-message limit");
      return true;
    }
    const std::string& message = assembler.message();
    if (!is_done && message.size() > max_message) {
      out.dropped_output_bytes += message.size();
      batch.push_back({kDroppedOutputEvent, std::to_string(message.size())});
      return false;
    }
    if (is_done) {
      CellDoneReport done = parse_cell_done(message, budget);
      if (limits.execution_count && done.count != limits.execution_count) {
        out.stale_bytes += message.size();  // a stale or forged report: not this cell's end
        batch.push_back({kStaleEvent, std::to_string(message.size())});
        return false;
      }
      // The end-of-cell report is output too (its error's traceback): charged to the cap.
      out.output_bytes += done.json.size() + kEventOverheadBytes;
      out.dropped_output_bytes += done.dropped;
      out.done_payload = std::move(done.json);
      return true;
    }
    if (out.output_bytes + message.size() + kEventOverheadBytes > limits.max_output_bytes) {
      out.dropped_output_bytes += message.size();
      close_output();
      drained_since_pause += message.size();
      return false;
    }
    out.output_bytes += message.size() + kEventOverheadBytes;
    // Checked here, without the GIL, before Python builds anything from it.
    if (JsonVerdict verdict = check_message_json(message); !verdict.ok) {
      batch.push_back({kRejectedOutputEvent, std::move(verdict.reason)});
      return false;
    }
    batch.push_back({type, message});
    return false;
  };

  // Whatever the worker sent while no cell ran (a thread a previous cell left behind) is
  // not this cell's: discarded, and counted so the cell's outputs can say so.
  // Bounded by the ring's size: a producer that keeps writing cannot hold this loop.
  for (uint64_t drained = 0;
       drained < channel_->geometry().event_capacity && channel_->poll_frame(header, payload);) {
    drained += frame_footprint(payload.size());
    out.stale_bytes += payload.size();
  }
  if (out.stale_bytes) batch.push_back({kStaleEvent, std::to_string(out.stale_bytes)});

  try {
    if (!channel_->send(FrameType::kExecute, request, deadline, process_->pidfd())) {
      if (!alive()) return finish(CellEnd::kCrashed, "the worker " + exit_description());
      terminate();
      return finish(CellEnd::kTimeout, "the worker did not accept the cell before the deadline");
    }
    for (;;) {
      // Drain what is there, then deliver it in one batch.
      bool done = false;
      // A batch is bounded in count and bytes: the supervisor never holds more than about
      // 1 MiB of a flood outside the cell's own output.
      std::size_t batch_bytes = 0;
      while (!done && batch.size() < 256 && batch_bytes < (1u << 20) && channel_->poll_frame(header, payload)) {
        batch_bytes += payload.size();
        done = accept(header, payload);
      }
      if (done) {
        flush();
        break;
      }
      if (!batch.empty()) {
        flush();
        continue;
      }
      if (output_closed && drained_since_pause >= kClosedDrainBytes) {
        // A worker still sending past the cap: pause before reading on (watching its exit).
        drained_since_pause = 0;
        pollfd p{process_->pidfd(), POLLIN, 0};
        (void)::poll(&p, 1, kClosedDrainPauseMs);
        continue;
      }
      int wait_ms = has_deadline ? ms_until(deadline) : 1000;
      if (tick) {
        if (tick()) interrupt();
        wait_ms = std::min(wait_ms, 100);
      }
      if (watch_disk) {
        if (!interrupted && Clock::now() >= next_disk_check) {
          next_disk_check = Clock::now() + std::chrono::milliseconds(200);
          if (disk_over()) {
            interrupted = true;
            out.disk_hit = true;
            interrupt();
            deadline = after(Clock::now(), limits.interrupt_grace_s);
          }
        }
        wait_ms = std::min(wait_ms, 200);
      }
      const auto wait = channel_->next_frame(header, payload, wait_ms, process_->pidfd());
      if (wait == SupervisorChannel::Wait::kFrame) {
        if (accept(header, payload)) {
          flush();
          break;
        }
        continue;
      }
      if (wait == SupervisorChannel::Wait::kPeerExited) {
        // Deliver what the worker managed to publish before it died.
        while (channel_->poll_frame(header, payload)) {
          if (accept(header, payload)) break;
        }
        flush();
        std::lock_guard lock(lifecycle_);
        const bool oom = cgroups && cgroups->oom_kills() > oom_baseline_;
        if (oom) out.peak_rss_bytes = cgroups->peak_memory();
        process_->terminate(std::chrono::milliseconds(2000));
        dead_ = true;
        if (oom)
          return finish(CellEnd::kMemory, "the session's memory limit was exceeded; the kernel's OOM killer ended "
                                          "the worker (" + process_->exit_info().describe() + ")");
        if (interrupted && out.deadline_hit)
          return finish(CellEnd::kTimeout, "the worker " + process_->exit_info().describe() +
                                               " after the deadline");
        return finish(CellEnd::kCrashed, "the worker " + process_->exit_info().describe());
      }
      if ((has_deadline || out.disk_hit) && Clock::now() >= deadline) {
        if (!interrupted) {
          interrupted = true;
          out.deadline_hit = true;
          interrupt();
          deadline = after(Clock::now(), limits.interrupt_grace_s);
        } else {
          terminate();
          if (out.disk_hit)
            return finish(CellEnd::kDisk, "the cell grew the workdir past its disk limit and ignored the "
                                          "interrupt; the session was killed");
          return finish(CellEnd::kTimeout,
                        "the cell ignored the interrupt for " +
                            std::to_string(limits.interrupt_grace_s) + " s; the session was killed");
        }
      }
    }
  } catch (const ProtocolViolation& e) {
    log::warn("session of worker {}: protocol violation: {}", process_->worker_pid(), e.what());
    batch.clear();
    terminate();
    return finish(CellEnd::kViolation, std::string("protocol violation: ") + e.what());
  }
  // A cell that wrote past the cap faster than the watchdog looks is caught here, however
  // short it was.
  if (watch_disk && !out.disk_hit && disk_over()) out.disk_hit = true;
  const Usage after_usage = cgroups ? Usage{} : process_->usage(true);
  if (after_usage.valid && before.valid) {
    out.cpu_s = after_usage.cpu_seconds - before.cpu_seconds;
    out.peak_rss_bytes = after_usage.peak_rss_bytes;
  }
  // With cgroups, the figures cover every process of the session (subprocesses included).
  if (cgroups) {
    if (auto peak = cgroups->peak_memory()) out.peak_rss_bytes = peak;
    if (auto cpu = cgroups->cpu_seconds(); cpu && cg_cpu_before) out.cpu_s = *cpu - *cg_cpu_before;
  }
  return finish(CellEnd::kDone);
}

}  // namespace sandbox_exec
