// Tests of the session channel (channel.h): SupervisorChannel and WorkerChannel in one
// process (the worker end on dup()s of SupervisorChannel::worker_fds()). Covers the region
// layout and seals, requests and events in both directions, messages larger than one frame
// chunked with kFlagMore and reassembled (also larger than the whole ring, with a second
// thread draining), next_frame timeouts and kPeerExited (a pipe and a real pidfd), signals
// during the worker's waits (check_signal only before a message's first frame; receive()
// returns false on EINTR), the worker's attach checks against crafted memfds (magic,
// version, geometry, size), and a hostile worker: it rewrites the RegionHeader's
// capacities after creation (the supervisor keeps its own geometry), corrupts the event
// tail or a frame header (ProtocolViolation from next_frame/poll_frame, not a crash),
// corrupts the request head (send throws), and closes its event doorbell (the supervisor
// must still sleep, not spin).
#include "ipc/channel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>

#include "common/sys_error.h"

namespace sandbox_exec {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr uint64_t kRequestControl = 256;  // channel.h layout
constexpr uint64_t kEventControl = 512;
constexpr uint64_t kDataOffset = 4096;

int dup_fd(int fd) {
  const int d = ::fcntl(fd, F_DUPFD_CLOEXEC, 20);
  if (d < 0) throw std::runtime_error("dup failed");
  return d;
}

WorkerFds dup_all(const WorkerFds& f) {
  return {dup_fd(f.region), dup_fd(f.request_bell), dup_fd(f.event_bell), dup_fd(f.space_bell)};
}

auto no_signal = [] {};

Clock::time_point in(milliseconds ms) { return Clock::now() + ms; }

double thread_cpu_seconds() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

// A second MAP_SHARED view of the session's region, as the worker process has it.
class RegionView {
 public:
  explicit RegionView(int fd) {
    struct stat st {};
    if (::fstat(fd, &st) != 0) throw std::runtime_error("fstat");
    size_ = static_cast<std::size_t>(st.st_size);
    void* p = ::mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap");
    base_ = static_cast<std::byte*>(p);
  }
  ~RegionView() { ::munmap(base_, size_); }
  RegionView(const RegionView&) = delete;
  RegionView& operator=(const RegionView&) = delete;
  RegionHeader* header() const { return reinterpret_cast<RegionHeader*>(base_); }
  RingControl* requests() const { return reinterpret_cast<RingControl*>(base_ + kRequestControl); }
  RingControl* events() const { return reinterpret_cast<RingControl*>(base_ + kEventControl); }
  std::byte* at(uint64_t offset) const { return base_ + offset; }
  std::size_t size() const { return size_; }

