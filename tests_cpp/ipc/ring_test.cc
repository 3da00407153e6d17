// Tests of the SPSC frame ring (ring.h) over a plain aligned buffer (RingControl + data):
// geometry, empty/full, wrap-around with frames of varying sizes (including a header in the
// last 8 bytes and a body split across the end), every payload size from 0 to max_payload
// and max_payload+1 (length_error), frames exactly filling the ring, the reader's and the
// writer's checks against a hostile peer counter or frame, and a two-process
// producer/consumer stress through a MAP_SHARED anonymous mapping using the ring's waiting
// flags with DoorbellPairs.
#include "ipc/ring.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "ipc/doorbell.h"

namespace sandbox_exec {
namespace {

constexpr std::size_t kControlBytes = sizeof(RingControl);

// RingControl followed by `capacity` data bytes, 64-byte aligned, like in the channel.
class TestRing {
 public:
  explicit TestRing(uint64_t capacity) : capacity_(capacity) {
    void* p = std::aligned_alloc(64, kControlBytes + capacity);
    if (!p) throw std::bad_alloc();
    memory_.reset(static_cast<std::byte*>(p));
    std::memset(memory_.get(), 0xAB, kControlBytes + capacity);
    control_ = new (memory_.get()) RingControl{};
  }
  RingControl* control() const { return control_; }
  std::byte* data() const { return memory_.get() + kControlBytes; }
  uint64_t capacity() const { return capacity_; }
  RingWriter writer() const { return RingWriter(control_, data(), capacity_); }
  RingReader reader() const { return RingReader(control_, data(), capacity_); }
  // Writes a raw header at ring position `pos` (as a hostile producer would).
  void put_header(uint64_t pos, uint32_t length, uint16_t type, uint16_t flags) const {
    const FrameHeader h{length, type, flags};
    std::memcpy(data() + (pos & (capacity_ - 1)), &h, sizeof h);
  }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  uint64_t capacity_;
  std::unique_ptr<std::byte, Free> memory_;
  RingControl* control_ = nullptr;
};

std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// A payload whose every byte depends on (seed, index), so misplaced bytes are detected.
std::string pattern(uint64_t seed, std::size_t size) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((seed * 131 + i * 7 + (i >> 8)) & 0xFF);
  return s;
}

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

TEST(RingGeometry, MaxFramePayloadIsAQuarterMinusHeaderCappedAtOneMiB) {
  EXPECT_EQ(max_frame_payload(64), 8u);
  EXPECT_EQ(max_frame_payload(256), 56u);
  EXPECT_EQ(max_frame_payload(4096), 1016u);
  EXPECT_EQ(max_frame_payload(4u << 20), (1u << 20) - 8);
  EXPECT_EQ(max_frame_payload(8u << 20), 1u << 20);
  EXPECT_EQ(max_frame_payload(1ull << 30), 1u << 20);
  EXPECT_TRUE(is_power_of_two(1));
  EXPECT_TRUE(is_power_of_two(4096));
  EXPECT_FALSE(is_power_of_two(0));
  EXPECT_FALSE(is_power_of_two(96));
}

TEST(RingGeometry, RejectsCapacitiesThatAreNotPowersOfTwoOfAtLeast64) {
  TestRing ring(256);
  for (uint64_t bad : {uint64_t{0}, uint64_t{8}, uint64_t{32}, uint64_t{96}, uint64_t{100}, uint64_t{255}}) {
    EXPECT_THROW(RingWriter(ring.control(), ring.data(), bad), ProtocolViolation) << bad;
    EXPECT_THROW(RingReader(ring.control(), ring.data(), bad), ProtocolViolation) << bad;
  }
  RingWriter w(ring.control(), ring.data(), 64);
  EXPECT_EQ(w.max_payload(), 8u);
  EXPECT_EQ(w.capacity(), 64u);
}

TEST(Ring, EmptyRingHasNothingToRead) {
  TestRing ring(256);
  auto w = ring.writer();
  auto r = ring.reader();
  FrameHeader h{};
  std::string payload = "unchanged";
  EXPECT_FALSE(r.has_data());
  EXPECT_FALSE(r.try_read(h, payload));
  EXPECT_EQ(payload, "unchanged");
  EXPECT_EQ(w.free_bytes(), 256u);
  EXPECT_EQ(w.max_payload(), 56u);
  EXPECT_EQ(r.max_payload(), 56u);
}

TEST(Ring, OneFrameRoundTripPublishesCounters) {
  TestRing ring(256);
  auto w = ring.writer();
  auto r = ring.reader();
  ASSERT_TRUE(w.try_write(17, kFlagMore, bytes_of("hello")));
  EXPECT_EQ(ring.control()->tail.load(), 16u);
  EXPECT_EQ(ring.control()->head.load(), 0u);
  EXPECT_EQ(w.free_bytes(), 240u);
  EXPECT_TRUE(r.has_data());
  FrameHeader h{};
  std::string payload;
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(h.length, 5u);
  EXPECT_EQ(h.type, 17u);
  EXPECT_EQ(h.flags, kFlagMore);
  EXPECT_EQ(payload, "hello");
  EXPECT_EQ(ring.control()->head.load(), 16u);
  EXPECT_EQ(w.free_bytes(), 256u);
  EXPECT_FALSE(r.has_data());
  EXPECT_FALSE(r.try_read(h, payload));
}

TEST(Ring, FullRingRefusesWithoutWritingAndAcceptsAfterARead) {
  TestRing ring(256);
  auto w = ring.writer();
  auto r = ring.reader();
  // Footprint 24 each: 10 frames = 240 bytes, 16 left.
  int written = 0;
  while (w.try_write(18, 0, bytes_of(pattern(written, 16)))) ++written;
  EXPECT_EQ(written, 10);
  EXPECT_EQ(w.free_bytes(), 16u);
  const uint64_t tail = ring.control()->tail.load();
  EXPECT_EQ(tail, 240u);
  // A frame of footprint 24 does not fit; nothing is written, the tail does not move.
  EXPECT_FALSE(w.try_write(18, 0, bytes_of(pattern(99, 9))));
  EXPECT_EQ(ring.control()->tail.load(), tail);
  // A frame of footprint 16 still does.
  EXPECT_TRUE(w.try_write(19, 0, bytes_of(pattern(100, 8))));
  EXPECT_EQ(w.free_bytes(), 0u);
  EXPECT_FALSE(w.try_write(19, 0, {}));  // even an empty frame needs 8 bytes

  FrameHeader h{};
  std::string payload;
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(payload, pattern(0, 16));
  EXPECT_EQ(w.free_bytes(), 24u);
  EXPECT_TRUE(w.try_write(20, 0, bytes_of(pattern(101, 16))));
  // Everything comes out in order.
  for (int i = 1; i < 10; ++i) {
    ASSERT_TRUE(r.try_read(h, payload));
    EXPECT_EQ(h.type, 18u);
    EXPECT_EQ(payload, pattern(i, 16)) << i;
  }
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(h.type, 19u);
  EXPECT_EQ(payload, pattern(100, 8));
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(h.type, 20u);
  EXPECT_EQ(payload, pattern(101, 16));
  EXPECT_FALSE(r.try_read(h, payload));
}

TEST(Ring, MaxPayloadFramesExactlyFillTheRing) {
  TestRing ring(4096);
  auto w = ring.writer();
  auto r = ring.reader();
  const uint32_t max = w.max_payload();
  ASSERT_EQ(frame_footprint(max) * 4, 4096u);
  for (int round = 0; round < 3; ++round) {  // also after the counters wrapped the data area
    for (int i = 0; i < 4; ++i) ASSERT_TRUE(w.try_write(17, 0, bytes_of(pattern(round * 4 + i, max))));
    EXPECT_EQ(w.free_bytes(), 0u);
    EXPECT_EQ(ring.control()->tail.load() - ring.control()->head.load(), 4096u);
    EXPECT_FALSE(w.try_write(17, 0, {}));
    FrameHeader h{};
    std::string payload;
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(r.try_read(h, payload));
      EXPECT_EQ(h.length, max);
      EXPECT_EQ(payload, pattern(round * 4 + i, max)) << round << "/" << i;
    }
    EXPECT_FALSE(r.try_read(h, payload));
  }
}

