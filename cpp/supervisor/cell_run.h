#pragma once
// CellRun: one cell in progress, driven by steps, so the caller owns the waiting.
//
// CellRunner::run_cell() steps it in a loop on its own thread; the Python binding's async
// path steps it from an event loop instead, waiting on wait_fds() and next_timer_ms(), so a
// running cell holds no thread at all. Each rule has its own part:
//   * the deadline: one escalation, SIGINT first, then after the grace period the session
//     is killed (on_deadline);
//   * the output budget: output past the cell's cap is dropped and counted, and the worker
//     is told to stop sending and read slowly if it does not (accept_stream/accept_message);
//   * the disk watch: the workdir is measured every 200 ms and at the end (watch_disk);
//   * the peer's exit: a crash, an OOM kill, or death after the deadline (on_peer_exit); a
//     fault signal (SIGSEGV, SIGABRT...) is a crash however late it is seen, and a deadline
//     that passed while nobody stepped looks for the exit before it escalates.
// The cell's final status is decided here and nowhere else (CellEnd, in finish()).

#include <chrono>
#include <optional>
#include <string>

#include "ipc/frame.h"
#include "supervisor/cell_runner.h"

namespace sandbox_exec {

class CellRun {
 public:
  // Sends the request (waiting for ring space until the deadline). The runner must outlive
  // this object; one CellRun per runner at a time.
  CellRun(CellRunner& runner, const std::string& request, CellLimits limits, EventSink sink, Tick tick = {});
  CellRun(const CellRun&) = delete;
  CellRun& operator=(const CellRun&) = delete;

  // Does what can be done now, waiting at most `max_wait_ms` for the worker (0: never
  // blocks). Returns the outcome once the cell has ended; again on every later call.
  std::optional<CellOutcome> step(int max_wait_ms);

  // For a caller that waits itself: the descriptors that become readable when step() has
  // work (the event doorbell, once arm() returned true; the worker's pidfd).
  [[nodiscard]] std::pair<int, int> wait_fds() const noexcept;
  // Announces that the caller is about to wait on wait_fds(). False when there is work
  // already (step again now, without waiting).
  [[nodiscard]] bool arm();
  // Milliseconds until step() must run even if no descriptor became readable (a deadline,
  // a disk check, the slow-read pause); -1 when nothing is timed.
  [[nodiscard]] int next_timer_ms() const;
  [[nodiscard]] bool finished() const noexcept { return result_.has_value(); }

 private:
  using Clock = std::chrono::steady_clock;

  CellOutcome finish(CellEnd end, std::string reason = {});
  void flush();
  // True when the frame was the cell's end-of-cell report.
  bool accept(const FrameHeader& h, std::string& p);
  void accept_stream(uint16_t type, std::string& p);
  bool accept_message(uint16_t type, const std::string& message);
  void close_output();
  // Time-driven rules; each may end the cell.
  std::optional<CellOutcome> watch_disk();
  std::optional<CellOutcome> on_deadline();
  std::optional<CellOutcome> on_peer_exit();
  // Whether the launcher has exited (its pidfd is readable), without waiting.
  [[nodiscard]] bool peer_exited() const;
  std::optional<CellOutcome> on_protocol_violation(const ProtocolViolation& e);
  CellOutcome on_done();
  void drain_stale();

  CellRunner& runner_;
  CellLimits limits_;
  EventSink sink_;
  Tick tick_;
  CellOutcome out_;
  std::optional<CellOutcome> result_;
  Clock::time_point start_;
  Clock::time_point deadline_;
  bool has_deadline_;
  bool interrupted_ = false;
  // The per-cell figures' starting points (without cgroups: /proc of the worker).
  Usage usage_before_{};
  std::optional<double> cgroup_cpu_before_;
  EventBatch batch_;
  MessageAssembler assembler_;
  bool output_closed_ = false;
  uint64_t drained_since_pause_ = 0;
  Clock::time_point paused_until_{};
  bool armed_ = false;  // arm() announced a sleep: the next step withdraws it
  bool watching_disk_;
  Clock::time_point next_disk_check_;
  FrameHeader header_{};
  std::string payload_;
};

}  // namespace sandbox_exec
