#pragma once
// process: facts about processes that several layers read from /proc, and the one
// no_new_privs switch.

#include <sys/types.h>

#include <vector>

namespace sandbox_exec::process {

// The children of thread `tid` of process `pid` as /proc/<pid>/task/<tid>/children lists
// them, in the caller's pid namespace, appended to `out`. Returns false when the file
// could not be read (the process is gone, or /proc is not the caller's).
bool append_children(pid_t pid, pid_t tid, std::vector<pid_t>& out);

// PR_SET_NO_NEW_PRIVS: no execve can grant privileges again (setuid bits, file caps).
// Seccomp and Landlock need it first. Returns 0 or errno. Async-signal-safe.
[[nodiscard]] int set_no_new_privs() noexcept;

}  // namespace sandbox_exec::process