TEST(Ring, SingleFrameFillingTheRingExactly) {
  // In the smallest ring a maximal frame is a quarter; frames of mixed sizes that add up to
  // exactly the capacity, starting mid-ring, fill it with no byte to spare.
  TestRing ring(64);
  auto w = ring.writer();
  auto r = ring.reader();
  FrameHeader h{};
  std::string payload;
  ASSERT_TRUE(w.try_write(1, 0, bytes_of("abc")));  // 16 bytes
  ASSERT_TRUE(r.try_read(h, payload));
  // Now at offset 16: 16 + 8 + 16 + 16 + 8 = 64.
  const std::vector<std::size_t> sizes = {8, 0, 5, 8, 0};
  for (std::size_t i = 0; i < sizes.size(); ++i) ASSERT_TRUE(w.try_write(2, 0, bytes_of(pattern(i, sizes[i])))) << i;
  EXPECT_EQ(w.free_bytes(), 0u);
  EXPECT_FALSE(w.try_write(2, 0, {}));
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    ASSERT_TRUE(r.try_read(h, payload));
    EXPECT_EQ(payload, pattern(i, sizes[i])) << i;
  }
  EXPECT_EQ(w.free_bytes(), 64u);
}

TEST(Ring, EverySizeFromZeroToMaxPayloadRoundTrips) {
  TestRing ring(4096);
  auto w = ring.writer();
  auto r = ring.reader();
  const uint32_t max = w.max_payload();
  ASSERT_EQ(max, 1016u);
  FrameHeader h{};
  std::string payload;
  for (uint32_t size = 0; size <= max; ++size) {
    const std::string sent = pattern(size, size);
    ASSERT_TRUE(w.try_write(static_cast<uint16_t>(size & 0xFFFF), 0, bytes_of(sent))) << size;
    ASSERT_TRUE(r.try_read(h, payload)) << size;
    ASSERT_EQ(h.length, size);
    ASSERT_EQ(h.type, size & 0xFFFF);
    ASSERT_EQ(payload, sent) << size;
  }
  // The counters went around the data area many times.
  EXPECT_GT(ring.control()->tail.load(), 100u * 4096u);
}