 private:
  std::byte* base_ = nullptr;
  std::size_t size_ = 0;
};

// Both ends of one channel in this process.
struct Ends {
  explicit Ends(ChannelGeometry g = {4096, 8192}) : supervisor(g), worker(dup_all(supervisor.worker_fds())) {}
  SupervisorChannel supervisor;
  WorkerChannel worker;
};

// ---- layout and geometry ------------------------------------------------------------------

TEST(ChannelGeometry, SupervisorRejectsBadCapacities) {
  EXPECT_THROW(SupervisorChannel({3000, 8192}), ConfigError);
  EXPECT_THROW(SupervisorChannel({4096, 12288}), ConfigError);
  EXPECT_THROW(SupervisorChannel({2048, 8192}), ConfigError);
  EXPECT_THROW(SupervisorChannel({4096, 0}), ConfigError);
  EXPECT_THROW(SupervisorChannel({4096, 1ull << 31}), ConfigError);
  SupervisorChannel ok({4096, 4096});
  EXPECT_EQ(ok.geometry().request_capacity, 4096u);
  EXPECT_EQ(ok.geometry().event_capacity, 4096u);
}

TEST(ChannelGeometry, RegionHeaderLayoutAndSeals) {
  SupervisorChannel s({8192, 16384});
  const WorkerFds f = s.worker_fds();
  RegionView v(f.region);
  EXPECT_EQ(v.size(), 4096u + 8192u + 16384u);
  const RegionHeader& h = *v.header();
  EXPECT_EQ(h.magic, kRegionMagic);
  EXPECT_EQ(std::memcmp(&h.magic, "SDBEXEC1", 8), 0);
  EXPECT_EQ(h.version, kProtocolVersion);
  EXPECT_EQ(h.header_bytes, sizeof(RegionHeader));
  EXPECT_EQ(h.request_capacity, 8192u);
  EXPECT_EQ(h.event_capacity, 16384u);
  EXPECT_EQ(h.request_offset, 4096u);
  EXPECT_EQ(h.event_offset, 4096u + 8192u);
  EXPECT_EQ(v.requests()->head.load(), 0u);
  EXPECT_EQ(v.requests()->tail.load(), 0u);
  EXPECT_EQ(v.events()->head.load(), 0u);
  EXPECT_EQ(v.events()->tail.load(), 0u);
  // The size is sealed: a hostile worker cannot shrink the region under the supervisor.
  const int seals = ::fcntl(f.region, F_GET_SEALS);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  const int rc = ::ftruncate(f.region, 4096);
  const int err = errno;
  EXPECT_NE(rc, 0);
  EXPECT_EQ(err, EPERM);
  // All the descriptors are distinct and close-on-exec.
  for (int fd : {f.region, f.request_bell, f.event_bell, f.space_bell}) {
    ASSERT_GE(fd, 0);
    EXPECT_TRUE(::fcntl(fd, F_GETFD) & FD_CLOEXEC) << fd;
  }
}

TEST(ChannelGeometry, ReleaseWorkerEndsClosesOnlyTheWorkersBells) {
  SupervisorChannel s({4096, 4096});
  const WorkerFds before = s.worker_fds();
  s.release_worker_ends();
  const WorkerFds after = s.worker_fds();
  EXPECT_EQ(after.region, before.region);  // the supervisor's own mapping descriptor stays
  EXPECT_EQ(after.request_bell, -1);
  EXPECT_EQ(after.event_bell, -1);
  EXPECT_EQ(after.space_bell, -1);
  for (int fd : {before.request_bell, before.event_bell, before.space_bell}) {
    errno = 0;
    const int rc = ::fcntl(fd, F_GETFD);
    const int err = errno;
    EXPECT_EQ(rc, -1) << fd;
    EXPECT_EQ(err, EBADF) << fd;
  }
  EXPECT_NE(::fcntl(before.region, F_GETFD), -1);
}

// ---- traffic ------------------------------------------------------------------------------

TEST(Channel, RequestReachesTheWorker) {
  Ends e;
  ASSERT_TRUE(e.supervisor.send(FrameType::kExecute, R"({"code":"1+1"})", in(milliseconds(1000)), -1));
  FrameHeader h{};
  std::string payload;
  ASSERT_TRUE(e.worker.receive(h, payload, 1000));
  EXPECT_EQ(h.type, static_cast<uint16_t>(FrameType::kExecute));
  EXPECT_EQ(h.flags, 0u);
  EXPECT_EQ(payload, R"({"code":"1+1"})");
  EXPECT_FALSE(e.worker.receive(h, payload, 10));  // nothing more: times out
}

TEST(Channel, EmptyRequestIsOneEmptyFrame) {
  Ends e;
  ASSERT_TRUE(e.supervisor.send(FrameType::kShutdown, "", in(milliseconds(1000)), -1));
  FrameHeader h{};
  std::string payload = "x";
  ASSERT_TRUE(e.worker.receive(h, payload, 1000));
  EXPECT_EQ(h.type, static_cast<uint16_t>(FrameType::kShutdown));
  EXPECT_EQ(h.length, 0u);
  EXPECT_EQ(h.flags, 0u);
  EXPECT_TRUE(payload.empty());
}

TEST(Channel, EventReachesTheSupervisor) {
  Ends e;
  e.worker.send(FrameType::kStdout, "hello\n", no_signal);
  e.worker.send(FrameType::kCellDone, R"({"status":"ok"})", no_signal);
  FrameHeader h{};
  std::string payload;
  ASSERT_EQ(e.supervisor.next_frame(h, payload, 1000, -1), SupervisorChannel::Wait::kFrame);
  EXPECT_EQ(h.type, static_cast<uint16_t>(FrameType::kStdout));
  EXPECT_EQ(payload, "hello\n");
  ASSERT_TRUE(e.supervisor.poll_frame(h, payload));
  EXPECT_EQ(h.type, static_cast<uint16_t>(FrameType::kCellDone));
  EXPECT_EQ(payload, R"({"status":"ok"})");
  EXPECT_FALSE(e.supervisor.poll_frame(h, payload));
}

TEST(Channel, RequestLargerThanOneFrameIsChunkedAndReassembled) {
  Ends e;  // request ring 4096: frames of at most 1016 bytes
  std::string big(3000, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>('a' + i % 26);
  ASSERT_TRUE(e.supervisor.send(FrameType::kExecute, big, in(milliseconds(1000)), -1));
  FrameHeader h{};
  std::string payload;
  MessageAssembler a(1 << 20);
  const uint32_t expected_lengths[] = {1016, 1016, 968};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(e.worker.receive(h, payload, 1000)) << i;
    EXPECT_EQ(h.type, static_cast<uint16_t>(FrameType::kExecute));
    EXPECT_EQ(h.length, expected_lengths[i]) << i;
    EXPECT_EQ(h.flags, i < 2 ? kFlagMore : 0) << i;
    EXPECT_EQ(a.feed(h, payload.data(), payload.size()),
              i < 2 ? MessageAssembler::Result::kIncomplete : MessageAssembler::Result::kComplete);
  }
  EXPECT_EQ(a.message(), big);
  EXPECT_FALSE(e.worker.receive(h, payload, 10));
}

TEST(Channel, EventLargerThanOneFrameIsChunkedAndReassembled) {
  Ends e;  // event ring 8192: frames of at most 2040 bytes
  std::string big(6000, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 13);
  e.worker.send(FrameType::kMessage, big, no_signal);
  FrameHeader h{};
  std::string payload;
  MessageAssembler a(1 << 20);
  int frames = 0;
  MessageAssembler::Result r = MessageAssembler::Result::kIncomplete;
  while (r == MessageAssembler::Result::kIncomplete) {
    ASSERT_EQ(e.supervisor.next_frame(h, payload, 1000, -1), SupervisorChannel::Wait::kFrame);
    EXPECT_LE(h.length, 2040u);
    r = a.feed(h, payload.data(), payload.size());
    ++frames;
  }
  EXPECT_EQ(r, MessageAssembler::Result::kComplete);
  EXPECT_EQ(frames, 3);
  EXPECT_EQ(a.type(), static_cast<uint16_t>(FrameType::kMessage));
  EXPECT_EQ(a.message(), big);
}

TEST(Channel, EventMessageLargerThanTheRingFlowsWhileTheSupervisorDrains) {
  Ends e;
  std::string big(1 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 7) ^ (i >> 10));
  std::thread worker([&] {
    e.worker.send(FrameType::kMessage, big, no_signal);
    e.worker.send(FrameType::kCellDone, "{}", no_signal);
  });
  FrameHeader h{};
  std::string payload;
  MessageAssembler a(2 << 20);
  bool complete = false;
  const auto give_up = in(milliseconds(10000));
  while (!complete && Clock::now() < give_up) {
    const auto w = e.supervisor.next_frame(h, payload, 1000, -1);
    if (w != SupervisorChannel::Wait::kFrame) continue;
    complete = a.feed(h, payload.data(), payload.size()) == MessageAssembler::Result::kComplete;
  }
  ASSERT_TRUE(complete);
  EXPECT_EQ(a.message().size(), big.size());
  EXPECT_TRUE(a.message() == big);
  ASSERT_EQ(e.supervisor.next_frame(h, payload, 5000, -1), SupervisorChannel::Wait::kFrame);
  EXPECT_EQ(h.type, static_cast<uint16_t>(FrameType::kCellDone));
  worker.join();
}

