// CellRunner: one session's worker as the supervisor drives it, cell by cell.
//
// Owns the session's channel and WorkerProcess. run_cell() sends one execute request and
// follows the event ring until the worker reports the cell done, enforcing on the way:
//   * the wall-clock deadline: SIGINT (KeyboardInterrupt in the cell), then after the grace
//     period the whole session is killed;
//   * the per-cell output cap: output past it is dropped and counted, never buffered;
//   * the protocol: any malformed frame ends this session as "protocol violation".
// Crashes are seen at once through the launcher's pidfd polled beside the doorbell.
//
// Thread model: one thread runs a cell at a time (the Python Session serialises); interrupt()
// and terminate() may be called from any thread meanwhile. Events are delivered to the
// callback in batches, so the binding takes the GIL once per batch, not per frame.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "ipc/channel.h"
#include "launch/spawn_spec.h"
#include "supervisor/worker_process.h"

namespace sandbox_exec {

// One message (a display or a result) is at most this large after reassembly, whatever the
// per-cell cap: the supervisor never holds more than this for one message.
inline constexpr uint64_t kMaxMessageBytes = 64ull << 20;

struct CellLimits {
  double timeout_s = 0;          // <= 0: no deadline
  double interrupt_grace_s = 2;  // after SIGINT, before the session is killed
  uint64_t max_output_bytes = 64ull << 20;
  uint64_t max_message_bytes = kMaxMessageBytes;  // one display/result message, reassembled
  std::string workdir;                            // watched for disk use when workdir_bytes > 0
  uint64_t workdir_bytes = 0;
  // The request's execution_count: a kCellDone that names another count is stale (sent by a
  // thread a previous cell left running) and is discarded, not taken as this cell's end.
  std::optional<int64_t> execution_count;
  // The workdir is a size-capped filesystem (workdir_image.h): its use is read (statvfs)
  // before the request is sent and when the cell ends, for the backend to tell whether the
  // cell filled it (CellOutcome.image_*): two system calls here instead of two Python calls
  // around them on every cell.
  bool measure_image = false;
  // A call, not a cell (the backend's _calls.py): its only output is its reply message, so
  // stream frames (what the worker's threads print while it runs) are discarded unread and
  // charged to nothing. Were they charged, a thread a cell left printing could fill the
  // call's cap, the output would close and the reply would be dropped.
  bool discard_streams = false;
};

enum class CellEnd {
  kDone,       // the worker reported the cell done (done_payload holds its report)
  kTimeout,    // the deadline passed and the session had to be killed
  kCrashed,    // the worker died
  kMemory,     // the worker was killed by the OOM killer of the session's memory cgroup
  kDisk,       // the cell grew the workdir past its cap and ignored the interrupt
  kViolation,  // the worker broke the protocol; the session was ended
};

// The names of CellEnd, as Python sees them (CellOutcome.end, _core.CELL_ENDS).
inline constexpr const char* kCellEndNames[] = {"done", "timeout", "crashed", "memory", "disk", "violation"};
[[nodiscard]] inline const char* cell_end_name(CellEnd end) noexcept { return kCellEndNames[static_cast<int>(end)]; }
static_assert(std::size(kCellEndNames) == static_cast<std::size_t>(CellEnd::kViolation) + 1);

struct CellOutcome {
  CellEnd end = CellEnd::kDone;
  std::string done_payload;
  std::string reason;
  bool deadline_hit = false;              // SIGINT was sent because of the deadline
  bool disk_hit = false;                  // the workdir was past its cap during or at the end of the cell
  std::optional<uint64_t> workdir_bytes;  // the workdir's size when the cell ended
  double duration_s = 0;
  std::optional<double> cpu_s;
  std::optional<uint64_t> peak_rss_bytes;
  uint64_t output_bytes = 0;
  uint64_t dropped_output_bytes = 0;  // past the caps here, plus worker_dropped_bytes
  // Of dropped_output_bytes, what the worker's end-of-cell report says it did not send (its
  // own claim, never measured here; the audit trail keeps it apart).
  uint64_t worker_dropped_bytes = 0;
  // Bytes of events discarded as stale: sent between cells (before this cell's request), or
  // end-of-cell reports for another execution_count.
  uint64_t stale_bytes = 0;
  // With CellLimits.measure_image: the workdir filesystem's used bytes before the cell, and
  // its used and available bytes when it ended (nullopt: statvfs failed).
  std::optional<uint64_t> image_used_before;
  std::optional<uint64_t> image_used;
  std::optional<uint64_t> image_avail;
};

struct Event {
  uint16_t type;
  std::string payload;
};
// An event the supervisor adds itself (never a worker frame type): one output was dropped
// for being larger than max_message_bytes; payload: its size in decimal.
inline constexpr uint16_t kDroppedOutputEvent = 0xFFFF;
// Another supervisor event: one message was rejected by the JSON check (json_guard.h);
// payload: the reason, in words. The cell runs on.
inline constexpr uint16_t kRejectedOutputEvent = 0xFFFE;
// And: events discarded as stale (sent before this cell's request, or an end-of-cell report
// for another execution_count); payload: their bytes, in decimal. Delivered where it
// happened, so the marker the user sees stands before this cell's own outputs.
inline constexpr uint16_t kStaleEvent = 0xFFFD;
// What each output event costs against the per-cell cap beyond its bytes: every event can
// become an output object in the backend, so a flood of one-byte outputs must not make
// millions of them within a byte cap.
inline constexpr uint64_t kEventOverheadBytes = 256;
using EventBatch = std::vector<Event>;
// Returns false when an event was malformed (the Python layer validates message contents);
// the session then ends as a protocol violation.
using EventSink = std::function<bool(EventBatch&)>;
// Called about every 100 ms while a cell runs; returning true interrupts the cell (the
// binding uses it to let a Ctrl-C in the backend reach the cell).
using Tick = std::function<bool()>;

class CellRunner {
 public:
  // `cgroup_limits`: when set, the session gets its own cgroups with these limits (the
  // caller checked Cgroups::detect()); SandboxError if they cannot be created.
  // `zygote`: when set, the session's keeper is forked by that zygote (a warm start).
  CellRunner(const SpawnSpec& spec, ChannelGeometry geometry, double start_timeout_s,
             std::optional<Cgroups::Limits> cgroup_limits = std::nullopt, ZygoteLink* zygote = nullptr);
  ~CellRunner();