TEST(Ring, PayloadAboveMaxThrowsLengthErrorAndWritesNothing) {
  TestRing ring(4096);
  auto w = ring.writer();
  auto r = ring.reader();
  const std::string too_big(w.max_payload() + 1, 'x');
  EXPECT_THROW((void)w.try_write(17, 0, bytes_of(too_big)), std::length_error);
  EXPECT_EQ(ring.control()->tail.load(), 0u);
  EXPECT_FALSE(r.has_data());
  EXPECT_THROW((void)w.try_write(17, 0, bytes_of(std::string(100000, 'y'))), std::length_error);
  EXPECT_EQ(ring.control()->tail.load(), 0u);
}

TEST(Ring, LargeRingCapsFramesAtOneMiB) {
  TestRing ring(8u << 20);
  auto w = ring.writer();
  auto r = ring.reader();
  ASSERT_EQ(w.max_payload(), 1u << 20);
  const std::string big = pattern(7, 1u << 20);
  ASSERT_TRUE(w.try_write(19, 0, bytes_of(big)));
  EXPECT_THROW((void)w.try_write(19, 0, bytes_of(std::string((1u << 20) + 1, 'z'))), std::length_error);
  FrameHeader h{};
  std::string payload;
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(payload, big);
}

TEST(Ring, WrapAroundWithVaryingSizes) {
  TestRing ring(256);
  auto w = ring.writer();
  auto r = ring.reader();
  const uint32_t max = w.max_payload();
  uint64_t next_write = 0, next_read = 0;
  FrameHeader h{};
  std::string payload;
  auto size_of = [&](uint64_t seq) { return static_cast<std::size_t>(splitmix64(seq) % (max + 1)); };
  // Keep the ring partly full (bursts of 0-3 writes, one read per round) so frames land at
  // every offset and the ring is sometimes full.
  for (uint64_t round = 0; next_read < 5000; ++round) {
    ASSERT_LT(round, 100000u);
    const int burst = static_cast<int>(splitmix64(round * 3 + 1) % 4);
    for (int i = 0; i < burst && next_write < 5000; ++i) {
      const std::string sent = pattern(next_write, size_of(next_write));
      if (!w.try_write(static_cast<uint16_t>(next_write % 50), 0, bytes_of(sent))) break;
      ++next_write;
    }
    if (next_read < next_write) {
      ASSERT_TRUE(r.try_read(h, payload));
      ASSERT_EQ(h.type, next_read % 50);
      ASSERT_EQ(payload, pattern(next_read, size_of(next_read))) << next_read;
      ++next_read;
    }
  }
  EXPECT_FALSE(r.try_read(h, payload));
  EXPECT_EQ(ring.control()->head.load(), ring.control()->tail.load());
  EXPECT_GT(ring.control()->tail.load(), 100u * 256u);
}