TEST(Channel, RequestLargerThanTheRingFlowsWhileTheWorkerDrains) {
  Ends e;
  int never[2];
  ASSERT_EQ(::pipe2(never, O_CLOEXEC), 0);  // a peer watch that never fires (poll sleeps on it)
  std::string big(100000, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i % 251);
  std::string received;
  std::thread worker([&] {
    FrameHeader h{};
    std::string payload;
    MessageAssembler a(1 << 20);
    const auto give_up = in(milliseconds(10000));
    while (Clock::now() < give_up) {
      if (!e.worker.receive(h, payload, 100)) continue;
      if (a.feed(h, payload.data(), payload.size()) == MessageAssembler::Result::kComplete) {
        received = a.message();
        return;
      }
    }
  });
  const bool sent = e.supervisor.send(FrameType::kExecute, big, in(milliseconds(10000)), never[0]);
  worker.join();
  ::close(never[0]);
  ::close(never[1]);
  EXPECT_TRUE(sent);
  EXPECT_EQ(received.size(), big.size());
  EXPECT_TRUE(received == big);
}

TEST(Channel, SendGivesUpAtTheDeadlineWhenTheWorkerDoesNotDrain) {
  Ends e;
  int never[2];
  ASSERT_EQ(::pipe2(never, O_CLOEXEC), 0);
  const auto start = Clock::now();
  const bool sent = e.supervisor.send(FrameType::kExecute, std::string(10000, 'x'), in(milliseconds(100)), never[0]);
  const auto took = Clock::now() - start;
  ::close(never[0]);
  ::close(never[1]);
  EXPECT_FALSE(sent);
  EXPECT_GE(took, milliseconds(100));
  EXPECT_LT(took, milliseconds(2000));
}

