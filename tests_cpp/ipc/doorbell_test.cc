// Doorbell (doorbell.h): a ring wakes wait() (also across threads), wait() times out,
// other_fd readable wakes it as kOther, a signal as kInterrupted; drain() empties the pipe
// whatever was rung so the next wait sleeps; the writer closing its end reads as kHangup
// (after any rings still queued); ring() never blocks on a full pipe; both ends are
// O_NONBLOCK|O_CLOEXEC and separate open file descriptions.
#include "ipc/doorbell.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ostream>
#include <thread>

#include <gtest/gtest.h>

namespace sandbox_exec {

void PrintTo(DoorbellReceiver::Wake wake, std::ostream* os) {
  switch (wake) {
    case DoorbellReceiver::Wake::kRung:
      *os << "kRung";
      return;
    case DoorbellReceiver::Wake::kOther:
      *os << "kOther";
      return;
    case DoorbellReceiver::Wake::kTimeout:
      *os << "kTimeout";
      return;
    case DoorbellReceiver::Wake::kInterrupted:
      *os << "kInterrupted";
      return;
    case DoorbellReceiver::Wake::kHangup:
      *os << "kHangup";
      return;
  }
  *os << "Wake(" << static_cast<int>(wake) << ")";
}

namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
using Wake = DoorbellReceiver::Wake;

// Bytes waiting in the pipe behind `fd` (read without consuming: FIONREAD).
int pending(int fd) {
  int n = -1;
  return ::ioctl(fd, FIONREAD, &n) == 0 ? n : -1;
}

TEST(Doorbell, RingWakesWait) {
  const DoorbellPair pair = DoorbellPair::create();
  pair.sender.ring();
  const auto start = Clock::now();
  EXPECT_EQ(pair.receiver.wait(5000), Wake::kRung);
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
}

TEST(Doorbell, RingFromAnotherThreadWakesASleeper) {
  const DoorbellPair pair = DoorbellPair::create();
  const auto start = Clock::now();
  std::thread ringer([&] {
    std::this_thread::sleep_for(milliseconds(100));
    pair.sender.ring();
  });
  const Wake wake = pair.receiver.wait(-1);
  const auto slept = Clock::now() - start;
  ringer.join();
  EXPECT_EQ(wake, Wake::kRung);
  EXPECT_GE(slept, milliseconds(90));
}

TEST(Doorbell, WaitTimesOut) {
  const DoorbellPair pair = DoorbellPair::create();
  const auto start = Clock::now();
  EXPECT_EQ(pair.receiver.wait(100), Wake::kTimeout);
  const auto slept = Clock::now() - start;
  EXPECT_GE(slept, milliseconds(95));
  EXPECT_LT(slept, milliseconds(2000));
  EXPECT_EQ(pair.receiver.wait(0), Wake::kTimeout);
}

TEST(Doorbell, ReadableOtherFdWakesAsOther) {
  const DoorbellPair pair = DoorbellPair::create();
  int other[2];
  ASSERT_EQ(::pipe2(other, O_CLOEXEC), 0);
  const UniqueFd other_read(other[0]), other_write(other[1]);
  EXPECT_EQ(pair.receiver.wait(50, other_read.get()), Wake::kTimeout);
  std::thread writer([&] {
    std::this_thread::sleep_for(milliseconds(50));
    ASSERT_EQ(::write(other_write.get(), "x", 1), 1);
  });
  const auto start = Clock::now();
  const Wake wake = pair.receiver.wait(5000, other_read.get());
  writer.join();
  EXPECT_EQ(wake, Wake::kOther);
  EXPECT_LT(Clock::now() - start, milliseconds(2000));
  // the doorbell itself was not rung: without other_fd it sleeps
  EXPECT_EQ(pair.receiver.wait(20), Wake::kTimeout);
}

TEST(Doorbell, OtherFdAsAPidfdWakesWhenTheProcessExits) {
  const DoorbellPair pair = DoorbellPair::create();
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::usleep(50 * 1000);
    ::_exit(0);
  }
  const UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  ASSERT_TRUE(pidfd);
  EXPECT_EQ(pair.receiver.wait(5000, pidfd.get()), Wake::kOther);
  ::waitpid(pid, nullptr, 0);
}

TEST(Doorbell, NegativeOtherFdIsIgnored) {
  const DoorbellPair pair = DoorbellPair::create();
  EXPECT_EQ(pair.receiver.wait(20, -1), Wake::kTimeout);
  pair.sender.ring();
  EXPECT_EQ(pair.receiver.wait(20, -1), Wake::kRung);
}

TEST(Doorbell, DrainEmptiesSoTheNextWaitSleeps) {
  // around the drain's 256-byte reads, and a full pipe
  for (int rings : {1, 2, 255, 256, 257, 512, 1000, 70000}) {
    SCOPED_TRACE(rings);
    const DoorbellPair pair = DoorbellPair::create();
    for (int i = 0; i < rings; ++i) pair.sender.ring();
    EXPECT_EQ(pair.receiver.wait(1000), Wake::kRung);
    EXPECT_EQ(pair.receiver.wait(1000), Wake::kRung);  // level-triggered: still rung
    pair.receiver.drain();
    EXPECT_EQ(pending(pair.receiver.fd()), 0);
    EXPECT_EQ(pair.receiver.wait(30), Wake::kTimeout);
    pair.sender.ring();  // and it rings again afterwards
    EXPECT_EQ(pair.receiver.wait(1000), Wake::kRung);
  }
}

