#include "launcher/contain.h"

#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>

#include "common/process.h"
#include "launcher/caps.h"
#include "launcher/fds.h"
#include "launcher/landlock.h"
#include "launcher/mount.h"
#include "launcher/net.h"
#include "launcher/rlimits.h"
#include "launcher/seccomp_filter.h"
#include "launcher/userns.h"

namespace sandbox_exec::contain {

namespace {

Failure death_signal(int parent_pid) noexcept {
  // PR_SET_PDEATHSIG fires when the parent *thread* exits; our parents are single-threaded.
  // Re-check the parent to close the race with one that died before the prctl.
  if (::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) return {LaunchStep::kDeathSignal, errno};
  if (::getppid() != parent_pid) return {LaunchStep::kDeathSignal, ESRCH};
  return {};
}

Failure descriptors() noexcept {
  if (Failure f = fds::ensure_stdio(); f.failed()) return f;
  if (Failure f = fds::close_from(launcher_fd::kFirstFree); f.failed()) return f;
  // The report and lifeline pipes belong to the launcher, not to the worker.
  ::close(launcher_fd::kReport);
  ::close(launcher_fd::kLifeline);
  return {};
}

}  // namespace

Failure prepare_launcher(const SpawnSpec& spec, bool was_root) noexcept {
  if (was_root) {
    if (::unshare(CLONE_NEWNS) != 0) return {LaunchStep::kUnshareOuter, errno};
  } else {
    const unsigned uid = ::geteuid(), gid = ::getegid();
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return {LaunchStep::kUnshareOuter, errno};
    if (Failure f = userns::self_map(uid, gid); f.failed()) return f;
  }
  return mount::build_root(spec);
}

Failure enter_sandbox(const SpawnSpec& spec) noexcept {
  if (Failure f = mount::enter_root(spec); f.failed()) return f;
  const auto& name = spec.isolation.hostname;
  if (::sethostname(name.c_str(), name.size()) != 0) return {LaunchStep::kHostname, errno};
  if (!spec.isolation.network) {
    if (Failure f = net::bring_up_loopback(); f.failed()) return f;
  }
  return {};
}

Failure contain_worker(const SpawnSpec& spec, int parent_pid) noexcept {
  const Isolation& iso = spec.isolation;
  // The ids first: a change of effective ids makes the kernel clear the death signal
  // (commit_creds() resets pdeath_signal), so set after become() it stays.
  if (iso.namespaces) {
    if (Failure f = userns::become(iso.inside_uid, iso.inside_gid); f.failed()) return f;
  }
  if (Failure f = death_signal(parent_pid); f.failed()) return f;
  if (::chdir(spec.workdir.c_str()) != 0) return {LaunchStep::kWorkdir, errno};
  if (Failure f = rlimits::apply(spec.limits); f.failed()) return f;
  if (Failure f = descriptors(); f.failed()) return f;
  if (iso.drop_caps) {
    if (Failure f = caps::drop_all(); f.failed()) return f;
  }
  if (iso.landlock) {
    if (Failure f = step_result(LaunchStep::kNoNewPrivs, process::set_no_new_privs()); f.failed()) return f;
    if (Failure f = landlock::restrict_self(spec); f.failed()) return f;
  }
  if (iso.seccomp) {
    if (Failure f = step_result(LaunchStep::kNoNewPrivs, process::set_no_new_privs()); f.failed()) return f;
    if (Failure f = seccomp::install(); f.failed()) return f;
  }
  return {};
}

}  // namespace sandbox_exec::contain
