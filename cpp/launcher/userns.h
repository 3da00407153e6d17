// userns: the sandbox's user namespace and its id mapping.
//
// The sandbox's uid/gid (1000 by default) map to exactly one host id, never to host root:
//   * launcher running as root: to the session's own unprivileged host id (the backend draws
//     one per session: python/sandbox_exec/_host_ids.py), written by
//     the launcher (it holds CAP_SETUID in the parent namespace);
//   * launcher running unprivileged: it first enters a user namespace of its own mapping
//     0 -> its own uid (self_map), so the sandbox's ids map, through it, to the caller's
//     uid; no newuidmap/setuid helper is needed.
// A file owned by host root therefore stays unwritable inside even where it is visible
// (user_namespaces(7): unmapped owners get no capability-based override).
// Async-signal-safe: these run around clone().
#pragma once

#include <sys/types.h>

#include "launch/launcher_protocol.h"

namespace sandbox_exec::userns {

// Writes uid_map, setgroups=deny, gid_map of `pid` ("inside outside 1"). Fails as kIdMap.
[[nodiscard]] StepFailure write_maps(pid_t pid, unsigned inside_uid, unsigned inside_gid, unsigned outside_uid,
                                     unsigned outside_gid) noexcept;

// For an unprivileged launcher after unshare(CLONE_NEWUSER): maps 0 to the caller's own ids.
[[nodiscard]] StepFailure self_map(unsigned outer_uid, unsigned outer_gid) noexcept;

// Switches to the sandbox ids inside the namespace (setresgid, setgroups when allowed,
// setresuid). Fails as kSetIds.
[[nodiscard]] StepFailure become(unsigned uid, unsigned gid) noexcept;

}  // namespace sandbox_exec::userns
