#include "ipc/doorbell.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <cerrno>

#include "common/sys_error.h"

namespace sandbox_exec {

void DoorbellSender::ring() const noexcept {
  const char byte = 1;
  // EAGAIN: the pipe is full, the receiver is bound to wake. EPIPE: the peer is gone; the
  // caller learns that from the process watch, not from here.
  [[maybe_unused]] ssize_t n = ::write(fd_.get(), &byte, 1);
}

DoorbellReceiver::Wake DoorbellReceiver::wait(int timeout_ms, int other_fd) const {
  pollfd fds[2] = {{fd_.get(), POLLIN, 0}, {other_fd, POLLIN, 0}};
  const nfds_t count = other_fd >= 0 ? 2 : 1;
  const int n = ::poll(fds, count, timeout_ms);
  if (n < 0) {
    if (errno == EINTR) return Wake::kInterrupted;
    throw_sys("doorbell", "poll(doorbell)");
  }
  if (n == 0) return Wake::kTimeout;
  if (count == 2 && fds[1].revents != 0) return Wake::kOther;
  if ((fds[0].revents & POLLIN) == 0) return Wake::kHangup;  // POLLHUP/POLLERR only
  return Wake::kRung;
}

void DoorbellReceiver::drain() const noexcept {
  // At most one pipe's worth (64 KiB): a writer that keeps the pipe full must not hold the
  // reader here; what it writes meanwhile reads as one more (spurious) wake.
  char buffer[4096];
  for (int i = 0; i < 16; ++i) {
    if (::read(fd_.get(), buffer, sizeof buffer) != static_cast<ssize_t>(sizeof buffer)) return;
  }
}

DoorbellPair DoorbellPair::create() {
  int fds[2];
  if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw_sys("doorbell", "pipe2(O_NONBLOCK)");
  return DoorbellPair{DoorbellSender(UniqueFd(fds[1])), DoorbellReceiver(UniqueFd(fds[0]))};
}

}  // namespace sandbox_exec
