// The frame codec: what travels through the rings.
//
// A frame is an 8-byte header {u32 length, u16 type, u16 flags} followed by `length` payload
// bytes, padded to a multiple of 8 so a header never straddles the ring's wrap-around.
// A message larger than one frame is split into frames flagged kMore; MessageAssembler
// joins them, with a hard cap, on the receiving side.
//
// Payloads: kStdout/kStderr carry UTF-8 text; kExecute, kReady, kMessage and kCellDone
// carry one JSON object (parsed by the Python layer with the json module: never pickle,
// never eval). The C++ side only routes by type and counts bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "common/sys_error.h"

namespace sandbox_exec {

struct FrameHeader {
  uint32_t length;
  uint16_t type;
  uint16_t flags;
};
static_assert(sizeof(FrameHeader) == 8);

inline constexpr std::size_t kFrameAlign = 8;

// Bytes one frame with a `payload`-byte body occupies in a ring.
constexpr uint64_t frame_footprint(uint64_t payload) {
  return (sizeof(FrameHeader) + payload + kFrameAlign - 1) & ~uint64_t{kFrameAlign - 1};
}

enum class FrameType : uint16_t {
  // Requests: supervisor -> worker.
  kExecute = 1,   // {"code", "execution_count"}
  kShutdown = 2,  // empty
  // Events: worker -> supervisor.
  kReady = 16,     // {"pid", "python"}
  kStdout = 17,    // text
  kStderr = 18,    // text
  kMessage = 19,   // one Jupyter-shaped output message
  kCellDone = 20,  // {"status", "execution_count", ...}
};

enum FrameFlags : uint16_t {
  kFlagMore = 1,  // the message continues in the next frame
};
inline constexpr uint16_t kKnownFlags = kFlagMore;

[[nodiscard]] bool is_request_type(uint16_t type) noexcept;
[[nodiscard]] bool is_event_type(uint16_t type) noexcept;
[[nodiscard]] bool is_stream_type(uint16_t type) noexcept;

// Joins kMore-continued frames into whole messages, refusing to hold more than `cap` bytes.
class MessageAssembler {
 public:
  enum class Result { kIncomplete, kComplete, kTooLarge };
  explicit MessageAssembler(std::size_t cap) : cap_(cap) {}

  // Feeds one frame. kComplete: message() holds the whole payload (valid until the next
  // feed). kTooLarge: the message passed the cap; it is being discarded up to its last
  // frame and dropped_bytes() tells how much. Throws ProtocolViolation when a continuation
  // changes type mid-message.
  Result feed(const FrameHeader& header, const char* payload, std::size_t length);

  [[nodiscard]] const std::string& message() const noexcept { return buffer_; }
  [[nodiscard]] uint16_t type() const noexcept { return type_; }
  [[nodiscard]] uint64_t dropped_bytes() const noexcept { return dropped_; }
  [[nodiscard]] bool in_progress() const noexcept { return in_progress_; }

 private:
  std::size_t cap_;
  std::string buffer_;
  uint16_t type_ = 0;
  bool in_progress_ = false;
  bool discarding_ = false;
  uint64_t dropped_ = 0;
};

}  // namespace sandbox_exec
