#pragma once
// The SpawnSpec that starts tests_cpp's fake worker (fake_worker.cc) in `mode` through the
// real launcher, with every isolation layer named off: the supervisor's tests are about
// the supervisor, the launcher's own tests cover the layers.
#include <string>

#include "launch/spawn_spec.h"

#ifndef SANDBOX_EXEC_FAKE_WORKER
#error "SANDBOX_EXEC_FAKE_WORKER must name the fake worker program"
#endif
#ifndef SANDBOX_EXEC_LAUNCHER
#error "SANDBOX_EXEC_LAUNCHER must name sandbox_exec_launcher"
#endif

namespace sandbox_exec::test_support {

inline SpawnSpec fake_worker_spec(const std::string& mode) {
  SpawnSpec spec;
  spec.launcher = SANDBOX_EXEC_LAUNCHER;
  spec.argv = {SANDBOX_EXEC_FAKE_WORKER, mode};
  spec.env = {"PATH=/usr/bin:/bin"};
  spec.workdir = "/";
  spec.isolation.namespaces = false;
  spec.isolation.drop_caps = false;
  spec.isolation.landlock = false;
  spec.isolation.seccomp = false;
  return spec;
}

}  // namespace sandbox_exec::test_support
