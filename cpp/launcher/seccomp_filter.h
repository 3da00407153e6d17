// seccomp_filter: the syscall filter, built with libseccomp and installed last, just before execve.
//
// An allow list. Each allowed syscall is in one of the groups of seccomp_filter.cc, with the
// reason the group is there; docs/threat_model.md repeats them. Everything else:
//   - the "denied on purpose" set (kernel escapes and sandbox breakouts: ptrace, bpf, mount,
//     unshare, keyrings, io_uring, ...) fails with EPERM;
//   - any other syscall, including ones a newer kernel adds, fails with ENOSYS, so libc and
//     CPython take the fallback they already have for old kernels (clone3 -> clone, ...).
// A few allowed syscalls are checked by argument: clone() without namespace flags, socket()
// and socketpair() for AF_UNIX, AF_INET, AF_INET6 and NETLINK_ROUTE only (AF_VSOCK, which no
// network namespace covers, AF_PACKET, AF_ALG, ... fail with EPERM), ioctl() but TIOCSTI and
// TIOCLINUX, personality(PER_LINUX) only; open, openat, creat, mknod, mknodat, chmod, fchmod,
// fchmodat unless the mode has S_ISUID or S_ISGID (EPERM: a setuid file made in a writable
// host data mount would stay setuid on the host); openat2 and fchmodat2, whose mode the
// filter cannot check or libseccomp does not know, are on no list (ENOSYS, libc falls back).
// Syscalls of any other ABI (i386 int 0x80, x32) kill the whole process
// (SCMP_FLTATR_ACT_BADARCH = KILL_PROCESS): the filter covers the native architecture only.
// Built for x86_64; compiles on aarch64 too (syscalls that architecture lacks are skipped).
#pragma once

#include "launch/launcher_protocol.h"

namespace sandbox_exec::seccomp {

// Loads the filter for the calling thread and its future children: the program prepare()
// built, if it ran in this process (or an ancestor it was forked from), else built now.
// Fails as kSeccomp with errno (the negative return of libseccomp, negated).
[[nodiscard]] StepFailure install() noexcept;

// Builds the filter's BPF program once, ahead of install(): a zygote does it before it forks
// sessions, which then load the same program without compiling it again (a few ms each).
// Returns 0 or errno.
[[nodiscard]] int prepare() noexcept;

// Writes the same filter, as the BPF program the kernel would get, to `fd` instead of loading
// it (for tests and measurement: its size must stay under the kernel's 4096 instructions).
// Returns 0 or errno.
[[nodiscard]] int export_bpf(int fd) noexcept;

}  // namespace sandbox_exec::seccomp