TEST(Ring, HeaderInTheLastEightBytesAndBodyAtTheStart) {
  TestRing ring(256);
  auto w = ring.writer();
  auto r = ring.reader();
  FrameHeader h{};
  std::string payload;
  for (int i = 0; i < 31; ++i) {  // 31 empty frames: the tail is at 248
    ASSERT_TRUE(w.try_write(1, 0, {}));
    ASSERT_TRUE(r.try_read(h, payload));
    EXPECT_TRUE(payload.empty());
  }
  ASSERT_EQ(ring.control()->tail.load(), 248u);
  const std::string sent = pattern(5, 20);
  ASSERT_TRUE(w.try_write(9, 0, bytes_of(sent)));
  FrameHeader raw{};
  std::memcpy(&raw, ring.data() + 248, sizeof raw);
  EXPECT_EQ(raw.length, 20u);
  EXPECT_EQ(raw.type, 9u);
  EXPECT_EQ(std::memcmp(ring.data(), sent.data(), 20), 0) << "body continues at offset 0";
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(payload, sent);
  EXPECT_EQ(ring.control()->tail.load(), 248u + 32u);
}

TEST(Ring, BodySplitAcrossTheEnd) {
  TestRing ring(256);
  auto w = ring.writer();
  auto r = ring.reader();
  FrameHeader h{};
  std::string payload;
  for (int i = 0; i < 30; ++i) {  // tail at 240
    ASSERT_TRUE(w.try_write(1, 0, {}));
    ASSERT_TRUE(r.try_read(h, payload));
  }
  const std::string sent = pattern(6, 20);
  ASSERT_TRUE(w.try_write(9, 0, bytes_of(sent)));
  EXPECT_EQ(std::memcmp(ring.data() + 248, sent.data(), 8), 0);
  EXPECT_EQ(std::memcmp(ring.data(), sent.data() + 8, 12), 0);
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(payload, sent);
}

