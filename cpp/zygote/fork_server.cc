#include "zygote/fork_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

#include "common/sys_error.h"
#include "common/unique_fd.h"
#include "launch/launcher_protocol.h"
#include "launch/zygote_protocol.h"
#include "launcher/session_keeper.h"

namespace sandbox_exec::fork_server {

namespace zp = zygote_protocol;

namespace {

void reap_keepers() noexcept {
  while (::waitpid(-1, nullptr, WNOHANG) > 0) {
  }
}

void reply(int control, int32_t error, int32_t pid, int pidfd) noexcept {
  const zp::ForkReply r{error, pid};
  (void)zp::send_with_fds(control, &r, sizeof r, &pidfd, pidfd >= 0 ? 1 : 0);
}

// In the forked keeper: the request's descriptors at 3..8, nothing else of the zygote's.
// They arrived close-on-exec at arbitrary numbers, possibly among 3..8: each moves above
// them first, then onto its place (dup2 clears close-on-exec; session_keeper sets what it
// needs).
bool place_descriptors(std::vector<UniqueFd>& fds) noexcept {
  std::array<int, zp::kForkFdCount> high{};
  for (std::size_t i = 0; i < zp::kForkFdCount; ++i) {
    high[i] = ::fcntl(fds[i].get(), F_DUPFD_CLOEXEC, 100);
    if (high[i] < 0) return false;
  }
  fds.clear();
  for (std::size_t i = 0; i < zp::kForkFdCount; ++i) {
    const int target = launcher_fd::kReport + static_cast<int>(i);
    if (::dup2(high[i], target) < 0) return false;
    ::close(high[i]);
  }
  return true;
}

}  // namespace

int thread_count() noexcept {
  DIR* d = ::opendir("/proc/self/task");
  if (d == nullptr) return 0;
  int n = 0;
  while (const dirent* e = ::readdir(d)) {
    if (e->d_name[0] != '.') ++n;
  }
  ::closedir(d);
  return n;
}

Served serve(int control, const ForkHooks& hooks) {
  std::string buffer(zp::kMaxRequestBytes, '\0');
  std::vector<UniqueFd> fds;
  for (;;) {
    reap_keepers();
    pollfd p{control, POLLIN, 0};
    // Wakes once a second to reap keepers whose sessions ended.
    const int ready = ::poll(&p, 1, 1000);
    if (ready < 0 && errno != EINTR) throw_sys("zygote", "poll(control socket)");
    if (ready <= 0) continue;
    const ssize_t n = zp::receive_with_fds(control, buffer.data(), buffer.size(), fds, zp::kForkFdCount);
    if (n == 0) return {};  // the supervisor closed the socket: the zygote's work is over
    if (n == -EMSGSIZE) {
      reply(control, EMSGSIZE, 0, -1);
      continue;
    }
    if (n < 0) throw SandboxError("zygote", "recvmsg(control socket)", static_cast<int>(-n));
    // The zygote itself never decodes a request: every later session is a copy of its
    // memory, so nothing of one session (its workdir, host id, cgroups, environment) may
    // stay in it, not even in freed heap. It checks the header and the descriptors, forks,
    // and zeroes the bytes; the child decodes its own copy.
    zp::ForkRequestHeader header{};
    if (static_cast<std::size_t>(n) >= sizeof header) std::memcpy(&header, buffer.data(), sizeof header);
    if (header.magic != zp::kMagic || header.version != zp::kVersion || fds.size() != zp::kForkFdCount) {
      ::explicit_bzero(buffer.data(), static_cast<std::size_t>(n));
      reply(control, EINVAL, 0, -1);
      continue;
    }
    if (thread_count() != 1) {  // something started a thread since the zygote settled
      ::explicit_bzero(buffer.data(), static_cast<std::size_t>(n));
      reply(control, EDEADLK, 0, -1);
      continue;
    }
    if (hooks.before) hooks.before();
    const pid_t pid = ::fork();
    if (pid == 0) {
      if (hooks.after_in_child) hooks.after_in_child();
      ::close(control);
      // Its own session and process group, as a spawned launcher has (POSIX_SPAWN_SETSID):
      // no terminal's job control or Ctrl-C reaches it, nor a signal meant for the zygote's.
      ::setsid();
      // Default dispositions for what the keeper waits on (the zygote may have set its own).
      ::signal(SIGCHLD, SIG_DFL);
      if (!place_descriptors(fds)) ::_exit(126);  // the supervisor sees no report: "exited"
      SpawnSpec spec;
      try {
        spec = zp::decode_fork_request(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
      } catch (const ConfigError&) {
        const LauncherReport r{LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kParseArgs), 0, EINVAL,
                               0};
        [[maybe_unused]] ssize_t written = ::write(launcher_fd::kReport, &r, sizeof r);
        ::_exit(2);
      }
      const auto out = session_keeper::run(spec, session_keeper::WorkerStart::kReturn, 0, nullptr);
      if (!out.is_worker) ::_exit(out.exit_code);
      return {true, std::move(spec)};
    }
    ::explicit_bzero(buffer.data(), static_cast<std::size_t>(n));
    const int fork_error = pid < 0 ? errno : 0;
    if (hooks.after_in_parent) hooks.after_in_parent();
    fds.clear();  // the session's descriptors are the keeper's now
    if (pid < 0) {
      reply(control, fork_error, 0, -1);
      continue;
    }
    UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd) {
      const int err = errno;
      ::kill(pid, SIGKILL);
      reply(control, err, 0, -1);
      continue;
    }
    reply(control, 0, pid, pidfd.get());
  }
}

}  // namespace sandbox_exec::fork_server
