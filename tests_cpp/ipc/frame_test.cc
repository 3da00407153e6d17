// Tests of the frame codec (frame.h): frame_footprint, the frame-type predicates, and
// MessageAssembler (multi-frame join, the cap -> kTooLarge with dropped_bytes, a type change
// mid-message -> ProtocolViolation, reuse after a completed or discarded message).
#include "ipc/frame.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace sandbox_exec {
namespace {

constexpr uint16_t kStdout = static_cast<uint16_t>(FrameType::kStdout);
constexpr uint16_t kMessage = static_cast<uint16_t>(FrameType::kMessage);
constexpr uint16_t kCellDone = static_cast<uint16_t>(FrameType::kCellDone);

MessageAssembler::Result feed(MessageAssembler& a, uint16_t type, bool more, const std::string& payload) {
  const FrameHeader h{static_cast<uint32_t>(payload.size()), type, static_cast<uint16_t>(more ? kFlagMore : 0)};
  return a.feed(h, payload.data(), payload.size());
}

TEST(FrameFootprint, HeaderPlusPayloadRoundedUpToEight) {
  EXPECT_EQ(frame_footprint(0), 8u);
  EXPECT_EQ(frame_footprint(1), 16u);
  EXPECT_EQ(frame_footprint(7), 16u);
  EXPECT_EQ(frame_footprint(8), 16u);
  EXPECT_EQ(frame_footprint(9), 24u);
  EXPECT_EQ(frame_footprint(1016), 1024u);
  EXPECT_EQ(frame_footprint(1017), 1032u);
  for (uint64_t n = 0; n < 200; ++n) {
    const uint64_t f = frame_footprint(n);
    EXPECT_EQ(f % kFrameAlign, 0u) << n;
    EXPECT_GE(f, sizeof(FrameHeader) + n) << n;
    EXPECT_LT(f, sizeof(FrameHeader) + n + kFrameAlign) << n;
  }
  static_assert(frame_footprint(16) == 24);  // usable in constant expressions
}

TEST(FrameTypes, RequestEventAndStreamPredicates) {
  EXPECT_TRUE(is_request_type(static_cast<uint16_t>(FrameType::kExecute)));
  EXPECT_TRUE(is_request_type(static_cast<uint16_t>(FrameType::kShutdown)));
  for (auto t :
       {FrameType::kReady, FrameType::kStdout, FrameType::kStderr, FrameType::kMessage, FrameType::kCellDone}) {
    const auto v = static_cast<uint16_t>(t);
    EXPECT_FALSE(is_request_type(v)) << v;
    EXPECT_TRUE(is_event_type(v)) << v;
  }
  EXPECT_FALSE(is_event_type(static_cast<uint16_t>(FrameType::kExecute)));
  EXPECT_FALSE(is_event_type(static_cast<uint16_t>(FrameType::kShutdown)));

  EXPECT_TRUE(is_stream_type(static_cast<uint16_t>(FrameType::kStdout)));
  EXPECT_TRUE(is_stream_type(static_cast<uint16_t>(FrameType::kStderr)));
  EXPECT_FALSE(is_stream_type(static_cast<uint16_t>(FrameType::kMessage)));
  EXPECT_FALSE(is_stream_type(static_cast<uint16_t>(FrameType::kReady)));
  EXPECT_FALSE(is_stream_type(static_cast<uint16_t>(FrameType::kCellDone)));

  // Numbers outside the protocol are none of these.
  for (uint16_t v : {uint16_t{0}, uint16_t{3}, uint16_t{15}, uint16_t{21}, uint16_t{0xFFFF}}) {
    EXPECT_FALSE(is_request_type(v)) << v;
    EXPECT_FALSE(is_event_type(v)) << v;
    EXPECT_FALSE(is_stream_type(v)) << v;
  }
}

TEST(MessageAssembler, SingleFrameMessageIsCompleteAtOnce) {
  MessageAssembler a(1024);
  EXPECT_FALSE(a.in_progress());
  EXPECT_EQ(feed(a, kMessage, false, "{\"a\":1}"), MessageAssembler::Result::kComplete);
  EXPECT_EQ(a.message(), "{\"a\":1}");
  EXPECT_EQ(a.type(), kMessage);
  EXPECT_FALSE(a.in_progress());
  EXPECT_EQ(a.dropped_bytes(), 0u);
}

TEST(MessageAssembler, EmptyMessage) {
  MessageAssembler a(16);
  EXPECT_EQ(feed(a, kCellDone, false, ""), MessageAssembler::Result::kComplete);
  EXPECT_EQ(a.message(), "");
  EXPECT_EQ(a.type(), kCellDone);
}

TEST(MessageAssembler, JoinsContinuedFramesInOrder) {
  MessageAssembler a(1024);
  EXPECT_EQ(feed(a, kMessage, true, "abc"), MessageAssembler::Result::kIncomplete);
  EXPECT_TRUE(a.in_progress());
  EXPECT_EQ(a.type(), kMessage);
  EXPECT_EQ(feed(a, kMessage, true, ""), MessageAssembler::Result::kIncomplete);
  EXPECT_EQ(feed(a, kMessage, true, "defg"), MessageAssembler::Result::kIncomplete);
  EXPECT_EQ(feed(a, kMessage, false, "hi"), MessageAssembler::Result::kComplete);
  EXPECT_FALSE(a.in_progress());
  EXPECT_EQ(a.message(), "abcdefghi");
  EXPECT_EQ(a.dropped_bytes(), 0u);
}

TEST(MessageAssembler, BinaryPayloadWithNulBytesKept) {
  MessageAssembler a(64);
  const std::string part1("a\0b", 3), part2("\0\xff", 2);
  EXPECT_EQ(feed(a, kMessage, true, part1), MessageAssembler::Result::kIncomplete);
  EXPECT_EQ(feed(a, kMessage, false, part2), MessageAssembler::Result::kComplete);
  EXPECT_EQ(a.message(), part1 + part2);
  EXPECT_EQ(a.message().size(), 5u);
}

TEST(MessageAssembler, MessageExactlyAtCapIsAccepted) {
  MessageAssembler a(10);
  EXPECT_EQ(feed(a, kMessage, true, "12345"), MessageAssembler::Result::kIncomplete);
  EXPECT_EQ(feed(a, kMessage, false, "67890"), MessageAssembler::Result::kComplete);
  EXPECT_EQ(a.message(), "1234567890");
  EXPECT_EQ(a.dropped_bytes(), 0u);
}

TEST(MessageAssembler, OverCapInOneFrameIsTooLarge) {
  MessageAssembler a(10);
  EXPECT_EQ(feed(a, kMessage, false, "12345678901"), MessageAssembler::Result::kTooLarge);
  EXPECT_EQ(a.dropped_bytes(), 11u);
  EXPECT_FALSE(a.in_progress());
  EXPECT_TRUE(a.message().empty());
}

TEST(MessageAssembler, OverCapAcrossFramesDiscardsToTheLastFrameAndCountsAll) {
  MessageAssembler a(10);
  EXPECT_EQ(feed(a, kMessage, true, "123456"), MessageAssembler::Result::kIncomplete);
  // Passes the cap here: the 6 held bytes and these 6 are dropped...
  EXPECT_EQ(feed(a, kMessage, true, "789012"), MessageAssembler::Result::kIncomplete);
  EXPECT_TRUE(a.in_progress());
  EXPECT_TRUE(a.message().empty()) << "the buffer is released once the cap is passed";
  // ... and so is everything up to the last frame, without growing the buffer.
  EXPECT_EQ(feed(a, kMessage, true, std::string(1000, 'x')), MessageAssembler::Result::kIncomplete);
  EXPECT_TRUE(a.message().empty());
  EXPECT_EQ(feed(a, kMessage, false, "end"), MessageAssembler::Result::kTooLarge);
  EXPECT_EQ(a.dropped_bytes(), 6u + 6u + 1000u + 3u);
  EXPECT_FALSE(a.in_progress());
}

TEST(MessageAssembler, TypeChangeMidMessageIsAProtocolViolation) {
  MessageAssembler a(1024);
  EXPECT_EQ(feed(a, kMessage, true, "part"), MessageAssembler::Result::kIncomplete);
  EXPECT_THROW(feed(a, kCellDone, false, "other"), ProtocolViolation);
  try {
    feed(a, kStdout, true, "x");
    FAIL() << "expected ProtocolViolation";
  } catch (const ProtocolViolation& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(std::to_string(kMessage)), std::string::npos) << what;
    EXPECT_NE(what.find(std::to_string(kStdout)), std::string::npos) << what;
  }
}

