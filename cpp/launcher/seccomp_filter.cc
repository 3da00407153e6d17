#include "launcher/seccomp_filter.h"

#include <linux/filter.h>
#include <linux/netlink.h>
#include <linux/sched.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <span>
#include <vector>

namespace sandbox_exec::seccomp {

namespace {

// ---------------------------------------------------------------------------------------
// Allowed without conditions, by group. A syscall this architecture lacks is negative
// (__PNR_*) and skipped, so the same table serves x86_64 and aarch64.
// ---------------------------------------------------------------------------------------

struct Group {
  const char* why;
  std::span<const int> calls;
};

constexpr int kProgram[] = {
    SCMP_SYS(execve),          SCMP_SYS(execveat),   SCMP_SYS(exit),
    SCMP_SYS(exit_group),      SCMP_SYS(arch_prctl), SCMP_SYS(set_tid_address),
    SCMP_SYS(set_robust_list), SCMP_SYS(rseq),       SCMP_SYS(prctl),
    SCMP_SYS(restart_syscall),
};
constexpr int kMemory[] = {
    SCMP_SYS(brk),           SCMP_SYS(mmap),          SCMP_SYS(munmap),       SCMP_SYS(mremap),
    SCMP_SYS(mprotect),      SCMP_SYS(madvise),       SCMP_SYS(mincore),      SCMP_SYS(msync),
    SCMP_SYS(mlock),         SCMP_SYS(mlock2),        SCMP_SYS(munlock),      SCMP_SYS(mlockall),
    SCMP_SYS(munlockall),    SCMP_SYS(membarrier),    SCMP_SYS(memfd_create), SCMP_SYS(pkey_alloc),
    SCMP_SYS(pkey_free),     SCMP_SYS(pkey_mprotect), SCMP_SYS(mbind),        SCMP_SYS(get_mempolicy),
    SCMP_SYS(set_mempolicy),
};
constexpr int kFileIo[] = {
    SCMP_SYS(read),      SCMP_SYS(write),           SCMP_SYS(pread64),         SCMP_SYS(pwrite64), SCMP_SYS(readv),
    SCMP_SYS(writev),    SCMP_SYS(preadv),          SCMP_SYS(pwritev),         SCMP_SYS(preadv2),  SCMP_SYS(pwritev2),
    SCMP_SYS(lseek),     SCMP_SYS(close),           SCMP_SYS(close_range),     SCMP_SYS(dup),      SCMP_SYS(dup2),
    SCMP_SYS(dup3),      SCMP_SYS(fcntl),           SCMP_SYS(flock),           SCMP_SYS(fsync),    SCMP_SYS(fdatasync),
    SCMP_SYS(sync),      SCMP_SYS(syncfs),          SCMP_SYS(sync_file_range), SCMP_SYS(truncate), SCMP_SYS(ftruncate),
    SCMP_SYS(fallocate), SCMP_SYS(fadvise64),       SCMP_SYS(readahead),       SCMP_SYS(pipe),     SCMP_SYS(pipe2),
    SCMP_SYS(sendfile),  SCMP_SYS(copy_file_range), SCMP_SYS(splice),          SCMP_SYS(tee),      SCMP_SYS(vmsplice),
};
constexpr int kPaths[] = {
    SCMP_SYS(stat),     SCMP_SYS(fstat),      SCMP_SYS(lstat),     SCMP_SYS(newfstatat), SCMP_SYS(statx),
    SCMP_SYS(statfs),   SCMP_SYS(fstatfs),    SCMP_SYS(access),    SCMP_SYS(faccessat),  SCMP_SYS(faccessat2),
    SCMP_SYS(getdents), SCMP_SYS(getdents64), SCMP_SYS(getcwd),    SCMP_SYS(chdir),      SCMP_SYS(fchdir),
    SCMP_SYS(rename),   SCMP_SYS(renameat),   SCMP_SYS(renameat2), SCMP_SYS(mkdir),      SCMP_SYS(mkdirat),
    SCMP_SYS(rmdir),    SCMP_SYS(link),       SCMP_SYS(linkat),    SCMP_SYS(unlink),     SCMP_SYS(unlinkat),
    SCMP_SYS(symlink),  SCMP_SYS(symlinkat),  SCMP_SYS(readlink),  SCMP_SYS(readlinkat), SCMP_SYS(umask),
};
constexpr int kFileAttributes[] = {
    SCMP_SYS(chown),     SCMP_SYS(fchown),    SCMP_SYS(lchown),      SCMP_SYS(fchownat),     SCMP_SYS(utime),
    SCMP_SYS(utimes),    SCMP_SYS(futimesat), SCMP_SYS(utimensat),   SCMP_SYS(getxattr),     SCMP_SYS(lgetxattr),
    SCMP_SYS(fgetxattr), SCMP_SYS(listxattr), SCMP_SYS(llistxattr),  SCMP_SYS(flistxattr),   SCMP_SYS(setxattr),
    SCMP_SYS(lsetxattr), SCMP_SYS(fsetxattr), SCMP_SYS(removexattr), SCMP_SYS(lremovexattr), SCMP_SYS(fremovexattr),
};
constexpr int kEvents[] = {
    SCMP_SYS(poll),
    SCMP_SYS(ppoll),
    SCMP_SYS(select),
    SCMP_SYS(pselect6),
    SCMP_SYS(epoll_create),
    SCMP_SYS(epoll_create1),
    SCMP_SYS(epoll_ctl),
    SCMP_SYS(epoll_wait),
    SCMP_SYS(epoll_pwait),
    SCMP_SYS(epoll_pwait2),
    SCMP_SYS(eventfd),
    SCMP_SYS(eventfd2),
    SCMP_SYS(signalfd),
    SCMP_SYS(signalfd4),
    SCMP_SYS(timerfd_create),
    SCMP_SYS(timerfd_settime),
    SCMP_SYS(timerfd_gettime),
    SCMP_SYS(inotify_init),
    SCMP_SYS(inotify_init1),
    SCMP_SYS(inotify_add_watch),
    SCMP_SYS(inotify_rm_watch),
};
constexpr int kTime[] = {
    SCMP_SYS(clock_gettime),
    SCMP_SYS(clock_getres),
    SCMP_SYS(clock_nanosleep),
    SCMP_SYS(gettimeofday),
    SCMP_SYS(time),
    SCMP_SYS(nanosleep),
    SCMP_SYS(alarm),
    SCMP_SYS(getitimer),
    SCMP_SYS(setitimer),
    SCMP_SYS(timer_create),
    SCMP_SYS(timer_settime),
    SCMP_SYS(timer_gettime),
    SCMP_SYS(timer_getoverrun),
    SCMP_SYS(timer_delete),
};
constexpr int kSignals[] = {
    SCMP_SYS(rt_sigaction),
    SCMP_SYS(rt_sigprocmask),
    SCMP_SYS(rt_sigreturn),
    SCMP_SYS(rt_sigpending),
    SCMP_SYS(rt_sigtimedwait),
    SCMP_SYS(rt_sigsuspend),
    SCMP_SYS(rt_sigqueueinfo),
    SCMP_SYS(rt_tgsigqueueinfo),
    SCMP_SYS(sigaltstack),
    SCMP_SYS(pause),
    SCMP_SYS(kill),
    SCMP_SYS(tkill),
    SCMP_SYS(tgkill),
    SCMP_SYS(pidfd_open),
    SCMP_SYS(pidfd_send_signal),
};
constexpr int kProcesses[] = {
    SCMP_SYS(fork),
    SCMP_SYS(vfork),
    SCMP_SYS(wait4),
    SCMP_SYS(waitid),
    SCMP_SYS(futex),
    SCMP_SYS(futex_waitv),
    SCMP_SYS(getpid),
    SCMP_SYS(getppid),
    SCMP_SYS(gettid),
    SCMP_SYS(getpgid),
    SCMP_SYS(getpgrp),
    SCMP_SYS(setpgid),
    SCMP_SYS(getsid),
    SCMP_SYS(setsid),
    SCMP_SYS(sched_yield),
    SCMP_SYS(sched_getaffinity),
    SCMP_SYS(sched_setaffinity),
    SCMP_SYS(sched_getparam),
    SCMP_SYS(sched_setparam),
    SCMP_SYS(sched_getscheduler),
    SCMP_SYS(sched_setscheduler),
    SCMP_SYS(sched_getattr),
    SCMP_SYS(sched_setattr),
    SCMP_SYS(sched_get_priority_max),
    SCMP_SYS(sched_get_priority_min),
    SCMP_SYS(sched_rr_get_interval),
    SCMP_SYS(getpriority),
    SCMP_SYS(setpriority),
    SCMP_SYS(ioprio_get),
    SCMP_SYS(ioprio_set),
    SCMP_SYS(getcpu),
};
constexpr int kIdentity[] = {
    SCMP_SYS(getuid),    SCMP_SYS(geteuid),   SCMP_SYS(getgid),    SCMP_SYS(getegid),   SCMP_SYS(getresuid),
    SCMP_SYS(getresgid), SCMP_SYS(getgroups), SCMP_SYS(setuid),    SCMP_SYS(setgid),    SCMP_SYS(setreuid),
    SCMP_SYS(setregid),  SCMP_SYS(setresuid), SCMP_SYS(setresgid), SCMP_SYS(setgroups), SCMP_SYS(setfsuid),
    SCMP_SYS(setfsgid),  SCMP_SYS(capget),
};
constexpr int kSystemInfo[] = {
    SCMP_SYS(uname),     SCMP_SYS(sysinfo),   SCMP_SYS(getrusage), SCMP_SYS(times),
    SCMP_SYS(getrlimit), SCMP_SYS(setrlimit), SCMP_SYS(prlimit64), SCMP_SYS(getrandom),
};
constexpr int kSockets[] = {
    SCMP_SYS(bind),     SCMP_SYS(connect),     SCMP_SYS(listen),      SCMP_SYS(accept),
    SCMP_SYS(accept4),  SCMP_SYS(getsockname), SCMP_SYS(getpeername), SCMP_SYS(sendto),
    SCMP_SYS(recvfrom), SCMP_SYS(sendmsg),     SCMP_SYS(recvmsg),     SCMP_SYS(sendmmsg),
    SCMP_SYS(recvmmsg), SCMP_SYS(shutdown),    SCMP_SYS(setsockopt),  SCMP_SYS(getsockopt),
};
constexpr int kIpc[] = {
    SCMP_SYS(shmget),    SCMP_SYS(shmat),         SCMP_SYS(shmdt),        SCMP_SYS(shmctl),
    SCMP_SYS(semget),    SCMP_SYS(semop),         SCMP_SYS(semtimedop),   SCMP_SYS(semctl),
    SCMP_SYS(msgget),    SCMP_SYS(msgsnd),        SCMP_SYS(msgrcv),       SCMP_SYS(msgctl),
    SCMP_SYS(mq_open),   SCMP_SYS(mq_unlink),     SCMP_SYS(mq_timedsend), SCMP_SYS(mq_timedreceive),
    SCMP_SYS(mq_notify), SCMP_SYS(mq_getsetattr),
};

const Group kAllowed[] = {
    {"starting a program (the dynamic loader, glibc's thread setup) and ending it", kProgram},
    {"the process's own memory; mlock is bounded by RLIMIT_MEMLOCK, NUMA calls by own pages", kMemory},
    {"I/O on descriptors the cell holds", kFileIo},
    {"paths: what the cell reaches is decided by the mount view and Landlock, not here", kPaths},
    {"file owners, times and xattrs: the kernel checks ownership (no capabilities left)", kFileAttributes},
    {"waiting on descriptors: select/poll/epoll (asyncio, subprocess), eventfd, timerfd, inotify", kEvents},
    {"reading clocks, sleeping and timers (setting the clock is denied on purpose, below)", kTime},
    {"signals; kill reaches only the cell's own pid namespace", kSignals},
    {"fork, threads, waiting, futexes and scheduling of the cell's own processes", kProcesses},
    {"user and group ids: changing them needs capabilities the cell no longer has", kIdentity},
    {"system facts, resource limits (raising one needs a capability) and randomness", kSystemInfo},
    {"using sockets; which sockets exist is decided by socket()/socketpair() below", kSockets},
    {"SysV and POSIX IPC: the cell has its own IPC namespace", kIpc},
};

// ---------------------------------------------------------------------------------------
// Denied on purpose: these fail with EPERM (not ENOSYS), so a caller learns it was refused
// and nothing falls back to them; each is a kernel escape or sandbox breakout primitive.
// ---------------------------------------------------------------------------------------

struct Rule {
  int syscall;
  const char* why;
};

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

// ---------------------------------------------------------------------------------------
// Checked by argument.
// ---------------------------------------------------------------------------------------

// Calls that make a file or set its mode, with the argument holding the mode: allowed unless
// the mode has S_ISUID or S_ISGID (EPERM then). A writable host data mount is nosuid inside
// the sandbox only: a setuid/setgid file made there stays so on the host, owned by the
// session's host id and executable by anyone outside. Only the mode is checked, whatever the
// open flags: the kernel reads it only with O_CREAT or O_TMPFILE (libc passes 0 otherwise),
// so refusing it alone turns away no real caller and needs no list of the flags that create.
// mkdir/mkdirat are not here: the kernel keeps only the permission and sticky bits of their
// mode (a new directory is setgid only below a setgid one, the host's choice); chmod(g+s) on
// a directory is refused below. openat2 (its mode is in a struct the filter cannot read) and
// fchmodat2 are on no list: ENOSYS, and callers fall back to openat and fchmodat, checked here.
struct ModeArg {
  int syscall;
  unsigned arg;
};
const ModeArg kModeChecked[] = {
    {SCMP_SYS(open), 2},    {SCMP_SYS(openat), 3}, {SCMP_SYS(creat), 1},  {SCMP_SYS(mknod), 1},
    {SCMP_SYS(mknodat), 2}, {SCMP_SYS(chmod), 1},  {SCMP_SYS(fchmod), 1}, {SCMP_SYS(fchmodat), 2},
};
constexpr uint64_t kSetId = S_ISUID | S_ISGID;

// clone() flags that create namespaces: a cell may fork and start threads, not new namespaces.
constexpr uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER |
                                     CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWTIME;

// socket()/socketpair() families a notebook uses: local sockets, IP in the cell's own network
// namespace (only a loopback unless the policy gives it the network). Every other family
// fails with EPERM: AF_VSOCK reaches the hypervisor and host services and is in no network
// namespace; AF_PACKET, AF_ALG, AF_KEY, AF_BLUETOOTH, ... are kernel attack surface.
constexpr uint32_t kSocketFamilies[] = {AF_UNIX, AF_INET, AF_INET6};
// AF_NETLINK for NETLINK_ROUTE only: glibc's getaddrinfo (AI_ADDRCONFIG) and if_nameindex read
// the (namespaced) interface list through it. Other netlink protocols (audit, netfilter, uevent,
// xfrm, ...) fail with EPERM.
constexpr uint32_t kNetlinkProtocols[] = {NETLINK_ROUTE};
// Families with rules of their own: every other family is refused outright.
constexpr uint32_t kFamiliesWithRules[] = {AF_UNIX, AF_INET, AF_INET6, AF_NETLINK};

// ioctl(): TIOCSTI/TIOCLINUX push keystrokes into a terminal's input (CVE-2017-5226 class).
constexpr uint32_t kRefusedIoctls[] = {TIOCSTI, 0x541C /* TIOCLINUX */};

// personality(): only PER_LINUX. Other personas weaken ASLR (ADDR_NO_RANDOMIZE), make data
// executable (READ_IMPLIES_EXEC) or map page zero; the query form (0xffffffff) is refused too.
constexpr uint32_t kPersonalities[] = {PER_LINUX};

const uint32_t kEperm = SCMP_ACT_ERRNO(EPERM);

// Adds rules giving syscall `nr` the action `action` for every value of argument `arg` whose
// low 32 bits are NOT one of `values` (the caller adds the rules for those); `also`, when
// given, is one more condition, on another argument, that every rule carries.
//
// Why this shape: the kernel reads these arguments (socket family and protocol, ioctl request,
// personality) as 32-bit ints, so only the low 32 bits are compared; the high bits, which the
// kernel drops, cannot steer the filter. libseccomp 2.5 takes one comparison per argument, and
// a rule without conditions shadows the conditional rules of the same syscall, so "any other
// value" is spelled out as disjoint ranges: walk the binary trie of 32-bit values from the top
// bit; a subtree holding none of `values` is one MASKED_EQ rule (mask = the bits fixed so far).
// At most 32 rules per listed value; recursion depth 32; no allocation. The rules are disjoint
// from each other and from the listed values', so the order libseccomp emits them in is moot.
int add_all_but(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned arg, std::span<const uint32_t> values,
                const scmp_arg_cmp* also, uint32_t prefix = 0, unsigned depth = 0) noexcept {
  const uint32_t mask = depth == 0 ? 0 : static_cast<uint32_t>(0xffffffffULL << (32 - depth));
  bool holds_a_value = false;
  for (uint32_t v : values) holds_a_value |= (v & mask) == prefix;
  if (!holds_a_value) {
    const scmp_arg_cmp cmp = {arg, SCMP_CMP_MASKED_EQ, mask, prefix};
    return also ? seccomp_rule_add(ctx, action, nr, 2, cmp, *also) : seccomp_rule_add(ctx, action, nr, 1, cmp);
  }
  if (depth == 32) return 0;  // one of `values`: the caller's
  const uint32_t bit = 1U << (31 - depth);
  if (int rc = add_all_but(ctx, action, nr, arg, values, also, prefix, depth + 1)) return rc;
  return add_all_but(ctx, action, nr, arg, values, also, prefix | bit, depth + 1);
}

// The rules for the low 32 bits of argument `arg` equal to `value` (and `also`).
int add_equal(scmp_filter_ctx ctx, uint32_t action, int nr, unsigned arg, uint32_t value,
              const scmp_arg_cmp* also) noexcept {
  const scmp_arg_cmp cmp = {arg, SCMP_CMP_MASKED_EQ, 0xffffffffU, value};
  return also ? seccomp_rule_add(ctx, action, nr, 2, cmp, *also) : seccomp_rule_add(ctx, action, nr, 1, cmp);
}

// socket() and socketpair() (family first, protocol third): see kSocketFamilies.
int add_socket_rules(scmp_filter_ctx ctx, int nr) noexcept {
  int rc = add_all_but(ctx, kEperm, nr, 0, kFamiliesWithRules, nullptr);
  for (uint32_t family : kSocketFamilies) {
    if (!rc) rc = add_equal(ctx, SCMP_ACT_ALLOW, nr, 0, family, nullptr);
  }
  const scmp_arg_cmp netlink = {0, SCMP_CMP_MASKED_EQ, 0xffffffffU, AF_NETLINK};
  if (!rc) rc = add_all_but(ctx, kEperm, nr, 2, kNetlinkProtocols, &netlink);
  for (uint32_t protocol : kNetlinkProtocols) {
    if (!rc) rc = add_equal(ctx, SCMP_ACT_ALLOW, nr, 2, protocol, &netlink);
  }
  return rc;
}

// Builds the whole filter into `ctx`; 0 or a negative errno.
int build(scmp_filter_ctx ctx) noexcept {
  // A syscall of another ABI (i386 int 0x80, x32) ends the whole process, not only the
  // calling thread (libseccomp's default), which would leave a half-dead worker behind.
  int rc = seccomp_attr_set(ctx, SCMP_FLTATR_ACT_BADARCH, SCMP_ACT_KILL_PROCESS);
  // A binary search over syscall numbers instead of a linear chain: ~250 allowed syscalls.
  if (!rc) rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_OPTIMIZE, 2);
  for (const Group& group : kAllowed) {
    for (int nr : group.calls) {
      if (rc) break;
      if (nr < 0) continue;  // not on this architecture
      rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0);
    }
  }
  for (const Rule& rule : kDenied) {
    if (rc) break;
    if (rule.syscall < 0) continue;
    rc = seccomp_rule_add(ctx, kEperm, rule.syscall, 0);
  }
  // clone(): flags come first on x86_64 and aarch64. Allowed when no namespace flag is set;
  // one EPERM rule per namespace flag (libseccomp compares with "masked equal" only). The
  // kernel reads the low 32 bits of the flags, where all namespace flags are.
  if (!rc)
    rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, kNamespaceFlags, 0));
  for (uint64_t bit = 1; !rc && bit != 0; bit <<= 1) {
    if (kNamespaceFlags & bit)
      rc = seccomp_rule_add(ctx, kEperm, SCMP_SYS(clone), 1, SCMP_A0(SCMP_CMP_MASKED_EQ, bit, bit));
  }
  // clone3 is on no list, on purpose: it passes its flags in memory the filter cannot read,
  // and the default ENOSYS makes glibc and CPython fall back to clone(), which the rules above
  // inspect. (libseccomp refuses a rule whose action is the default one, so no rule here.)
  // Mode bits (kModeChecked): three disjoint rules per call, as libseccomp compares one mask
  // per argument: no set-id bit (allowed), S_ISUID (EPERM), S_ISGID without S_ISUID (EPERM).
  // The masks cover low bits only, so high bits the kernel drops (umode_t) change nothing.
  for (const ModeArg& call : kModeChecked) {
    if (rc) break;
    if (call.syscall < 0) continue;  // not on this architecture (open, creat, mknod, chmod on aarch64)
    const scmp_arg_cmp no_set_id = {call.arg, SCMP_CMP_MASKED_EQ, kSetId, 0};
    const scmp_arg_cmp set_uid = {call.arg, SCMP_CMP_MASKED_EQ, S_ISUID, S_ISUID};
    const scmp_arg_cmp set_gid_only = {call.arg, SCMP_CMP_MASKED_EQ, kSetId, S_ISGID};
    rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, call.syscall, 1, no_set_id);
    if (!rc) rc = seccomp_rule_add(ctx, kEperm, call.syscall, 1, set_uid);
    if (!rc) rc = seccomp_rule_add(ctx, kEperm, call.syscall, 1, set_gid_only);
  }
  if (!rc) rc = add_socket_rules(ctx, SCMP_SYS(socket));
  if (!rc) rc = add_socket_rules(ctx, SCMP_SYS(socketpair));
  if (!rc) rc = add_all_but(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1, kRefusedIoctls, nullptr);
  for (uint32_t request : kRefusedIoctls) {
    if (!rc) rc = add_equal(ctx, kEperm, SCMP_SYS(ioctl), 1, request, nullptr);
  }
  if (!rc) rc = add_all_but(ctx, kEperm, SCMP_SYS(personality), 0, kPersonalities, nullptr);
  for (uint32_t persona : kPersonalities) {
    if (!rc) rc = add_equal(ctx, SCMP_ACT_ALLOW, SCMP_SYS(personality), 0, persona, nullptr);
  }
  return rc;
}

