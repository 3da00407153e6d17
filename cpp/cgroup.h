// cgroup: per-session control groups, where the host delegates them.
//
// Created by the supervisor under its own cgroup, joined by the session's init before any
// user code runs, so every process of the session is counted together:
//   memory  memory_bytes for all the session's processes (the kernel's OOM killer ends the
//           session when it is exceeded; oom_kills() tells the supervisor it was that)
//   pids    max_processes: processes and threads together (fork and thread bombs stop here)
//   cpu     cpuacct usage, for the per-cell CPU figure
// Both hierarchies are supported: cgroup v1 controllers mounted at /sys/fs/cgroup/<name>
// (this machine's layout) and cgroup v2 (a delegated directory with the controllers
// enabled). Where neither is writable, detect() says why, and the Python layer falls back
// to rlimits and reports it (fail closed only where the policy requires the cgroup).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "unique_fd.h"

namespace sandbox_exec {

struct CgroupSupport {
  bool memory = false;
  bool pids = false;
  bool cpu = false;
  std::string version;  // "v1", "v2" or "" when none is usable
  std::string detail;   // why not, or where
};

class Cgroups {
 public:
  struct Limits {
    std::optional<uint64_t> memory_bytes;
    std::optional<uint64_t> max_processes;
  };

  // What this process can delegate to sessions (probes by creating and removing a group).
  static CgroupSupport detect();

  // Creates the session's groups and sets the limits; throws SandboxError (layer "cgroup")
  // when a limit that was asked for cannot be set.
  Cgroups(const std::string& name, const Limits& limits);
  ~Cgroups();
  Cgroups(const Cgroups&) = delete;
  Cgroups& operator=(const Cgroups&) = delete;

  // The directories the session's init joins (writes its pid to cgroup.procs).
  [[nodiscard]] const std::vector<std::string>& dirs() const noexcept { return dirs_; }
  [[nodiscard]] const std::string& version() const noexcept { return version_; }
  [[nodiscard]] uint64_t oom_kills() const noexcept;
  [[nodiscard]] std::optional<uint64_t> peak_memory() const noexcept;
  void reset_peak_memory() const noexcept;
  [[nodiscard]] std::optional<double> cpu_seconds() const noexcept;
  // Removes the groups (they must be empty: call after the session's processes are gone).
  void remove() noexcept;

 private:
  void open_counters() noexcept;
  std::string version_;
  std::string memory_, pids_, cpu_;  // directories (v2: all the same)
  std::vector<std::string> dirs_;
  // The per-cell counters, opened once: a cell's figures are then a few pread()s, not
  // open/parse/close by path (measured: that cost about 30 us per cell).
  UniqueFd peak_fd_, cpu_fd_, oom_fd_;
};

}  // namespace sandbox_exec
