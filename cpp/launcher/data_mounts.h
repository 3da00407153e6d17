// data_mounts: the policy's host data directories (Policy.mounts), bound into the sandbox's
// new root at paths relative to its workdir (`data` -> <workdir>/data), read-only unless the
// policy names one writable. Nothing is copied: the cell reads (or writes) the host's files.
//
// bind_all() runs in the launcher's private mount namespace, from mount::build_root(), right
// after the workdir's own bind (the mountpoints are in it) and before clone(): cold starts
// (the launcher program) and warm ones (a zygote's forked keeper) run the same code.
//
// The mountpoint's path lies in the workdir, which the sandbox's cells write: between two
// starts a cell may have left a symlink (to /etc, to /proc/...) or a file where the path goes
// (or renamed a parent of a live mountpoint and put a link in its place). So no path in the
// workdir is ever resolved as a string: each part is opened relative to its parent's
// descriptor with O_NOFOLLOW | O_DIRECTORY (made, and owned like its parent, when missing),
// and the bind goes onto the opened directory through /proc/self/fd. A part that is a
// symlink or not a directory fails the start (kMountData: ENOTDIR or ELOOP); nothing is
// removed or followed.
//
// The host directory is the backend's (resolved by it, checked by it against the Sandbox
// root): it is opened with openat2(RESOLVE_NO_SYMLINKS), so a link swapped into its path
// after that check is not followed either.
//
// Each bind is non-recursive (mounts below the host directory are not carried: a read-only
// remount covers one mount only, and a writable submount would leak through it) and remounted
// nosuid, nodev, noexec (data, not programs), read-only unless writable, keeping the flags
// the kernel locks. A writable mount of a directory whose host mount is read-only fails the
// start (EROFS) rather than pretending. Landlock (landlock.cc) lets the cell write anywhere
// below its workdir; a read-only mount's writes end at the mount flag (EROFS).
#pragma once

#include "launch/launcher_protocol.h"
#include "launch/spawn_spec.h"

namespace sandbox_exec::data_mounts {

// Binds every spec.isolation.mounts entry below `workdir_in_root` (the workdir's bind target
// in the new root). Stops at the first failure, naming kMountData and errno.
[[nodiscard]] StepFailure bind_all(const SpawnSpec& spec, const std::string& workdir_in_root) noexcept;

}  // namespace sandbox_exec::data_mounts
