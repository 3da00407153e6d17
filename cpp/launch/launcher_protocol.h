// The launcher's reports to the supervisor: fixed-size records on the report pipe.
//
// The launcher (the session's init) writes kStarted once the worker's execve succeeded, or
// kSetupFailed naming the isolation step and errno that stopped it (fail closed: the worker
// never ran), and kExited with the worker's wait status when it ends. The supervisor treats
// these as claims to check, not facts: the sandbox's own code could in principle reach the
// pipe, so a record only ever affects its own session.
#pragma once

#include <cstdint>

namespace sandbox_exec {

enum class LaunchStep : int32_t {
  kNone = 0,
  kParseArgs,
  kFork,
  kDeathSignal,
  kWorkdir,
  kRlimitCpu,
  kRlimitFileSize,
  kRlimitOpenFiles,
  kRlimitAddressSpace,
  kRlimitProcesses,
  kRlimitCore,
  kCloseFds,
  kExec,
  // namespaces and the filesystem view
  kUnshareOuter,    // the launcher's own mount (and, unprivileged, user) namespace
  kOuterIdMap,      // the launcher's self-mapping when unprivileged
  kMountPrivate,    // make every mount private before changing anything
  kMountRootTmpfs,  // the tmpfs the new root is built in
  kMountBind,       // a read-only or the read-write bind
  kMountRemountRo,  // making a bind read-only
  kMountEtc,        // the minimal /etc
  kMountDev,        // the minimal /dev
  kMountTmp,        // the size-capped private /tmp and /dev/shm
  kClone,           // clone(CLONE_NEWUSER|NEWPID|NEWNS|NEWIPC|NEWUTS|NEWCGROUP[|NEWNET])
  kIdMap,           // writing the sandbox's uid_map / gid_map
  kCgroupJoin,      // writing the sandbox's pid to cgroup.procs
  kMountProc,       // a fresh /proc for the pid namespace
  kPivotRoot,       // pivot_root and detaching the old root
  kHostname,        // sethostname in the uts namespace
  kLoopback,        // bringing lo up in the network namespace
  kSetIds,          // setresgid/setresuid to the sandbox's ids
  kDropCaps,        // bounding set, ambient, permitted/effective/inheritable to nothing
  kNoNewPrivs,      // prctl(PR_SET_NO_NEW_PRIVS)
  kLandlock,        // landlock_create_ruleset/add_rule/restrict_self
  kSeccomp,         // seccomp_load
  kMountData,       // a host data mount (Policy.mounts) at its path in the workdir
  kFindWorker,      // the worker, after its execve: gone already (killed before it was ready)
};

// A failed isolation step, as every step function returns it (no exceptions after fork).
struct StepFailure {
  LaunchStep step = LaunchStep::kNone;
  int error = 0;
  [[nodiscard]] bool failed() const noexcept { return step != LaunchStep::kNone; }
};

// The one way a step turns an errno (0: success) into its result.
[[nodiscard]] inline StepFailure step_result(LaunchStep step, int err) noexcept {
  return err ? StepFailure{step, err} : StepFailure{};
}

struct StepInfo {
  const char* layer;
  const char* call;
};

// The layer a step belongs to and the call it makes, for error messages
// ("rlimits: setrlimit(RLIMIT_CPU) failed: EPERM ...").
inline StepInfo launch_step_info(LaunchStep step) noexcept {
  switch (step) {
    case LaunchStep::kParseArgs:
      return {"launcher", "parse arguments"};
    case LaunchStep::kFork:
      return {"launcher", "fork()"};
    case LaunchStep::kDeathSignal:
      return {"lifetime", "prctl(PR_SET_PDEATHSIG, SIGKILL)"};
    case LaunchStep::kWorkdir:
      return {"workdir", "chdir(workdir)"};
    case LaunchStep::kRlimitCpu:
      return {"rlimits", "setrlimit(RLIMIT_CPU)"};
    case LaunchStep::kRlimitFileSize:
      return {"rlimits", "setrlimit(RLIMIT_FSIZE)"};
    case LaunchStep::kRlimitOpenFiles:
      return {"rlimits", "setrlimit(RLIMIT_NOFILE)"};
    case LaunchStep::kRlimitAddressSpace:
      return {"rlimits", "setrlimit(RLIMIT_AS)"};
    case LaunchStep::kRlimitProcesses:
      return {"rlimits", "setrlimit(RLIMIT_NPROC)"};
    case LaunchStep::kRlimitCore:
      return {"rlimits", "setrlimit(RLIMIT_CORE, 0)"};
    case LaunchStep::kCloseFds:
      return {"fds", "close_range() of inherited descriptors"};
    case LaunchStep::kExec:
      return {"exec", "execve(worker)"};
    case LaunchStep::kUnshareOuter:
      return {"namespaces", "unshare(CLONE_NEWNS[|CLONE_NEWUSER])"};
    case LaunchStep::kOuterIdMap:
      return {"userns", "write /proc/self/uid_map (launcher)"};
    case LaunchStep::kMountPrivate:
      return {"mount", "mount(/, MS_REC|MS_PRIVATE)"};
    case LaunchStep::kMountRootTmpfs:
      return {"mount", "mount(tmpfs, new root)"};
    case LaunchStep::kMountBind:
      return {"mount", "mount(MS_BIND)"};
    case LaunchStep::kMountRemountRo:
      return {"mount", "mount(MS_BIND|MS_REMOUNT|MS_RDONLY)"};
    case LaunchStep::kMountEtc:
      return {"mount", "write minimal /etc"};
    case LaunchStep::kMountDev:
      return {"mount", "minimal /dev"};
    case LaunchStep::kMountTmp:
      return {"mount", "mount(tmpfs, /tmp, size=...)"};
    case LaunchStep::kClone:
      return {"namespaces",
              "clone(CLONE_NEWUSER|CLONE_NEWPID|CLONE_NEWNS|CLONE_NEWIPC|CLONE_NEWUTS[|CLONE_NEWNET]) / "
              "unshare(CLONE_NEWCGROUP)"};
    case LaunchStep::kIdMap:
      return {"userns", "write /proc/PID/{uid_map,setgroups,gid_map}"};
    case LaunchStep::kCgroupJoin:
      return {"cgroup", "write cgroup.procs"};
    case LaunchStep::kMountProc:
      return {"mount", "mount(proc, /proc)"};
    case LaunchStep::kPivotRoot:
      return {"mount", "pivot_root(new root) + umount2(old root, MNT_DETACH)"};
    case LaunchStep::kHostname:
      return {"uts", "sethostname()"};
    case LaunchStep::kLoopback:
      return {"network", "ioctl(SIOCSIFFLAGS, lo, IFF_UP)"};
    case LaunchStep::kSetIds:
      return {"userns", "setresgid()/setresuid() to the sandbox ids"};
    case LaunchStep::kDropCaps:
      return {"caps", "capset()/PR_CAPBSET_DROP"};
    case LaunchStep::kNoNewPrivs:
      return {"caps", "prctl(PR_SET_NO_NEW_PRIVS)"};
    case LaunchStep::kLandlock:
      return {"landlock", "landlock_restrict_self()"};
    case LaunchStep::kSeccomp:
      return {"seccomp", "seccomp_load()"};
    case LaunchStep::kMountData:
      return {"mount",
              "bind a data mount (Policy.mounts) at its path in the workdir (each part a directory, "
              "no symlink followed; the host directory opened without following symlinks)"};
    case LaunchStep::kFindWorker:
      return {"worker", "find the worker after its execve (it ended at once: killed before it was ready)"};
    default:
      return {"launcher", "?"};
  }
}
inline const char* launch_step_layer(LaunchStep step) noexcept { return launch_step_info(step).layer; }
inline const char* launch_step_call(LaunchStep step) noexcept { return launch_step_info(step).call; }

struct LauncherReport {
  enum Kind : uint32_t { kStarted = 1, kSetupFailed = 2, kExited = 3 };
  uint32_t kind;
  int32_t step;    // LaunchStep, for kSetupFailed
  int32_t value;   // worker pid (kStarted) or wait status (kExited)
  int32_t error;   // errno, for kSetupFailed
  int32_t parent;  // kStarted: host pid of the worker's parent (the sandbox's init)
};
static_assert(sizeof(LauncherReport) == 20);

}  // namespace sandbox_exec
