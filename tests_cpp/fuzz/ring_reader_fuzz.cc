// Fuzz target: RingReader (cpp/ipc/ring.h), the supervisor's reader of the event ring, driven
// by a hostile producer (the worker, which can write the whole shared region at any time).
//
// The ring's data area is its own heap block of exactly `capacity` bytes (64 B to 4 KiB,
// chosen by the input), so AddressSanitizer catches any read outside the ring. The input
// is a script of producer moves between the reader's calls:
//   * a frame at the producer's own tail: any type, any flags, a header length that is the
//     payload's or any other number, published at once or not (a torn write: the header
//     and body are there, the counter is not yet; or the counter first, the body later);
//   * publishing the producer's tail; setting the shared tail anywhere (backwards, past the
//     capacity, unaligned, across the 64-bit wrap-around; the counters start anywhere too);
//   * overwriting any bytes of the data area (a frame rewritten after it was published);
//   * scribbling the shared head (the reader's own counter, which it must never read back);
// and reader calls: try_read(), has_data(), and a drain loop while try_read() is true.
// A model here predicts each call from the same memory and the reader's last head: empty,
// ProtocolViolation (tail more than `capacity` ahead or unaligned; length over the frame
// limit; frame past the published bytes; unknown flags), or a frame with exactly the model's
// header and payload bytes, the head then advanced by its footprint and stored. The target
// aborts on any disagreement, on any other exception, and on a drain loop that takes more
// than capacity/8 frames without the producer moving (it must end on any counter values).
// After a ProtocolViolation the supervisor ends the session: so does the run.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "common/sys_error.h"
#include "fuzz_check.h"
#include "ipc/frame.h"
#include "ipc/ring.h"

namespace {

using sandbox_exec::FrameHeader;
using sandbox_exec::RingControl;
using sandbox_exec::RingReader;

class Harness {
 public:
  Harness(uint64_t capacity, uint64_t start)
      : capacity_(capacity), data_(new std::byte[capacity]), control_(new RingControl{}) {
    std::memset(data_.get(), 0, capacity);
    control_->head.store(start);
    control_->tail.store(start);
    head_ = start;
    producer_tail_ = start;
    reader_ = std::make_unique<RingReader>(control_.get(), data_.get(), capacity);
  }

  // The producer's moves.
  void write_bytes(uint64_t position, const std::string& bytes) {
    for (std::size_t i = 0; i < bytes.size(); ++i)
      data_[(position + i) & (capacity_ - 1)] = static_cast<std::byte>(bytes[i]);
  }
  void write_frame(const FrameHeader& header, const std::string& payload, bool publish) {
    std::string bytes(sizeof header, '\0');
    std::memcpy(bytes.data(), &header, sizeof header);
    bytes += payload;
    write_bytes(producer_tail_, bytes);
    producer_tail_ += sandbox_exec::frame_footprint(payload.size());
    if (publish) publish_tail();
  }
  void publish_tail() { control_->tail.store(producer_tail_); }
  void set_tail(uint64_t tail) {
    control_->tail.store(tail);
    producer_tail_ = tail;
  }
  void scribble_head(uint64_t head) { control_->head.store(head); }
  [[nodiscard]] uint64_t head() const { return head_; }
  [[nodiscard]] uint64_t capacity() const { return capacity_; }

  // One try_read() against the model. Returns false when the session would end (a
  // violation) or the ring was empty (`*empty` says which).
  bool read_one(bool* empty) {
    *empty = false;
    // The model's prediction, from the same memory the reader sees.
    const uint64_t tail = control_->tail.load();
    const uint64_t available = tail - head_;
    bool violation = available > capacity_ || available % sandbox_exec::kFrameAlign != 0;
    FrameHeader expected_header{};
    std::string expected_payload;
    if (!violation && available != 0) {
      std::string raw = read_bytes(head_, sizeof expected_header);
      std::memcpy(&expected_header, raw.data(), sizeof expected_header);
      violation = expected_header.length > reader_->max_payload() ||
                  sandbox_exec::frame_footprint(expected_header.length) > available ||
                  (expected_header.flags & ~sandbox_exec::kKnownFlags) != 0;
      if (!violation) expected_payload = read_bytes(head_ + sizeof expected_header, expected_header.length);
    }

    FrameHeader header{};
    std::string payload = "stale";
    bool got = false;
    try {
      got = reader_->try_read(header, payload);
    } catch (const sandbox_exec::ProtocolViolation&) {
      FUZZ_CHECK(violation, "ProtocolViolation only for a corrupt counter or frame");
      return false;
    }
    FUZZ_CHECK(!violation, "a corrupt counter or frame is refused");
    if (!got) {
      FUZZ_CHECK(available == 0, "try_read() is false only when nothing is published");
      FUZZ_CHECK(control_->head.load() == head_ || scribbled_, "an empty read leaves the head alone");
      *empty = true;
      return false;
    }
    FUZZ_CHECK(available != 0, "a frame only when something is published");
    FUZZ_CHECK(header.length == expected_header.length && header.type == expected_header.type &&
                   header.flags == expected_header.flags,
               "the frame's header is the one at the head");
    FUZZ_CHECK(payload.size() == header.length, "the payload is as long as the header says");
    FUZZ_CHECK(payload == expected_payload, "the payload is the bytes after the header, wrapped around");
    head_ += sandbox_exec::frame_footprint(header.length);
    FUZZ_CHECK(control_->head.load() == head_, "the head advances by the frame's footprint and is stored");
    FUZZ_CHECK(tail - head_ <= capacity_, "the head never passes the published tail");
    scribbled_ = false;
    return true;
  }