TEST(MessageAssembler, TypeChangeWhileDiscardingIsAlsoAViolation) {
  MessageAssembler a(4);
  EXPECT_EQ(feed(a, kMessage, true, "too long"), MessageAssembler::Result::kIncomplete);
  EXPECT_THROW(feed(a, kCellDone, false, ""), ProtocolViolation);
}

TEST(MessageAssembler, ReusableAfterCompletion) {
  MessageAssembler a(1024);
  EXPECT_EQ(feed(a, kMessage, true, "first-"), MessageAssembler::Result::kIncomplete);
  EXPECT_EQ(feed(a, kMessage, false, "message"), MessageAssembler::Result::kComplete);
  EXPECT_EQ(a.message(), "first-message");
  // A new message of another type starts afresh: no leftovers, no type clash.
  EXPECT_EQ(feed(a, kCellDone, true, "se"), MessageAssembler::Result::kIncomplete);
  EXPECT_EQ(a.type(), kCellDone);
  EXPECT_EQ(feed(a, kCellDone, false, "cond"), MessageAssembler::Result::kComplete);
  EXPECT_EQ(a.message(), "second");
  EXPECT_EQ(a.type(), kCellDone);
}

TEST(MessageAssembler, ReusableAfterTooLargeAndDropCountResets) {
  MessageAssembler a(8);
  EXPECT_EQ(feed(a, kMessage, true, "12345"), MessageAssembler::Result::kIncomplete);
  EXPECT_EQ(feed(a, kMessage, false, "67890"), MessageAssembler::Result::kTooLarge);
  EXPECT_EQ(a.dropped_bytes(), 10u);
  // The next message is assembled normally and the drop count starts from zero again.
  EXPECT_EQ(feed(a, kMessage, true, "ok"), MessageAssembler::Result::kIncomplete);
  EXPECT_EQ(a.dropped_bytes(), 0u);
  EXPECT_EQ(feed(a, kMessage, false, "!"), MessageAssembler::Result::kComplete);
  EXPECT_EQ(a.message(), "ok!");
  EXPECT_EQ(a.dropped_bytes(), 0u);
  // And a second oversized one counts only its own bytes.
  EXPECT_EQ(feed(a, kMessage, false, std::string(9, 'z')), MessageAssembler::Result::kTooLarge);
  EXPECT_EQ(a.dropped_bytes(), 9u);
}

TEST(MessageAssembler, ZeroCapAcceptsOnlyEmptyMessages) {
  MessageAssembler a(0);
  EXPECT_EQ(feed(a, kMessage, false, ""), MessageAssembler::Result::kComplete);
  EXPECT_EQ(feed(a, kMessage, false, "x"), MessageAssembler::Result::kTooLarge);
  EXPECT_EQ(a.dropped_bytes(), 1u);
}

}  // namespace
}  // namespace sandbox_exec