TEST(Channel, SendGivesUpWhenThePeerExits) {
  Ends e;
  int peer[2];
  ASSERT_EQ(::pipe2(peer, O_CLOEXEC), 0);
  ASSERT_EQ(::write(peer[1], "x", 1), 1);  // "the worker is gone"
  const auto start = Clock::now();
  const bool sent = e.supervisor.send(FrameType::kExecute, std::string(10000, 'x'), in(milliseconds(5000)), peer[0]);
  const auto took = Clock::now() - start;
  ::close(peer[0]);
  ::close(peer[1]);
  EXPECT_FALSE(sent);
  EXPECT_LT(took, milliseconds(1000));
}

// ---- waiting ------------------------------------------------------------------------------

TEST(ChannelWait, NextFrameTimesOut) {
  Ends e;
  FrameHeader h{};
  std::string payload;
  const auto start = Clock::now();
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 80, -1), SupervisorChannel::Wait::kTimeout);
  const auto took = Clock::now() - start;
  EXPECT_GE(took, milliseconds(80));
  EXPECT_LT(took, milliseconds(1000));
}

TEST(ChannelWait, NextFrameWithZeroTimeoutReturnsAtOnce) {
  Ends e;
  FrameHeader h{};
  std::string payload;
  const auto start = Clock::now();
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 0, -1), SupervisorChannel::Wait::kTimeout);
  EXPECT_LT(Clock::now() - start, milliseconds(100));
  e.worker.send(FrameType::kStdout, "x", no_signal);
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 0, -1), SupervisorChannel::Wait::kFrame);
  EXPECT_EQ(payload, "x");
}

TEST(ChannelWait, NextFrameSleepsInsteadOfSpinning) {
  Ends e;
  FrameHeader h{};
  std::string payload;
  const double cpu0 = thread_cpu_seconds();
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 300, -1), SupervisorChannel::Wait::kTimeout);
  EXPECT_LT(thread_cpu_seconds() - cpu0, 0.1);
}

TEST(ChannelWait, NextFrameWakesForAFrameFromAnotherThread) {
  Ends e;
  std::thread worker([&] {
    std::this_thread::sleep_for(milliseconds(50));
    e.worker.send(FrameType::kStderr, "late", no_signal);
  });
  FrameHeader h{};
  std::string payload;
  const auto start = Clock::now();
  const auto w = e.supervisor.next_frame(h, payload, 5000, -1);
  const auto took = Clock::now() - start;
  worker.join();
  ASSERT_EQ(w, SupervisorChannel::Wait::kFrame);
  EXPECT_EQ(payload, "late");
  EXPECT_LT(took, milliseconds(2000)) << "the doorbell must wake the sleeping supervisor";
}

TEST(ChannelWait, PeerExitedWhenThePeerFdBecomesReadable) {
  Ends e;
  int peer[2];
  ASSERT_EQ(::pipe2(peer, O_CLOEXEC), 0);
  FrameHeader h{};
  std::string payload;
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 20, peer[0]), SupervisorChannel::Wait::kTimeout);
  ASSERT_EQ(::write(peer[1], "x", 1), 1);
  const auto start = Clock::now();
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 5000, peer[0]), SupervisorChannel::Wait::kPeerExited);
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
  ::close(peer[0]);
  ::close(peer[1]);
}

TEST(ChannelWait, PublishedFramesComeBeforePeerExited) {
  Ends e;
  int peer[2];
  ASSERT_EQ(::pipe2(peer, O_CLOEXEC), 0);
  e.worker.send(FrameType::kStdout, "last words", no_signal);
  ASSERT_EQ(::write(peer[1], "x", 1), 1);
  FrameHeader h{};
  std::string payload;
  ASSERT_EQ(e.supervisor.next_frame(h, payload, 1000, peer[0]), SupervisorChannel::Wait::kFrame);
  EXPECT_EQ(payload, "last words");
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 1000, peer[0]), SupervisorChannel::Wait::kPeerExited);
  ::close(peer[0]);
  ::close(peer[1]);
}

TEST(ChannelWait, PeerExitedForARealProcessPidfd) {
  Ends e;
  int go[2];
  ASSERT_EQ(::pipe2(go, O_CLOEXEC), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    char c;
    (void)::read(go[0], &c, 1);
    ::_exit(0);
  }
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
  ASSERT_GE(pidfd, 0);
  FrameHeader h{};
  std::string payload;
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 30, pidfd), SupervisorChannel::Wait::kTimeout);
  ASSERT_EQ(::write(go[1], "x", 1), 1);
  EXPECT_EQ(e.supervisor.next_frame(h, payload, 5000, pidfd), SupervisorChannel::Wait::kPeerExited);
  int status = 0;
  EXPECT_EQ(::waitpid(child, &status, 0), child);
  ::close(pidfd);
  ::close(go[0]);
  ::close(go[1]);
}

TEST(ChannelWait, WorkerReceiveTimesOut) {
  Ends e;
  FrameHeader h{};
  std::string payload;
  const auto start = Clock::now();
  EXPECT_FALSE(e.worker.receive(h, payload, 50));
  EXPECT_GE(Clock::now() - start, milliseconds(50));
}