TEST(Ring, EndsResumeFromTheSharedCounters) {
  TestRing ring(256);
  {
    auto w = ring.writer();
    auto r = ring.reader();
    FrameHeader h{};
    std::string payload;
    ASSERT_TRUE(w.try_write(1, 0, bytes_of("one")));
    ASSERT_TRUE(w.try_write(2, 0, bytes_of("two")));
    ASSERT_TRUE(r.try_read(h, payload));
  }
  auto w = ring.writer();
  auto r = ring.reader();
  ASSERT_TRUE(w.try_write(3, 0, bytes_of("three")));
  FrameHeader h{};
  std::string payload;
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(payload, "two");
  ASSERT_TRUE(r.try_read(h, payload));
  EXPECT_EQ(payload, "three");
  EXPECT_FALSE(r.try_read(h, payload));
}

TEST(Ring, WaitingFlagsAreVisibleToThePeer) {
  TestRing ring(256);
  auto w = ring.writer();
  auto r = ring.reader();
  EXPECT_FALSE(w.consumer_waiting());
  EXPECT_FALSE(r.producer_waiting());
  r.set_waiting(true);
  EXPECT_TRUE(w.consumer_waiting());
  EXPECT_EQ(ring.control()->consumer_waiting.load(), 1u);
  r.set_waiting(false);
  EXPECT_FALSE(w.consumer_waiting());
  w.set_waiting_for_space(true);
  EXPECT_TRUE(r.producer_waiting());
  EXPECT_EQ(ring.control()->producer_waiting.load(), 1u);
  w.set_waiting_for_space(false);
  EXPECT_FALSE(r.producer_waiting());
}

// ---- the reader against a hostile producer ------------------------------------------------

class HostileProducer : public ::testing::Test {
 protected:
  // Reads one good frame first so the reader's head is not at zero.
  void SetUp() override {
    auto w = ring_.writer();
    ASSERT_TRUE(w.try_write(17, 0, bytes_of("ok")));
    FrameHeader h{};
    std::string p;
    ASSERT_TRUE(reader_.try_read(h, p));
    ASSERT_EQ(head(), 16u);
  }
  uint64_t head() const { return ring_.control()->head.load(); }
  void set_tail(uint64_t t) { ring_.control()->tail.store(t); }
  void expect_rejected(const char* fragment) {
    FrameHeader h{};
    std::string payload;
    try {
      (void)reader_.try_read(h, payload);
      ADD_FAILURE() << "try_read accepted a corrupt ring (" << fragment << ")";
    } catch (const ProtocolViolation& e) {
      EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    }
    EXPECT_EQ(head(), 16u) << "a rejected frame must not be consumed";
  }
  TestRing ring_{256};
  RingReader reader_ = ring_.reader();
};

TEST_F(HostileProducer, TailNotAMultipleOfEight) {
  set_tail(16 + 12);
  EXPECT_THROW((void)reader_.has_data(), ProtocolViolation);
  expect_rejected("producer tail 28");
}

TEST_F(HostileProducer, TailMoreThanCapacityAheadOfHead) {
  set_tail(16 + 256 + 8);
  EXPECT_THROW((void)reader_.has_data(), ProtocolViolation);
  expect_rejected("producer tail");
  set_tail(~uint64_t{0} - 7);  // far ahead, aligned
  expect_rejected("producer tail");
}

TEST_F(HostileProducer, TailExactlyCapacityAheadIsAccepted) {
  // A completely full ring is legal; it must not be mistaken for corruption.
  for (uint64_t pos = 16; pos < 16 + 256; pos += 8) ring_.put_header(pos, 0, 17, 0);
  set_tail(16 + 256);
  FrameHeader h{};
  std::string payload;
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(reader_.try_read(h, payload)) << i;
  EXPECT_FALSE(reader_.try_read(h, payload));
}

TEST_F(HostileProducer, TailBehindHead) {
  set_tail(8);
  EXPECT_THROW((void)reader_.has_data(), ProtocolViolation);
  expect_rejected("inconsistent with consumer head 16");
}

