#include "launcher/caps.h"

#include "common/process.h"

#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>

namespace sandbox_exec::caps {

namespace {
int last_cap() noexcept {
  // /proc/sys/kernel/cap_last_cap is not needed: PR_CAPBSET_READ fails past the last one.
  int cap = 0;
  while (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) >= 0) ++cap;
  return cap - 1;
}
}  // namespace

Failure drop_all() noexcept {
  // Securebits need CAP_SETPCAP, which we may lack when unprivileged without a user
  // namespace; the rest still applies, and no_new_privs blocks regaining anything.
  ::prctl(PR_SET_SECUREBITS,
          SECBIT_NOROOT | SECBIT_NOROOT_LOCKED | SECBIT_NO_SETUID_FIXUP | SECBIT_NO_SETUID_FIXUP_LOCKED |
              SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED,
          0, 0, 0);
  const int last = last_cap();
  for (int cap = 0; cap <= last; ++cap) {
    if (::prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1 && ::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0 && errno != EPERM)
      return {LaunchStep::kDropCaps, errno};
  }
  if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    return {LaunchStep::kDropCaps, errno};
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capset, &header, data) != 0) return {LaunchStep::kDropCaps, errno};
  // Verify: a silent failure here would leave the sandbox more privileged than claimed.
  if (::syscall(SYS_capget, &header, data) != 0) return {LaunchStep::kDropCaps, errno};
  for (const auto& d : data) {
    if (d.effective || d.permitted || d.inheritable) return {LaunchStep::kDropCaps, EPERM};
  }
  return step_result(LaunchStep::kNoNewPrivs, process::set_no_new_privs());
}

}  // namespace sandbox_exec::caps
