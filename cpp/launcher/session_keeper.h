// session_keeper: builds one session's sandbox and keeps it, for the launcher program and
// for the zygote's forked keepers alike.
//
//   keeper ──clone(new namespaces)── sandbox init (pid 1) ──fork── worker
//
// The keeper (this process) reports kStarted / kSetupFailed / kExited on fd 3
// (launcher_protocol.h), forwards SIGINT to the worker, and ends the session on SIGTERM,
// on EOF of the lifeline (fd 4) and when the worker exits: killing the sandbox's init makes
// the kernel kill every process of its pid namespace. Without namespaces the keeper is a
// child subreaper and kills its descendants itself.
//
// How the worker becomes the worker is the caller's choice (WorkerStart):
//   * kExec: execve() the worker's argv (the launcher program: a fresh interpreter);
//   * kReturn: return to the caller in the worker process, fully contained (the zygote: an
//     interpreter that already has its prelude loaded continues as the session's worker).
// Either way every isolation step has run first, in the same order (contain.h), and the
// descriptors 3..8 (launcher_fd) must be in place before the call.
#pragma once

#include "launch/spawn_spec.h"

namespace sandbox_exec::session_keeper {

enum class WorkerStart { kExec, kReturn };

struct Outcome {
  bool is_worker = false;  // kReturn only: this process is the contained worker
  int exit_code = 0;       // otherwise: the keeper's exit status, the session is over
};

// `argc`/`argv_memory`: the process's own argument strings, blanked in the sandbox's init
// (its /proc/1/cmdline would show host paths); argc 0 leaves them alone.
Outcome run(const SpawnSpec& spec, WorkerStart start, int argc, char** argv_memory);

}  // namespace sandbox_exec::session_keeper
