#include "supervisor/cell_run.h"

#include <poll.h>
#include <sys/statvfs.h>

#include <algorithm>

#include "common/sys_error.h"
#include "supervisor/json_guard.h"
#include "supervisor/logging.h"

namespace sandbox_exec {

namespace {
using Clock = std::chrono::steady_clock;

// The read rate for a worker that keeps sending past its output cap: 1 MiB per 2 ms pause.
constexpr uint64_t kClosedDrainBytes = 1 << 20;
constexpr auto kClosedDrainPause = std::chrono::milliseconds(2);
// The largest end-of-cell report read (the worker cuts an exception's message to 64 KiB; its
// traceback lines add to that); a larger one ends the cell as a rejected report.
constexpr uint64_t kMaxCellDoneBytes = 1 << 20;
// The disk watchdog's period while a cell runs.
constexpr auto kDiskCheckPeriod = std::chrono::milliseconds(200);
// How often the Tick (a Ctrl-C in the backend) is asked.
constexpr int kTickMs = 100;
// A batch is bounded in count and bytes: the supervisor never holds more than about 1 MiB
// of a flood outside the cell's own output.
constexpr std::size_t kBatchEvents = 256;
constexpr std::size_t kBatchBytes = 1 << 20;

Clock::time_point after(Clock::time_point t, double seconds) {
  return t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int ms_until(Clock::time_point deadline) {
  if (deadline == Clock::time_point::max()) return -1;
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

// The used and available bytes of the filesystem at `path`, as the backend's
// _workdir_image.usage() computes them; false when statvfs fails.
bool filesystem_usage(const std::string& path, std::optional<uint64_t>& used, std::optional<uint64_t>& avail) {
  struct statvfs st {};
  if (::statvfs(path.c_str(), &st) != 0) return false;
  used = (static_cast<uint64_t>(st.f_blocks) - st.f_bfree) * st.f_frsize;
  avail = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  return true;
}

// The smaller of two waits, where -1 means "no limit".
int min_wait(int a, int b) { return a < 0 ? b : (b < 0 ? a : std::min(a, b)); }

// Cuts `text` to at most `limit` bytes without splitting a UTF-8 sequence.
std::size_t utf8_prefix(const std::string& text, std::size_t limit) {
  if (limit >= text.size()) return text.size();
  std::size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return cut;
}
}  // namespace

CellRun::CellRun(CellRunner& runner, const std::string& request, CellLimits limits, EventSink sink, Tick tick)
    : runner_(runner),
      limits_(std::move(limits)),
      sink_(std::move(sink)),
      tick_(std::move(tick)),
      start_(Clock::now()),
      has_deadline_(limits_.timeout_s > 0),
      // One assembler for every message; its cap admits an end-of-cell report up to
      // kMaxCellDoneBytes whatever the per-output limit (the report is rebuilt and cut to the
      // cell's output budget in on_done, so a huge exception message still ends as its own
      // error); other messages over max_message_bytes are dropped whole.
      assembler_(std::max(limits_.max_message_bytes, kMaxCellDoneBytes)),
      // The disk watchdog walks the workdir once a cell has run 200 ms, then every 200 ms,
      // and at the end of EVERY cell: what a short cell wrote (fallocate reserves a GiB in a
      // few ms) is seen before the next cell runs, and the Python Session refuses cells
      // while the workdir is over. The overshoot of one cell is what it writes between looks.
      watching_disk_(limits_.workdir_bytes > 0 && !limits_.workdir.empty()),
      next_disk_check_(start_ + kDiskCheckPeriod) {
  deadline_ = has_deadline_ ? after(start_, limits_.timeout_s) : Clock::time_point::max();
  if (limits_.measure_image) {
    std::optional<uint64_t> avail;
    filesystem_usage(limits_.workdir, out_.image_used_before, avail);
  }
  if (!runner_.alive()) {
    result_ = finish(CellEnd::kCrashed, "the session's worker is not running");
    return;
  }
  // With cgroups the session's own counters give CPU and peak memory (subprocesses
  // included); /proc is read only without them. The OOM counter is only read when the
  // worker dies: it is compared with its value at the session's start.
  // Read under the session's lock (CellRunner::read_live): another thread may end it.
  runner_.read_live([&](const WorkerProcess& process) {
    if (const Cgroups* cgroups = process.cgroups()) {
      cgroup_cpu_before_ = cgroups->cpu_seconds();
      cgroups->reset_peak_memory();
    } else {
      usage_before_ = process.usage(false);
      process.reset_peak_rss();
    }
  });
  // Past the output cap the worker is told to stop sending; a new cell opens it again.
  runner_.channel_->set_output_closed(false);
  drain_stale();
  try {
    if (!runner_.channel_->send(FrameType::kExecute, request, deadline_, runner_.process_->pidfd())) {
      if (!runner_.alive()) {
        result_ = finish(CellEnd::kCrashed, "the worker " + runner_.exit_description());
      } else {
        runner_.terminate();
        result_ = finish(CellEnd::kTimeout, "the worker did not accept the cell before the deadline");
      }
    }
  } catch (const ProtocolViolation& e) {
    result_ = on_protocol_violation(e);
  }
}

// Whatever the worker sent while no cell ran (a thread a previous cell left behind) is not
// this cell's: discarded, and counted so the cell's outputs can say so. Bounded by the
// ring's size: a producer that keeps writing cannot hold this loop.
void CellRun::drain_stale() {
  SupervisorChannel& channel = *runner_.channel_;
  for (uint64_t drained = 0; drained < channel.geometry().event_capacity && channel.poll_frame(header_, payload_);) {
    drained += frame_footprint(payload_.size());
    out_.stale_bytes += payload_.size();
  }
  if (out_.stale_bytes) batch_.push_back({kStaleEvent, std::to_string(out_.stale_bytes)});
}

CellOutcome CellRun::finish(CellEnd end, std::string reason) {
  out_.end = end;
  out_.reason = std::move(reason);
  out_.duration_s = std::chrono::duration<double>(Clock::now() - start_).count();
  if (limits_.measure_image) filesystem_usage(limits_.workdir, out_.image_used, out_.image_avail);
  return out_;
}

void CellRun::flush() {
  if (batch_.empty()) return;
  const bool valid = sink_(batch_);
  batch_.clear();
  if (!valid) throw ProtocolViolation("the worker sent a malformed output message");
}

void CellRun::close_output() {
  if (!output_closed_) runner_.channel_->set_output_closed(true);
  output_closed_ = true;
}

void CellRun::accept_stream(uint16_t type, std::string& p) {
  if (assembler_.in_progress()) throw ProtocolViolation("stream frame inside a continued message");
  if (limits_.discard_streams) return;  // a call's prints are not its output (CellLimits)
  const uint64_t charged = out_.output_bytes + kEventOverheadBytes;
  const uint64_t room = limits_.max_output_bytes - std::min(limits_.max_output_bytes, charged);
  const std::size_t keep = utf8_prefix(p, room);
  out_.dropped_output_bytes += p.size() - keep;
  if (keep < p.size()) {
    close_output();
    drained_since_pause_ += p.size() - keep;
  }
  if (keep) {
    p.resize(keep);
    out_.output_bytes += keep + kEventOverheadBytes;
    batch_.push_back({type, std::exchange(p, {})});
  }
}

// A whole display/result message (not the end-of-cell report).
bool CellRun::accept_message(uint16_t type, const std::string& message) {
  if (message.size() > limits_.max_message_bytes) {
    out_.dropped_output_bytes += message.size();
    batch_.push_back({kDroppedOutputEvent, std::to_string(message.size())});
    return false;
  }
  if (out_.output_bytes + message.size() + kEventOverheadBytes > limits_.max_output_bytes) {
    out_.dropped_output_bytes += message.size();
    close_output();
    drained_since_pause_ += message.size();
    return false;
  }
  out_.output_bytes += message.size() + kEventOverheadBytes;
  // Checked here, without the GIL, before Python builds anything from it.
  if (JsonVerdict verdict = check_message_json(message); !verdict.ok) {
    batch_.push_back({kRejectedOutputEvent, std::move(verdict.reason)});
    return false;
  }
  batch_.push_back({type, message});
  return false;
}

bool CellRun::accept(const FrameHeader& h, std::string& p) {
  const uint16_t type = h.type;
  if (!is_event_type(type) || type == static_cast<uint16_t>(FrameType::kReady))
    throw ProtocolViolation("unexpected event frame type " + std::to_string(type));
  if (is_stream_type(type)) {
    accept_stream(type, p);
    return false;
  }
  const auto r = assembler_.feed(h, p.data(), p.size());
  if (r == MessageAssembler::Result::kIncomplete) return false;
  const bool is_done = type == static_cast<uint16_t>(FrameType::kCellDone);
  if (r == MessageAssembler::Result::kTooLarge) {
    out_.dropped_output_bytes += assembler_.dropped_bytes();
    if (!is_done) {
      batch_.push_back({kDroppedOutputEvent, std::to_string(assembler_.dropped_bytes())});
      return false;
    }
    // An oversized done report still ends the cell (waiting on would hang it), as an error
    // that says why.
    out_.done_payload = rejected_cell_done("it was larger than the per-message limit");
    return true;
  }
  if (!is_done) return accept_message(type, assembler_.message());
  const std::string& message = assembler_.message();
  const uint64_t budget = limits_.max_output_bytes - std::min(limits_.max_output_bytes, out_.output_bytes);
  CellDoneReport done = parse_cell_done(message, budget);
  if (limits_.execution_count && done.count != limits_.execution_count) {
    out_.stale_bytes += message.size();  // a stale or forged report: not this cell's end
    batch_.push_back({kStaleEvent, std::to_string(message.size())});
    return false;
  }
  // The end-of-cell report is output too (its error's traceback): charged to the cap.
  out_.output_bytes += done.json.size() + kEventOverheadBytes;
  out_.dropped_output_bytes += done.dropped;
  out_.worker_dropped_bytes += done.dropped;
  out_.done_payload = std::move(done.json);
  return true;
}

std::optional<CellOutcome> CellRun::watch_disk() {
  if (!watching_disk_ || interrupted_ || Clock::now() < next_disk_check_) return std::nullopt;
  next_disk_check_ = Clock::now() + kDiskCheckPeriod;
  const CellRunner::DiskCheck check = runner_.measure_disk(limits_.workdir, limits_.workdir_bytes);
  out_.workdir_bytes = check.used;
  if (check.over) {
    interrupted_ = true;
    out_.disk_hit = true;
    runner_.interrupt();
    deadline_ = after(Clock::now(), limits_.interrupt_grace_s);
  }
  return std::nullopt;
}

// The one escalation: SIGINT at the deadline (or when the disk cap was hit), then the
// session is killed when the grace period passes too.
std::optional<CellOutcome> CellRun::on_deadline() {
  if (!(has_deadline_ || out_.disk_hit) || Clock::now() < deadline_) return std::nullopt;
  if (!interrupted_) {
    interrupted_ = true;
    out_.deadline_hit = true;
    runner_.interrupt();
    deadline_ = after(Clock::now(), limits_.interrupt_grace_s);
    return std::nullopt;
  }
  runner_.terminate();
  if (out_.disk_hit)
    return finish(CellEnd::kDisk,
                  "the cell grew the workdir past its disk limit and ignored the interrupt; the session was killed");
  return finish(CellEnd::kTimeout, "the cell ignored the interrupt for " + std::to_string(limits_.interrupt_grace_s) +
                                       " s; the session was killed");
}

std::optional<CellOutcome> CellRun::on_peer_exit() {
  // Deliver what the worker managed to publish before it died.
  while (runner_.channel_->poll_frame(header_, payload_)) {
    if (accept(header_, payload_)) break;
  }
  flush();
  // (Unless another thread reaped the session first: its cgroups are gone, and with them
  // the OOM counter.)
  bool oom = false;
  runner_.read_live([&](const WorkerProcess& process) {
    const Cgroups* cgroups = process.cgroups();
    oom = cgroups && cgroups->oom_kills() > runner_.oom_baseline_;
    if (oom) out_.peak_rss_bytes = cgroups->peak_memory();
  });
  const std::string how = runner_.reap_dead_worker();
  if (oom)
    return finish(CellEnd::kMemory,
                  "the session's memory limit was exceeded; the kernel's OOM killer ended the worker (" + how + ")");
  if (interrupted_ && out_.deadline_hit) return finish(CellEnd::kTimeout, "the worker " + how + " after the deadline");
  return finish(CellEnd::kCrashed, "the worker " + how);
}

std::optional<CellOutcome> CellRun::on_protocol_violation(const ProtocolViolation& e) {
  log::warn("session of worker {}: protocol violation: {}", runner_.worker_pid(), e.what());
  batch_.clear();
  runner_.terminate();
  return finish(CellEnd::kViolation, std::string("protocol violation: ") + e.what());
}

CellOutcome CellRun::on_done() {
  flush();
  // A cell that wrote past the cap faster than the watchdog looks is caught here, however
  // short it was.
  if (watching_disk_ && !out_.disk_hit) {
    const CellRunner::DiskCheck check = runner_.measure_disk(limits_.workdir, limits_.workdir_bytes);
    out_.workdir_bytes = check.used;
    out_.disk_hit = check.over;
  }
  // With cgroups, the figures cover every process of the session (subprocesses included).
  runner_.read_live([&](const WorkerProcess& process) {
    if (const Cgroups* cgroups = process.cgroups()) {
      if (auto peak = cgroups->peak_memory()) out_.peak_rss_bytes = peak;
      if (auto cpu = cgroups->cpu_seconds(); cpu && cgroup_cpu_before_) out_.cpu_s = *cpu - *cgroup_cpu_before_;
    } else if (const Usage now = process.usage(true); now.valid && usage_before_.valid) {
      out_.cpu_s = now.cpu_seconds - usage_before_.cpu_seconds;
      out_.peak_rss_bytes = now.peak_rss_bytes;
    }
  });
  return finish(CellEnd::kDone);
}

std::optional<CellOutcome> CellRun::step(int max_wait_ms) {
  if (result_) return result_;
  if (armed_) {  // an event loop's arm() is over (run_cell never arms: no syscall for it)
    armed_ = false;
    runner_.channel_->disarm_wait();
  }
  try {
    result_ = [&]() -> std::optional<CellOutcome> {
      SupervisorChannel& channel = *runner_.channel_;
      if (Clock::now() >= paused_until_) {
        // Drain what is there, then deliver it in one batch.
        std::size_t batch_bytes = 0;
        while (batch_.size() < kBatchEvents && batch_bytes < kBatchBytes && channel.poll_frame(header_, payload_)) {
          batch_bytes += payload_.size();
          if (accept(header_, payload_)) return on_done();
        }
        if (!batch_.empty()) {
          flush();
          return std::nullopt;  // more may be waiting: the caller steps again at once
        }
        if (output_closed_ && drained_since_pause_ >= kClosedDrainBytes) {
          // A worker still sending past the cap: pause before reading on.
          drained_since_pause_ = 0;
          paused_until_ = Clock::now() + kClosedDrainPause;
        }
      }
      if (tick_ && tick_()) runner_.interrupt();
      if (auto end = watch_disk()) return end;
      if (auto end = on_deadline()) return end;
      const int wait_ms = std::max(0, min_wait(max_wait_ms, next_timer_ms()));
      if (Clock::now() < paused_until_) {
        pollfd p{runner_.process_->pidfd(), POLLIN, 0};
        if (::poll(&p, 1, wait_ms) > 0) return on_peer_exit();
        return std::nullopt;
      }
      switch (channel.next_frame(header_, payload_, wait_ms, runner_.process_->pidfd())) {
        case SupervisorChannel::Wait::kFrame:
          if (accept(header_, payload_)) return on_done();
          flush();
          return std::nullopt;
        case SupervisorChannel::Wait::kPeerExited:
          return on_peer_exit();
        case SupervisorChannel::Wait::kTimeout:
          return on_deadline();
      }
      return std::nullopt;
    }();
  } catch (const ProtocolViolation& e) {
    result_ = on_protocol_violation(e);
  }
  return result_;
}

std::pair<int, int> CellRun::wait_fds() const noexcept {
  return {runner_.channel_->bell_fd(), runner_.process_->pidfd()};
}

bool CellRun::arm() {
  if (result_ || !batch_.empty()) return false;
  if (Clock::now() < paused_until_) return true;  // the timer ends the pause
  armed_ = runner_.channel_->arm_wait();
  return armed_;
}

int CellRun::next_timer_ms() const {
  if (result_) return 0;
  int ms = ms_until(has_deadline_ || out_.disk_hit ? deadline_ : Clock::time_point::max());
  if (tick_) ms = min_wait(ms, kTickMs);
  if (watching_disk_ && !interrupted_) ms = min_wait(ms, ms_until(next_disk_check_));
  if (Clock::now() < paused_until_) ms = min_wait(ms, ms_until(paused_until_));
  return min_wait(ms, runner_.channel_->poll_pause_ms());
}

}  // namespace sandbox_exec
