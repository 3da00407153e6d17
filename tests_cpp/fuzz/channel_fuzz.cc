// Fuzz target: SupervisorChannel (cpp/ipc/channel.h), the supervisor's end of a session's
// shared region and doorbells, against a hostile worker holding the other end.
//
// Each input is one session: a real channel (memfd region with 4 KiB rings, three pipes),
// the region mapped a second time as the worker maps it. The input scripts the worker:
// frames at its event-ring tail (any header, published or torn), the event tail set
// anywhere, bytes rewritten anywhere in the event ring, its producer_waiting flag set or
// cleared, the event doorbell rung or its end closed (the pipe then reads as hung up
// forever), the request ring's head set anywhere; and the supervisor: poll_frame(),
// next_frame() with a zero timeout (as an event loop steps it), arm_wait()/disarm_wait(),
// send() of a request with a deadline already passed. Asserted:
//   * every call returns, without waiting (next_frame(0) within a second on any doorbell
//     state; libFuzzer's -timeout backs this up);
//   * each frame read is the one a model predicts from the same memory and the reader's last
//     head (header, payload bytes); ProtocolViolation only when the model predicts a corrupt
//     counter or frame, and then the session ends (so does the run); an empty answer only
//     when nothing is published; no other exception;
//   * after a frame is read while the worker says it waits for space, its space doorbell is
//     readable (a waiting worker is always woken);
//   * once the worker closed its doorbell, the second next_frame() that finds no frame (the
//     first may drain the worker's last rings) leaves bell_fd() at -1 (an event loop must
//     not sleep on a pipe that is always readable) and a poll pause instead; the pause is
//     never more than 20 ms;
//   * send() refuses a request-ring head more than 4 KiB away from its tail with
//     ProtocolViolation and otherwise returns.
#include <fuzzer/FuzzedDataProvider.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <string>

#include "common/sys_error.h"
#include "fuzz_check.h"
#include "ipc/channel.h"
#include "ipc/frame.h"
#include "ipc/ring.h"

namespace {

using sandbox_exec::FrameHeader;
using sandbox_exec::RingControl;
using sandbox_exec::SupervisorChannel;

constexpr uint64_t kCapacity = 4096;
constexpr uint64_t kRegionBytes = 4096 + 2 * kCapacity;  // header page, request ring, event ring
constexpr uint64_t kRequestControl = 256, kEventControl = 512;
constexpr uint64_t kEventData = 4096 + kCapacity;

bool readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

// The worker's view: the region mapped again, written at will.
class Worker {
 public:
  explicit Worker(int region_fd) {
    void* p = ::mmap(nullptr, kRegionBytes, PROT_READ | PROT_WRITE, MAP_SHARED, region_fd, 0);
    FUZZ_CHECK(p != MAP_FAILED, "the worker maps the region");
    base_ = static_cast<std::byte*>(p);
  }
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;
  ~Worker() { ::munmap(base_, kRegionBytes); }

  RingControl& events() const { return *std::launder(reinterpret_cast<RingControl*>(base_ + kEventControl)); }
  RingControl& requests() const { return *std::launder(reinterpret_cast<RingControl*>(base_ + kRequestControl)); }
  void write(uint64_t position, const std::string& bytes) const {
    for (std::size_t i = 0; i < bytes.size(); ++i)
      base_[kEventData + ((position + i) & (kCapacity - 1))] = static_cast<std::byte>(bytes[i]);
  }
  [[nodiscard]] std::string read(uint64_t position, std::size_t length) const {
    std::string out(length, '\0');
    for (std::size_t i = 0; i < length; ++i)
      out[i] = static_cast<char>(base_[kEventData + ((position + i) & (kCapacity - 1))]);
    return out;
  }

