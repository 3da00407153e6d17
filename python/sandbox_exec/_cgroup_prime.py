"""Primes the kernel's cgroup migration lock at the start of a session's start.

Every session's init is moved into the session's cgroups (a write to ``cgroup.procs``, by
its keeper, just before the init goes on). That takes the kernel's global
``cgroup_threadgroup_rwsem`` for writing, and the first writer after a quiet spell waits
for an RCU grace period (``rcu_sync_enter``): measured here, 16 ms of a 44 ms warm start,
while a second migration within about one grace period of the first takes 0.1 ms. (Hosts
mounted with ``favordynmods`` do not wait; ``CLONE_INTO_CGROUP``, cgroup v2 only, would
not migrate at all.)

So a session's start first asks a background thread to write ``0`` (this process, moved
to the group it is already in: no task moves, no controller sees anything) into the
backend's own ``cgroup.procs``: the grace period then runs alongside the start's other
steps (the workdir, the host id, the cgroup directories, the zygote's fork, the new
root's mounts), and the keeper's own migration, later, finds the lock ready. This only
moves when the wait happens: the keeper still joins the session's groups itself and fails
the start when it cannot; a prime that fails (no cgroup, no permission) changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading

_CGROUP_ROOT = "/sys/fs/cgroup"

_wake = threading.Event()
_thread: threading.Thread | None = None
_lock = threading.Lock()
_pid = 0  # the process the thread runs in (a forked backend starts its own)


@functools.cache
def _procs_file() -> str | None:
    """The backend's own ``cgroup.procs`` in a hierarchy sessions' groups are joined in."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None
    v2 = None
    for line in lines:
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        for c in ("pids", "memory"):  # v1: any hierarchy does; the lock is global
            if c in controllers.split(","):
                candidate = os.path.join(_CGROUP_ROOT, c) + path.rstrip("/") + "/cgroup.procs"
                if os.path.exists(candidate):
                    return candidate
        if hid == "0" and not controllers:
            v2 = path
    if v2 is not None:
        for mount in (_CGROUP_ROOT, _CGROUP_ROOT + "/unified"):
            candidate = mount + v2.rstrip("/") + "/cgroup.procs"
            if os.path.exists(mount + "/cgroup.controllers") and os.path.exists(candidate):
                return candidate
    return None


def _run() -> None:
    while True:
        _wake.wait()
        _wake.clear()
        path = _procs_file()
        if path is None:
            return
        with contextlib.suppress(OSError):
            fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, b"0")
            finally:
                os.close(fd)


def prime() -> None:
    """Starts the grace period a migration waits for, in the background (see the module)."""
    global _thread, _pid
    with _lock:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="sandbox_exec-cgroup-prime", daemon=True)
            _pid = os.getpid()
            _thread.start()
        elif _pid != os.getpid():
            return  # a forked copy of the backend: it starts no session
    _wake.set()
