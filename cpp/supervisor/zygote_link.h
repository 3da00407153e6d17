// ZygoteLink: the supervisor's end of one zygote's control socket (zygote_protocol.h).
//
// A warm session's WorkerProcess asks its zygote to fork the session's keeper instead of
// posix_spawn()ing the launcher. Thread-safe: requests from several threads are served one
// at a time (one datagram out, one back).
#pragma once

#include <sys/types.h>

#include <mutex>

#include "common/unique_fd.h"
#include "launch/spawn_spec.h"

namespace sandbox_exec {

class ZygoteLink {
 public:
  // Takes a duplicate of `control` (the backend keeps its own to close).
  explicit ZygoteLink(int control);

  struct Forked {
    pid_t pid = -1;  // the session's keeper: the zygote's child, not ours
    UniqueFd pidfd;
  };
  // Forks a keeper for `spec` with `fds` (launcher_fd::kReport .. kSpaceBell) as its
  // 3..8. Throws SandboxError("zygote", ...): the zygote refused (its errno) or is gone
  // (EPIPE/ECONNRESET, or no reply).
  Forked fork(const SpawnSpec& spec, const int (&fds)[6]);

  // Closes our end: the zygote sees EOF and exits (its sessions stay).
  void close() noexcept;

 private:
  std::mutex mutex_;
  UniqueFd control_;
};

}  // namespace sandbox_exec
