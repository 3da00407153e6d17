#pragma once
// cgroup_membership: the part of a session's cgroups both sides of the launch handle.
//
// The supervisor creates the groups (supervisor/cgroup.h) and names them in the SpawnSpec;
// the launcher moves the session's init (or, without namespaces, the worker) into them, and
// whichever side sees the session end last removes them with the one cleanup routine
// below: the supervisor when it closes a session, the launcher when its lifeline broke
// (the backend died and cannot).

#include <sys/types.h>

#include <string>
#include <vector>

namespace sandbox_exec::cgroup {

// The name of a per-backend group: sandbox_exec-<pid>-<hex>, created only by us.
inline constexpr const char* kBackendGroupPrefix = "sandbox_exec-";

// sandbox_exec-<digits>[-<hex digits>]: a per-backend group, which only we create.
[[nodiscard]] bool is_backend_group(const std::string& name);

// THE cleanup: removes the session groups `leaves` (waiting a bounded time for their last
// processes to be released), then each leaf's parent if, and only if, it is a per-backend
// group and now empty. Never anything above: a delegated directory or the shared parent is
// never removed. `remove_dir` (rmdir(2) by default) returns 0 or errno; tests pass their own.
void remove_session_groups(const std::vector<std::string>& leaves, int (*remove_dir)(const char*) = nullptr) noexcept;

// Moves `pid` into each group (writes cgroup.procs). Returns 0 or errno.
[[nodiscard]] int join(const std::vector<std::string>& leaves, pid_t pid) noexcept;

// rmdir(2) as `remove_dir` wants it: 0 or errno.
int remove_dir_now(const char* path) noexcept;

}  // namespace sandbox_exec::cgroup
