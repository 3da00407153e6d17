// WorkerProcess: the supervisor's handle on one session's processes.
//
// It posix_spawn()s the launcher (never fork() of the multi-threaded backend: glibc's
// posix_spawn uses CLONE_VFORK and runs no user-space code in the child but the file
// actions) -- or, for a warm session, asks a zygote (zygote_link.h) to fork the session's
// keeper, which runs the launcher's very steps --, hands it the channel's descriptors at
// fixed numbers, waits for the launcher's
// kStarted report (or turns kSetupFailed into a SandboxError naming the step and errno), and
// then watches the launcher through a pidfd: pollable next to the ring's doorbell and immune
// to pid reuse when signalling.
//
//   interrupt()  SIGINT, forwarded by the launcher to the worker (KeyboardInterrupt)
//   terminate()  close the lifeline + SIGTERM: the launcher kills every descendant; SIGKILL
//                to the launcher if it does not exit within the grace period
//   reap()       non-blocking: has it exited, and with what worker status
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "common/unique_fd.h"
#include "ipc/channel.h"
#include "launch/spawn_spec.h"
#include "supervisor/cgroup.h"
#include "supervisor/zygote_link.h"

namespace sandbox_exec {

struct ExitInfo {
  // The worker's wait status as the launcher reported it; nullopt when the launcher died
  // without reporting (it was killed).
  std::optional<int> wait_status;
  // "killed by signal 11 (SIGSEGV)", "exited with status 3", ...
  std::string describe() const;
};

struct Usage {
  double cpu_seconds = 0;       // user + system time of the worker process
  uint64_t peak_rss_bytes = 0;  // VmHWM of the worker process
  bool valid = false;
};

class WorkerProcess {
 public:
  // `cgroups`, when given, are created before the spawn and joined by the sandbox's init.
  // `zygote`, when given, forks the keeper (a warm start) instead of the launcher program.
  WorkerProcess(SpawnSpec spec, SupervisorChannel& channel, std::chrono::milliseconds start_timeout,
                std::unique_ptr<Cgroups> cgroups = nullptr, ZygoteLink* zygote = nullptr);
  ~WorkerProcess();
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  [[nodiscard]] int pidfd() const noexcept { return pidfd_.get(); }
  [[nodiscard]] pid_t worker_pid() const noexcept { return worker_pid_; }
  [[nodiscard]] pid_t launcher_pid() const noexcept { return launcher_pid_; }
  // The worker's parent: the sandbox's init (every session process is under it).
  [[nodiscard]] pid_t worker_parent() const noexcept { return worker_parent_; }
  [[nodiscard]] const Cgroups* cgroups() const noexcept { return cgroups_.get(); }

  void interrupt() const noexcept;
  // Ends every process of the session; blocks up to `grace` for an orderly exit.
  void terminate(std::chrono::milliseconds grace = std::chrono::milliseconds(1000)) noexcept;
  // True once the launcher has exited (reaps it); exit_info() is then final.
  [[nodiscard]] bool reap() noexcept;
  [[nodiscard]] const ExitInfo& exit_info() const noexcept { return exit_info_; }

  // The worker's CPU time and peak RSS from /proc (reset_peak_rss() starts a new peak).
  [[nodiscard]] Usage usage(bool with_peak = true) const noexcept;
  void reset_peak_rss() const noexcept;

 private:
  void read_reports() noexcept;
  void open_stats() noexcept;
  // Blocks until the launcher (keeper) has exited: waitpid() for our child, the pidfd for
  // a zygote's (which the zygote reaps).
  void await_exit() noexcept;
  pid_t launcher_pid_ = -1;
  bool our_child_ = true;  // false: forked by a zygote
  pid_t worker_pid_ = -1;
  pid_t worker_parent_ = -1;  // the launcher, or the sandbox's init when namespaced
  std::unique_ptr<Cgroups> cgroups_;
  UniqueFd pidfd_;
  UniqueFd report_;    // read end; the launcher writes LauncherReport records
  UniqueFd lifeline_;  // write end; closing it tells the launcher to end the session
  // Not atomic: the owner serialises every call but pidfd() and the pids (CellRunner's
  // lifecycle_ lock).
  bool exited_ = false;
  // The process that spawned the session. A forked copy of the backend (a pre-fork server,
  // a daemonizing helper) inherits this object but not the session: it never signals,
  // reaps or cleans up the parent's processes and cgroups.
  pid_t owner_ = ::getpid();
  [[nodiscard]] bool owned_here() const noexcept { return ::getpid() == owner_; }
  ExitInfo exit_info_;
  // /proc/<worker>/{stat,status,clear_refs}, opened once: a cell's usage is then a few
  // pread()s instead of open/parse/close, and the descriptors keep naming this very process
  // even if its pid is reused after it exits.
  UniqueFd stat_fd_, status_fd_, clear_refs_fd_;
};

}  // namespace sandbox_exec