  // has_data() against the model; false when the session would end.
  bool check_has_data() {
    const uint64_t available = control_->tail.load() - head_;
    const bool violation = available > capacity_ || available % sandbox_exec::kFrameAlign != 0;
    bool has = false;
    try {
      has = reader_->has_data();
    } catch (const sandbox_exec::ProtocolViolation&) {
      FUZZ_CHECK(violation, "has_data() refuses only a corrupt tail");
      return false;
    }
    FUZZ_CHECK(!violation, "has_data() refuses a corrupt tail");
    FUZZ_CHECK(has == (available != 0), "has_data() tells whether a frame is published");
    return true;
  }

  void note_scribble() { scribbled_ = true; }

 private:
  [[nodiscard]] std::string read_bytes(uint64_t position, std::size_t length) const {
    std::string out(length, '\0');
    for (std::size_t i = 0; i < length; ++i) out[i] = static_cast<char>(data_[(position + i) & (capacity_ - 1)]);
    return out;
  }

  uint64_t capacity_;
  std::unique_ptr<std::byte[]> data_;
  std::unique_ptr<RingControl> control_;
  std::unique_ptr<RingReader> reader_;
  uint64_t head_;           // the model's head: where the reader must read next
  uint64_t producer_tail_;  // where the producer writes its next frame
  bool scribbled_ = false;  // the producer wrote the shared head since the last frame
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const uint64_t capacity = uint64_t{64} << in.ConsumeIntegralInRange<int>(0, 6);
  // Counters start at 0 in a session; anywhere else (near 2^64, unaligned) reaches the
  // wrap-around of the free-running counters and the data area's end within a few frames.
  uint64_t start = 0;
  switch (in.ConsumeIntegralInRange<int>(0, 3)) {
    case 1:
      start = in.ConsumeIntegral<uint64_t>();
      break;
    case 2:
      start = ~uint64_t{0} - in.ConsumeIntegralInRange<uint64_t>(0, 2 * capacity);
      break;
    case 3:
      start = in.ConsumeIntegral<uint64_t>() & ~uint64_t{7};
      break;
    default:
      break;
  }
  Harness ring(capacity, start);
  const uint32_t max_payload = sandbox_exec::max_frame_payload(capacity);

  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 8)) {
      case 0:
      case 1: {  // a frame at the producer's tail, published or torn
        FrameHeader header{};
        header.type = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint16_t>(16, 20) : in.ConsumeIntegral<uint16_t>();
        header.flags = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint16_t>(0, 1) : in.ConsumeIntegral<uint16_t>();
        const std::string payload = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, max_payload + 8));
        switch (in.ConsumeIntegralInRange<int>(0, 3)) {
          case 0:
            header.length = in.ConsumeIntegral<uint32_t>();
            break;
          case 1:
            header.length = static_cast<uint32_t>(payload.size()) + in.ConsumeIntegralInRange<uint32_t>(0, 16);
            break;
          default:
            header.length = static_cast<uint32_t>(payload.size());
            break;
        }
        ring.write_frame(header, payload, in.ConsumeBool());
        break;
      }
      case 2:
        ring.publish_tail();
        break;
      case 3: {  // the shared tail anywhere: near the head either way, or any value
        const uint64_t tail = in.ConsumeBool() ? ring.head() + in.ConsumeIntegralInRange<int64_t>(
                                                                   -2 * int64_t(capacity), 2 * int64_t(capacity))
                                               : in.ConsumeIntegral<uint64_t>();
        ring.set_tail(tail);
        break;
      }
      case 4: {  // a torn or later rewrite of bytes anywhere in the data area
        const uint64_t at = in.ConsumeIntegral<uint64_t>();
        ring.write_bytes(at, in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, 16)));
        break;
      }
      case 5:
        ring.scribble_head(in.ConsumeIntegral<uint64_t>());
        ring.note_scribble();
        break;
      case 6: {
        bool empty = false;
        if (!ring.read_one(&empty) && !empty) return 0;
        break;
      }
      case 7:
        if (!ring.check_has_data()) return 0;
        break;
      case 8: {  // the supervisor's drain: read while there is a frame
        uint64_t frames = 0;
        bool empty = false;
        while (ring.read_one(&empty)) {
          ++frames;
          FUZZ_CHECK(frames <= ring.capacity() / sandbox_exec::kFrameAlign, "a drain ends without the producer");
        }
        if (!empty) return 0;
        break;
      }
      default:
        break;
    }
  }
  return 0;
}
