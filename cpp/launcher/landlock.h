// landlock: filesystem access rules the worker cannot lift, on top of the mount view.
//
// Defence in depth: even if a path outside the sandbox's tree became reachable (a mount
// bug, an fd passed in), the worker may only read and execute under "/", and write only in
// its workdir, /tmp, /dev/shm and the device nodes of /dev. Where the kernel's Landlock ABI
// has them, it also forbids signals to and abstract-UNIX connections with processes outside
// the sandbox's Landlock domain (ABI 6 "scoping"). Needs no_new_privs first.
// See Documentation/userspace-api/landlock.rst.
#pragma once

#include <string>

#include "launch/launcher_protocol.h"
#include "launch/spawn_spec.h"

namespace sandbox_exec::landlock {

// Restricts the calling thread (and its future children) with the rules the running kernel's
// ABI supports (common/kernel.h). Fails as kLandlock.
[[nodiscard]] StepFailure restrict_self(const SpawnSpec& spec) noexcept;

}  // namespace sandbox_exec::landlock
