// Doorbell: wakes the other side of a ring, a pipe used as a level-triggered signal.
//
// Why a pipe and not an eventfd or a process-shared futex/condition: the two ends of a pipe
// are separate open file descriptions, so a hostile worker cannot change the flags of the
// supervisor's end (an eventfd is one description: clearing O_NONBLOCK on it from the worker
// would make the supervisor's next write or drain block forever), and a worker that stops
// reading only fills its own pipe (writes here never block). The supervisor's end is
// pollable together with the session's pidfd, so a crash wakes it at once.
//
// Used with the ring's waiting flags (ring.h): the sleeper announces itself, re-checks the
// ring, then waits; the producer rings only when the flag is set, so a busy stream costs
// no system call per frame.
#pragma once

#include "common/unique_fd.h"

namespace sandbox_exec {

struct DoorbellPair;

class DoorbellSender {
 public:
  DoorbellSender() = default;
  explicit DoorbellSender(UniqueFd write_end) : fd_(std::move(write_end)) {}
  // Never blocks; a full pipe already means "awake".
  void ring() const noexcept;
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] UniqueFd take() noexcept { return std::move(fd_); }

 private:
  UniqueFd fd_;
};

class DoorbellReceiver {
 public:
  // kHangup: the writer closed its end (a worker may close any descriptor): the pipe stays
  // readable forever, so the caller must stop trusting it to sleep.
  enum class Wake { kRung, kOther, kTimeout, kInterrupted, kHangup };
  DoorbellReceiver() = default;
  explicit DoorbellReceiver(UniqueFd read_end) : fd_(std::move(read_end)) {}
  // Waits until rung, until `other_fd` (if >= 0) is readable, or `timeout_ms` passes
  // (-1: no timeout). kInterrupted when a signal arrived (EINTR) so the caller can handle it.
  [[nodiscard]] Wake wait(int timeout_ms, int other_fd = -1) const;
  // Empties the pipe (at most 64 KiB of it) so the next wait sleeps until the next ring.
  void drain() const noexcept;
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }
  [[nodiscard]] UniqueFd take() noexcept { return std::move(fd_); }

 private:
  UniqueFd fd_;
};

struct DoorbellPair {
  DoorbellSender sender;
  DoorbellReceiver receiver;
  static DoorbellPair create();  // both ends O_NONBLOCK|O_CLOEXEC
};

}  // namespace sandbox_exec