// The program prepare() built (empty: none), inherited across fork by what it forks.
std::vector<sock_filter>& prepared() {
  static std::vector<sock_filter> program;
  return program;
}

}  // namespace

int prepare() noexcept {
  const int fd = static_cast<int>(::syscall(SYS_memfd_create, "seccomp-bpf", MFD_CLOEXEC));
  if (fd < 0) return errno;
  int err = export_bpf(fd);
  const off_t size = err ? 0 : ::lseek(fd, 0, SEEK_END);
  if (!err && (size <= 0 || size % static_cast<off_t>(sizeof(sock_filter)) != 0)) err = EINVAL;
  if (!err) {
    try {
      std::vector<sock_filter> program(static_cast<std::size_t>(size) / sizeof(sock_filter));
      if (::pread(fd, program.data(), static_cast<std::size_t>(size), 0) != size) {
        err = EIO;
      } else {
        prepared() = std::move(program);
      }
    } catch (...) {
      err = ENOMEM;
    }
  }
  ::close(fd);
  return err;
}

StepFailure install() noexcept {
  if (!prepared().empty()) {
    // The same program libseccomp would load, with the same flags (none: no TSYNC, no LOG).
    sock_fprog prog{static_cast<unsigned short>(prepared().size()), prepared().data()};
    const long rc = ::syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog);
    return step_result(LaunchStep::kSeccomp, rc == 0 ? 0 : errno);
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(ENOSYS));
  if (ctx == nullptr) return step_result(LaunchStep::kSeccomp, ENOMEM);
  int rc = build(ctx);
  if (!rc) rc = seccomp_load(ctx);
  seccomp_release(ctx);
  return step_result(LaunchStep::kSeccomp, rc < 0 ? -rc : rc);
}

int export_bpf(int fd) noexcept {
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ERRNO(ENOSYS));
  if (ctx == nullptr) return ENOMEM;
  int rc = build(ctx);
  if (!rc) rc = seccomp_export_bpf(ctx, fd);
  seccomp_release(ctx);
  return rc < 0 ? -rc : rc;
}

}  // namespace sandbox_exec::seccomp
