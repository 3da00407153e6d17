// A single-producer/single-consumer byte ring of frames (see frame.h) in shared memory.
//
// Layout: a RingControl block (free-running 64-bit head and tail counters on separate cache
// lines, plus the two "I am about to sleep" flags the doorbells use) and a power-of-two data
// area. Offsets and counters only, never pointers. Publication is release/acquire on tail
// (producer) and head (consumer).
//
// Both ends treat the other side's counter as hostile: each keeps its own counter privately
// and only *writes* it to shared memory, reads the peer's counter once per operation,
// checks it against the capacity it was given at construction (never re-read from the
// region), copies a frame out before looking at it, and throws ProtocolViolation on any
// inconsistency.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "ipc/frame.h"

namespace sandbox_exec {

struct alignas(64) RingControl {
  alignas(64) std::atomic<uint64_t> head;              // consumed bytes; written by the consumer
  alignas(64) std::atomic<uint64_t> tail;              // produced bytes; written by the producer
  alignas(64) std::atomic<uint32_t> consumer_waiting;  // consumer will sleep on its doorbell
  // The consumer drops whatever output comes now (the cell's output cap is reached): a
  // cooperative producer stops sending it. Advisory only: the consumer keeps its own state.
  std::atomic<uint32_t> output_closed;
  alignas(64) std::atomic<uint32_t> producer_waiting;  // producer waits for free space
};
static_assert(sizeof(RingControl) == 256);
static_assert(std::atomic<uint64_t>::is_always_lock_free);
static_assert(std::atomic<uint32_t>::is_always_lock_free);

[[nodiscard]] constexpr bool is_power_of_two(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// The largest payload one frame may carry in a ring of `capacity` bytes.
[[nodiscard]] constexpr uint32_t max_frame_payload(uint64_t capacity) {
  const uint64_t quarter = capacity / 4 - sizeof(FrameHeader);
  return static_cast<uint32_t>(quarter < (1u << 20) ? quarter : (1u << 20));
}

class RingWriter {
 public:
  // `control` and `data` point into the shared region; `capacity` is the writer's own copy.
  RingWriter(RingControl* control, std::byte* data, uint64_t capacity);

  // Appends one frame if it fits now; false if the ring lacks room (nothing written).
  // The payload must be at most max_payload() bytes.
  [[nodiscard]] bool try_write(uint16_t type, uint16_t flags, std::span<const std::byte> payload);
  // Free bytes now, after validating the consumer's head.
  [[nodiscard]] uint64_t free_bytes() const;
  [[nodiscard]] uint32_t max_payload() const noexcept { return max_payload_; }
  [[nodiscard]] uint64_t capacity() const noexcept { return capacity_; }
  // True when the consumer announced it is going to sleep (a seq_cst read-modify-write of
  // the flag, pairing with RingReader::set_waiting's; see ring.cc).
  [[nodiscard]] bool consumer_waiting() const noexcept;
  void set_waiting_for_space(bool waiting) noexcept;
  // The consumer's note that output would be dropped anyway (RingControl::output_closed).
  [[nodiscard]] bool output_closed() const noexcept;

 private:
  RingControl* control_;
  std::byte* data_;
  uint64_t capacity_;
  uint32_t max_payload_;
  uint64_t tail_ = 0;  // private copy; the shared one is only written
};

// Writes one whole message as frames (kFlagMore on all but the last). When the ring lacks
// room, calls wait_for_room(footprint_needed, first_frame_sent); returning false gives up
// (the message may then be cut short: the caller ends the session). Returns true when the
// whole message is in the ring.
template <typename WaitForRoom>
[[nodiscard]] bool write_message(RingWriter& ring, uint16_t type, std::string_view payload,
                                 WaitForRoom&& wait_for_room) {
  const std::size_t max = ring.max_payload();
  std::size_t offset = 0;
  bool started = false;
  do {
    const std::size_t chunk = std::min<std::size_t>(max, payload.size() - offset);
    const bool last = offset + chunk == payload.size();
    const auto* bytes = reinterpret_cast<const std::byte*>(payload.data() + offset);
    while (!ring.try_write(type, last ? 0 : kFlagMore, {bytes, chunk})) {
      if (!wait_for_room(frame_footprint(chunk), started)) return false;
    }
    started = true;
    offset += chunk;
  } while (offset < payload.size());
  return true;
}

class RingReader {
 public:
  RingReader(RingControl* control, std::byte* data, uint64_t capacity);

  // Copies the next frame into `header` and `payload`; false when the ring is empty.
  // Throws ProtocolViolation when the producer's counter or the frame is corrupt.
  [[nodiscard]] bool try_read(FrameHeader& header, std::string& payload);
  // True when at least one frame is published (validates like try_read).
  [[nodiscard]] bool has_data() const;
  [[nodiscard]] uint32_t max_payload() const noexcept { return max_payload_; }
  // Announces (or withdraws) that this consumer is about to sleep; a seq_cst exchange that
  // pairs with the producer's read-modify-write in consumer_waiting().
  void set_waiting(bool waiting) noexcept;
  [[nodiscard]] bool producer_waiting() const noexcept;
  void set_output_closed(bool closed) noexcept;

 private:
  [[nodiscard]] uint64_t published() const;
  void copy_out(uint64_t position, void* out, std::size_t length) const;
  RingControl* control_;
  std::byte* data_;
  uint64_t capacity_;
  uint32_t max_payload_;
  uint64_t head_ = 0;  // private copy; the shared one is only written
};

}  // namespace sandbox_exec
