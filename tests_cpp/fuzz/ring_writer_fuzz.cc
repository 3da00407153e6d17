// Fuzz target: RingWriter (cpp/ipc/ring.h), the supervisor's writer of the request ring,
// against a hostile consumer (the worker, which can write the ring's shared head at will).
//
// The data area is its own heap block of exactly `capacity` bytes (64 B to 4 KiB), so
// AddressSanitizer catches any write outside the ring. The input is a script: the worker
// sets the shared head (an honest advance to a frame boundary, anywhere near the tail
// either way, or any 64-bit value), the supervisor calls free_bytes() or try_write() with
// a payload of any length up to one past the frame limit. A model predicts each answer from
// the writer's tail and the head it will read: ProtocolViolation when the head is more than
// `capacity` behind or ahead of the tail; std::length_error for a payload over
// max_payload(); false when the frame does not fit (nothing written at all); else the frame
// at the old tail (header, payload, wrapped around) and the tail advanced by its footprint
// and stored. Every byte of the data area outside the frame's footprint must be unchanged.
// The target aborts on any disagreement and on any other exception; after a
// ProtocolViolation the session ends, and so does the run.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>

#include "common/sys_error.h"
#include "fuzz_check.h"
#include "ipc/frame.h"
#include "ipc/ring.h"

using sandbox_exec::FrameHeader;
using sandbox_exec::RingControl;
using sandbox_exec::RingWriter;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const uint64_t capacity = uint64_t{64} << in.ConsumeIntegralInRange<int>(0, 6);
  const uint64_t mask = capacity - 1;
  const uint64_t start = in.ConsumeBool() ? 0 : in.ConsumeIntegral<uint64_t>() & ~uint64_t{7};
  std::unique_ptr<std::byte[]> ring(new std::byte[capacity]);
  std::memset(ring.get(), 0x5A, capacity);
  auto control = std::make_unique<RingControl>();
  control->head.store(start);
  control->tail.store(start);
  RingWriter writer(control.get(), ring.get(), capacity);
  uint64_t tail = start;  // the model's tail
  std::string before(capacity, '\0');

  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 3)) {
      case 0: {  // the worker moves the shared head
        const uint64_t head = control->head.load();
        switch (in.ConsumeIntegralInRange<int>(0, 2)) {
          case 0:  // an honest consumer: forward to the tail at most, 8-aligned
            control->head.store(head + (in.ConsumeIntegralInRange<uint64_t>(0, tail - head) & ~uint64_t{7}));
            break;
          case 1:
            control->head.store(tail +
                                in.ConsumeIntegralInRange<int64_t>(-2 * int64_t(capacity), 2 * int64_t(capacity)));
            break;
          default:
            control->head.store(in.ConsumeIntegral<uint64_t>());
            break;
        }
        break;
      }
      case 1: {
        const uint64_t used = tail - control->head.load();
        try {
          const uint64_t free = writer.free_bytes();
          FUZZ_CHECK(used <= capacity, "free_bytes() refuses a head inconsistent with the tail");
          FUZZ_CHECK(free == capacity - used, "free_bytes() is the capacity less what is unread");
        } catch (const sandbox_exec::ProtocolViolation&) {
          FUZZ_CHECK(used > capacity, "free_bytes() refuses only an inconsistent head");
          return 0;
        }
        break;
      }
      default: {
        const uint16_t type = in.ConsumeIntegral<uint16_t>();
        const uint16_t flags = in.ConsumeIntegralInRange<uint16_t>(0, 1);
        const std::string payload =
            in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, writer.max_payload() + 1));
        const uint64_t used = tail - control->head.load();
        const uint64_t footprint = sandbox_exec::frame_footprint(payload.size());
        std::memcpy(before.data(), ring.get(), capacity);
        bool written = false;
        try {
          written = writer.try_write(type, flags, std::as_bytes(std::span(payload.data(), payload.size())));
        } catch (const std::length_error&) {
          FUZZ_CHECK(payload.size() > writer.max_payload(), "length_error only past the frame limit");
          FUZZ_CHECK(std::memcmp(before.data(), ring.get(), capacity) == 0, "a refused frame writes nothing");
          break;
        } catch (const sandbox_exec::ProtocolViolation&) {
          FUZZ_CHECK(payload.size() <= writer.max_payload() && used > capacity,
                     "try_write() refuses only an inconsistent head");
          return 0;
        }
        FUZZ_CHECK(payload.size() <= writer.max_payload(), "a payload past the frame limit is refused");
        FUZZ_CHECK(used <= capacity, "try_write() refuses an inconsistent head");
        FUZZ_CHECK(written == (footprint <= capacity - used), "a frame is written exactly when it fits");
        if (!written) {
          FUZZ_CHECK(std::memcmp(before.data(), ring.get(), capacity) == 0, "a frame that does not fit writes nothing");
          FUZZ_CHECK(control->tail.load() == tail, "a frame that does not fit leaves the tail");
          break;
        }
        std::string after(capacity, '\0');
        std::memcpy(after.data(), ring.get(), capacity);
        FrameHeader header{};
        std::string frame(footprint, '\0');
        for (uint64_t i = 0; i < footprint; ++i) frame[i] = after[(tail + i) & mask];
        std::memcpy(&header, frame.data(), sizeof header);
        FUZZ_CHECK(header.length == payload.size() && header.type == type && header.flags == flags,
                   "the header says what was written");
        FUZZ_CHECK(frame.compare(sizeof header, payload.size(), payload) == 0, "the payload follows its header");
        for (uint64_t i = 0; i < capacity; ++i) {
          if (((i - tail) & mask) < footprint) continue;  // inside the frame's footprint
          FUZZ_CHECK(after[i] == before[i], "nothing outside the frame's footprint changes");
        }
        tail += footprint;
        FUZZ_CHECK(control->tail.load() == tail, "the tail advances by the footprint and is stored");
        break;
      }
    }
  }
  return 0;
}
