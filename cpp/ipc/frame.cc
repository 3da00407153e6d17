#include "ipc/frame.h"

namespace sandbox_exec {

bool is_request_type(uint16_t type) noexcept {
  return type == static_cast<uint16_t>(FrameType::kExecute) || type == static_cast<uint16_t>(FrameType::kShutdown);
}

bool is_event_type(uint16_t type) noexcept {
  return type >= static_cast<uint16_t>(FrameType::kReady) && type <= static_cast<uint16_t>(FrameType::kCellDone);
}

bool is_stream_type(uint16_t type) noexcept {
  return type == static_cast<uint16_t>(FrameType::kStdout) || type == static_cast<uint16_t>(FrameType::kStderr);
}

MessageAssembler::Result MessageAssembler::feed(const FrameHeader& header, const char* payload, std::size_t length) {
  if (in_progress_ && header.type != type_)
    throw ProtocolViolation("message continuation changed type from " + std::to_string(type_) + " to " +
                            std::to_string(header.type));
  if (!in_progress_) {
    buffer_.clear();
    type_ = header.type;
    in_progress_ = true;
    discarding_ = false;
    dropped_ = 0;
  }
  const bool last = (header.flags & kFlagMore) == 0;
  if (!discarding_ && buffer_.size() + length > cap_) {
    discarding_ = true;
    dropped_ = buffer_.size();
    buffer_.clear();
    buffer_.shrink_to_fit();
  }
  if (discarding_) {
    dropped_ += length;
  } else {
    buffer_.append(payload, length);
  }
  if (!last) return Result::kIncomplete;
  in_progress_ = false;
  return discarding_ ? Result::kTooLarge : Result::kComplete;
}

}  // namespace sandbox_exec