TEST(ChannelWait, WorkerReceiveWakesForARequestFromAnotherThread) {
  Ends e;
  std::thread supervisor([&] {
    std::this_thread::sleep_for(milliseconds(50));
    (void)e.supervisor.send(FrameType::kExecute, "{}", in(milliseconds(1000)), -1);
  });
  FrameHeader h{};
  std::string payload;
  const bool got = e.worker.receive(h, payload, 5000);
  supervisor.join();
  ASSERT_TRUE(got);
  EXPECT_EQ(payload, "{}");
}

// ---- signals while the worker waits ------------------------------------------------------

struct Interrupted {};
void on_usr1(int) {}

// SIGUSR1 with a handler and without SA_RESTART: a blocked poll() in the signalled thread
// returns EINTR, like the Python worker's wait when SIGINT arrives.
class WorkerSignals : public ::testing::Test {
 protected:
  void SetUp() override {
    struct sigaction sa {};
    sa.sa_handler = on_usr1;
    ASSERT_EQ(::sigaction(SIGUSR1, &sa, &previous_), 0);
  }
  void TearDown() override { ::sigaction(SIGUSR1, &previous_, nullptr); }
  // Signals `t` every 10 ms until `stop` is true or `count` signals were sent.
  static void pester(std::thread& t, const std::atomic<bool>& stop, int count) {
    for (int i = 0; i < count && !stop; ++i) {
      ::pthread_kill(t.native_handle(), SIGUSR1);
      std::this_thread::sleep_for(milliseconds(10));
    }
  }
  struct sigaction previous_ {};
};

TEST_F(WorkerSignals, SignalBeforeTheFirstFrameWentOutReachesCheckSignal) {
  Ends e({4096, 4096});  // events: frames of at most 1016 bytes, 4 of them fill the ring
  e.worker.send(FrameType::kStdout, std::string(4 * 1016, 'f'), no_signal);
  std::atomic<int> calls{0};
  std::atomic<bool> threw{false}, finished{false};
  std::thread t([&] {
    try {
      e.worker.send(FrameType::kStdout, "blocked", [&] {
        ++calls;
        throw Interrupted{};
      });
    } catch (const Interrupted&) {
      threw = true;
    }
    finished = true;
  });
  pester(t, finished, 300);
  t.join();
  EXPECT_TRUE(threw) << "check_signal was not called while waiting for the first frame";
  EXPECT_EQ(calls.load(), 1);
  // Nothing of the abandoned message reached the ring.
  FrameHeader h{};
  std::string payload, all;
  for (int i = 0; i < 4; ++i) {
    ASSERT_TRUE(e.supervisor.poll_frame(h, payload)) << i;
    all += payload;
  }
  EXPECT_EQ(all, std::string(4 * 1016, 'f'));
  EXPECT_FALSE(e.supervisor.poll_frame(h, payload));
}

TEST_F(WorkerSignals, MessageAlreadyStartedIsAlwaysFinished) {
  Ends e({4096, 4096});
  for (int i = 0; i < 3; ++i)
    e.worker.send(FrameType::kStdout, std::string(1016, static_cast<char>('a' + i)), no_signal);
  // 1024 bytes free: the first frame of this message fits, the second does not.
  std::string message(2000, '\0');
  for (std::size_t i = 0; i < message.size(); ++i) message[i] = static_cast<char>('A' + i % 26);
  std::atomic<int> calls{0};
  std::atomic<bool> finished{false};
  std::thread t([&] {
    e.worker.send(FrameType::kMessage, message, [&] { ++calls; });
    finished = true;
  });
  const std::atomic<bool> never{false};
  pester(t, never, 30);  // 300 ms of interruptions mid-message
  EXPECT_FALSE(finished.load());
  EXPECT_EQ(calls.load(), 0) << "check_signal called after the message had started";
  // Drain: the three fill frames, then the whole message.
  FrameHeader h{};
  std::string payload;
  for (int i = 0; i < 3; ++i) {
    ASSERT_EQ(e.supervisor.next_frame(h, payload, 5000, -1), SupervisorChannel::Wait::kFrame);
    EXPECT_EQ(payload, std::string(1016, static_cast<char>('a' + i)));
  }
  MessageAssembler a(1 << 16);
  MessageAssembler::Result r = MessageAssembler::Result::kIncomplete;
  while (r == MessageAssembler::Result::kIncomplete) {
    ASSERT_EQ(e.supervisor.next_frame(h, payload, 5000, -1), SupervisorChannel::Wait::kFrame);
    r = a.feed(h, payload.data(), payload.size());
  }
  t.join();
  EXPECT_EQ(r, MessageAssembler::Result::kComplete);
  EXPECT_EQ(a.message(), message);
  EXPECT_EQ(calls.load(), 0);
}

