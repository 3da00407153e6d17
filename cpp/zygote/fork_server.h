// fork_server: the zygote's loop. A zygote is an interpreter that has run its trusted
// prelude (imports, never a user's cell) and then forks session workers on request, as
// sandbox2's fork server and Android's zygote do: a new session gets the loaded stack at
// the cost of a fork, its pages shared copy-on-write with the zygote.
//
// Each request (zygote_protocol.h) is served by one fork: the child becomes the session's
// keeper and runs exactly the launcher's steps (session_keeper.h: its own user, pid, mount,
// ipc, uts and network namespaces, its host uid, cgroups, the new root, rlimits, Landlock,
// seccomp, only its descriptors), and its worker returns from serve() into the interpreter,
// contained, to serve the session. The zygote itself never runs user code and holds no
// session descriptor after the fork (its copies close with the request).
//
// The interpreter's own fork bookkeeping (CPython's PyOS_BeforeFork / AfterFork_Parent /
// AfterFork_Child: its locks, its at-fork hooks such as random's reseed) is the caller's,
// passed in as ForkHooks, so this file does not depend on Python.
#pragma once

#include "launch/spawn_spec.h"

namespace sandbox_exec::fork_server {

struct ForkHooks {
  void (*before)() = nullptr;
  void (*after_in_parent)() = nullptr;
  void (*after_in_child)() = nullptr;
};

struct Served {
  bool is_worker = false;  // this process is a session's worker, contained
  SpawnSpec spec;          // is_worker only: the session's spec (its env: "KEY=value" strings)
};

// Serves fork requests on `control` (a SOCK_SEQPACKET socket) until the supervisor closes
// it (returns is_worker false), reaping the keepers it forked. Returns is_worker true in a
// forked session's worker. Throws SandboxError when the socket fails.
Served serve(int control, const ForkHooks& hooks);

// The threads of this process (/proc/self/task), 0 if unknown. A zygote forks only while
// it is single-threaded: a thread's locks would stay locked in every child.
int thread_count() noexcept;

}  // namespace sandbox_exec::fork_server