 private:
  std::byte* base_ = nullptr;
};

// What the supervisor's next read must give: empty, a violation, or this frame.
struct Prediction {
  enum Kind { kEmpty, kViolation, kFrame } kind;
  FrameHeader header{};
  std::string payload;
};

Prediction predict(const Worker& worker, uint64_t head) {
  const uint64_t available = worker.events().tail.load() - head;
  if (available > kCapacity || available % sandbox_exec::kFrameAlign != 0) return {Prediction::kViolation};
  if (available == 0) return {Prediction::kEmpty};
  Prediction p{Prediction::kFrame};
  std::memcpy(&p.header, worker.read(head, sizeof p.header).data(), sizeof p.header);
  if (p.header.length > sandbox_exec::max_frame_payload(kCapacity) ||
      sandbox_exec::frame_footprint(p.header.length) > available || (p.header.flags & ~sandbox_exec::kKnownFlags) != 0)
    return {Prediction::kViolation};
  p.payload = worker.read(head + sizeof p.header, p.header.length);
  return p;
}

}  // namespace

// The backend ignores SIGPIPE (Python does): a doorbell rung after the worker closed its end
// fails with EPIPE, which ring() ignores.
extern "C" int LLVMFuzzerInitialize(int*, char***) {
  ::signal(SIGPIPE, SIG_IGN);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  SupervisorChannel channel({kCapacity, kCapacity});
  const sandbox_exec::WorkerFds ends = channel.worker_fds();
  Worker worker(ends.region);
  // The worker's ends, as after the spawn: its own copies, the channel's closed.
  sandbox_exec::WorkerFds fds{ends.region, ::dup(ends.request_bell), ::dup(ends.event_bell), ::dup(ends.space_bell)};
  FUZZ_CHECK(fds.request_bell >= 0 && fds.event_bell >= 0 && fds.space_bell >= 0, "dup");
  channel.release_worker_ends();
  int event_bell = fds.event_bell;  // closed by the script at will
  struct CloseAtEnd {
    int* fds[3];
    ~CloseAtEnd() {
      for (int* fd : fds)
        if (*fd >= 0) ::close(*fd);
    }
  } close_at_end{{&event_bell, &fds.request_bell, &fds.space_bell}};
  uint64_t head = 0;          // the model's event-ring head
  uint64_t tail = 0;          // the worker's own event-ring tail
  int empty_since_close = 0;  // next_frame() calls that found no frame since the worker closed its doorbell
  auto close_bell = [&] {
    if (event_bell >= 0) ::close(event_bell);
    event_bell = -1;
  };
  // One read through `read_frame` (poll_frame or next_frame), checked against the model.
  // False when the session ends.
  auto checked_read = [&](auto&& read_frame) {
    const Prediction expected = predict(worker, head);
    const bool worker_waits = worker.events().producer_waiting.load() != 0;
    FrameHeader header{};
    std::string payload;
    bool got = false;
    const auto started = std::chrono::steady_clock::now();
    try {
      got = read_frame(header, payload);
    } catch (const sandbox_exec::ProtocolViolation&) {
      FUZZ_CHECK(expected.kind == Prediction::kViolation, "ProtocolViolation only for a corrupt counter or frame");
      return false;
    }
    FUZZ_CHECK(std::chrono::steady_clock::now() - started < std::chrono::seconds(1), "a zero-timeout read returns");
    FUZZ_CHECK(expected.kind != Prediction::kViolation, "a corrupt counter or frame is refused");
    FUZZ_CHECK(got == (expected.kind == Prediction::kFrame), "a frame exactly when one is published");
    if (got) {
      FUZZ_CHECK(header.length == expected.header.length && header.type == expected.header.type &&
                     header.flags == expected.header.flags && payload == expected.payload,
                 "the frame read is the one at the head");
      head += sandbox_exec::frame_footprint(header.length);
      if (worker_waits) FUZZ_CHECK(readable(fds.space_bell), "a worker waiting for space is woken");
    }
    FUZZ_CHECK(channel.poll_pause_ms() <= 20, "the poll pause is capped");
    return true;
  };

  while (in.remaining_bytes() > 0) {
    switch (in.ConsumeIntegralInRange<int>(0, 11)) {
      case 0:
      case 1: {  // a frame at the worker's tail, published or torn
        FrameHeader header{};
        header.type = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint16_t>(16, 20) : in.ConsumeIntegral<uint16_t>();
        header.flags = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint16_t>(0, 1) : in.ConsumeIntegral<uint16_t>();
        const std::string payload = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, 1100));
        header.length = in.ConsumeBool() ? static_cast<uint32_t>(payload.size()) : in.ConsumeIntegral<uint32_t>();
        std::string bytes(sizeof header, '\0');
        std::memcpy(bytes.data(), &header, sizeof header);
        worker.write(tail, bytes + payload);
        tail += sandbox_exec::frame_footprint(payload.size());
        if (in.ConsumeBool()) worker.events().tail.store(tail);
        break;
      }
      case 2:
        worker.events().tail.store(tail);
        break;
      case 3:
        tail = in.ConsumeBool()
                   ? head + in.ConsumeIntegralInRange<int64_t>(-2 * int64_t{kCapacity}, 2 * int64_t{kCapacity})
                   : in.ConsumeIntegral<uint64_t>();
        worker.events().tail.store(tail);
        break;
      case 4:
        worker.write(in.ConsumeIntegral<uint64_t>(),
                     in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, 16)));
        break;
      case 5:
        worker.events().producer_waiting.store(in.ConsumeBool() ? 1 : 0);
        worker.events().head.store(in.ConsumeIntegral<uint64_t>());  // the supervisor's own: never read
        break;
      case 6:
        if (event_bell >= 0) {
          const int rings = in.ConsumeIntegralInRange<int>(1, 8);
          for (int i = 0; i < rings; ++i) (void)!::write(event_bell, "x", 1);
        }
        break;
      case 7:
        close_bell();
        if (in.ConsumeBool() && fds.request_bell >= 0) {
          ::close(fds.request_bell);
          fds.request_bell = -1;
        }
        break;
      case 8:
        if (!checked_read([&](FrameHeader& h, std::string& p) { return channel.poll_frame(h, p); })) return 0;
        break;
      case 9: {
        bool got = false;
        if (!checked_read([&](FrameHeader& h, std::string& p) {
              got = channel.next_frame(h, p, 0, -1) == SupervisorChannel::Wait::kFrame;
              return got;
            }))
          return 0;
        // A closed doorbell is noticed by a next_frame() that finds no frame and looks at the
        // pipe: by the second such call (the first may find the worker's last rings still
        // in it), at the latest.
        // (A frame in between may hand the descriptor out once more, when the closed pipe was
        // not looked at yet: the next empty call notices it.)
        if (event_bell < 0 && !got && ++empty_since_close >= 2) {
          FUZZ_CHECK(channel.bell_fd() == -1, "a closed doorbell is noticed and not slept on");
          FUZZ_CHECK(channel.poll_pause_ms() >= 0, "a closed doorbell is replaced by polling");
        }
        break;
      }
      case 10: {
        bool armed = false;
        try {
          armed = channel.arm_wait();
        } catch (const sandbox_exec::ProtocolViolation&) {
          FUZZ_CHECK(predict(worker, head).kind == Prediction::kViolation, "arm_wait() refuses only corruption");
          return 0;
        }
        FUZZ_CHECK(armed == (predict(worker, head).kind == Prediction::kEmpty), "arm_wait() is false with a frame");
        FUZZ_CHECK(worker.events().consumer_waiting.load() == (armed ? 1u : 0u), "armed exactly when it says so");
        channel.disarm_wait();
        FUZZ_CHECK(worker.events().consumer_waiting.load() == 0, "disarmed");
        break;
      }
      default: {  // a request, the worker having moved the request ring's head anywhere
        const uint64_t request_head = in.ConsumeBool() ? in.ConsumeIntegral<uint64_t>() : 0;
        worker.requests().head.store(request_head);
        const uint64_t request_tail = worker.requests().tail.load();
        const std::string request = in.ConsumeBytesAsString(in.ConsumeIntegralInRange<std::size_t>(0, 3000));
        try {
          (void)channel.send(sandbox_exec::FrameType::kExecute, request, std::chrono::steady_clock::now(), -1);
        } catch (const sandbox_exec::ProtocolViolation&) {
          FUZZ_CHECK(request_tail - request_head > kCapacity, "send() refuses only an inconsistent head");
          return 0;
        }
        break;
      }
    }
  }
  return 0;
}
