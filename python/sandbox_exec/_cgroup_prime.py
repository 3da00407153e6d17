"""Primes the kernel's cgroup migration lock at the start of a session's start.

Every session's init is moved into the session's cgroups (a write to ``cgroup.procs``, by
its keeper, just before the init goes on). That takes the kernel's global
``cgroup_threadgroup_rwsem`` for writing, and the first writer after a quiet spell waits
for an RCU grace period (``rcu_sync_enter``): measured here, 16 ms of a 44 ms warm start,
while a second migration within about one grace period of the first takes 0.1 ms. (Hosts
mounted with ``favordynmods`` do not wait; ``CLONE_INTO_CGROUP``, cgroup v2 only, would
not migrate at all.)

So while a session starts (``with primed():``), a background thread writes ``0`` (this
process, moved to the group it is already in: no task moves, no controller sees anything)
into the backend's own ``cgroup.procs``, at once and then every few milliseconds: the first
write's grace period runs alongside the start's other steps (the workdir, the host id, the
cgroup directories, the zygote's fork, the new root's mounts), and the later ones keep the
lock ready (they do not wait) until the keeper's own migration. Only during starts, at most
:data:`MAX_PRIMED_S` each: while the lock is kept ready, the host's forks and exits take
its slower path, as they do during any migration. This only moves when the wait happens:
the keeper still joins the session's groups itself and fails the start when it cannot; a
write that fails (no cgroup, no permission) changes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import os
import threading
import time
from collections.abc import Iterator

_CGROUP_ROOT = "/sys/fs/cgroup"
#: How often the lock is written again while a start is under way (below a grace period).
INTERVAL_S = 0.004
#: The longest one start keeps it ready (a start takes tens of milliseconds).
MAX_PRIMED_S = 0.25

_cond = threading.Condition()
_until = 0.0  # keep writing until this monotonic time
_active = 0  # starts under way
_thread: threading.Thread | None = None
_pid = 0  # the process the thread runs in (a forked copy of the backend starts no session)


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


def _write(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def _run() -> None:
    path = _procs_file()
    if path is None:
        return
    while True:
        with _cond:
            while not (_active and time.monotonic() < _until):
                _cond.wait()
        _write(path)  # the first after a quiet spell waits out a grace period
        time.sleep(INTERVAL_S)


@contextlib.contextmanager
def primed() -> Iterator[None]:
    """Keeps the migration lock ready while the block (a session's start) runs."""
    global _thread, _pid, _until, _active
    with _cond:
        if _thread is None:
            _thread = threading.Thread(target=_run, name="sandbox_exec-cgroup-prime", daemon=True)
            _pid = os.getpid()
            _thread.start()
        mine = _pid == os.getpid()
        if mine:
            _active += 1
            _until = max(_until, time.monotonic() + MAX_PRIMED_S)
            _cond.notify()
    try:
        yield
    finally:
        if mine:
            with _cond:
                _active -= 1
