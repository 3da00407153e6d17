// disk_usage: how much of the host's disk a session's workdir takes, for the disk watchdog.
//
// Used only where the workdir cannot be its own size-capped filesystem (workdir_image.h:
// an unprivileged backend, no loop devices, no mkfs.ext4). The supervisor then measures the
// workdir: while a cell runs, at the end of every cell, and between cells from the Sandbox's
// watchdog thread. Two measures together:
//   * a walk of the tree by descriptor: every directory is opened relative to its parent
//     with O_NOFOLLOW and checked to be the directory fstatat saw (same dev and inode) on
//     the workdir's own device, so a cell that swaps a directory for a symlink mid-walk
//     (renameat2 RENAME_EXCHANGE) cannot make the walk (run as root) enter a host
//     directory. Blocks allocated (st_blocks), hard links once, symlinks not followed,
//     other filesystems not entered, no recursion (any depth), at most `max_entries`
//     entries: a larger tree counts as unlimited (fail closed: many small files cannot hide
//     a big one);
//   * files unlinked but still open in one of the session's processes (invisible to the
//     walk, yet holding their blocks), through /proc/<pid>/fd of every process of the
//     session: the members of its cgroups where it has them (no process can leave them),
//     else every descendant of its init (an iterative walk, no depth limit).
// Not seen (documented): descriptors in flight in a UNIX socket (SCM_RIGHTS) and memory
// mappings of unlinked files whose descriptor was closed; the filesystem cap covers them.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace sandbox_exec {

// Bytes allocated under `path`; UINT64_MAX when the tree has more than `max_entries`
// entries; nullopt when `path` cannot be opened as a directory.
[[nodiscard]] std::optional<uint64_t> disk_usage(const std::string& path, std::size_t max_entries = 1000000) noexcept;

// The session's processes: every pid listed in cgroup.procs of `cgroup_dirs` (and of any
// group below them) when there are any, else `root_pid` and all its descendants.
[[nodiscard]] std::vector<pid_t> session_pids(const std::vector<std::string>& cgroup_dirs, pid_t root_pid) noexcept;

// Bytes of regular files on `device` that `pids` hold open after they were unlinked.
// Processes it may not inspect are skipped.
[[nodiscard]] uint64_t deleted_open_bytes(const std::vector<pid_t>& pids, dev_t device) noexcept;

// The workdir's total: the walk plus the unlinked-but-open files of `pids`.
[[nodiscard]] std::optional<uint64_t> workdir_usage(const std::string& path, const std::vector<pid_t>& pids) noexcept;

}  // namespace sandbox_exec
