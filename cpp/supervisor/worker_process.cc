#include "supervisor/worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "common/numbers.h"
#include "common/sys_error.h"
#include "launch/launcher_protocol.h"
#include "supervisor/logging.h"

namespace sandbox_exec {

namespace {

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

// A CLOEXEC duplicate at a number >= 100, so the posix_spawn dup2 actions onto 3..8 can
// never overwrite a source that is still to be moved.
UniqueFd high_dup(int fd) {
  UniqueFd out(::fcntl(fd, F_DUPFD_CLOEXEC, 100));
  if (!out) throw_sys("spawn", "fcntl(F_DUPFD_CLOEXEC, 100)");
  return out;
}

std::pair<UniqueFd, UniqueFd> make_pipe(int flags) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | flags) != 0) throw_sys("spawn", "pipe2()");
  return {UniqueFd(fds[0]), UniqueFd(fds[1])};
}

std::vector<char*> c_strings(std::vector<std::string>& v) {
  std::vector<char*> out;
  out.reserve(v.size() + 1);
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Reads exactly one report, waiting up to `timeout` or until the launcher exits.
bool read_report(int fd, int pidfd, LauncherReport& r, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  std::size_t have = 0;
  auto* bytes = reinterpret_cast<char*>(&r);
  while (have < sizeof r) {
    const ssize_t n = ::read(fd, bytes + have, sizeof r - have);
    if (n > 0) {
      have += static_cast<std::size_t>(n);
      continue;
    }
    if (n == 0) return false;  // launcher gone, no more records
    if (errno != EAGAIN && errno != EINTR) return false;
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p[2] = {{fd, POLLIN, 0}, {pidfd, POLLIN, 0}};
    ::poll(p, 2, static_cast<int>(left.count()));
    if (p[1].revents && !(p[0].revents & POLLIN)) {
      // The launcher exited; a last record may still sit in the pipe.
      const ssize_t m = ::read(fd, bytes + have, sizeof r - have);
      if (m <= 0) return false;
      have += static_cast<std::size_t>(m);
    }
  }
  return true;
}

// posix_spawn()s the launcher program with its descriptors at 3..8; returns its pid.
pid_t spawn_launcher_program(const SpawnSpec& spec, int report_write, int lifeline_read, const WorkerFds& w) {
  UniqueFd sources[] = {high_dup(report_write),   high_dup(lifeline_read), high_dup(w.region),
                        high_dup(w.request_bell), high_dup(w.event_bell),  high_dup(w.space_bell)};
  const int targets[] = {launcher_fd::kReport,      launcher_fd::kLifeline,  launcher_fd::kRegion,
                         launcher_fd::kRequestBell, launcher_fd::kEventBell, launcher_fd::kSpaceBell};

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (int fd = 0; fd <= 2; ++fd)
    posix_spawn_file_actions_addopen(&actions, fd, "/dev/null", fd == 0 ? O_RDONLY : O_WRONLY, 0);
  for (std::size_t i = 0; i < std::size(targets); ++i)
    posix_spawn_file_actions_adddup2(&actions, sources[i].get(), targets[i]);
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  // Own session and process group: a Ctrl-C at the backend's terminal must not interrupt
  // every cell, and the backend's job control must not stop them. Default signal dispositions
  // and an empty mask, whatever the backend set for itself.
  sigset_t all, none;
  sigfillset(&all);
  sigemptyset(&none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK);

  std::vector<std::string> argv = launcher_argv(spec);
  std::vector<std::string> env = spec.env;
  auto c_argv = c_strings(argv);
  auto c_env = c_strings(env);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, spec.launcher.c_str(), &actions, &attr, c_argv.data(), c_env.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) throw SandboxError("spawn", "posix_spawn(" + spec.launcher + ")", rc);
  return pid;
}

const char* signal_name(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? abbrev : "?";
}

}  // namespace

