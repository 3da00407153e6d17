// sandbox_exec_launcher: the program the supervisor spawns for each cold session.
//
// Why a separate program: the backend is multi-threaded, and fork() of a multi-threaded
// process may deadlock in the child (another thread held malloc's lock); namespaces and
// mounts must not touch the backend either. The supervisor posix_spawn()s this fresh,
// single-threaded program, which builds the sandbox and stays alive as the session's
// keeper (session_keeper.h: the steps, the reports, the signals), and whose worker execs a
// fresh interpreter. A warm session's keeper is forked from a zygote instead
// (cpp/zygote/), and runs the same steps.
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <exception>

#include "launch/launcher_protocol.h"
#include "launch/spawn_spec.h"
#include "launcher/session_keeper.h"

using namespace sandbox_exec;

int main(int argc, char** argv) {
  SpawnSpec spec;
  try {
    spec = parse_launcher_argv(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "sandbox_exec_launcher: %s\n", e.what());
    const LauncherReport r{LauncherReport::kSetupFailed, static_cast<int32_t>(LaunchStep::kParseArgs), 0, EINVAL, 0};
    [[maybe_unused]] ssize_t n = ::write(launcher_fd::kReport, &r, sizeof r);
    return 2;
  }
  return session_keeper::run(spec, session_keeper::WorkerStart::kExec, argc, argv).exit_code;
}
