#include "supervisor/zygote_link.h"

#include <fcntl.h>
#include <poll.h>

#include <cerrno>
#include <vector>

#include "common/sys_error.h"
#include "launch/zygote_protocol.h"

namespace sandbox_exec {

namespace zp = zygote_protocol;

ZygoteLink::ZygoteLink(int control) : control_(::fcntl(control, F_DUPFD_CLOEXEC, 3)) {
  if (!control_) throw_sys("zygote", "fcntl(F_DUPFD_CLOEXEC, control socket)");
}

ZygoteLink::Forked ZygoteLink::fork(const SpawnSpec& spec, const int (&fds)[6]) {
  const std::string request = zp::encode_fork_request(spec);
  std::lock_guard lock(mutex_);
  if (!control_) throw SandboxError("zygote", "fork request", EPIPE, "the zygote was closed");
  if (int err = zp::send_with_fds(control_.get(), request.data(), request.size(), fds, zp::kForkFdCount))
    throw SandboxError("zygote", "sendmsg(fork request)", err);
  // A fork of a loaded interpreter takes milliseconds; a zygote that does not answer in
  // 10 s is stuck, and the caller falls back to a cold start.
  pollfd p{control_.get(), POLLIN, 0};
  int ready;
  do {
    ready = ::poll(&p, 1, 10000);
  } while (ready < 0 && errno == EINTR);
  if (ready <= 0) throw SandboxError("zygote", "fork reply", ETIMEDOUT, "the zygote did not answer within 10 s");
  zp::ForkReply reply{};
  std::vector<UniqueFd> got;
  const ssize_t n = zp::receive_with_fds(control_.get(), &reply, sizeof reply, got, 1);
  if (n == 0) throw SandboxError("zygote", "fork reply", EPIPE, "the zygote closed its socket");
  if (n < 0) throw SandboxError("zygote", "recvmsg(fork reply)", static_cast<int>(-n));
  if (n != static_cast<ssize_t>(sizeof reply)) throw SandboxError("zygote", "fork reply", EPROTO);
  if (reply.error != 0) throw SandboxError("zygote", "fork()", reply.error);
  if (got.size() != 1 || reply.pid <= 0) throw SandboxError("zygote", "fork reply", EPROTO, "no pidfd in the reply");
  return {reply.pid, std::move(got.front())};
}

void ZygoteLink::close() noexcept {
  std::lock_guard lock(mutex_);
  control_.reset();
}

}  // namespace sandbox_exec
