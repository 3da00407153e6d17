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
  kRlimitCore,
  kCloseFds,
  kExec,
  kCount,
};

// Name of the step and the call it makes, for error messages ("rlimits: setrlimit(RLIMIT_CPU)").
const char* launch_step_layer(LaunchStep step) noexcept;
const char* launch_step_call(LaunchStep step) noexcept;

struct LauncherReport {
  enum Kind : uint32_t { kStarted = 1, kSetupFailed = 2, kExited = 3 };
  uint32_t kind;
  int32_t step;   // LaunchStep, for kSetupFailed
  int32_t value;  // worker pid (kStarted) or wait status (kExited)
  int32_t error;  // errno, for kSetupFailed
};
static_assert(sizeof(LauncherReport) == 16);

inline const char* launch_step_layer(LaunchStep step) noexcept {
  switch (step) {
    case LaunchStep::kParseArgs: return "launcher";
    case LaunchStep::kFork: return "launcher";
    case LaunchStep::kDeathSignal: return "lifetime";
    case LaunchStep::kWorkdir: return "workdir";
    case LaunchStep::kRlimitCpu:
    case LaunchStep::kRlimitFileSize:
    case LaunchStep::kRlimitOpenFiles:
    case LaunchStep::kRlimitAddressSpace:
    case LaunchStep::kRlimitCore: return "rlimits";
    case LaunchStep::kCloseFds: return "fds";
    case LaunchStep::kExec: return "exec";
    default: return "launcher";
  }
}

inline const char* launch_step_call(LaunchStep step) noexcept {
  switch (step) {
    case LaunchStep::kParseArgs: return "parse arguments";
    case LaunchStep::kFork: return "fork()";
    case LaunchStep::kDeathSignal: return "prctl(PR_SET_PDEATHSIG, SIGKILL)";
    case LaunchStep::kWorkdir: return "chdir(workdir)";
    case LaunchStep::kRlimitCpu: return "setrlimit(RLIMIT_CPU)";
    case LaunchStep::kRlimitFileSize: return "setrlimit(RLIMIT_FSIZE)";
    case LaunchStep::kRlimitOpenFiles: return "setrlimit(RLIMIT_NOFILE)";
    case LaunchStep::kRlimitAddressSpace: return "setrlimit(RLIMIT_AS)";
    case LaunchStep::kRlimitCore: return "setrlimit(RLIMIT_CORE, 0)";
    case LaunchStep::kCloseFds: return "close_range(10, ~0U)";
    case LaunchStep::kExec: return "execve(worker)";
    default: return "?";
  }
}

}  // namespace sandbox_exec