std::string ExitInfo::describe() const {
  if (!wait_status) return "ended without an exit status (its launcher was killed)";
  const int st = *wait_status;
  char text[128];
  if (WIFSIGNALED(st)) {
    std::snprintf(text, sizeof text, "killed by signal %d (SIG%s)%s", WTERMSIG(st), signal_name(WTERMSIG(st)),
                  WCOREDUMP(st) ? ", core dumped" : "");
  } else if (WIFEXITED(st)) {
    std::snprintf(text, sizeof text, "exited with status %d", WEXITSTATUS(st));
  } else {
    std::snprintf(text, sizeof text, "ended with wait status %d", st);
  }
  return text;
}

WorkerProcess::WorkerProcess(SpawnSpec spec, SupervisorChannel& channel, std::chrono::milliseconds start_timeout,
                             std::unique_ptr<Cgroups> cgroups, ZygoteLink* zygote)
    : cgroups_(std::move(cgroups)) {
  if (cgroups_) spec.isolation.cgroups = cgroups_->dirs();
  auto [report_read, report_write] = make_pipe(O_NONBLOCK);
  auto [lifeline_read, lifeline_write] = make_pipe(0);
  // The lifeline is never written, only closed: its EOF tells the launcher to end the session.
  const WorkerFds w = channel.worker_fds();
  if (zygote != nullptr) {
    const int fds[] = {report_write.get(), lifeline_read.get(), w.region, w.request_bell, w.event_bell, w.space_bell};
    auto forked = zygote->fork(spec, fds);
    launcher_pid_ = forked.pid;
    pidfd_ = std::move(forked.pidfd);
    our_child_ = false;
  } else {
    const pid_t pid = spawn_launcher_program(spec, report_write.get(), lifeline_read.get(), w);
    launcher_pid_ = pid;
    pidfd_ = UniqueFd(pidfd_open(pid));
    if (!pidfd_) {
      const int err = errno;
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      throw_sys("spawn", "pidfd_open(launcher)", err);
    }
  }
  report_ = std::move(report_read);
  lifeline_ = std::move(lifeline_write);
  // Our copies of the launcher's ends close with report_write/lifeline_read.
  channel.release_worker_ends();

  LauncherReport r{};
  if (!read_report(report_.get(), pidfd_.get(), r, start_timeout)) {
    // Asked before terminate(), which always ends (and reaps) the launcher.
    pollfd p{pidfd_.get(), POLLIN, 0};
    const bool launcher_exited = ::poll(&p, 1, 0) == 1;
    terminate();
    throw SandboxError("spawn", "launcher start (" + spec.launcher + ")", 0,
                       launcher_exited ? "the launcher exited without reporting: " + exit_info_.describe()
                                       : "no start report within the start timeout");
  }
  if (r.kind == LauncherReport::kSetupFailed) {
    terminate();
    const auto step = static_cast<LaunchStep>(r.step);
    throw SandboxError(launch_step_layer(step), launch_step_call(step), r.error);
  }
  if (r.kind != LauncherReport::kStarted || r.value <= 0) {
    terminate();
    throw SandboxError("spawn", "launcher start report", 0, "unexpected report from the launcher");
  }
  worker_pid_ = r.value;
  worker_parent_ = r.parent > 0 ? r.parent : launcher_pid_;
  open_stats();
  log::debug("spawned launcher {} worker {}", launcher_pid_, worker_pid_);
}

WorkerProcess::~WorkerProcess() { terminate(); }

void WorkerProcess::interrupt() const noexcept {
  if (!exited_ && owned_here()) pidfd_send_signal(pidfd_.get(), SIGINT);
}

void WorkerProcess::terminate(std::chrono::milliseconds grace) noexcept {
  if (exited_ || !pidfd_) return;
  if (!owned_here()) {  // a forked copy: the session is the parent's, leave it alone
    exited_ = true;
    lifeline_.reset();  // only our copy: the parent's lifeline still holds the launcher
    if (cgroups_) cgroups_->forget();
    return;
  }
  lifeline_.reset();
  pidfd_send_signal(pidfd_.get(), SIGTERM);
  pollfd p{pidfd_.get(), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(grace.count())) <= 0) {
    log::warn("launcher {} ignored SIGTERM for {} ms; killing it", launcher_pid_, grace.count());
    pidfd_send_signal(pidfd_.get(), SIGKILL);
  }
  await_exit();
  exited_ = true;
  read_reports();
  if (cgroups_) cgroups_->remove();
}

