#include "ipc/ring.h"

#include <algorithm>
#include <cstring>

namespace sandbox_exec {

namespace {
void check_geometry(uint64_t capacity) {
  if (!is_power_of_two(capacity) || capacity < 64)
    throw ProtocolViolation("ring capacity " + std::to_string(capacity) +
                            " is not a power of two of at least 64 bytes");
}

// A run of `length` bytes at free-running `position` in a ring of `capacity` bytes: the
// part up to the end of the data area, then the part that wrapped around to its start.
struct Wrapped {
  uint64_t offset;     // where the first part starts
  std::size_t first;   // bytes at [offset, offset + first)
  std::size_t second;  // bytes at [0, second)
};
Wrapped wrapped(uint64_t capacity, uint64_t position, std::size_t length) noexcept {
  const uint64_t offset = position & (capacity - 1);
  const std::size_t first = std::min<uint64_t>(length, capacity - offset);
  return {offset, first, length - first};
}
}  // namespace

RingWriter::RingWriter(RingControl* control, std::byte* data, uint64_t capacity)
    : control_(control), data_(data), capacity_(capacity) {
  check_geometry(capacity);
  max_payload_ = max_frame_payload(capacity);
  tail_ = control_->tail.load(std::memory_order_relaxed);
}

uint64_t RingWriter::free_bytes() const {
  const uint64_t head = control_->head.load(std::memory_order_acquire);
  const uint64_t used = tail_ - head;  // wraps to a huge number if head > tail
  if (used > capacity_)
    throw ProtocolViolation("consumer head " + std::to_string(head) + " is inconsistent with producer tail " +
                            std::to_string(tail_));
  return capacity_ - used;
}

bool RingWriter::try_write(uint16_t type, uint16_t flags, std::span<const std::byte> payload) {
  if (payload.size() > max_payload_)
    throw std::length_error("frame payload of " + std::to_string(payload.size()) +
                            " bytes exceeds the ring's frame limit");
  const uint64_t footprint = frame_footprint(payload.size());
  if (free_bytes() < footprint) return false;

  const uint64_t mask = capacity_ - 1;
  const FrameHeader header{static_cast<uint32_t>(payload.size()), type, flags};
  std::memcpy(data_ + (tail_ & mask), &header, sizeof header);  // never wraps: 8-aligned
  const Wrapped body = wrapped(capacity_, tail_ + sizeof header, payload.size());
  if (body.first) std::memcpy(data_ + body.offset, payload.data(), body.first);
  if (body.second) std::memcpy(data_, payload.data() + body.first, body.second);

  tail_ += footprint;
  control_->tail.store(tail_, std::memory_order_release);
  return true;
}

bool RingWriter::output_closed() const noexcept { return control_->output_closed.load(std::memory_order_relaxed) != 0; }

void RingReader::set_output_closed(bool closed) noexcept {
  control_->output_closed.store(closed ? 1 : 0, std::memory_order_relaxed);
}

// The doorbells' Dekker pairings ("I published, are you asleep?" against "I am going to
// sleep, is anything published?") are read-modify-writes of the one flag on both sides, not
// a fence beside a plain load: of two RMWs on one atomic, the later reads the earlier's
// write, so either the sleeper's RMW comes later and synchronizes with the publisher's (it
// then sees the new counter), or the publisher's comes later and sees the flag set (it then
// rings). A standalone fence gives the same on x86 but not in the C++ model unless the
// sleeper's side is fenced too, and ThreadSanitizer ignores fences (GCC's -Wtsan: the
// pairing would go unchecked). On x86 both are one locked instruction (GCC's fence is a
// `lock or` on the stack, the RMW a `lock xadd` on the flag): no difference measured
// (docs/reliability.md, "Sanitizers").
bool RingWriter::consumer_waiting() const noexcept {
  return control_->consumer_waiting.fetch_add(0, std::memory_order_seq_cst) != 0;
}

void RingWriter::set_waiting_for_space(bool waiting) noexcept {
  control_->producer_waiting.exchange(waiting ? 1 : 0, std::memory_order_seq_cst);
}

RingReader::RingReader(RingControl* control, std::byte* data, uint64_t capacity)
    : control_(control), data_(data), capacity_(capacity) {
  check_geometry(capacity);
  max_payload_ = max_frame_payload(capacity);
  head_ = control_->head.load(std::memory_order_relaxed);
}

uint64_t RingReader::published() const {
  const uint64_t tail = control_->tail.load(std::memory_order_acquire);
  const uint64_t available = tail - head_;
  if (available > capacity_ || available % kFrameAlign != 0)
    throw ProtocolViolation("producer tail " + std::to_string(tail) + " is inconsistent with consumer head " +
                            std::to_string(head_));
  return available;
}

bool RingReader::has_data() const { return published() != 0; }

void RingReader::copy_out(uint64_t position, void* out, std::size_t length) const {
  const Wrapped run = wrapped(capacity_, position, length);
  std::memcpy(out, data_ + run.offset, run.first);
  if (run.second) std::memcpy(static_cast<char*>(out) + run.first, data_, run.second);
}

bool RingReader::try_read(FrameHeader& header, std::string& payload) {
  const uint64_t available = published();
  if (available == 0) return false;
  copy_out(head_, &header, sizeof header);  // a copy: the producer may rewrite the region
  if (header.length > max_payload_)
    throw ProtocolViolation("frame length " + std::to_string(header.length) + " exceeds the frame limit " +
                            std::to_string(max_payload_));
  const uint64_t footprint = frame_footprint(header.length);
  if (footprint > available)
    throw ProtocolViolation("frame of " + std::to_string(footprint) + " bytes runs past the " +
                            std::to_string(available) + " published bytes");
  if ((header.flags & ~kKnownFlags) != 0)
    throw ProtocolViolation("frame has unknown flags " + std::to_string(header.flags));
  // assign/append instead of resize + copy: no zero-filling pass over a large payload.
  const Wrapped body = wrapped(capacity_, head_ + sizeof header, header.length);
  payload.assign(reinterpret_cast<const char*>(data_ + body.offset), body.first);
  if (body.second) payload.append(reinterpret_cast<const char*>(data_), body.second);
  head_ += footprint;
  control_->head.store(head_, std::memory_order_release);
  return true;
}

// The other side of the pairings above (RingWriter::consumer_waiting).
void RingReader::set_waiting(bool waiting) noexcept {
  control_->consumer_waiting.exchange(waiting ? 1 : 0, std::memory_order_seq_cst);
}

bool RingReader::producer_waiting() const noexcept {
  return control_->producer_waiting.fetch_add(0, std::memory_order_seq_cst) != 0;
}

}  // namespace sandbox_exec
