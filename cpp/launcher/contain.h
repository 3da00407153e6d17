// contain: the one place where the isolation steps run, in order, before the worker's
// interpreter starts (the role nsjail's contain.cc plays). Every step either succeeds or
// stops the launch: the failure (step and errno) goes to the supervisor, which raises
// SandboxError naming the layer, the call and errno. No user code runs with a step missing.
//
//   launcher (the supervisor's child, host pid namespace)
//     prepare_launcher()   1. own mount namespace (+ user namespace when unprivileged)
//                          2. the new root: tmpfs, read-only binds, workdir, /etc, /dev, /tmp
//     clone(NEWUSER|NEWPID|NEWNS|NEWIPC|NEWUTS[|NEWNET])
//                          3. id maps written, cgroups joined, by the launcher; then the
//                             init unshares its cgroup namespace (rooted at the session's group)
//   sandbox init (pid 1 of the new pid namespace)
//     enter_sandbox()      4. fresh /proc, pivot_root, old root detached
//                          5. hostname, loopback up
//   worker (pid 2), contain_worker():
//                          6. sandbox ids, death signal, workdir, rlimits
//                          7. every descriptor but stdio and the channel's closed
//                          8. capabilities dropped, no_new_privs
//                          9. Landlock
//                         10. seccomp, last
//     execve(python)
// Without namespaces (an explicit, named policy choice) steps 1-5 are skipped.
// The launcher is single-threaded, so its forked children may allocate (libseccomp does);
// still no logging library and no exceptions after fork: failures travel as (step, errno).
#pragma once

#include "launch/launcher_protocol.h"
#include "launch/spawn_spec.h"

namespace sandbox_exec::contain {

using Failure = StepFailure;

// In the launcher, before clone(): steps 1-2. `was_root`: the launcher runs as host root.
[[nodiscard]] Failure prepare_launcher(const SpawnSpec& spec, bool was_root) noexcept;

// In the sandbox's init after clone(): steps 4-5.
[[nodiscard]] Failure enter_sandbox(const SpawnSpec& spec) noexcept;

// In the worker after fork(): steps 6-10. `parent_pid` is the pid the worker's parent has
// in the worker's pid namespace; if the parent is already gone the worker stops.
[[nodiscard]] Failure contain_worker(const SpawnSpec& spec, int parent_pid) noexcept;

}  // namespace sandbox_exec::contain
