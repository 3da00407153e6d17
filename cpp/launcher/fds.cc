#include "launcher/fds.h"

#include <fcntl.h>
#include <linux/close_range.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace sandbox_exec::fds {

namespace {

int close_from_errno(int first) noexcept {
  if (::syscall(SYS_close_range, static_cast<unsigned>(first), ~0U, 0U) == 0) return 0;
  if (errno != ENOSYS) return errno;
  // Kernels before 5.9: walk up to the descriptor limit.
  rlimit rl{};
  if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return errno;
  for (rlim_t fd = static_cast<rlim_t>(first); fd < rl.rlim_cur; ++fd) ::close(static_cast<int>(fd));
  return 0;
}

int ensure_stdio_errno() noexcept {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1) continue;
    const int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd < 0) return errno;
    if (null_fd != fd) {
      if (::dup2(null_fd, fd) < 0) return errno;
      ::close(null_fd);
    }
  }
  return 0;
}

}  // namespace

StepFailure close_from(int first) noexcept { return step_result(LaunchStep::kCloseFds, close_from_errno(first)); }

StepFailure ensure_stdio() noexcept { return step_result(LaunchStep::kCloseFds, ensure_stdio_errno()); }

}  // namespace sandbox_exec::fds