  // The worker's kReady payload.
  [[nodiscard]] const std::string& ready_payload() const noexcept { return ready_; }
  [[nodiscard]] pid_t worker_pid() const noexcept { return process_->worker_pid(); }
  [[nodiscard]] pid_t launcher_pid() const noexcept { return process_->launcher_pid(); }
  // The disk watchdog between cells (the Sandbox's thread calls it while no cell runs):
  // the workdir's usage (unlinked files the session's processes hold open included), and
  // whether it is past `limit`.
  struct DiskCheck {
    std::optional<uint64_t> used;
    bool over = false;
  };
  [[nodiscard]] DiskCheck check_disk(const std::string& workdir, uint64_t limit);

  // Runs one cell to its end on this thread (a CellRun stepped in a loop; see cell_run.h).
  CellOutcome run_cell(const std::string& request, const CellLimits& limits, const EventSink& sink,
                       const Tick& tick = {});

  void interrupt() noexcept;
  void terminate() noexcept;
  [[nodiscard]] bool alive() noexcept;
  [[nodiscard]] std::string exit_description();

 private:
  friend class CellRun;  // a cell in progress drives this session's channel and process
  // The one disk rule, for cells and between them: measure, and say whether the workdir is
  // past `limit`.
  [[nodiscard]] DiskCheck measure_disk(const std::string& workdir, uint64_t limit);
  // After the worker died: reaps the session and says how the worker ended.
  std::string reap_dead_worker();
  // Runs `read(WorkerProcess&)` under lifecycle_ unless the session is dead; returns whether
  // it ran. For the cell's thread reading the worker's usage and its cgroup files: terminate()
  // and alive() on another thread (Session.close, an interrupt's escalation) reap the process
  // and remove its cgroups, which closes those files and clears their list, so an unlocked
  // read could use a closed (even reused) descriptor or a freed vector (ThreadSanitizer's
  // report on CellRunner.TerminateFromAnotherThreadEndsARunningCell).
  template <typename Read>
  bool read_live(Read&& read) {
    std::lock_guard lock(lifecycle_);
    if (dead_) return false;
    read(*process_);
    return true;
  }

  std::unique_ptr<SupervisorChannel> channel_;
  std::unique_ptr<WorkerProcess> process_;
  // Guards process_'s state across threads: reaping, termination, and every read of its
  // usage and cgroups (read_live); not its channel descriptors or pidfd, which live as long
  // as the process_ object.
  std::mutex lifecycle_;
  std::string ready_;
  std::atomic<bool> dead_{false};
  uint64_t oom_baseline_ = 0;  // the memory cgroup's oom_kill count at the session's start
};

}  // namespace sandbox_exec
