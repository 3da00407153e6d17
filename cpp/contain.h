// contain: the one place where isolation steps run, in order, before the worker's
// interpreter starts (the role nsjail's contain.cc plays).
//
// The launcher forks; the child (the future worker) calls contain_worker() and then execve.
// Each step either succeeds or stops the launch: the failure (step and errno) goes to the
// supervisor, which raises SandboxError naming the layer, the call and errno. Nothing runs
// the user's code with a step missing. Steps run between fork and execve: no allocation,
// no logging, no exceptions.
//
// Order and why:
//   1. death signal   the worker must not outlive its init (and so the supervisor)
//   2. workdir        chdir into the session's directory
//   3. rlimits        CPU, file size, open files, address space, core dumps off
//   4. fds            close everything but stdio and the channel's four descriptors
// The namespace, filesystem, capability, Landlock and seccomp steps slot in here, in that
// order, with seccomp last.
#pragma once

#include "launcher_protocol.h"
#include "spawn_spec.h"

namespace sandbox_exec::contain {

struct Failure {
  LaunchStep step = LaunchStep::kNone;
  int error = 0;
  [[nodiscard]] bool failed() const noexcept { return step != LaunchStep::kNone; }
};

// Runs every step for the worker process (in the child, after fork). `init_pid` is the
// launcher's pid: if it is already gone the worker stops.
[[nodiscard]] Failure contain_worker(const SpawnSpec& spec, int init_pid) noexcept;

}  // namespace sandbox_exec::contain
