// mount: the sandbox's filesystem view, built before any user code runs.
//
//   build_root()   in the launcher's private mount namespace: a tmpfs at the mountpoint with
//                  read-only binds of what the interpreter needs (its prefix, site-packages,
//                  /usr, ...), the session's workdir read-write at its own path, a minimal
//                  /etc written fresh (no host users, no shadow, no secrets), a minimal /dev
//                  (null, zero, full, random, urandom: nodes of its own as root, else bound
//                  from the host), a private /tmp and /dev/shm capped in size and in inodes
//                  (nr_inodes), the session's views of host-wide /proc files (below); then
//                  the new root itself is made read-only.
//   enter_root()   in the sandbox's init, inside the new namespaces, started in the new root
//                  (its working directory, set by the launcher): a fresh /proc for the
//                  pid namespace with host-wide facts masked (interrupts, diskstats, vmstat,
//                  kallsyms, cmdline, ... read empty; root-only files stay unopenable; acpi,
//                  bus, fs, irq, ... are empty directories) and the session's own meminfo
//                  (MemTotal = its memory limit), loadavg, stat (zeroed counters) and
//                  boot_id; pivot_root into the new root, and the old root detached, so
//                  nothing of the host's tree stays reachable (not via "..", not via
//                  /proc/self/root, whose root is now the new one).
// Read-only binds keep the flags the kernel locks on a mount (nosuid, nodev, noexec) and add
// nosuid and nodev. Async-signal-safe where it runs after fork.
#pragma once

#include <sys/statvfs.h>

#include "launch/launcher_protocol.h"
#include "launch/spawn_spec.h"

namespace sandbox_exec::mount {

using Failure = StepFailure;

[[nodiscard]] Failure build_root(const SpawnSpec& spec) noexcept;
[[nodiscard]] Failure enter_root(const SpawnSpec& spec) noexcept;

// The flags of the mount `st` describes that a remount inside a user namespace may not
// clear (nosuid, nodev, noexec, the atime flags): every bind remount here keeps them.
[[nodiscard]] unsigned long locked_flags(const struct statvfs& st) noexcept;

}  // namespace sandbox_exec::mount
