#include "contain.h"

#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>

#include "fds.h"
#include "rlimits.h"

namespace sandbox_exec::contain {

namespace {
Failure death_signal(int init_pid) noexcept {
  // PR_SET_PDEATHSIG fires when the parent *thread* exits; the launcher is single-threaded,
  // so that is the launcher's death. Re-check the parent to close the race with an init
  // that died before the prctl.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return {LaunchStep::kDeathSignal, errno};
  if (::getppid() != init_pid) return {LaunchStep::kDeathSignal, ESRCH};
  return {};
}

Failure workdir(const SpawnSpec& spec) noexcept {
  if (::chdir(spec.workdir.c_str()) != 0) return {LaunchStep::kWorkdir, errno};
  return {};
}

Failure resource_limits(const SpawnSpec& spec) noexcept {
  const auto f = rlimits::apply(spec.limits);
  return {f.step, f.error};
}

Failure descriptors() noexcept {
  if (int err = fds::ensure_stdio()) return {LaunchStep::kCloseFds, err};
  if (int err = fds::close_from(launcher_fd::kFirstFree)) return {LaunchStep::kCloseFds, err};
  // The report and lifeline pipes belong to init, not to the worker.
  ::close(launcher_fd::kReport);
  ::close(launcher_fd::kLifeline);
  return {};
}
}  // namespace

Failure contain_worker(const SpawnSpec& spec, int init_pid) noexcept {
  using Step = Failure (*)(const SpawnSpec&, int);
  static constexpr Step steps[] = {
      [](const SpawnSpec&, int pid) { return death_signal(pid); },
      [](const SpawnSpec& s, int) { return workdir(s); },
      [](const SpawnSpec& s, int) { return resource_limits(s); },
      [](const SpawnSpec&, int) { return descriptors(); },
  };
  for (Step step : steps) {
    if (Failure f = step(spec, init_pid); f.failed()) return f;
  }
  return {};
}

}  // namespace sandbox_exec::contain
