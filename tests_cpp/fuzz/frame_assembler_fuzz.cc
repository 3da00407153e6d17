// Fuzz target: MessageAssembler (cpp/ipc/frame.h), fed the frame sequence of a hostile worker.
//
// The input chooses the assembler's cap (0 to 64 KiB) and then a run of frames: type, flags
// (any 16 bits, kFlagMore or not) and a payload of any length. A model kept here (the
// message's type, its bytes so far, whether it is past the cap) predicts every answer, and
// the target aborts when the assembler disagrees:
//   * it never holds more than its cap (message() at most `cap` bytes at every step), and
//     its buffer's allocation stays within the string's doubling of that cap;
//   * kIncomplete exactly for a frame flagged kFlagMore; kComplete only for a message of at
//     most `cap` bytes, holding exactly the concatenated payloads, with the first frame's
//     type; kTooLarge only past the cap, with dropped_bytes() the whole message's length;
//   * ProtocolViolation exactly when a continuation changes type (then the session ends,
//     so does this run), and no other exception ever.
// frame_footprint() is checked on the way: 8-aligned, the header and payload fit, at most
// 7 bytes of padding.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "common/sys_error.h"
#include "fuzz_check.h"
#include "ipc/frame.h"

using sandbox_exec::FrameHeader;
using sandbox_exec::MessageAssembler;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const std::size_t cap = in.ConsumeIntegralInRange<std::size_t>(0, 1 << 16);
  MessageAssembler assembler(cap);

  // The model.
  bool in_progress = false;
  uint16_t type = 0;
  std::string expected;  // the message's bytes so far (all of them, also past the cap)

  while (in.remaining_bytes() > 0) {
    FrameHeader header{};
    header.type = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint16_t>(16, 20) : in.ConsumeIntegral<uint16_t>();
    header.flags = in.ConsumeIntegral<uint16_t>();
    // Mostly short payloads, some long enough to pass a small cap in one frame.
    const std::size_t length = in.ConsumeBool() ? in.ConsumeIntegralInRange<std::size_t>(0, 64)
                                                : in.ConsumeIntegralInRange<std::size_t>(0, 1 << 14);
    std::string payload = in.ConsumeBytesAsString(length);
    header.length = static_cast<uint32_t>(payload.size());

    const uint64_t footprint = sandbox_exec::frame_footprint(header.length);
    FUZZ_CHECK(footprint % sandbox_exec::kFrameAlign == 0, "a frame's footprint is 8-aligned");
    FUZZ_CHECK(footprint >= sizeof(FrameHeader) + header.length, "the footprint holds header and payload");
    FUZZ_CHECK(footprint < sizeof(FrameHeader) + header.length + sandbox_exec::kFrameAlign, "at most 7 pad bytes");

    const bool type_changes = in_progress && header.type != type;
    MessageAssembler::Result result{};
    try {
      result = assembler.feed(header, payload.data(), payload.size());
    } catch (const sandbox_exec::ProtocolViolation&) {
      FUZZ_CHECK(type_changes, "ProtocolViolation only for a continuation of another type");
      return 0;  // the supervisor ends the session here
    }
    FUZZ_CHECK(!type_changes, "a continuation of another type is refused");
    if (!in_progress) {
      expected.clear();
      type = header.type;
    }
    expected += payload;
    const bool last = (header.flags & sandbox_exec::kFlagMore) == 0;
    in_progress = !last;

    FUZZ_CHECK(assembler.message().size() <= cap, "the assembler never holds more than its cap");
    // std::string grows by doubling: an allocation past twice the cap is a buffer kept too long.
    FUZZ_CHECK(assembler.message().capacity() <= 2 * cap + 15, "the buffer's allocation stays near the cap");
    FUZZ_CHECK(assembler.in_progress() == in_progress, "in_progress() follows kFlagMore");
    FUZZ_CHECK(assembler.type() == type, "type() is the first frame's type");
    switch (result) {
      case MessageAssembler::Result::kIncomplete:
        FUZZ_CHECK(!last, "kIncomplete only for a frame flagged kFlagMore");
        break;
      case MessageAssembler::Result::kComplete:
        FUZZ_CHECK(last, "kComplete only at a message's last frame");
        FUZZ_CHECK(expected.size() <= cap, "kComplete only within the cap");
        FUZZ_CHECK(assembler.message() == expected, "a complete message is its frames' payloads in order");
        break;
      case MessageAssembler::Result::kTooLarge:
        FUZZ_CHECK(last, "kTooLarge only at a message's last frame");
        FUZZ_CHECK(expected.size() > cap, "kTooLarge only past the cap");
        FUZZ_CHECK(assembler.dropped_bytes() == expected.size(), "dropped_bytes() is the whole message");
        break;
    }
  }
  return 0;
}
