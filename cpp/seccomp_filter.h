// seccomp_filter: the syscall filter, built with libseccomp and installed last, just before execve.
//
// Default allow (CPython, numpy and friends use a wide, changing set of syscalls), with a
// deny list of what a notebook cell never needs and what kernel escapes and sandbox
// breakouts are made of. Each rule and its reason is in seccomp_filter.cc and docs/threat_model.md.
// Denied calls fail with EPERM (clone3: ENOSYS, so libc falls back to the clone() the filter
// can inspect). Syscalls of any other ABI (i386 int 0x80, x32) kill the whole process
// (SCMP_FLTATR_ACT_BADARCH = KILL_PROCESS): the filter covers the native architecture only.
#pragma once

namespace sandbox_exec::seccomp {

// Loads the filter for the calling thread and its future children. Returns 0 or errno
// (the negative return of libseccomp, negated).
[[nodiscard]] int install() noexcept;

}  // namespace sandbox_exec::seccomp
