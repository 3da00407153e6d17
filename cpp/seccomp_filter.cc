#include "seccomp_filter.h"

#include <linux/sched.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/personality.h>

#include <cerrno>
#include <initializer_list>

namespace sandbox_exec::seccomp {

namespace {

struct Rule {
  int syscall;
  const char* why;
};

// Every syscall here fails with EPERM for the cell.
const Rule kDenied[] = {
    {SCMP_SYS(ptrace), "reading or steering another process (other sessions, the init)"},
    {SCMP_SYS(process_vm_readv), "reading another process's memory"},
    {SCMP_SYS(process_vm_writev), "writing another process's memory"},
    {SCMP_SYS(kcmp), "probing other processes' kernel objects"},
    {SCMP_SYS(pidfd_getfd), "stealing another process's descriptors"},
    {SCMP_SYS(bpf), "eBPF: a large kernel attack surface"},
    {SCMP_SYS(perf_event_open), "perf: kernel attack surface and side channels"},
    {SCMP_SYS(keyctl), "kernel keyrings are not namespaced"},
    {SCMP_SYS(add_key), "kernel keyrings are not namespaced"},
    {SCMP_SYS(request_key), "kernel keyrings are not namespaced"},
    {SCMP_SYS(mount), "changing the filesystem view"},
    {SCMP_SYS(umount2), "uncovering what a mount hides"},
    {SCMP_SYS(pivot_root), "changing the filesystem root"},
    {SCMP_SYS(chroot), "changing the filesystem root"},
    {SCMP_SYS(open_tree), "new mount API"},
    {SCMP_SYS(move_mount), "new mount API"},
    {SCMP_SYS(fsopen), "new mount API"},
    {SCMP_SYS(fsconfig), "new mount API"},
    {SCMP_SYS(fsmount), "new mount API"},
    {SCMP_SYS(fspick), "new mount API"},
    {SCMP_SYS(mount_setattr), "new mount API"},
    {SCMP_SYS(unshare), "new namespaces: user namespaces expose much kernel surface"},
    {SCMP_SYS(setns), "entering other namespaces"},
    {SCMP_SYS(kexec_load), "replacing the kernel"},
    {SCMP_SYS(kexec_file_load), "replacing the kernel"},
    {SCMP_SYS(init_module), "loading kernel code"},
    {SCMP_SYS(finit_module), "loading kernel code"},
    {SCMP_SYS(delete_module), "unloading kernel code"},
    {SCMP_SYS(userfaultfd), "a classic kernel-exploit primitive (race widening)"},
    {SCMP_SYS(io_uring_setup), "io_uring: large attack surface, bypasses this filter"},
    {SCMP_SYS(io_uring_enter), "io_uring: large attack surface, bypasses this filter"},
    {SCMP_SYS(io_uring_register), "io_uring: large attack surface, bypasses this filter"},
    {SCMP_SYS(reboot), "rebooting"},
    {SCMP_SYS(swapon), "swap configuration"},
    {SCMP_SYS(swapoff), "swap configuration"},
    {SCMP_SYS(acct), "process accounting"},
    {SCMP_SYS(quotactl), "filesystem quotas"},
    {SCMP_SYS(syslog), "reading the kernel log"},
    {SCMP_SYS(open_by_handle_at), "opening files by handle bypasses the mount view (CVE-2014-3519 style escapes)"},
    {SCMP_SYS(name_to_handle_at), "file handles, see open_by_handle_at"},
    {SCMP_SYS(lookup_dcookie), "kernel profiling interface"},
    {SCMP_SYS(fanotify_init), "watching the filesystem"},
    {SCMP_SYS(vhangup), "terminal control"},
    {SCMP_SYS(settimeofday), "setting the clock"},
    {SCMP_SYS(clock_settime), "setting the clock"},
    {SCMP_SYS(clock_adjtime), "setting the clock"},
    {SCMP_SYS(adjtimex), "setting the clock"},
    {SCMP_SYS(iopl), "port I/O"},
    {SCMP_SYS(ioperm), "port I/O"},
    {SCMP_SYS(uselib), "obsolete loader interface"},
    {SCMP_SYS(nfsservctl), "obsolete"},
    {SCMP_SYS(migrate_pages), "NUMA placement of other processes"},
    {SCMP_SYS(move_pages), "NUMA placement of other processes"},
    {SCMP_SYS(set_mempolicy_home_node), "NUMA policy"},
};

// clone() flags that create namespaces: a cell may fork and start threads, not new namespaces.
constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC |
                                     CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWTIME;

}  // namespace

int install() noexcept {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (ctx == nullptr) return ENOMEM;
  // A syscall of another ABI (i386 int 0x80, x32) ends the whole process, not only the
  // calling thread (libseccomp's default), which would leave a half-dead worker behind.
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  const uint32_t eperm = SCMP_ACT_ERRNO(EPERM);
  for (const Rule& rule : kDenied) {
    if (rc) break;
    if (rule.syscall < 0) continue;  // not on this architecture
    rc = seccomp_rule_add(ctx, eperm, rule.syscall, 0);
  }
  // clone(): x86_64 passes the flags first. libseccomp compares with "masked equal" only, so
  // one rule per namespace flag: any of them set refuses the call.
  for (uint64_t bit = 1; !rc && bit != 0; bit <<= 1) {
    if (kNamespaceFlags & bit)
      rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, bit, bit));
  }
  // clone3 passes its flags in memory the filter cannot read: refuse it with ENOSYS so
  // glibc and CPython fall back to clone(), which the rules above inspect.
  if (!rc) rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), SCMP_SYS(clone3), 0);
  // TIOCSTI/TIOCLINUX push keystrokes into a terminal's input (CVE-2017-5226 class).
  for (unsigned long request : {static_cast<unsigned long>(TIOCSTI), 0x541CUL /* TIOCLINUX */}) {
    if (!rc) rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(ioctl), 1,
                                   SCMP_A1(SCMP_CMP_MASKED_EQ, 0xffffffffUL, request));
  }
  // personality(): only PER_LINUX. Other personas weaken ASLR (ADDR_NO_RANDOMIZE), make
  // data executable (READ_IMPLIES_EXEC) or map page zero. libseccomp 2.5 takes one
  // comparison per argument, so the query form (0xffffffff) is refused too.
  if (!rc) rc = seccomp_rule_add(ctx, eperm, SCMP_SYS(personality), 1, SCMP_A0(SCMP_CMP_NE, PER_LINUX));
  if (!rc) rc = seccomp_load(ctx);
  seccomp_release(ctx);
  return rc < 0 ? -rc : rc;
}

}  // namespace sandbox_exec::seccomp
