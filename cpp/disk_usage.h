// disk_usage: how much of the host's disk a session's workdir takes, for the disk watchdog.
//
// The workdir is a bind of a host directory (it must persist and stay readable by the
// backend), so no filesystem size cap applies to it; the supervisor measures it instead:
// while a cell runs (every 200 ms once it has run 200 ms) and, between cells, from the
// Sandbox's watchdog thread. Two measures together:
//   * a walk of the tree: blocks allocated (st_blocks), hard links once, symlinks not
//     followed, other filesystems not entered; a tree of more than `max_entries` entries
//     counts as unlimited (fail closed: many small files cannot hide a big one);
//   * files unlinked but still open in one of the session's processes (invisible to the
//     walk, yet holding their blocks): found through /proc/<pid>/fd of every process under
//     the session's init, counted when they live on the workdir's filesystem.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>

namespace sandbox_exec {

[[nodiscard]] std::optional<uint64_t> disk_usage(const std::string& path,
                                                 std::size_t max_entries = 1000000) noexcept;

// Bytes of regular files on `device` that processes under `root_pid` (itself included)
// hold open after they were unlinked. Processes it may not inspect are skipped.
[[nodiscard]] uint64_t deleted_open_bytes(pid_t root_pid, dev_t device) noexcept;

// The workdir's total: the walk plus the unlinked-but-open files of the session.
[[nodiscard]] std::optional<uint64_t> workdir_usage(const std::string& path, pid_t session_root) noexcept;

}  // namespace sandbox_exec