TEST_F(HostileProducer, HeaderLengthAboveMaxPayload) {
  ring_.put_header(16, reader_.max_payload() + 1, 17, 0);
  set_tail(16 + 256);  // everything published, so only the length check can catch it
  expect_rejected("exceeds the frame limit");
  ring_.put_header(16, 0xFFFFFFFFu, 17, 0);
  expect_rejected("exceeds the frame limit");
}

TEST_F(HostileProducer, FrameFootprintPastPublishedBytes) {
  ring_.put_header(16, 40, 17, 0);  // footprint 48
  set_tail(16 + 40);                // only 40 bytes published
  expect_rejected("runs past the 40 published bytes");
  set_tail(16 + 8);  // only the header
  expect_rejected("runs past");
}

TEST_F(HostileProducer, UnknownFlags) {
  for (uint16_t flags : {uint16_t{2}, uint16_t{kFlagMore | 4}, uint16_t{0x8000}}) {
    ring_.put_header(16, 0, 17, flags);
    set_tail(16 + 8);
    expect_rejected("unknown flags");
  }
}

TEST_F(HostileProducer, ReaderRecoversWhenTheRingIsConsistentAgain) {
  set_tail(16 + 3);
  expect_rejected("producer tail");
  // Not a requirement of the protocol (the session ends), but the reader holds no poisoned
  // state: the checks are on each read's own snapshot.
  ring_.put_header(16, 3, 18, 0);
  std::memcpy(ring_.data() + 24, "abc", 3);
  set_tail(16 + 16);
  FrameHeader h{};
  std::string payload;
  ASSERT_TRUE(reader_.try_read(h, payload));
  EXPECT_EQ(payload, "abc");
  EXPECT_EQ(h.type, 18u);
}

// ---- the writer against a hostile consumer ------------------------------------------------

TEST(HostileConsumer, HeadAheadOfTailIsRejected) {
  TestRing ring(256);
  auto w = ring.writer();
  ASSERT_TRUE(w.try_write(17, 0, bytes_of("abc")));  // tail 16
  ring.control()->head.store(24);
  EXPECT_THROW((void)w.free_bytes(), ProtocolViolation);
  EXPECT_THROW((void)w.try_write(17, 0, bytes_of("x")), ProtocolViolation);
  EXPECT_EQ(ring.control()->tail.load(), 16u) << "nothing written past a corrupt head";
}

TEST(HostileConsumer, HeadMoreThanCapacityBehindIsRejected) {
  TestRing ring(256);
  auto w = ring.writer();
  auto r = ring.reader();
  FrameHeader h{};
  std::string p;
  for (int i = 0; i < 40; ++i) {  // tail and head at 40 * 16 = 640
    ASSERT_TRUE(w.try_write(17, 0, bytes_of("abc")));
    ASSERT_TRUE(r.try_read(h, p));
  }
  ring.control()->head.store(640 - 256 - 8);
  try {
    (void)w.try_write(17, 0, bytes_of("x"));
    ADD_FAILURE() << "try_write trusted a corrupt head";
  } catch (const ProtocolViolation& e) {
    EXPECT_NE(std::string(e.what()).find("consumer head 376"), std::string::npos) << e.what();
  }
  ring.control()->head.store(640 - 256);  // exactly full: legal
  EXPECT_EQ(w.free_bytes(), 0u);
  ring.control()->head.store(~uint64_t{0});
  EXPECT_THROW((void)w.free_bytes(), ProtocolViolation);
}

// ---- two processes ------------------------------------------------------------------------

// The stress test's frame `seq`: a size in [0, max] and bytes taken from a pseudo-random
// pool at a seq-dependent offset, stamped with seq at both ends when there is room. Cheap to
// build and compare with memcpy/memcmp, so 200k frames stay fast under the sanitizers.
struct StressFrames {
  explicit StressFrames(uint32_t max) : max_payload(max), pool(pattern(12345, max + 4096)) {}
  void build(uint64_t seq, std::string& out) const {
    const std::size_t size = splitmix64(seq) % (max_payload + 1);
    out.assign(pool, splitmix64(~seq) % 4096, size);
    if (size >= 8) std::memcpy(out.data(), &seq, 8);
    const uint64_t inverted = ~seq;
    if (size >= 16) std::memcpy(out.data() + size - 8, &inverted, 8);
  }
  static uint16_t type(uint64_t seq) { return static_cast<uint16_t>(seq & 0xFFFF); }
  static uint16_t flags(uint64_t seq) { return seq & 1 ? kFlagMore : 0; }
  uint32_t max_payload;
  std::string pool;
};

