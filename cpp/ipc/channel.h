// Channel: one session's shared-memory region (header + request ring + event ring) and the
// three doorbells, seen from either end.
//
//   offset 0     RegionHeader   magic, version, capacities, offsets (written once by the
//                               supervisor; the worker reads it once at attach)
//   offset 256   RingControl    request ring (supervisor -> worker)
//   offset 512   RingControl    event ring   (worker -> supervisor)
//   offset 4096  request data, then event data (power-of-two capacities)
//
// The supervisor never reads the header back: it keeps the geometry it chose. The worker
// validates the header before trusting any of it.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "ipc/doorbell.h"
#include "ipc/frame.h"
#include "ipc/ring.h"
#include "ipc/shared_region.h"

namespace sandbox_exec {

inline constexpr uint64_t kRegionMagic = 0x3143455845424453ULL;  // "SDBEXEC1"
inline constexpr uint32_t kProtocolVersion = 1;

struct RegionHeader {
  uint64_t magic;
  uint32_t version;
  uint32_t header_bytes;
  uint64_t request_capacity;
  uint64_t event_capacity;
  uint64_t request_offset;
  uint64_t event_offset;
};

struct ChannelGeometry {
  uint64_t request_capacity = 1u << 20;
  uint64_t event_capacity = 4u << 20;
};

// The descriptors the worker inherits, in the order the launcher passes them on.
struct WorkerFds {
  int region, request_bell, event_bell, space_bell;
};

class SupervisorChannel {
 public:
  enum class Wait { kFrame, kTimeout, kPeerExited };

  explicit SupervisorChannel(ChannelGeometry geometry = {});

  // Sends one whole message, split into frames as needed. Waits for room while the worker
  // drains, until `deadline`; false if the deadline passed first. Throws ProtocolViolation
  // if the worker corrupted the request ring's head.
  [[nodiscard]] bool send(FrameType type, std::string_view payload, std::chrono::steady_clock::time_point deadline,
                          int peer_fd);
  // Next event frame, waiting up to `timeout_ms` or until `peer_fd` (a pidfd) is readable.
  [[nodiscard]] Wait next_frame(FrameHeader& header, std::string& payload, int timeout_ms, int peer_fd);
  // Non-blocking: a frame if one is published (used to drain after the worker exits).
  [[nodiscard]] bool poll_frame(FrameHeader& header, std::string& payload);

  // For a caller that waits itself (an event loop, through CellRun): arm_wait() announces
  // the sleep and re-checks the ring (false: a frame is there already, read it first); then
  // wait for bell_fd() to become readable. While the worker's doorbell is not trusted (it
  // closed its end, or rang without sending) bell_fd() is -1 and the caller looks again
  // after poll_pause_ms() instead, as next_frame() does.
  [[nodiscard]] bool arm_wait();
  // Withdraws the announcement and empties the doorbell, once the caller woke.
  void disarm_wait() noexcept;
  [[nodiscard]] int bell_fd() const noexcept;
  [[nodiscard]] int poll_pause_ms() const noexcept;

  // Tells the worker that output is dropped from now on (the cell's output cap is reached)
  // or accepted again (a new cell). Advisory: a worker that ignores it is read slowly.
  void set_output_closed(bool closed) noexcept { events_.set_output_closed(closed); }

  // The descriptors to hand to the worker (owned by this channel until spawn closes them).
  [[nodiscard]] WorkerFds worker_fds() const noexcept;
  // After the spawn: the worker holds its ends now; close ours.
  void release_worker_ends() noexcept;
  [[nodiscard]] const ChannelGeometry& geometry() const noexcept { return geometry_; }

 private:
  ChannelGeometry geometry_;
  SharedRegion region_;
  RingWriter requests_;
  RingReader events_;
  DoorbellPair request_bell_, event_bell_, space_bell_;
  // Wakes of the event doorbell that found no frame, in a row. A worker that rings without
  // sending must not cost the backend a CPU: past a few, the supervisor stops trusting the
  // doorbell and sleeps a growing pause (capped) before it looks again; a real frame resets it.
  int spurious_wakes_ = 0;
  bool bell_hung_up_ = false;  // the worker closed its doorbell: the pipe reads ready forever
};

class WorkerChannel {
 public:
  // Maps the inherited region and checks its header; throws SandboxError on a bad header.
  explicit WorkerChannel(WorkerFds fds);

  // Sends one whole message, waiting for room as long as it takes. `check_signal` is called
  // when a wait is interrupted by a signal before the first frame of the message went out
  // (so a KeyboardInterrupt can surface in a print()); once a message has started it is
  // always finished, so the supervisor never sees half a message.
  template <typename CheckSignal>
  void send(FrameType type, std::string_view payload, CheckSignal&& check_signal);
  // Next request frame: true with a frame, false on timeout or EINTR (caller checks signals).
  [[nodiscard]] bool receive(FrameHeader& header, std::string& payload, int timeout_ms);
  // Output bytes not sent because the supervisor closed output (the cell's cap is reached),
  // since the last call; the worker reports them with the cell's end.
  [[nodiscard]] uint64_t take_dropped() noexcept { return std::exchange(dropped_, 0); }

 private:
  void wait_for_space(uint64_t needed, bool may_check_signal, auto&& check_signal);
  SharedRegion region_;
  RingReader requests_;
  RingWriter events_;
  DoorbellReceiver request_bell_;
  DoorbellSender event_bell_;
  DoorbellReceiver space_bell_;
  uint64_t dropped_ = 0;
};

// ---- template implementation -------------------------------------------------------------

void WorkerChannel::wait_for_space(uint64_t needed, bool may_check_signal, auto&& check_signal) {
  events_.set_waiting_for_space(true);
  // Re-check after announcing: the supervisor may have drained (and skipped the space
  // bell) between our failed write and the flag.
  if (events_.free_bytes() >= needed) {
    events_.set_waiting_for_space(false);
    return;
  }
  if (event_bell_.fd() >= 0) event_bell_.ring();  // make sure the supervisor is draining
  const auto wake = space_bell_.wait(100);
  events_.set_waiting_for_space(false);
  space_bell_.drain();
  if (wake == DoorbellReceiver::Wake::kInterrupted && may_check_signal) check_signal();
}

template <typename CheckSignal>
void WorkerChannel::send(FrameType type, std::string_view payload, CheckSignal&& check_signal) {
  // Output the supervisor would drop anyway is not sent: a flood past the cell's cap then
  // costs neither side a copy (the end-of-cell report always goes).
  if ((type == FrameType::kStdout || type == FrameType::kStderr || type == FrameType::kMessage) &&
      events_.output_closed()) {
    dropped_ += payload.size();
    return;
  }
  // The worker waits as long as it takes: the supervisor drains, or the session ends.
  (void)write_message(events_, static_cast<uint16_t>(type), payload, [&](uint64_t needed, bool started) {
    wait_for_space(needed, !started, check_signal);
    return true;
  });
  if (events_.consumer_waiting()) event_bell_.ring();
}

}  // namespace sandbox_exec