TEST_F(WorkerSignals, ReceiveReturnsFalseWhenASignalInterruptsTheWait) {
  Ends e;
  std::atomic<bool> finished{false};
  bool got = true;
  std::thread t([&] {
    FrameHeader h{};
    std::string payload;
    got = e.worker.receive(h, payload, 10000);
    finished = true;
  });
  const auto start = Clock::now();
  pester(t, finished, 300);
  t.join();
  EXPECT_FALSE(got);
  EXPECT_LT(Clock::now() - start, milliseconds(3000));
}

// ---- the worker's attach checks -----------------------------------------------------------

RegionHeader good_header(uint64_t req = 4096, uint64_t ev = 4096) {
  return RegionHeader{kRegionMagic, kProtocolVersion, sizeof(RegionHeader), req, ev, kDataOffset, kDataOffset + req};
}

// A memfd of `size` bytes starting with `h`, as a hostile or confused supervisor might pass.
int crafted_region(const RegionHeader& h, uint64_t size) {
  const int fd = ::memfd_create("crafted", MFD_CLOEXEC);
  if (fd < 0) throw std::runtime_error("memfd_create");
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) throw std::runtime_error("ftruncate");
  // A region smaller than the header holds only the header's first bytes.
  const std::size_t n = size < sizeof h ? static_cast<std::size_t>(size) : sizeof h;
  if (n && ::pwrite(fd, &h, n, 0) != static_cast<ssize_t>(n)) throw std::runtime_error("pwrite");
  return fd;
}

// The bells are not needed to test the header checks; -1 keeps the test free of leaks
// whatever the constructor does with them on failure.
WorkerFds region_only(int fd) { return {fd, -1, -1, -1}; }

void expect_attach_rejected(const RegionHeader& h, uint64_t size, const char* what) {
  SCOPED_TRACE(what);
  try {
    WorkerChannel w(region_only(crafted_region(h, size)));
    ADD_FAILURE() << "attach accepted a region with " << what;
  } catch (const SandboxError& e) {
    EXPECT_TRUE(e.layer() == "channel" || e.layer() == "shared_region") << e.what();
  }
}

TEST(WorkerAttach, AcceptsAWellFormedCraftedRegion) {
  // The baseline the rejection tests start from must itself attach and work.
  const int fd = crafted_region(good_header(), 4096 + 4096 + 4096);
  WorkerChannel w(region_only(fd));
  FrameHeader h{};
  std::string payload;
  EXPECT_FALSE(w.receive(h, payload, 0));
}

TEST(WorkerAttach, RejectsBadMagic) {
  RegionHeader h = good_header();
  h.magic = 0x3243455845424453ULL;  // "SDBEXEC2"
  expect_attach_rejected(h, 12288, "bad magic");
  h.magic = 0;
  expect_attach_rejected(h, 12288, "zero magic");
}

TEST(WorkerAttach, RejectsOtherProtocolVersion) {
  RegionHeader h = good_header();
  h.version = kProtocolVersion + 1;
  expect_attach_rejected(h, 12288, "version + 1");
  h.version = 0;
  expect_attach_rejected(h, 12288, "version 0");
}

TEST(WorkerAttach, RejectsWrongHeaderSize) {
  RegionHeader h = good_header();
  h.header_bytes = sizeof(RegionHeader) + 8;
  expect_attach_rejected(h, 12288, "header_bytes");
}

TEST(WorkerAttach, RejectsBadGeometry) {
  {
    RegionHeader h = good_header(4096, 4096);
    h.request_capacity = 3000;
    h.event_offset = kDataOffset + 3000;
    expect_attach_rejected(h, 4096 + 3000 + 4096, "request capacity not a power of two");
  }
  {
    RegionHeader h = good_header(4096, 4096);
    h.event_capacity = 4095;
    expect_attach_rejected(h, 4096 + 4096 + 4095, "event capacity not a power of two");
  }
  {
    RegionHeader h = good_header(4096, 4096);
    h.event_capacity = 0;
    expect_attach_rejected(h, 4096 + 4096, "event capacity 0");
  }
  {
    RegionHeader h = good_header(4096, 4096);
    h.request_offset = 0;  // the ring data over the header
    expect_attach_rejected(h, 12288, "request offset 0");
  }
  {
    RegionHeader h = good_header(4096, 4096);
    h.event_offset = kDataOffset;  // both rings on the same bytes
    expect_attach_rejected(h, 12288, "overlapping rings");
  }
  {
    RegionHeader h = good_header(4096, 4096);
    h.event_offset = 1ull << 40;  // far outside the mapping
    expect_attach_rejected(h, 12288, "event offset outside the region");
  }
  {
    RegionHeader h = good_header(4096, 1ull << 40);  // capacities larger than the region
    expect_attach_rejected(h, 12288, "event capacity past the end");
  }
  {
    RegionHeader h = good_header(1ull << 63, 1ull << 63);  // sums that overflow
    expect_attach_rejected(h, 4096, "overflowing capacities");
  }
}