// The producer's side of the stress test, run in the forked child. Returns an exit code.
int produce(RingControl* control, std::byte* data, uint64_t capacity, uint64_t frames, DoorbellPair& data_bell,
            DoorbellPair& space_bell) {
  try {
    RingWriter w(control, data, capacity);
    const StressFrames gen(w.max_payload());
    std::string payload;
    for (uint64_t seq = 0; seq < frames; ++seq) {
      gen.build(seq, payload);
      const uint16_t type = StressFrames::type(seq), flags = StressFrames::flags(seq);
      while (!w.try_write(type, flags, bytes_of(payload))) {
        w.set_waiting_for_space(true);
        if (w.try_write(type, flags, bytes_of(payload))) {
          w.set_waiting_for_space(false);
          break;
        }
        (void)space_bell.receiver.wait(100);
        w.set_waiting_for_space(false);
        space_bell.receiver.drain();
      }
      if (w.consumer_waiting()) data_bell.sender.ring();
    }
    data_bell.sender.ring();
    return 0;
  } catch (...) {
    return 3;
  }
}

TEST(RingTwoProcesses, ProducerConsumerStressKeepsOrderAndContent) {
  constexpr uint64_t kCapacity = 64 * 1024;
  constexpr uint64_t kFrames = 200'000;
  const std::size_t size = kControlBytes + kCapacity;
  void* map = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(map, MAP_FAILED);
  auto* control = new (map) RingControl{};
  auto* data = static_cast<std::byte*>(map) + kControlBytes;
  DoorbellPair data_bell = DoorbellPair::create();
  DoorbellPair space_bell = DoorbellPair::create();

  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) ::_exit(produce(control, data, kCapacity, kFrames, data_bell, space_bell));

  RingReader r(control, data, kCapacity);
  const StressFrames gen(r.max_payload());
  std::string expected;
  FrameHeader h{};
  std::string payload;
  uint64_t seq = 0;
  bool ok = true;
  // A stall is 30 s without progress (looked at every 1024 frames), not 30 s in all: under
  // ThreadSanitizer the whole run takes about 20 s of CPU, more on a loaded machine.
  auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (seq < kFrames && ok) {
    if (!r.try_read(h, payload)) {
      r.set_waiting(true);
      if (!r.has_data()) (void)data_bell.receiver.wait(100);
      r.set_waiting(false);
      data_bell.receiver.drain();
      if (std::chrono::steady_clock::now() > give_up) {
        ADD_FAILURE() << "stress test stalled at frame " << seq;
        break;
      }
      continue;
    }
    if (r.producer_waiting()) space_bell.sender.ring();
    if ((seq & 1023) == 0) give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    gen.build(seq, expected);
    if (h.length != expected.size() || h.type != StressFrames::type(seq) || h.flags != StressFrames::flags(seq) ||
        payload != expected) {
      ADD_FAILURE() << "frame " << seq << " differs: length " << h.length << " (expected " << expected.size()
                    << "), type " << h.type << ", flags " << h.flags;
      ok = false;
    }
    ++seq;
  }
  if (seq < kFrames) ::kill(child, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_EQ(seq, kFrames);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "producer status " << status;
  if (ok) {
    EXPECT_FALSE(r.try_read(h, payload)) << "the producer wrote more than it should";
  }
  ::munmap(map, size);
}

}  // namespace
}  // namespace sandbox_exec
