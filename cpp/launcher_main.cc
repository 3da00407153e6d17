// sandbox_exec_launcher: the program the supervisor spawns for each session.
//
// Why a separate program: the backend is multi-threaded, and fork() of a multi-threaded
// process may deadlock in the child (another thread held malloc's lock). The supervisor
// therefore posix_spawn()s this fresh, single-threaded program, which can set up isolation
// freely. It then stays alive as the session's init:
//
//   launcher (init, subreaper) ── fork ── worker: contain::contain_worker(), execve(python)
//
//   * reports kStarted / kSetupFailed / kExited on fd 3 (launcher_protocol.h);
//   * forwards SIGINT to the worker (interrupt a cell);
//   * on SIGTERM, on EOF of the lifeline (fd 4: the supervisor closed it, or the backend
//     died) and when the worker exits, kills every remaining descendant: as a child
//     subreaper it inherits double-forked orphans, so none survives the session.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "contain.h"
#include "fds.h"
#include "launcher_protocol.h"
#include "spawn_spec.h"
#include "sys_error.h"

using namespace sandbox_exec;

namespace {

void report(const LauncherReport& r) {
  // A short write to a pipe of 16 bytes is atomic (PIPE_BUF); EPIPE means the supervisor
  // is gone, and the lifeline handles that.
  [[maybe_unused]] ssize_t n = ::write(launcher_fd::kReport, &r, sizeof r);
}

[[noreturn]] void child_fail(LaunchStep step, int err) {
  const int32_t record[2] = {static_cast<int32_t>(step), err};
  [[maybe_unused]] ssize_t n = ::write(launcher_fd::kExecReport, record, sizeof record);
  ::_exit(127);
}

// Kills every child of this process until none is left. Orphans re-parent to us (we are a
// subreaper), so repeating until waitpid() says ECHILD also catches double-forked ones.
void kill_all_descendants() {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/children", ::getpid());
  for (;;) {
    int killed = 0;
    if (FILE* f = std::fopen(path, "re")) {
      int pid;
      while (std::fscanf(f, "%d", &pid) == 1) {
        ::kill(pid, SIGKILL);
        ++killed;
      }
      std::fclose(f);
    }
    int status;
    // A listed child was killed and is not reaped yet, so a blocking wait returns promptly.
    // With none listed, an orphan may still be on its way to us: poll instead of blocking.
    const pid_t reaped = ::waitpid(-1, &status, killed ? 0 : WNOHANG);
    if (reaped < 0 && errno == ECHILD) return;
    if (reaped == 0) ::usleep(1000);
  }
}

int run_init(pid_t worker, int signal_fd) {
  pollfd fds[2] = {{signal_fd, POLLIN, 0}, {launcher_fd::kLifeline, POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) break;  // the supervisor closed the lifeline or died
    signalfd_siginfo info;
    while (::read(signal_fd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
      if (info.ssi_signo == SIGINT) {
        ::kill(worker, SIGINT);
      } else if (info.ssi_signo == SIGTERM) {
        kill_all_descendants();
        return 0;
      } else if (info.ssi_signo == SIGCHLD) {
        int status;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
          if (pid == worker) {
            report({LauncherReport::kExited, 0, status, 0});
            kill_all_descendants();
            return 0;
          }
        }
      }
    }
  }
  kill_all_descendants();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  SpawnSpec spec;
  try {
    spec = parse_launcher_argv(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sandbox_exec_launcher: %s\n", e.what());
    report({LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kParseArgs), 0, EINVAL});
    return 2;
  }

  // Everything the child needs is built before fork: no allocation after it.
  std::vector<char*> child_argv;
  for (auto& a : spec.argv) child_argv.push_back(a.data());
  child_argv.push_back(nullptr);

  // The report pipe and the exec-status pipe must not reach the user's code.
  ::fcntl(launcher_fd::kReport, F_SETFD, FD_CLOEXEC);
  ::fcntl(launcher_fd::kLifeline, F_SETFD, FD_CLOEXEC);

  // init reports on a pipe the supervisor may have closed already: EPIPE, not death.
  ::signal(SIGPIPE, SIG_IGN);
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    report({LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kFork), 0, errno});
    return 1;
  }
  // Descriptors the backend leaked into us (anything not O_CLOEXEC there) end here; from
  // now on every descriptor we open lands at kFirstFree or above.
  if (int err = fds::close_from(launcher_fd::kExecReport)) {
    report({LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kCloseFds), 0, err});
    return 1;
  }
  // The child reports a failed step on kExecReport (CLOEXEC: a successful execve closes it,
  // and that EOF is init's "started"). Move the read end out of the way first, so placing
  // the write end at kExecReport cannot overwrite it.
  int exec_pipe[2];
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    report({LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kFork), 0, errno});
    return 1;
  }
  const int exec_read = ::fcntl(exec_pipe[0], F_DUPFD_CLOEXEC, launcher_fd::kFirstFree);
  ::close(exec_pipe[0]);
  exec_pipe[0] = exec_read;
  if (exec_read < 0 || (exec_pipe[1] != launcher_fd::kExecReport &&
                        ::dup3(exec_pipe[1], launcher_fd::kExecReport, O_CLOEXEC) < 0)) {
    report({LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kFork), 0, errno});
    return 1;
  }
  if (exec_pipe[1] != launcher_fd::kExecReport) ::close(exec_pipe[1]);

  sigset_t handled;
  sigemptyset(&handled);
  sigaddset(&handled, SIGINT);
  sigaddset(&handled, SIGTERM);
  sigaddset(&handled, SIGCHLD);
  sigset_t previous;
  ::sigprocmask(SIG_BLOCK, &handled, &previous);
  const int signal_fd = ::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK);
  if (signal_fd < 0) {
    report({LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kFork), 0, errno});
    return 1;
  }

  const pid_t init_pid = ::getpid();
  const pid_t worker = ::fork();
  if (worker < 0) {
    report({LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kFork), 0, errno});
    return 1;
  }
  if (worker == 0) {
    ::close(exec_pipe[0]);
    ::close(signal_fd);
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);
    ::signal(SIGPIPE, SIG_DFL);
    if (auto f = contain::contain_worker(spec, init_pid); f.failed()) child_fail(f.step, f.error);
    ::execve(child_argv[0], child_argv.data(), environ);
    child_fail(LaunchStep::kExec, errno);
  }

  // init: the ring's descriptors are the worker's business only.
  for (int fd : {launcher_fd::kRegion, launcher_fd::kRequestBell, launcher_fd::kEventBell,
                 launcher_fd::kSpaceBell, launcher_fd::kExecReport})
    ::close(fd);
  int32_t record[2];
  ssize_t n;
  do {
    n = ::read(exec_pipe[0], record, sizeof record);
  } while (n < 0 && errno == EINTR);
  ::close(exec_pipe[0]);
  if (n == static_cast<ssize_t>(sizeof record)) {
    report({LauncherReport::kSetupFailed, record[0], 0, record[1]});
    int status;
    ::waitpid(worker, &status, 0);
    return 1;
  }
  report({LauncherReport::kStarted, 0, worker, 0});
  return run_init(worker, signal_fd);
}
