#include "ipc/channel.h"

#include <poll.h>

#include <unistd.h>
#include <algorithm>
#include <cstring>
#include <new>

#include "common/sys_error.h"

namespace sandbox_exec {

namespace {
constexpr uint64_t kControlOffsetRequests = 256;
constexpr uint64_t kControlOffsetEvents = 512;
constexpr uint64_t kDataOffset = 4096;
// Doorbell spam (see SupervisorChannel::spurious_wakes_): a legitimate worker rings at most
// once per frame it publishes, and a ring racing a frame already taken is rare, so a few
// empty wakes in a row mean spam. The pause caps what a real frame may then wait.
constexpr int kSpuriousWakesBeforePause = 4;
constexpr int kMaxPauseMs = 20;

uint64_t region_size(const ChannelGeometry& g) { return kDataOffset + g.request_capacity + g.event_capacity; }

SharedRegion make_region(const ChannelGeometry& g) {
  if (!is_power_of_two(g.request_capacity) || !is_power_of_two(g.event_capacity) || g.request_capacity < 4096 ||
      g.event_capacity < 4096 || g.request_capacity > (1ull << 30) || g.event_capacity > (1ull << 30))
    throw ConfigError("ring capacities must be powers of two between 4 KiB and 1 GiB");
  SharedRegion region = SharedRegion::create(region_size(g), "sandbox_exec-ring");
  auto* header = new (region.data()) RegionHeader{};
  header->magic = kRegionMagic;
  header->version = kProtocolVersion;
  header->header_bytes = sizeof(RegionHeader);
  header->request_capacity = g.request_capacity;
  header->event_capacity = g.event_capacity;
  header->request_offset = kDataOffset;
  header->event_offset = kDataOffset + g.request_capacity;
  new (region.data() + kControlOffsetRequests) RingControl{};
  new (region.data() + kControlOffsetEvents) RingControl{};
  return region;
}

RingControl* control_at(const SharedRegion& r, uint64_t offset) {
  return std::launder(reinterpret_cast<RingControl*>(r.data() + offset));
}

}  // namespace

SupervisorChannel::SupervisorChannel(ChannelGeometry geometry)
    : geometry_(geometry),
      region_(make_region(geometry)),
      requests_(control_at(region_, kControlOffsetRequests), region_.data() + kDataOffset, geometry.request_capacity),
      events_(control_at(region_, kControlOffsetEvents), region_.data() + kDataOffset + geometry.request_capacity,
              geometry.event_capacity),
      request_bell_(DoorbellPair::create()),
      event_bell_(DoorbellPair::create()),
      space_bell_(DoorbellPair::create()) {}

WorkerFds SupervisorChannel::worker_fds() const noexcept {
  return {region_.fd(), request_bell_.receiver.fd(), event_bell_.sender.fd(), space_bell_.receiver.fd()};
}

void SupervisorChannel::release_worker_ends() noexcept {
  (void)request_bell_.receiver.take();
  (void)event_bell_.sender.take();
  (void)space_bell_.receiver.take();
}

bool SupervisorChannel::send(FrameType type, std::string_view payload, std::chrono::steady_clock::time_point deadline,
                             int peer_fd) {
  const bool sent = write_message(requests_, static_cast<uint16_t>(type), payload, [&](uint64_t, bool) {
    // Only a request larger than the free space gets here: the worker drains while we
    // wait. Requests are rare and small, so a short sleep-poll keeps this path simple.
    request_bell_.sender.ring();
    if (std::chrono::steady_clock::now() >= deadline) return false;
    pollfd p{peer_fd, POLLIN, 0};
    return !(peer_fd >= 0 && ::poll(&p, 1, 1) > 0);
  });
  if (sent && requests_.consumer_waiting()) request_bell_.sender.ring();
  return sent;
}

bool SupervisorChannel::poll_frame(FrameHeader& header, std::string& payload) {
  if (!events_.try_read(header, payload)) return false;
  if (events_.producer_waiting()) space_bell_.sender.ring();
  return true;
}

SupervisorChannel::Wait SupervisorChannel::next_frame(FrameHeader& header, std::string& payload, int timeout_ms,
                                                      int peer_fd) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto found = [&] {
    if (!poll_frame(header, payload)) return false;
    spurious_wakes_ = 0;
    return true;
  };
  for (;;) {
    // No spin before sleeping: the worker often runs on this thread's CPU (the doorbell's
    // wake-up puts it there), where a spin only delays it, and on a small shared host a
    // spin takes a CPU from other work (docs/benchmarks.md, "Where a round trip's time goes").
    const auto now = std::chrono::steady_clock::now();
    int left =
        now >= give_up ? 0 : static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(give_up - now).count());
    if (spurious_wakes_ >= kSpuriousWakesBeforePause) {
      // Doorbell spam: pause before looking again (1 ms, doubling up to kMaxPauseMs), still
      // watching the process. A real frame waits at most one pause.
      const int pause = std::min({left, kMaxPauseMs, 1 << std::min(spurious_wakes_ - kSpuriousWakesBeforePause, 5)});
      pollfd p{peer_fd, POLLIN, 0};
      if (peer_fd >= 0 ? ::poll(&p, 1, pause) > 0 : (::usleep(pause * 1000), false)) {
        if (found()) return Wait::kFrame;
        return Wait::kPeerExited;
      }
      event_bell_.receiver.drain();
      if (found()) return Wait::kFrame;
      if (left <= pause) return Wait::kTimeout;
      left -= pause;
    }
    events_.set_waiting(true);
    if (found()) {
      events_.set_waiting(false);
      return Wait::kFrame;
    }
    auto wake = event_bell_.receiver.wait(left, peer_fd);
    events_.set_waiting(false);
    event_bell_.receiver.drain();
    if (wake == DoorbellReceiver::Wake::kHangup) {
      bell_hung_up_ = true;
      // The worker closed its doorbell: it can no longer wake us, and the pipe reads as
      // ready forever. Fall back to polling the ring every 10 ms (a worker that did this
      // only slows itself down) while still watching the process.
      const int slice = std::min(left, 10);
      pollfd p{peer_fd, POLLIN, 0};
      const int n = peer_fd >= 0 ? ::poll(&p, 1, slice) : (::usleep(slice * 1000), 0);
      wake = n > 0 ? DoorbellReceiver::Wake::kOther
                   : (left <= 10 ? DoorbellReceiver::Wake::kTimeout : DoorbellReceiver::Wake::kRung);
    }
    if (found()) return Wait::kFrame;
    if (wake == DoorbellReceiver::Wake::kOther) return Wait::kPeerExited;
    // Rung, yet nothing sent: counted before a zero timeout returns too, so a caller that
    // steps without waiting (an event loop) sees the spam and stops trusting the bell.
    if (wake == DoorbellReceiver::Wake::kRung) ++spurious_wakes_;
    if (wake == DoorbellReceiver::Wake::kTimeout || left == 0) return Wait::kTimeout;
  }
}