TEST(WorkerAttach, RejectsSizeThatDoesNotMatchTheGeometry) {
  expect_attach_rejected(good_header(), 12288 - 4096, "region smaller than the geometry");
  expect_attach_rejected(good_header(), 12288 + 4096, "region larger than the geometry");
  expect_attach_rejected(good_header(), 16, "region smaller than its header");
}

TEST(WorkerAttach, RejectsAnEmptyOrForeignDescriptor) {
  expect_attach_rejected(good_header(), 0, "an empty memfd");
  int p[2];
  ASSERT_EQ(::pipe2(p, O_CLOEXEC), 0);
  ::close(p[1]);
  EXPECT_THROW(WorkerChannel w(region_only(p[0])), SandboxError);  // takes ownership of p[0]
}

TEST(WorkerAttach, RejectsRingsTooSmallForAFrame) {
  // Powers of two below the ring minimum (64): the header is consistent with the size, but
  // a ring of 1..32 bytes cannot hold a frame. Rejected either as a bad header or by the
  // ring's own geometry check; never attached.
  for (uint64_t tiny : {uint64_t{1}, uint64_t{8}, uint64_t{32}}) {
    SCOPED_TRACE(tiny);
    bool rejected = false;
    try {
      WorkerChannel w(region_only(crafted_region(good_header(tiny, 4096), 4096 + tiny + 4096)));
    } catch (const SandboxError&) {
      rejected = true;
    } catch (const ProtocolViolation&) {
      rejected = true;
    }
    EXPECT_TRUE(rejected);
  }
}

// ---- a hostile worker ---------------------------------------------------------------------

TEST(HostileWorker, CapacitiesRewrittenAfterCreationAreIgnoredByTheSupervisor) {
  Ends e({4096, 8192});
  RegionView v(e.supervisor.worker_fds().region);
  // The "worker" claims the rings are much larger than they are.
  v.header()->request_capacity = 1ull << 30;
  v.header()->event_capacity = 1ull << 30;
  v.header()->event_offset = 64;
  EXPECT_EQ(e.supervisor.geometry().request_capacity, 4096u);
  EXPECT_EQ(e.supervisor.geometry().event_capacity, 8192u);

  // Requests still go out in frames sized for a 4096-byte ring, into the right place.
  const std::string request(3000, 'r');
  ASSERT_TRUE(e.supervisor.send(FrameType::kExecute, request, in(milliseconds(1000)), -1));
  EXPECT_EQ(v.requests()->tail.load(), 1024u + 1024u + 976u);
  FrameHeader raw{};
  std::memcpy(&raw, v.at(kDataOffset), sizeof raw);
  EXPECT_EQ(raw.length, 1016u);
  EXPECT_EQ(raw.flags, kFlagMore);
  FrameHeader h{};
  std::string payload, joined;
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(e.worker.receive(h, payload, 1000));
    joined += payload;
  }
  EXPECT_EQ(joined, request);

  // Events are read from the supervisor's own event offset with its own capacity; a frame
  // the old geometry forbids (more than 2040 bytes) is still refused.
  e.worker.send(FrameType::kStdout, "still fine", no_signal);
  ASSERT_EQ(e.supervisor.next_frame(h, payload, 1000, -1), SupervisorChannel::Wait::kFrame);
  EXPECT_EQ(payload, "still fine");
  // Many rounds through the ring: the supervisor wraps at 8192, as created.
  for (int i = 0; i < 50; ++i) {
    const std::string text(1500, static_cast<char>('A' + i % 26));
    e.worker.send(FrameType::kStdout, text, no_signal);
    ASSERT_EQ(e.supervisor.next_frame(h, payload, 1000, -1), SupervisorChannel::Wait::kFrame);
    ASSERT_EQ(payload, text) << i;
  }
  EXPECT_GT(v.events()->head.load(), 8192u * 5);

  // A frame length that only the forged geometry would allow is a violation.
  const uint64_t tail = v.events()->tail.load();
  const FrameHeader forged{4000, static_cast<uint16_t>(FrameType::kStdout), 0};
  std::memcpy(v.at(kDataOffset + 4096 + (tail & 8191)), &forged, sizeof forged);
  v.events()->tail.store(tail + frame_footprint(4000));
  EXPECT_THROW((void)e.supervisor.poll_frame(h, payload), ProtocolViolation);

  // A worker attaching now sees an inconsistent header and refuses it.
  EXPECT_THROW(WorkerChannel w(region_only(dup_fd(e.supervisor.worker_fds().region))), SandboxError);
}

