// rlimits: per-process resource limits applied to the worker before execve.
//
// The kernel enforces these on the worker process itself: RLIMIT_CPU (SIGXCPU/SIGKILL past
// the CPU budget), RLIMIT_FSIZE (EFBIG/SIGXFSZ past the size of one file), RLIMIT_NOFILE,
// RLIMIT_NPROC (processes and threads of the sandbox's uid in its own user namespace),
// RLIMIT_AS (the fallback memory cap where no cgroup is delegated), RLIMIT_CORE 0 (a
// crashing cell must not write a core image of its memory to disk). Async-signal-safe.
#pragma once

#include "launch/launcher_protocol.h"
#include "launch/spawn_spec.h"

namespace sandbox_exec::rlimits {

using Failure = StepFailure;

// Applies `limits`; on failure returns the step and errno (the first that failed).
[[nodiscard]] Failure apply(const ResourceLimits& limits) noexcept;

}  // namespace sandbox_exec::rlimits