bool SupervisorChannel::arm_wait() {
  events_.set_waiting(true);
  if (events_.has_data()) {
    events_.set_waiting(false);
    return false;
  }
  return true;
}

void SupervisorChannel::disarm_wait() noexcept {
  events_.set_waiting(false);
  event_bell_.receiver.drain();
}

int SupervisorChannel::bell_fd() const noexcept {
  return bell_hung_up_ || spurious_wakes_ >= kSpuriousWakesBeforePause ? -1 : event_bell_.receiver.fd();
}

int SupervisorChannel::poll_pause_ms() const noexcept {
  if (bell_hung_up_) return 10;
  if (spurious_wakes_ < kSpuriousWakesBeforePause) return -1;
  return std::min(kMaxPauseMs, 1 << std::min(spurious_wakes_ - kSpuriousWakesBeforePause, 5));
}

// ---- worker side ---------------------------------------------------------------------------

namespace {
SharedRegion attach_and_check(int fd) {
  SharedRegion region = SharedRegion::attach(UniqueFd(fd));
  RegionHeader h;
  std::memcpy(&h, region.data(), sizeof h);
  const uint64_t size = region.size();
  const bool ok = h.magic == kRegionMagic && h.version == kProtocolVersion && h.header_bytes == sizeof(RegionHeader) &&
                  is_power_of_two(h.request_capacity) && is_power_of_two(h.event_capacity) &&
                  h.request_offset == kDataOffset && h.event_offset == kDataOffset + h.request_capacity &&
                  h.request_capacity <= size && h.event_capacity <= size &&
                  kDataOffset + h.request_capacity + h.event_capacity == size;
  if (!ok)
    throw SandboxError("channel", "attach(ring header)", 0,
                       "magic, version or geometry of the shared region do not match");
  return region;
}

const RegionHeader& header_of(const SharedRegion& r) {
  return *std::launder(reinterpret_cast<const RegionHeader*>(r.data()));
}
}  // namespace

WorkerChannel::WorkerChannel(WorkerFds fds)
    : region_(attach_and_check(fds.region)),
      requests_(control_at(region_, kControlOffsetRequests), region_.data() + kDataOffset,
                header_of(region_).request_capacity),
      events_(control_at(region_, kControlOffsetEvents), region_.data() + header_of(region_).event_offset,
              header_of(region_).event_capacity),
      request_bell_(UniqueFd(fds.request_bell)),
      event_bell_(UniqueFd(fds.event_bell)),
      space_bell_(UniqueFd(fds.space_bell)) {}

bool WorkerChannel::receive(FrameHeader& header, std::string& payload, int timeout_ms) {
  if (requests_.try_read(header, payload)) return true;
  requests_.set_waiting(true);
  if (requests_.try_read(header, payload)) {
    requests_.set_waiting(false);
    return true;
  }
  const auto wake = request_bell_.wait(timeout_ms);
  requests_.set_waiting(false);
  request_bell_.drain();
  if (wake == DoorbellReceiver::Wake::kInterrupted) return false;
  return requests_.try_read(header, payload);
}

}  // namespace sandbox_exec
