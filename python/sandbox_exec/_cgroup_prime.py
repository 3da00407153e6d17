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
into the ``cgroup.procs`` of the group the backend is in at that moment (read again from
``/proc/self/cgroup`` before each write: never a group it was moved out of), at once and
then every few milliseconds: the first write's grace period runs alongside the start's
other steps (the workdir, the host id, the cgroup directories, the zygote's fork, the new root's mounts), and the later ones keep the
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


def _own_groups() -> list[tuple[str, str, str]]:
    """(hierarchy id, controllers, path) of each line of ``/proc/self/cgroup``, read now."""
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        hid, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        out.append((hid, controllers, path))
    return out


@functools.cache
def _hierarchy() -> tuple[str, str] | None:
    """(hierarchy id, its mount) of a hierarchy sessions' groups are joined in: which one
    never changes, the backend's group in it may (its operator moves it), so the group is
    read again at every write (:func:`_procs_file`)."""
    v2 = False
    for hid, controllers, path in _own_groups():
        for c in ("pids", "memory"):  # v1: any hierarchy does; the lock is global
            if c in controllers.split(","):
                mount = os.path.join(_CGROUP_ROOT, c)
                if os.path.exists(mount + path.rstrip("/") + "/cgroup.procs"):
                    return hid, mount
        if hid == "0" and not controllers:
            v2 = True
    if v2:
        for mount in (_CGROUP_ROOT, _CGROUP_ROOT + "/unified"):
            if os.path.exists(mount + "/cgroup.controllers"):
                return "0", mount
    return None


def _procs_file() -> str | None:
    """The ``cgroup.procs`` of the group the backend is in now, in :func:`_hierarchy`.

    Read again at every write, never kept: a ``0`` written into a group the backend has
    since been moved out of (by its operator or service manager) would move it back, out
    of the group and limits it was put in. (Between this read and the write lie a few
    microseconds, not a whole run of the backend.)"""
    where = _hierarchy()
    if where is None:
        return None
    hid, mount = where
    for h, _, path in _own_groups():
        if h == hid:
            return mount + path.rstrip("/") + "/cgroup.procs"
    return None


def _write(path: str) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, b"0")
        finally:
            os.close(fd)


def _run() -> None:
    if _hierarchy() is None:
        return
    while True:
        with _cond:
            while not (_active and time.monotonic() < _until):
                _cond.wait()
        path = _procs_file()  # the group it is in now: a kept one may be one it was moved out of
        if path is not None:
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
