// fds: the worker inherits exactly its four channel descriptors and stdio, nothing else.
//
// Whatever descriptors the backend process had open without O_CLOEXEC (a database socket,
// a log file opened by a C library) would otherwise leak into the sandbox. Runs in the
// launcher's child between fork and execve: async-signal-safe calls only.
#pragma once

#include "launch/launcher_protocol.h"

namespace sandbox_exec::fds {

// Closes every descriptor >= `first` (close_range(2), with a /proc-free fallback loop).
// Fails as kCloseFds.
[[nodiscard]] StepFailure close_from(int first) noexcept;

// Points fds 0, 1, 2 at /dev/null unless they are open; fails as kCloseFds.
[[nodiscard]] StepFailure ensure_stdio() noexcept;

}  // namespace sandbox_exec::fds
