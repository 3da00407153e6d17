// disk_usage: how much a session's workdir holds, for the supervisor's disk watchdog.
//
// The workdir is a bind of a host directory (it must persist and stay readable by the
// backend), so no filesystem size cap applies to it; the supervisor measures it instead,
// every 200 ms while a cell runs, and interrupts a cell that grows it past the policy's
// disk_bytes. Blocks allocated are counted (st_blocks), hard links once, symlinks not
// followed, other filesystems not entered.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace sandbox_exec {

// Bytes allocated under `path`; nullopt if it cannot be read. A tree of more than
// `max_entries` entries is reported as UINT64_MAX: a cell cannot hide large files behind
// very many small ones, the walk fails closed.
[[nodiscard]] std::optional<uint64_t> disk_usage(const std::string& path,
                                                 std::size_t max_entries = 1000000) noexcept;

}  // namespace sandbox_exec