TEST(Doorbell, DrainOfAnEmptyPipeReturns) {
  const DoorbellPair pair = DoorbellPair::create();
  pair.receiver.drain();  // O_NONBLOCK: returns at once
  EXPECT_EQ(pair.receiver.wait(10), Wake::kTimeout);
}

TEST(Doorbell, WriterClosingItsEndIsHangup) {
  DoorbellPair pair = DoorbellPair::create();
  pair.sender.take().reset();
  EXPECT_EQ(pair.sender.fd(), -1);
  const auto start = Clock::now();
  EXPECT_EQ(pair.receiver.wait(5000), Wake::kHangup);
  EXPECT_LT(Clock::now() - start, milliseconds(1000));
  // and stays so: the pipe reads ready forever
  pair.receiver.drain();
  EXPECT_EQ(pair.receiver.wait(5000), Wake::kHangup);
}

TEST(Doorbell, RingsBeforeTheHangupAreSeenFirst) {
  DoorbellPair pair = DoorbellPair::create();
  pair.sender.ring();
  pair.sender.take().reset();
  EXPECT_EQ(pair.receiver.wait(1000), Wake::kRung);
  pair.receiver.drain();
  EXPECT_EQ(pair.receiver.wait(1000), Wake::kHangup);
}

TEST(Doorbell, RingNeverBlocksOnAFullPipe) {
  const DoorbellPair pair = DoorbellPair::create();
  // In a child, so a blocking ring() fails the test instead of hanging it.
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    for (int i = 0; i < 200000; ++i) pair.sender.ring();  // about 3x a default pipe's 64 KiB
    ::_exit(0);
  }
  const UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  ASSERT_TRUE(pidfd);
  pollfd p{pidfd.get(), POLLIN, 0};
  const int ready = ::poll(&p, 1, 20000);
  if (ready != 1) ::kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_EQ(ready, 1) << "ring() blocked on a full pipe";
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  // the pipe is full, and still one wake for the receiver
  EXPECT_GE(pending(pair.receiver.fd()), 4096);
  EXPECT_EQ(pair.receiver.wait(1000), Wake::kRung);
  pair.receiver.drain();
  EXPECT_EQ(pair.receiver.wait(10), Wake::kTimeout);
}

volatile sig_atomic_t g_signalled = 0;
void on_signal(int) { g_signalled = 1; }

TEST(Doorbell, SignalDuringWaitIsInterrupted) {
  const DoorbellPair pair = DoorbellPair::create();
  struct sigaction sa {
  }, old{};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;  // poll() is never restarted, whatever SA_RESTART says
  ASSERT_EQ(::sigaction(SIGUSR1, &sa, &old), 0);
  g_signalled = 0;
  const pthread_t waiter = ::pthread_self();
  std::thread sender([waiter] {
    std::this_thread::sleep_for(milliseconds(100));
    ::pthread_kill(waiter, SIGUSR1);
  });
  const Wake wake = pair.receiver.wait(10000);
  sender.join();
  ::sigaction(SIGUSR1, &old, nullptr);
  EXPECT_EQ(wake, Wake::kInterrupted);
  EXPECT_EQ(g_signalled, 1);
}

TEST(Doorbell, EndsAreNonBlockingCloseOnExecAndSeparate) {
  const DoorbellPair pair = DoorbellPair::create();
  for (int fd : {pair.sender.fd(), pair.receiver.fd()}) {
    ASSERT_GE(fd, 0);
    EXPECT_NE(::fcntl(fd, F_GETFL) & O_NONBLOCK, 0) << fd;
    EXPECT_NE(::fcntl(fd, F_GETFD) & FD_CLOEXEC, 0) << fd;
  }
  // A hostile worker clearing O_NONBLOCK on its end leaves the supervisor's end as it is.
  ASSERT_EQ(::fcntl(pair.sender.fd(), F_SETFL, ::fcntl(pair.sender.fd(), F_GETFL) & ~O_NONBLOCK), 0);
  EXPECT_NE(::fcntl(pair.receiver.fd(), F_GETFL) & O_NONBLOCK, 0);
  pair.receiver.drain();  // would block forever on a blocking read end
}

TEST(Doorbell, TakeHandsOverTheDescriptor) {
  DoorbellPair pair = DoorbellPair::create();
  const int fd = pair.receiver.fd();
  UniqueFd taken = pair.receiver.take();
  EXPECT_EQ(taken.get(), fd);
  EXPECT_EQ(pair.receiver.fd(), -1);
  const DoorbellReceiver again(std::move(taken));
  pair.sender.ring();
  EXPECT_EQ(again.wait(1000), Wake::kRung);
}

}  // namespace
}  // namespace sandbox_exec
