// cgroup: per-session control groups, where the host gives them.
//
// Created by the supervisor, joined by the session's init before any user code runs, so
// every process of the session is counted together:
//   memory  memory_bytes for all the session's processes (the kernel's OOM killer ends the
//           session when it is exceeded; oom_kills() tells the supervisor it was that);
//           tmpfs pages (/tmp, /dev/shm) are charged to it as well
//   pids    max_processes: processes and threads together (fork and thread bombs stop here)
//   cpu     cpus: a CPU-time quota for all the session's processes together (v2 cpu.max,
//           v1 cpu.cfs_quota_us over cpu.cfs_period_us; the kernel throttles the group once
//           it used its quota in a period); usage (v2 cpu.stat, v1 cpuacct), for the per-cell
//           CPU figure. v1's cpu group is created only when a quota is asked for (or probed):
//           without one it would only cost a directory.
//
// Layout (every directory below marked "ours" is created here and removed here; nothing
// else is ever removed):
//   v1  <mount>/<controller>/<own group>/sandbox_exec-<tag>/<session>      per controller
//   v2  <base>/sandbox_exec-<tag>/<session>, where <base> is, in this order:
//   (<tag> = <pid>-<random hex>, see CgroupHost::tag)
//         SANDBOX_EXEC_CGROUP (a delegated directory: systemd's Delegate=yes, or one root
//           chowned to the user); never created, changed only in its subtree_control,
//           never removed;
//         as root: <v2 mount>/sandbox_exec, a shared parent created on first use and left
//           in place (as Docker's /sys/fs/cgroup/docker; removing it would race with
//           another backend creating its group in it);
//         unprivileged: the parent of our own group, where we may write it.
//       cgroup v2's no-internal-processes rule: a group's controllers can be enabled for
//       its children only while it holds no process. So the session groups are leaves and
//       sandbox_exec-<tag> (ours, never holding a process) enables memory, pids and cpu
//       for them; <base> must enable them for sandbox_exec-<pid> (we write its
//       subtree_control, which fails with EBUSY where <base> itself holds processes: a
//       delegated directory must keep its own processes in a child, e.g. systemd's
//       DelegateSubgroup=).
//   The per-backend group sandbox_exec-<tag> goes when its last session goes.
//
// Where no controller can be given, detect() says why, and the Python layer falls back to
// rlimits and reports it. CgroupHost carries where cgroupfs is and who we are, so a test
// can run all of this against a directory tree standing in for cgroupfs.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "common/unique_fd.h"
#include "launch/cgroup_membership.h"

namespace sandbox_exec {

struct CgroupSupport {
  bool memory = false;
  bool pids = false;
  bool cpu = false;        // CPU usage of the session (v2 cpu.stat, v1 cpuacct)
  bool cpu_limit = false;  // a CPU quota (the cpu controller: v2 cpu.max, v1 cpu.cfs_quota_us)
  std::string version;     // "v1", "v2" or "" when none is usable
  std::string detail;      // why not, or where
};

// Where the cgroup filesystems are and who is asking: the real host by default.
struct CgroupHost {
  std::string root = "/sys/fs/cgroup";   // v1 controllers below it, or the v2 mount itself
  std::string self_cgroup;               // the text of /proc/self/cgroup
  int self_cgroup_error = 0;             // errno of opening it (EMFILE: no descriptor left)
  std::optional<std::string> delegated;  // SANDBOX_EXEC_CGROUP
  bool privileged = false;               // euid 0
  // Names the per-backend group: "<pid>-<random hex>", drawn once per process. The pid alone
  // is not unique where containers with their own pid namespaces share one cgroup tree (two
  // backends, both pid 7, would share and remove each other's groups).
  std::string tag;
  // rmdir(2) of an empty group. On cgroupfs a group's knob files go with it; a test tree of
  // plain files needs them unlinked first, so a test passes its own.
  int (*remove_dir)(const char* path) = nullptr;
  static CgroupHost current();
};

class Cgroups {
 public:
  struct Limits {
    std::optional<uint64_t> memory_bytes;
    std::optional<uint64_t> max_processes;
    std::optional<double> cpus;  // CPUs' worth of time (0.5: half of one), as docker's --cpus
  };

  // The CFS period a quota is set over (the kernel's default), and the quota for `cpus`:
  // round(cpus * period) microseconds, at least the kernel's minimum of 1 ms, at most 2^40
  // (about 11 million CPUs: no limit at all in practice; keeps the number in range).
  static constexpr uint64_t kCpuPeriodUs = 100000;
  [[nodiscard]] static uint64_t cpu_quota_us(double cpus) noexcept;

  // What this process can delegate to sessions (probes by creating and removing a group).
  static CgroupSupport detect(const CgroupHost& host = CgroupHost::current());

  // Creates the session's groups and sets the limits; throws SandboxError (layer "cgroup")
  // when a limit that was asked for cannot be set, after removing what it created.
  Cgroups(const std::string& name, const Limits& limits, const CgroupHost& host = CgroupHost::current());
  ~Cgroups();
  Cgroups(const Cgroups&) = delete;
  Cgroups& operator=(const Cgroups&) = delete;

  // The directories the session's init joins (writes its pid to cgroup.procs).
  [[nodiscard]] const std::vector<std::string>& dirs() const noexcept { return dirs_; }
  [[nodiscard]] const std::string& version() const noexcept { return version_; }
  [[nodiscard]] const std::string& memory_dir() const noexcept { return memory_; }
  [[nodiscard]] const std::string& pids_dir() const noexcept { return pids_; }
  [[nodiscard]] const std::string& cpu_dir() const noexcept { return cpu_; }
  // The group whose cpu controller takes the quota ("" without one).
  [[nodiscard]] const std::string& cpu_limit_dir() const noexcept { return cpu_limit_; }
  [[nodiscard]] uint64_t oom_kills() const noexcept;
  [[nodiscard]] std::optional<uint64_t> peak_memory() const noexcept;
  void reset_peak_memory() const noexcept;
  [[nodiscard]] std::optional<double> cpu_seconds() const noexcept;
  // Removes the groups (they must be empty: call after the session's processes are gone).
  void remove() noexcept;
  // Lets go of the groups without removing them (a forked copy of the backend: they are
  // the parent's).
  void forget() noexcept;

 private:
  struct Probe {};
  // detect()'s probe: every controller that could be given, the v1 cpu group included.
  Cgroups(Probe /*unused*/, const CgroupHost& host);
  void create(const std::string& name, const Limits& limits, const CgroupHost& host, bool probe);
  void create_v1(const std::string& name, const CgroupHost& host, bool want_cpu);
  void create_v2(const std::string& base, const std::vector<std::string>& available, const std::string& name,
                 const CgroupHost& host);
  void drop_backend_group(const std::string& parent) const noexcept;
  void open_counters() noexcept;
  int (*remove_dir_)(const char*) = nullptr;
  std::string version_;
  std::string memory_, pids_, cpu_, cpu_limit_;  // directories (v2: all the same)
  std::vector<std::string> dirs_;
  // The per-cell counters, opened once: a cell's figures are then a few pread()s, not
  // open/parse/close by path (measured: that cost about 30 us per cell).
  UniqueFd peak_fd_, cpu_fd_, oom_fd_;
};

}  // namespace sandbox_exec