TEST(HostileWorker, CorruptEventTailMakesNextFrameThrow) {
  Ends e;
  RegionView v(e.supervisor.worker_fds().region);
  v.events()->tail.store(12345);  // not a multiple of 8, and past the capacity
  FrameHeader h{};
  std::string payload;
  EXPECT_THROW((void)e.supervisor.next_frame(h, payload, 1000, -1), ProtocolViolation);
  EXPECT_THROW((void)e.supervisor.poll_frame(h, payload), ProtocolViolation);
}

TEST(HostileWorker, EventTailBehindHeadMakesPollFrameThrow) {
  Ends e;
  e.worker.send(FrameType::kStdout, "abc", no_signal);
  FrameHeader h{};
  std::string payload;
  ASSERT_TRUE(e.supervisor.poll_frame(h, payload));
  RegionView v(e.supervisor.worker_fds().region);
  v.events()->tail.store(0);
  EXPECT_THROW((void)e.supervisor.poll_frame(h, payload), ProtocolViolation);
  EXPECT_THROW((void)e.supervisor.next_frame(h, payload, 100, -1), ProtocolViolation);
}

TEST(HostileWorker, CorruptEventTailWhileTheSupervisorSleeps) {
  Ends e;
  RegionView v(e.supervisor.worker_fds().region);
  const int event_bell = e.supervisor.worker_fds().event_bell;
  std::thread worker([&] {
    std::this_thread::sleep_for(milliseconds(50));
    v.events()->tail.store(8192 + 16);  // more than the capacity ahead
    const char one = 1;
    (void)::write(event_bell, &one, 1);
  });
  FrameHeader h{};
  std::string payload;
  EXPECT_THROW((void)e.supervisor.next_frame(h, payload, 5000, -1), ProtocolViolation);
  worker.join();
}

TEST(HostileWorker, CorruptFrameHeaderMakesNextFrameThrow) {
  Ends e;
  RegionView v(e.supervisor.worker_fds().region);
  const uint64_t event_data = kDataOffset + 4096;
  {
    const FrameHeader bad{0, static_cast<uint16_t>(FrameType::kStdout), 0x40};  // unknown flag
    std::memcpy(v.at(event_data), &bad, sizeof bad);
    v.events()->tail.store(8);
    FrameHeader h{};
    std::string payload;
    EXPECT_THROW((void)e.supervisor.next_frame(h, payload, 1000, -1), ProtocolViolation);
  }
  {
    const FrameHeader bad{0xFFFFFFF0u, static_cast<uint16_t>(FrameType::kStdout), 0};
    std::memcpy(v.at(event_data), &bad, sizeof bad);
    v.events()->tail.store(8192);
    FrameHeader h{};
    std::string payload;
    EXPECT_THROW((void)e.supervisor.poll_frame(h, payload), ProtocolViolation);
  }
}

TEST(HostileWorker, CorruptRequestHeadMakesSendThrow) {
  Ends e;
  RegionView v(e.supervisor.worker_fds().region);
  v.requests()->head.store(4096);  // ahead of the supervisor's tail (0)
  EXPECT_THROW((void)e.supervisor.send(FrameType::kExecute, "{}", in(milliseconds(1000)), -1), ProtocolViolation);
  EXPECT_EQ(v.requests()->tail.load(), 0u);
}

TEST(HostileWorker, ClosedEventDoorbellDoesNotMakeTheSupervisorSpin) {
  // The worker closes its end of the event doorbell (any cell can close fd 7) and then
  // stays silent. The supervisor's wait must still sleep until its timeout: a pipe whose
  // writer is gone polls readable (POLLHUP) forever, and treating that as a ring each time
  // turns next_frame into a busy loop burning a whole core of the backend.
  SupervisorChannel s({4096, 8192});
  {
    WorkerChannel w(dup_all(s.worker_fds()));
    s.release_worker_ends();  // as after the spawn: only the worker holds its ends
  }                           // the worker's descriptors close here, the event bell's write end among them
  FrameHeader h{};
  std::string payload;
  const auto start = Clock::now();
  const double cpu0 = thread_cpu_seconds();
  EXPECT_EQ(s.next_frame(h, payload, 300, -1), SupervisorChannel::Wait::kTimeout);
  const double cpu = thread_cpu_seconds() - cpu0;
  EXPECT_GE(Clock::now() - start, milliseconds(300));
  EXPECT_LT(cpu, 0.1) << "next_frame burnt " << cpu << " s of CPU in a 0.3 s wait";
}

}  // namespace
}  // namespace sandbox_exec
