// SpawnSpec: everything the launcher needs to start one worker, and its command-line form.
//
// Kept apart from the policy (Python's Policy decides *what*) and from the result (what
// happened), as sandbox2 keeps PolicyBuilder, Executor/Limits and Result apart. The
// supervisor turns a SpawnSpec into the launcher's argv; the launcher parses it back with
// the same code, so the format lives in this one file.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sandbox_exec {

struct ResourceLimits {
  std::optional<uint64_t> cpu_seconds;    // RLIMIT_CPU (per interpreter)
  std::optional<uint64_t> file_bytes;     // RLIMIT_FSIZE
  std::optional<uint64_t> open_files;     // RLIMIT_NOFILE
  std::optional<uint64_t> address_space;  // RLIMIT_AS (the fallback memory cap)
  std::optional<uint64_t> processes;      // RLIMIT_NPROC (counted per user namespace)
  bool core_dumps = false;                // RLIMIT_CORE 0 unless true
};

// A host directory shown in the sandbox at a path relative to its workdir (Policy.mounts;
// bound by launcher/data_mounts.h). `path` is checked here (check_data_mount_path): relative,
// normalized, no "." or ".." component, not in ".sandbox_exec", no '='.
struct DataMount {
  std::string host;       // absolute host directory (resolved by the backend)
  std::string path;       // where it appears, relative to the workdir
  bool writable = false;  // read-only unless named writable
  bool operator==(const DataMount&) const = default;
};

// The isolation layers (contain.h runs them in order). Each one that is switched on is
// required: if it cannot be set up, the launch fails and names it. Every protection is on
// by default; turning one off is an explicit choice (Python: a named Policy field).
struct Isolation {
  bool namespaces = true;      // user, pid, mount, ipc, uts, cgroup namespaces + new root
  bool network = false;        // keep the host network (no network namespace)
  uint32_t inside_uid = 1000;  // the sandbox's own uid/gid ...
  uint32_t inside_gid = 1000;
  uint32_t outside_uid = 65534;                               // ... and the host ids they map to (used when the
  uint32_t outside_gid = 65534;                               //     launcher runs as root; otherwise the caller's own)
  std::string mountpoint;                                     // an empty host directory where the new root is assembled
  std::vector<std::string> readonly;                          // bound read-only, same path
  std::vector<std::pair<std::string, std::string>> symlinks;  // path -> target, in the root
  std::vector<DataMount> mounts;                              // host data dirs in the workdir
  uint64_t tmp_bytes = 256ull << 20;                          // size of the private /tmp and of /dev/shm
  std::string hostname = "sandbox";
  std::vector<std::string> cgroups;  // directories whose cgroup.procs the sandbox joins
  bool drop_caps = true;             // drop every capability, no_new_privs
  bool landlock = true;              // Landlock filesystem rules (required when true)
  bool seccomp = true;               // the seccomp filter (seccomp.h), installed last
};

struct SpawnSpec {
  std::string launcher;           // path of sandbox_exec_launcher
  std::vector<std::string> argv;  // the worker's argv; argv[0] is the program to exec
  std::vector<std::string> env;   // the worker's whole environment, "KEY=value"
  std::string workdir;            // the worker's current directory (bound read-write)
  ResourceLimits limits;
  Isolation isolation;
};

// Descriptor numbers in the launcher (and, for the ring's, in the worker), fixed by
// convention so the launcher can close every other descriptor without being told.
namespace launcher_fd {
inline constexpr int kReport = 3;    // launcher -> supervisor: LauncherReport records
inline constexpr int kLifeline = 4;  // supervisor holds the write end; EOF = supervisor gone
inline constexpr int kRegion = 5;    // the worker's four channel descriptors
inline constexpr int kRequestBell = 6;
inline constexpr int kEventBell = 7;
inline constexpr int kSpaceBell = 8;
inline constexpr int kExecReport = 9;  // launcher-internal: the child's step failure, CLOEXEC
inline constexpr int kFirstFree = 10;
}  // namespace launcher_fd

// argv for the launcher: [launcher, options..., "--", worker argv...]. The environment
// travels as the launcher's own envp.
std::vector<std::string> launcher_argv(const SpawnSpec& spec);
// Why `path` cannot be a DataMount's path (empty: it can). Also used by the Python binding.
std::string check_data_mount_path(std::string_view path);
// Parses launcher_argv's output (env is not in argv). Throws ConfigError on a bad command line.
SpawnSpec parse_launcher_argv(int argc, const char* const* argv);

}  // namespace sandbox_exec
