// session_keeper: see session_keeper.h. Moved out of the launcher's main() so the zygote's
// forked keepers run exactly the same steps in the same order.
#include "launcher/session_keeper.h"

#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "common/process.h"
#include "launch/cgroup_membership.h"
#include "launch/launcher_protocol.h"
#include "launcher/contain.h"
#include "launcher/fds.h"
#include "launcher/userns.h"

namespace sandbox_exec::session_keeper {

namespace {

void report(const LauncherReport& r) {
  // A short write to a pipe is atomic (PIPE_BUF); EPIPE means the supervisor is gone, and
  // the lifeline handles that.
  [[maybe_unused]] ssize_t n = ::write(launcher_fd::kReport, &r, sizeof r);
}

void report_failure(LaunchStep step, int err) {
  report({LauncherReport::kSetupFailed, static_cast<int32_t>(step), 0, err, 0});
}

[[noreturn]] void child_fail(LaunchStep step, int err) {
  const int32_t record[2] = {static_cast<int32_t>(step), err};
  [[maybe_unused]] ssize_t n = ::write(launcher_fd::kExecReport, record, sizeof record);
  ::_exit(127);
}

// A fresh interpreter sets its own SIGPIPE handling (Python ignores it); one that continues
// from the zygote keeps Python's.
sighandler_t worker_sigpipe(WorkerStart start) { return start == WorkerStart::kExec ? SIG_DFL : SIG_IGN; }

// The last step in the worker, after every isolation step: the exec-report pipe's last
// copy closes here (by execve's CLOEXEC, or by hand), which the keeper reads as "started".
Outcome become_worker(WorkerStart start, char** argv) {
  if (start == WorkerStart::kReturn) {
    // The name an exec would have given it (the init's "sandbox-init" is inherited).
    const char* slash = std::strrchr(argv[0], '/');
    ::prctl(PR_SET_NAME, slash ? slash + 1 : argv[0], 0, 0, 0);
    ::close(launcher_fd::kExecReport);
    return {true, 0};
  }
  ::execve(argv[0], argv, environ);
  child_fail(LaunchStep::kExec, errno);
}

// Kills every child of this process until none is left. Orphans re-parent to us (we are a
// subreaper), so repeating until waitpid() says ECHILD also catches double-forked ones.
void kill_all_descendants() {
  const pid_t me = ::getpid();
  std::vector<pid_t> children;
  for (;;) {
    children.clear();
    (void)process::append_children(me, me, children);
    for (pid_t pid : children) ::kill(pid, SIGKILL);
    int status;
    // A listed child was killed and is not reaped yet, so a blocking wait returns promptly.
    // With none listed, an orphan may still be on its way to us: poll instead of blocking.
    const pid_t reaped = ::waitpid(-1, &status, children.empty() ? WNOHANG : 0);
    if (reaped < 0 && errno == ECHILD) return;
    if (reaped == 0) ::usleep(1000);
  }
}

// The first child of `pid` as the kernel lists it, in our pid namespace.
pid_t first_child(pid_t pid) {
  std::vector<pid_t> children;
  return process::append_children(pid, pid, children) && !children.empty() ? children.front() : -1;
}

// Waits for the exec-report pipe: EOF means the worker's execve succeeded (the pipe is
// CLOEXEC); a record means a step failed. Returns true on success.
bool await_exec(int exec_read) {
  int32_t record[2];
  ssize_t n;
  do {
    n = ::read(exec_read, record, sizeof record);
  } while (n < 0 && errno == EINTR);
  ::close(exec_read);
  if (n == static_cast<ssize_t>(sizeof record)) {
    report_failure(static_cast<LaunchStep>(record[0]), record[1]);
    return false;
  }
  return true;
}

// Set when the session ends because the lifeline broke (the supervisor closed it, or the
// backend died): only then does the launcher clean up the cgroups itself. Otherwise the
// supervisor still reads their counters (an OOM kill) and removes them.
bool g_lifeline_broke = false;

struct Keeper {
  pid_t child;     // our direct child: the worker, or the sandbox's init
  pid_t worker;    // the worker, as seen from here
  int status_fd;   // namespaces: the sandbox init's report of the worker's wait status
  bool subreaper;  // no namespaces: clean descendants up ourselves
};

int keep(const Keeper& k, int signal_fd) {
  auto end_session = [&] {
    if (k.subreaper) {
      kill_all_descendants();
    } else {
      ::kill(k.child, SIGKILL);  // pid 1 of the namespace: the kernel kills the rest
      while (::waitpid(k.child, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  };
  pollfd fds[2] = {{signal_fd, POLLIN, 0}, {launcher_fd::kLifeline, POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      break;
    }
    if (fds[1].revents != 0) {  // the supervisor closed the lifeline or died
      g_lifeline_broke = true;
      break;
    }
    signalfd_siginfo info;
    while (::read(signal_fd, &info, sizeof info) == static_cast<ssize_t>(sizeof info)) {
      if (info.ssi_signo == SIGINT) {
        ::kill(k.worker, SIGINT);
      } else if (info.ssi_signo == SIGTERM) {
        end_session();
        return 0;
      } else if (info.ssi_signo == SIGCHLD) {
        int status;
        pid_t pid;
        while ((pid = ::waitpid(-1, &status, WNOHANG)) > 0) {
          if (pid != k.child) continue;
          if (k.status_fd >= 0) {
            int worker_status;
            if (::read(k.status_fd, &worker_status, sizeof worker_status) == sizeof worker_status)
              report({LauncherReport::kExited, 0, worker_status, 0, 0});
          } else {
            report({LauncherReport::kExited, 0, status, 0, 0});
          }
          if (k.subreaper) kill_all_descendants();
          return 0;
        }
      }
    }
  }
  end_session();
  return 0;
}

// The channel's descriptors belong to the worker, which has them by now (or never will).
void close_channel_fds() {
  for (int fd : {launcher_fd::kRegion, launcher_fd::kRequestBell, launcher_fd::kEventBell, launcher_fd::kSpaceBell,
                 launcher_fd::kExecReport})
    ::close(fd);
}

// Without namespaces: the worker is our own child.
Outcome launch_plain(const SpawnSpec& spec, WorkerStart start, char** argv, int exec_read, int signal_fd,
                     const sigset_t& previous) {
  if (::prctl(PR_SET_CHILD_SUBREAPER, 1) != 0) {
    report_failure(LaunchStep::kFork, errno);
    return {false, 1};
  }
  const pid_t me = ::getpid();
  const pid_t worker = ::fork();
  if (worker < 0) {
    report_failure(LaunchStep::kFork, errno);
    return {false, 1};
  }
  if (worker == 0) {
    ::close(exec_read);
    ::close(signal_fd);
    ::sigprocmask(SIG_SETMASK, &previous, nullptr);
    ::signal(SIGPIPE, worker_sigpipe(start));
    // The worker joins the session's cgroups, not the launcher: a launcher inside them would
    // keep them busy, so it could not remove them after a broken lifeline.
    if (int err = cgroup::join(spec.isolation.cgroups, ::getpid())) child_fail(LaunchStep::kCgroupJoin, err);
    if (auto f = contain::contain_worker(spec, me); f.failed()) child_fail(f.step, f.error);
    return become_worker(start, argv);
  }
  close_channel_fds();
  if (!await_exec(exec_read)) {
    ::waitpid(worker, nullptr, 0);
    return {false, 1};
  }
  report({LauncherReport::kStarted, 0, worker, 0, me});
  const int rc = keep({worker, worker, -1, true}, signal_fd);
  // The supervisor removes the session's cgroups when it closes the session; after a broken
  // lifeline (the backend died) nobody else will.
  if (g_lifeline_broke) cgroup::remove_session_groups(spec.isolation.cgroups);
  return {false, rc};
}

// Zeroes the process's own argument strings (they are contiguous in memory).
void hide_command_line(int argc, char** argv) {
  if (argc <= 0 || argv == nullptr || argv[0] == nullptr) return;
  char* end = argv[argc - 1] + std::strlen(argv[argc - 1]);
  std::memset(argv[0], 0, static_cast<std::size_t>(end - argv[0]));
}

// The pipes between the launcher and the sandbox's init.
struct InitPipes {
  int sync[2];    // the launcher releases the init once its id maps and cgroups are set
  int status[2];  // the init reports the worker's wait status
};

// The sandbox's init: pid 1 of the new pid namespace. Finishes the sandbox, forks the worker,
// then reaps until the worker ends and reports its wait status. Returns only in the worker
// (WorkerStart::kReturn).
Outcome run_sandbox_init(const SpawnSpec& spec, WorkerStart start, char** argv, const InitPipes& pipes, int exec_read,
                         int signal_fd, const sigset_t& previous, int argc, char** argv_memory) {
  ::close(pipes.sync[1]);
  ::close(pipes.status[0]);
  ::close(exec_read);
  ::close(signal_fd);
  ::sigprocmask(SIG_SETMASK, &previous, nullptr);
  // (getppid() is 0 here: the parent lives outside the new pid namespace. A launcher that
  // died before the prctl shows as EOF on the sync pipe below.)
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) child_fail(LaunchStep::kDeathSignal, errno);
  char go;
  if (::read(pipes.sync[0], &go, 1) != 1) ::_exit(1);  // the launcher died before releasing us
  ::close(pipes.sync[0]);
  // We share the launcher's argv memory, which /proc/1/cmdline shows to the cell: it
  // names host paths (the sandbox root, the mountpoint). Blank it; the spec was copied.
  hide_command_line(argc, argv_memory);
  ::prctl(PR_SET_NAME, "sandbox-init", 0, 0, 0);
  if (::unshare(CLONE_NEWCGROUP) != 0) child_fail(LaunchStep::kClone, errno);
  if (auto f = contain::enter_sandbox(spec); f.failed()) child_fail(f.step, f.error);
  const pid_t worker = ::fork();
  if (worker < 0) child_fail(LaunchStep::kFork, errno);
  if (worker == 0) {
    ::close(pipes.status[1]);
    ::signal(SIGPIPE, worker_sigpipe(start));
    if (auto f = contain::contain_worker(spec, 1); f.failed()) child_fail(f.step, f.error);
    return become_worker(start, argv);
  }
  // Only the worker holds the exec report now: its execve closes the last copy.
  ::close(launcher_fd::kExecReport);
  for (int fd = 0; fd < launcher_fd::kFirstFree; ++fd) {
    if (fd != pipes.status[1]) ::close(fd);
  }
  // Reap everything (orphans re-parent to pid 1); report the worker's end and go, which
  // makes the kernel kill whatever is left in the namespace.
  for (;;) {
    int st;
    const pid_t reaped = ::waitpid(-1, &st, 0);
    if (reaped == worker) {
      [[maybe_unused]] ssize_t n = ::write(pipes.status[1], &st, sizeof st);
      ::_exit(0);
    }
    if (reaped < 0 && errno != EINTR) ::_exit(1);
  }
}

// clone()s the sandbox's init into new namespaces. As root, the new user namespace must be
// owned by the session's host id, not by root: the kernel charges per-user counters
// (inotify instances, user namespaces, pending signals, message queues) at every level of
// the user-namespace tree, to the owner of the namespace below, so namespaces owned by root
// would make every session, and the host's root, share one count (fs.inotify.max_user_instances:
// one session's 128 inotify instances would make inotify_init1 fail in all others). The
// owner is the creator's effective id: switch it for the clone only (the real and saved
// ids stay 0, so we get root back). No supplementary groups may reach the sandbox either.
// Returns the init's pid (0 in the init itself), or -errno.
long clone_init_as_session(const Isolation& iso, bool was_root) {
  // CLONE_NEWCGROUP is not here: the init unshares its cgroup namespace itself, after we
  // moved it into the session's cgroups, so the namespace's root is the session's group and
  // /proc/self/cgroup shows no host path.
  unsigned long flags = CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS;
  if (!iso.network) flags |= CLONE_NEWNET;
  if (was_root && (::setgroups(0, nullptr) != 0 || ::setresgid(-1, iso.outside_gid, -1) != 0 ||
                   ::setresuid(-1, iso.outside_uid, -1) != 0))
    return -errno;
  const long pid = ::syscall(SYS_clone, flags | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) return -errno;
  if (pid > 0 && was_root && (::setresuid(-1, 0, -1) != 0 || ::setresgid(-1, 0, -1) != 0)) {
    const int err = errno;
    ::kill(static_cast<pid_t>(pid), SIGKILL);
    ::waitpid(static_cast<pid_t>(pid), nullptr, 0);
    return -err;
  }
  return pid;
}

// From the launcher's side: the init's id maps and cgroups, then its release.
StepFailure release_init(const Isolation& iso, pid_t init, bool was_root, int sync_write) {
  const unsigned outside_uid = was_root ? iso.outside_uid : 0;  // unprivileged: our own
  const unsigned outside_gid = was_root ? iso.outside_gid : 0;  // namespace's 0 = caller
  if (auto f = userns::write_maps(init, iso.inside_uid, iso.inside_gid, outside_uid, outside_gid); f.failed()) return f;
  if (auto f = step_result(LaunchStep::kCgroupJoin, cgroup::join(iso.cgroups, init)); f.failed()) return f;
  if (::write(sync_write, "!", 1) != 1) return step_result(LaunchStep::kClone, errno);
  ::close(sync_write);
  return {};
}

// With namespaces: the launcher builds the root, clones the sandbox's init (which forks the
// worker) and keeps the session.
Outcome launch_isolated(const SpawnSpec& spec, WorkerStart start, char** argv, int exec_read, int signal_fd,
                        const sigset_t& previous, int argc, char** argv_memory) {
  const bool was_root = ::geteuid() == 0;
  if (auto f = contain::prepare_launcher(spec, was_root); f.failed()) {
    report_failure(f.step, f.error);
    return Outcome{false, 1};
  }
  InitPipes pipes{};
  if (::pipe2(pipes.sync, O_CLOEXEC) != 0 || ::pipe2(pipes.status, O_CLOEXEC) != 0) {
    report_failure(LaunchStep::kClone, errno);
    return Outcome{false, 1};
  }
  const Isolation& iso = spec.isolation;
  // The init starts in the new root: it inherits this working directory (translated into
  // its mount namespace), so it never walks the host path to it. That path may pass
  // through directories only root can search (a 0700 Sandbox root), and as root we can.
  if (::chdir(iso.mountpoint.c_str()) != 0) {
    report_failure(LaunchStep::kClone, errno);
    return Outcome{false, 1};
  }
  const long cloned = clone_init_as_session(iso, was_root);
  if (cloned < 0) {
    report_failure(LaunchStep::kClone, static_cast<int>(-cloned));
    return Outcome{false, 1};
  }
  if (cloned == 0) return run_sandbox_init(spec, start, argv, pipes, exec_read, signal_fd, previous, argc, argv_memory);
  const auto init = static_cast<pid_t>(cloned);
  auto abort_init = [&](StepFailure f) {
    report_failure(f.step, f.error);
    ::kill(init, SIGKILL);
    ::waitpid(init, nullptr, 0);
    return Outcome{false, 1};
  };
  ::close(pipes.sync[0]);
  ::close(pipes.status[1]);
  if (::chdir("/") != 0) return abort_init(step_result(LaunchStep::kClone, errno));
  close_channel_fds();
  if (auto f = release_init(iso, init, was_root, pipes.sync[1]); f.failed()) return abort_init(f);
  if (!await_exec(exec_read)) {
    ::kill(init, SIGKILL);
    ::waitpid(init, nullptr, 0);
    return Outcome{false, 1};
  }
  const pid_t worker = first_child(init);
  if (worker <= 0) return abort_init(step_result(LaunchStep::kFindWorker, ESRCH));
  report({LauncherReport::kStarted, 0, worker, 0, static_cast<int32_t>(init)});
  const int rc = keep({init, worker, pipes.status[0], false}, signal_fd);
  if (g_lifeline_broke) cgroup::remove_session_groups(iso.cgroups);
  return {false, rc};
}

}  // namespace

Outcome run(const SpawnSpec& spec, WorkerStart start, int argc, char** argv_memory) {
  // Everything the children need is built before fork.
  std::vector<std::string> argv_strings = spec.argv;
  std::vector<char*> child_argv;
  child_argv.reserve(argv_strings.size() + 1);
  for (auto& a : argv_strings) child_argv.push_back(a.data());
  child_argv.push_back(nullptr);

  // The report and lifeline pipes must not reach the user's code.
  ::fcntl(launcher_fd::kReport, F_SETFD, FD_CLOEXEC);
  ::fcntl(launcher_fd::kLifeline, F_SETFD, FD_CLOEXEC);
  // We report on a pipe the supervisor may have closed already: EPIPE, not death.
  ::signal(SIGPIPE, SIG_IGN);

  // Descriptors the backend leaked into us (anything not O_CLOEXEC there) end here; from
  // now on every descriptor we open lands at kFirstFree or above.
  if (auto f = fds::close_from(launcher_fd::kExecReport); f.failed()) {
    report_failure(f.step, f.error);
    return {false, 1};
  }
  // The children report a failed step on kExecReport (CLOEXEC: a successful execve closes
  // it, and that EOF is our "started"). Move the read end out of the way first, so placing
  // the write end at kExecReport cannot overwrite it.
  int exec_pipe[2];
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    report_failure(LaunchStep::kFork, errno);
    return {false, 1};
  }
  const int exec_read = ::fcntl(exec_pipe[0], F_DUPFD_CLOEXEC, launcher_fd::kFirstFree);
  ::close(exec_pipe[0]);
  if (exec_read < 0 ||
      (exec_pipe[1] != launcher_fd::kExecReport && ::dup3(exec_pipe[1], launcher_fd::kExecReport, O_CLOEXEC) < 0)) {
    report_failure(LaunchStep::kFork, errno);
    return {false, 1};
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
    report_failure(LaunchStep::kFork, errno);
    return {false, 1};
  }
  return spec.isolation.namespaces
             ? launch_isolated(spec, start, child_argv.data(), exec_read, signal_fd, previous, argc, argv_memory)
             : launch_plain(spec, start, child_argv.data(), exec_read, signal_fd, previous);
}

}  // namespace sandbox_exec::session_keeper