void WorkerProcess::await_exit() noexcept {
  if (our_child_) {
    while (::waitpid(launcher_pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
    return;
  }
  // A zygote's child: readable once it has exited (the zygote reaps it).
  pollfd p{pidfd_.get(), POLLIN, 0};
  while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
  }
}

bool WorkerProcess::reap() noexcept {
  if (exited_) return true;
  if (!owned_here()) return true;  // not ours to reap: dead to a forked copy
  bool ended;
  if (our_child_) {
    const pid_t r = ::waitpid(launcher_pid_, nullptr, WNOHANG);
    ended = r == launcher_pid_ || (r < 0 && errno == ECHILD);
  } else {
    pollfd p{pidfd_.get(), POLLIN, 0};
    ended = ::poll(&p, 1, 0) == 1;
  }
  if (ended) {
    exited_ = true;
    read_reports();
    if (cgroups_) cgroups_->remove();
  }
  return exited_;
}

void WorkerProcess::read_reports() noexcept {
  LauncherReport r{};
  while (::read(report_.get(), &r, sizeof r) == static_cast<ssize_t>(sizeof r)) {
    if (r.kind == LauncherReport::kExited) exit_info_.wait_status = r.value;
  }
}

void WorkerProcess::open_stats() noexcept {
  auto open_proc = [this](const char* name, int flags) {
    char path[64];
    std::snprintf(path, sizeof path, "/proc/%d/%s", worker_pid_, name);
    return UniqueFd(::open(path, flags | O_CLOEXEC));
  };
  stat_fd_ = open_proc("stat", O_RDONLY);
  status_fd_ = open_proc("status", O_RDONLY);
  clear_refs_fd_ = open_proc("clear_refs", O_WRONLY);
}

namespace {
// Reads a whole small /proc file through a kept descriptor.
std::size_t read_proc(int fd, char* buffer, std::size_t size) {
  if (fd < 0) return 0;
  const ssize_t n = ::pread(fd, buffer, size - 1, 0);
  if (n <= 0) return 0;
  buffer[n] = '\0';
  return static_cast<std::size_t>(n);
}
}  // namespace

Usage WorkerProcess::usage(bool with_peak) const noexcept {
  Usage u;
  if (exited_ || worker_pid_ <= 0) return u;
  char text[4096];
  if (read_proc(stat_fd_.get(), text, sizeof text) == 0) return u;
  // Fields after the command name, which is in parentheses and may contain anything.
  const char* close = std::strrchr(text, ')');
  if (close == nullptr) return u;
  // proc(5): state ppid pgrp session tty_nr tpgid flags minflt cminflt majflt cmajflt utime stime
  const auto fields = numbers::words(close + 1);
  if (fields.size() < 13) return u;
  const auto ppid = numbers::parse<int>(fields[1]);
  const auto utime = numbers::parse<unsigned long long>(fields[11]);
  const auto stime = numbers::parse<unsigned long long>(fields[12]);
  if (!ppid || !utime || !stime || *ppid != worker_parent_) return u;  // not our worker (a false claim)
  static const double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  u.cpu_seconds = static_cast<double>(*utime + *stime) / ticks;
  if (with_peak && read_proc(status_fd_.get(), text, sizeof text) != 0) {
    if (const char* hwm = std::strstr(text, "\nVmHWM:")) {
      const auto line = numbers::words(std::string_view(hwm + 7, std::strcspn(hwm + 7, "\n")));
      if (line.size() == 2 && line[1] == "kB") {
        if (auto kb = numbers::parse<unsigned long long>(line[0])) u.peak_rss_bytes = *kb * 1024;
      }
    }
  }
  u.valid = true;
  return u;
}

void WorkerProcess::reset_peak_rss() const noexcept {
  // "5" resets the peak RSS (VmHWM) to the current RSS: Documentation/filesystems/proc.rst.
  if (!exited_ && clear_refs_fd_) {
    [[maybe_unused]] ssize_t n = ::pwrite(clear_refs_fd_.get(), "5", 1, 0);
  }
}

}  // namespace sandbox_exec
