"""Sandbox and Session: the public API of spec/api.md, over the C++ core.

A ``Sandbox`` is one supervisor with a root directory for session workdirs. A ``Session``
is one named interpreter (one notebook): its own worker process, namespace and workdir.
``run()`` at module level is the drop-in for ``exec(code, notebook_globals[id])``.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import hashlib
import json
import logging
import math
import os
import re
import sys
import tempfile
import threading
import time
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, NamedTuple

from . import (
    _audit,
    _cgroup_prime,
    _checkpoint,
    _core,
    _fetch,
    _host_ids,
    _mounts,
    _safe_fs,
    _start_gate,
    _supervisor_log,
    _variables,
)
from ._calls import CALL_ID_BASE, CallCollector, call_request
from ._calls import call_value as _call_value
from ._host_space import HostSpaceLow, check_room, shortage
from ._json import cell_request
from ._modes import Mode, check_mode, with_mode
from ._outputs import CellDone, MalformedMessage, OnOutput, OutputCollector, parse_cell_done
from ._pool import SLOT_PREFIX, SessionPool
from ._reset import reset_args, reset_report
from ._spare_images import SpareImages
from ._spare_images import reclaim as reclaim_spares
from ._workdir_image import (
    ImageUnavailable,
    WorkdirImage,
    format_image,
    full_threshold,
    reclaim_left_mounts,
    release_reaper_at_exit,
    retire_reaper_if_idle,
    wait_detached,
)
from ._workdir_image import usage as image_usage
from ._zygotes import ZygoteTable, ZygoteUnavailable
from .errors import (
    CallError,
    CheckpointError,
    PolicyError,
    PreludeError,
    SandboxError,
    SessionClosedError,
    WorkdirInUseError,
)
from .policy import MAX_SECONDS, Policy
from .result import ErrorInfo, Result, Status, make_result

# The statuses of a cell that the supervisor ended (not the cell's own doing), and the
# error name its error output shows.
_SUPERVISOR_ENDS: dict[str, str] = {
    "timeout": "CellTimeout",
    "disk": "DiskLimitExceeded",
    "memory": "MemoryLimitExceeded",
    "crashed": "WorkerCrashed",
}
# How long Sandbox.session(name) waits for this Sandbox's own close of a session of that
# name to end (an interpreter's end, a cell seeing it, an unmount: seconds at most).
_CLOSE_WAIT_S = 60.0
# How the core's CellOutcome.end maps to a status, for cells that did not report done.
_END_STATUS: dict[str, Status] = {"timeout": "timeout", "disk": "disk", "memory": "memory"}

# One message (a display or result) may be at most this large after reassembly, whatever
# the per-cell cap: the supervisor never holds more than this for one message (the core's).
MAX_MESSAGE_BYTES: int = _core.MAX_MESSAGE_BYTES


def _check_run_args(code: object, timeout: object) -> None:
    if not isinstance(code, str):
        raise TypeError(f"code must be str, not {type(code).__name__}")
    if timeout is not None and not (
        isinstance(timeout, (int, float)) and not isinstance(timeout, bool) and 0 < timeout <= MAX_SECONDS
    ):
        # (inf, or 10**10 s, would end the cell at once: the core's deadline arithmetic is in
        # 64-bit nanoseconds; None is "no deadline")
        raise ValueError(
            f"timeout must be a positive number of seconds up to {MAX_SECONDS:g} (or None), got {timeout!r}"
        )


class _OpenCell(NamedTuple):
    """A cell between its request and its Result. (A named tuple: one per cell, and a frozen
    dataclass costs a Python-level setattr per field to make.)"""

    runner: _core.CellRunner
    collector: OutputCollector
    execution_count: int
    audit: _audit.Pending | None = None  # its audit record's start (Sandbox(audit=...))


async def _readable_or_due(loop: asyncio.AbstractEventLoop, fds: tuple[int, int], timer_ms: int) -> None:
    """Returns when one of ``fds`` (-1: none) is readable or ``timer_ms`` passed (-1: no timer)."""
    woken = loop.create_future()

    def wake() -> None:
        if not woken.done():
            woken.set_result(None)

    watched = [fd for fd in fds if fd >= 0]
    for fd in watched:
        loop.add_reader(fd, wake)
    timer = loop.call_later(timer_ms / 1000, wake) if timer_ms >= 0 else None
    try:
        await woken
    finally:
        for fd in watched:
            loop.remove_reader(fd)
        if timer is not None:
            timer.cancel()


def _remove_tree(path: Path) -> None:
    """Removes a directory a cell may have filled with anything: never following a link,
    never opening a FIFO or device, iteratively (a 2000-deep tree is fine; shutil.rmtree
    raises RecursionError on it), without leaving the directory's filesystem."""
    _safe_fs.remove_tree(path)


def _claim_marker(root: Path, slot: str) -> Path:
    """Names the session a pool slot serves (written when it is adopted): a slot its backend
    left behind holds that notebook's files, which the next Sandbox moves, never deletes."""
    return root / ".locks" / (slot + ".claimed")


def _move_slot(root: Path, slot: str, home: Path) -> bool:
    """Moves a pool slot's workdir (and its image) to `home` when that is free: both or
    neither. False when `home` exists (the slot is left as it is)."""
    image = root / ".images" / (slot + ".img")
    home_image = root / ".images" / (home.name + ".img")
    if os.path.lexists(home) or os.path.lexists(home_image):
        return False
    if image.exists():
        os.rename(image, home_image)
    try:
        os.rename(root / slot, home)
    except OSError:
        if home_image.exists():
            os.rename(home_image, image)
        raise
    return True


def _spare_format(path: Path, size: int, disk_bytes: int) -> None:
    """A spare workdir image: root owned by 0:0 until a session's workdir takes it."""
    check_room(path.parent, disk_bytes, "formatting a spare workdir image")  # none on a nearly full host
    format_image(path, size, disk_bytes)


def _spare_mount(path: Path) -> int:
    return _core.workdir_image.mount_detached(str(path))


def _spare_rename(source: Path, target: Path) -> bool:
    return _core.workdir_image.rename_noreplace(str(source), str(target))


def _enospc(done_payload: bytes) -> bool:
    """Whether the cell ended with an ENOSPC error (its done report names the errno)."""
    return b"[Errno 28]" in done_payload


def launcher_path() -> str:
    """The launcher program installed beside the _core module."""
    override = os.environ.get("SANDBOX_EXEC_LAUNCHER")
    path = Path(override) if override else Path(_core.__file__).with_name("sandbox_exec_launcher")
    if not os.access(path, os.X_OK):
        raise SandboxError(
            f"spawn: the launcher {path} is missing or not executable; hint: reinstall sandbox_exec (pip install .)"
        )
    return str(path)


_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_KEEP = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _dir_name(name: str) -> str:
    """The workdir's directory name for a session name: one-to-one, so two sessions never
    share a workdir by their names.

    Three forms that cannot meet: a safe name (a letter or digit first) is itself; any other
    name is ``%`` and its UTF-8 bytes with every byte outside ``[A-Za-z0-9._-]`` written as
    ``%XX`` (reversible); when that would be over 128 characters, ``=`` and the full sha256
    of the name. None of them starts with a dot (the root's .mnt and .locks)."""
    if _SAFE_NAME.fullmatch(name):
        return name
    raw = name.encode("utf-8", "surrogatepass")
    escaped = "".join(chr(b) if chr(b) in _KEEP else f"%{b:02X}" for b in raw)
    if len(escaped) < 128:
        return "%" + escaped
    return "=" + hashlib.sha256(raw).hexdigest()


def _os_error_hint(e: OSError) -> str:
    """What to do about an OSError on the Sandbox root, by its errno."""
    import errno

    if e.errno in (errno.EMFILE, errno.ENFILE):
        return "the backend process is out of file descriptors; raise its RLIMIT_NOFILE or close some"
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            "the Sandbox root's filesystem is full; it must have room (a session writes its lock, "
            "workdir and checkpoints there)"
        )
    return "the Sandbox root must be a writable directory"


class _WorkdirLock:
    """An flock'd file per workdir under <root>/.locks: held while a session lives, so a
    second session (in this Sandbox, another Sandbox on the same root, or another process)
    cannot bind the same workdir. The file names its holder. flock locks belong to the open
    file, so two opens in one process exclude each other as two processes do."""

    def __init__(self, root: Path, dir_name: str, session_name: str) -> None:
        import fcntl
        import weakref

        self.path = root / ".locks" / (dir_name + ".lock")
        try:
            self.path.parent.mkdir(exist_ok=True)
            fd = self._acquire(fcntl, root / dir_name)
        except OSError as e:
            raise SandboxError(f"workdir: cannot lock {str(self.path)!r}: {e}; hint: {_os_error_hint(e)}") from e
        note = f"session {session_name!r} of process {os.getpid()}"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note.encode("utf-8", "backslashreplace"), 0)
        except OSError as e:
            # The root's filesystem is full (or failing): no session starts on it. The lock
            # goes with the file, so that neither this process nor a later one finds the
            # name held by a session that never was.
            self._drop(fd)
            raise SandboxError(
                f"workdir: cannot write the lock file {str(self.path)!r}: {e}; hint: {_os_error_hint(e)}"
            ) from e
        self._fd: int | None = fd
        self._owner_pid = os.getpid()
        # A Session dropped without close() still lets go of its lock when collected; at
        # interpreter exit the Sandbox's close (or the process's end) does.
        self._finalizer = weakref.finalize(self, os.close, fd)
        self._finalizer.atexit = False

    def _acquire(self, fcntl: Any, workdir: Path) -> int:
        for _ in range(10):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder(fd)
                os.close(fd)
                raise WorkdirInUseError(
                    f"workdir: {str(workdir)!r} is in use by another live session ({holder}); close that session first"
                ) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have unlinked the file after we opened it: a lock
            # on a file no longer at the path protects nothing, so retry.
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                return fd
            os.close(fd)
        raise SandboxError(f"workdir: could not lock {str(self.path)!r} (it kept being replaced)")

    def _drop(self, fd: int) -> None:
        """Lets go of a lock taken here but not kept: the file first (still locked, so nobody
        holds a lock on this inode next), then the descriptor."""
        try:
            os.unlink(self.path)
        except OSError:
            pass
        os.close(fd)

    @staticmethod
    def _holder(fd: int) -> str:
        from ._terminal import escape_controls

        try:
            text = os.pread(fd, 512, 0).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        return escape_controls(text, multiline=False) or "holder unknown"

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None or self._finalizer.detach() is None:
            return  # released already, or the finalizer closed it
        if os.getpid() == self._owner_pid:
            try:
                os.unlink(self.path)  # while locked: nobody holds a lock on this inode next
            except OSError:
                pass
        # In a forked copy of the backend this closes only the copy's descriptor: the lock
        # (held by the open file, which the parent still has open) stays the parent's.
        os.close(fd)


# The thread-pool sizes a session's numeric libraries read at import (OpenMP, OpenBLAS, MKL,
# Accelerate, BLIS, numexpr). Unset, each starts one thread per host CPU: N busy sessions
# on N CPUs then run N*N threads, and a small numpy cell waits for all of them.
_THREAD_POOL_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMEXPR_MAX_THREADS",
)


def _thread_pool_size(policy: Policy) -> int:
    """The session's default thread-pool size: its CPU share rounded up (``cpus``), else
    the CPUs the backend may run on (which the session inherits), never more than those."""
    usable = len(os.sched_getaffinity(0))
    if policy.cpus is None:
        return usable
    return max(1, min(math.ceil(policy.cpus), usable))


def _worker_env(policy: Policy, workdir: str) -> list[str]:
    threads = str(_thread_pool_size(policy))
    env = {
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/bin", "/usr/bin", "/bin"]),
        "HOME": workdir,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        # The inline backend: figures become display_data, never a window.
        "MPLBACKEND": "module://sandbox_exec._worker.mpl_backend",
        "SANDBOX_EXEC_FIGURE_FORMAT": policy.figure_format,
        "MPLCONFIGDIR": "/tmp/.matplotlib",  # caches in the private /tmp, not the workdir
        "XDG_CACHE_HOME": "/tmp/.cache",
        "TMPDIR": "/tmp",
        "PAGER": "cat",
        "TERM": "dumb",
        **dict.fromkeys(_THREAD_POOL_VARS, threads),
        # pyarrow's jemalloc starts a background purging thread at import (pandas imports
        # pyarrow when it is installed): a thread left by the prelude stops a zygote from
        # forking (every session would start cold), and counts against max_processes.
        "JE_ARROW_MALLOC_CONF": "background_thread:false",
    }
    if policy.figure_dpi:
        env["SANDBOX_EXEC_FIGURE_DPI"] = str(policy.figure_dpi)
    env.update(policy.env)
    return [f"{k}={v}" for k, v in env.items()]


@functools.cache
def _system_view() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """What every sandbox sees read-only: the system's /usr (and the top-level directories
    merged into it, as symlinks), the interpreter's prefixes and site-packages, this package,
    and the few /etc files the loader and libraries need. Nothing from the backend's own
    directories (its sources, configuration or secrets) unless a policy names it."""
    import site

    candidates: list[str] = ["/usr"]
    symlinks: list[tuple[str, str]] = []
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = Path("/" + name)
        if path.is_symlink():
            symlinks.append((str(path), os.readlink(path)))
        elif path.is_dir():
            candidates.append(str(path))
    for name in (
        "ld.so.cache",
        "ld.so.conf",
        "ld.so.conf.d",
        "localtime",
        "alternatives",
        "fonts",
        "mime.types",
        "ssl",
        "ca-certificates",
    ):
        candidates.append(f"/etc/{name}")
    candidates += [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
    candidates += [os.path.dirname(os.path.realpath(sys.executable))]
    candidates += site.getsitepackages()
    candidates += [str(Path(__file__).resolve().parent), str(Path(_core.__file__).resolve().parent)]
    seen: list[str] = []
    for real in sorted({os.path.realpath(c) for c in candidates if os.path.exists(c)}, key=len):
        if real != "/" and not any(real == p or real.startswith(p + "/") for p in seen):
            seen.append(real)
    return tuple(seen), tuple(symlinks)


@functools.cache
def cgroup_support() -> dict[str, Any]:
    """What cgroup delegation this host gives sessions (probed once per process)."""
    return dict(_core.cgroup_support())


class _SessionTable:
    """What a Sandbox shares with its sessions: its root, the host id range, and the table
    of its live sessions (under ``lock``). Sessions use this, never the Sandbox itself."""

    def __init__(
        self,
        root: Path,
        id_range: _host_ids.IdRange | None,
        zygotes: ZygoteTable | None,
        auditor: _audit.Auditor | None = None,
    ) -> None:
        self.root = root
        self.auditor = auditor  # the audit trail's sinks (_audit); None: no audit
        self.zygotes = zygotes  # None: every session starts cold (Sandbox(warm=False))
        # New workdir images formatted ahead (used only where images are: a root backend).
        self.spares = SpareImages(root / ".images", _spare_format, _spare_mount, _spare_rename)
        # Host ids allocated ahead (a root backend's sessions take one each).
        self.ids = _host_ids.IdReserve()
        self.lock = threading.Lock()
        self.closed = False
        self.by_name: dict[str, Session] = {}
        # The workdir images this Sandbox's sessions mounted (real paths; a pooled session's
        # home image too): close() waits for their loop devices, and only theirs.
        self.images: set[str] = set()
        # Names whose session close() is under way here, with the event set when it is done
        # (its locks released): see settled().
        self.closing: dict[str, threading.Event] = {}
        self._id_range = id_range

    def live(self) -> list[Session]:
        with self.lock:
            return list(self.by_name.values())

    def forget(self, session: Session) -> None:
        with self.lock:
            if self.by_name.get(session.name) is session:
                del self.by_name[session.name]

    def begin_close(self, session: Session) -> threading.Event | None:
        """Marks the named session of this table as being closed; returns the event its
        close sets when done (None: not the table's entry, or already being closed)."""
        with self.lock:
            if self.by_name.get(session.name) is not session or session.name in self.closing:
                return None
            done = self.closing[session.name] = threading.Event()
            return done

    def end_close(self, session: Session, done: threading.Event | None) -> None:
        if done is None:
            return
        with self.lock:
            if self.closing.get(session.name) is done:
                del self.closing[session.name]
        done.set()

    @contextlib.contextmanager
    def settled(self, name: str, wait_s: float) -> Iterator[None]:
        """Holds ``lock`` once no session named `name` is being closed in this table.

        A get-or-create of a name whose session another thread is closing waits for that
        close (its workdir's lock, held until the close's end, would otherwise refuse the
        new session as "in use by another live session": ours), at most `wait_s`."""
        deadline = time.monotonic() + wait_s
        while True:
            with self.lock:
                done = self.closing.get(name)
                if done is None:
                    yield
                    return
            if not done.wait(max(0.0, deadline - time.monotonic())):
                raise SandboxError(
                    f"session {name!r}: the previous session of that name in this Sandbox is still "
                    f"being closed after {wait_s:g} s (its close waits for its interpreter to end)"
                )

    def mountpoint(self, dir_name: str) -> Path:
        """An empty directory where the launcher assembles a session's root (in its own
        mount namespace: on the host it stays empty)."""
        path = self.root / ".mnt" / dir_name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def host_id_range(self) -> _host_ids.IdRange:
        """The range sessions take their host ids from, read when the first one needs it."""
        with self.lock:
            if self._id_range is None:
                self._id_range = _host_ids.resolve_range()
            return self._id_range


class Session:
    """One notebook's interpreter. Create through Sandbox.session(). A context manager
    (``with`` and ``async with``): leaving it closes the session."""

    def __init__(
        self,
        table: _SessionTable,
        name: str,
        policy: Policy,
        prelude: str | None,
        workdir: Path,
        workdir_lock: _WorkdirLock | None = None,
        mode: Mode = "ipython",
    ) -> None:
        self._table = table
        self.name = name
        self.policy = policy
        self.prelude = prelude
        #: The session's execution mode (_modes): its runs' default and its prelude's; kept
        #: across restarts.
        self.mode: Mode = mode
        self._workdir = workdir
        self._owner_pid = os.getpid()  # a forked copy of the backend must not use or end it
        self._lock = threading.RLock()  # one cell at a time
        # Set while a cell runs, under _lock: the lock is reentrant, and an event loop's
        # thread that holds it for one run_async() must not start a second cell.
        self._cell_running = False
        self._runner: _core.CellRunner | None = None  # while started
        self._runner_lock = threading.Lock()  # guards _runner for interrupt()/close()
        self._count = 0
        self._calls = 0  # calls made (_calls): their ids
        self._closed = False
        self._end_reason: str | None = None  # why the watchdog ended the interpreter
        self._live_collector: OutputCollector | None = None  # the running cell's, for close()
        self._host_id: _host_ids.HostId | None = None  # this session's own host id, while open
        self._workdir_lock = workdir_lock  # held from Sandbox.session() to close()
        # disk_bytes on the workdir (see _prepare_disk): "image" (a size-capped filesystem
        # mounted at the workdir for the Session's life) or "watchdog" (the supervisor
        # measures it), decided at the first start; None without disk_bytes.
        self._disk_mode: str | None = None
        self._disk_note = ""  # why the watchdog, when it is
        self._image: WorkdirImage | None = None
        self._disk_used = 0  # image: the filesystem's used bytes after the last cell
        self._host_short: str | None = None  # the last cell grew the image on a nearly full host: why
        # watchdog: the workdir's bytes while it is past disk_bytes (cells are refused), kept
        # per Session so that a restart cannot take an over-full workdir as its new normal
        self._disk_over: int | None = None
        # How the current interpreter started: "warm: ..." (forked from a zygote) or
        # "cold: <why not warm>"; Session.enforcement["start"].
        self._start_note = ""
        # The audit's limits and mechanisms for the current interpreter (_audit.enforced),
        # computed at its first record; reset at every start.
        self._audit_enforced: _audit.Enforced | None = None
        # A pooled session adopted by a name (_adopt): the lock of that name's workdir, and
        # where its files move when it closes.
        self._name_lock: _WorkdirLock | None = None
        self._home: Path | None = None
        # The reports of the latest checkpoint and restore (on demand or automatic, see
        # Policy.checkpoint and restore_on_start); an automatic one that failed leaves
        # {"error", "kind", "status"} instead.
        self.last_checkpoint: dict[str, Any] | None = None
        self.last_restore: dict[str, Any] | None = None
        # An automatic restore loaded a checkpoint and no cell has ended since (_restore_proven):
        # if the interpreter dies first, the checkpoint is suspect, and the next start sets it
        # aside instead of loading it (a checkpoint whose load succeeds but leaves code that
        # ends every later cell would otherwise crash the session at every start).
        self._restore_unproven = False
        self._checkpoint_suspect = False

    def _adopt(self, name: str, lock: _WorkdirLock, home: Path) -> None:
        """Serves `name` from now on (a pooled session, started in a slot directory)."""
        _claim_marker(self._workdir.parent, self._workdir.name).write_text(name, "utf-8", "surrogateescape")
        self.name = name
        self._name_lock = lock
        self._home = home
        # Where the slot's image goes when it moves home (_move_slot): still this Sandbox's.
        self._table.images.add(os.path.realpath(self._workdir.parent / ".images" / (home.name + ".img")))
        self._start_note += "; served from the pool (started ahead, in its slot directory)"

    def _move_home(self) -> None:
        """A pooled session's files move to its name's own directory (and image) at close,
        where the next session of that name finds them; left in the slot if taken."""
        if self._home is None:
            return
        root, slot = self._workdir.parent, self._workdir.name
        if _move_slot(root, slot, self._home):
            _claim_marker(root, slot).unlink(missing_ok=True)

    # --- properties ---------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """The cell's current and only writable directory; kept across cells and restarts."""
        return self._workdir

    @property
    def execution_count(self) -> int:
        return self._count

    @property
    def node_id(self) -> str | None:
        """None: a local session. (A ``sandbox_exec.ray`` session names its Ray node here.)"""
        return None

    @property
    def alive(self) -> bool:
        runner = self._runner
        return runner is not None and runner.alive()

    @property
    def worker_pid(self) -> int | None:
        runner = self._runner
        return runner.worker_pid if runner is not None else None

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"<Session {self.name!r} count={self._count} {'closed' if self._closed else 'open'}>"

    def __enter__(self) -> Session:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() waits for the interpreter to end: not on the event loop's thread.
        import asyncio

        await asyncio.to_thread(self.close)

    # --- lifecycle -----------------------------------------------------------------------
    def _start(self, *, restore: bool = True) -> None:
        problems = self.policy.unenforceable()
        cg = cgroup_support()
        if self.policy.cpus is not None and not cg.get("cpu_limit"):
            problems.append(
                "cpus needs the cgroup cpu controller (cgroup v2 cpu.max or v1 cpu.cfs_quota_us), which this "
                f"host does not delegate to sessions ({cg.get('detail') or 'no cgroups'}); a CPU share has no "
                "rlimit fallback"
            )
        if problems:
            raise PolicyError("the policy asks for protections this build cannot enforce: " + "; ".join(problems))
        with _start_gate.starting():  # work for later starts waits until this one is done
            if cg.get("memory") or cg.get("pids") or cg.get("cpu"):
                with _cgroup_prime.primed():  # the keeper's join later finds the kernel's lock ready
                    self._start_contained(restore)
            else:
                self._start_contained(restore)

    def _start_contained(self, restore: bool) -> None:
        try:
            self._workdir.mkdir(parents=True, exist_ok=True)
            # A real directory, not a link to one: the backend writes into it (the runner's
            # copies) and removes it.
            os.close(_safe_fs.open_dir(self._workdir))
        except OSError as e:
            import errno as errno_names

            name = errno_names.errorcode.get(e.errno or 0, "E?")
            raise SandboxError(
                f"workdir: mkdir({str(self._workdir)!r}) failed: {name} ({e.errno}, {e.strerror}); "
                f"hint: {_os_error_hint(e)}"
            ) from e
        mounted_here = self._prepare_disk()
        try:
            p = self.policy
            limits, isolation, cgroup = self._spawn_args()
            spawn: dict[str, Any] = {
                "launcher": launcher_path(),
                "argv": [sys.executable, "-I", "-m", "sandbox_exec._worker"],
                "env": with_mode(_worker_env(p, str(self._workdir)), self.mode),
                "workdir": str(self._workdir),
                "limits": limits,
                "isolation": isolation,
                "cgroup": cgroup,
                "start_timeout_s": p.start_timeout_s,
            }
            runner = self._start_warm(spawn)
            warm = runner is not None
            if runner is None:
                with _core_call():
                    runner = _core.CellRunner(**spawn)
            with self._runner_lock:
                self._runner = runner
            self._count = 0
            self._audit_enforced = None
            if self.prelude and not warm:  # a zygote ran it already, in the namespace it forked
                result = self._execute(self.prelude, 0, self.policy.timeout_s, None, None, self.mode)
                if result.status != "ok":
                    self._stop()
                    # The ended runner's descriptors (its ring, pipes, pidfd) close with it: not
                    # kept open by this frame in the PreludeError's traceback, which a caller may
                    # hold on to (a log, a test's pytest.raises).
                    del runner
                    detail = "\n".join(result.error["traceback"]) if result.error else (result.reason or "")
                    raise PreludeError(
                        f"the prelude of session {self.name!r} ended with status {result.status!r}:\n{detail}"
                    )
            if restore and self.policy.restore_on_start:
                self._auto_restore()
        except BaseException:
            if mounted_here:  # the Session is not handed out: nothing keeps the mount
                self._release_disk()
            raise

    def _start_warm(self, spawn: dict[str, Any]) -> _core.CellRunner | None:
        """The session's interpreter forked from the zygote of its shape (prelude, env), or
        None with the reason in _start_note: then a cold start follows. A zygote that fails
        a fork is replaced once; a failing isolation step fails the start as a cold one would
        (it is the same step in the same order)."""
        zygotes = self._table.zygotes
        if zygotes is None:
            self._start_note = "cold: warm starts are off (Sandbox(warm=False))"
            return None
        timeout = self.policy.start_timeout_s + (self.policy.timeout_s or 600.0)
        failure = ""
        for _ in range(2):
            try:
                zygote = zygotes.get(self.prelude or "", spawn["env"], timeout)
            except ZygoteUnavailable as e:
                self._start_note = f"cold: no zygote: {e}"
                return None
            except PreludeError as e:
                raise PreludeError(f"session {self.name!r}: {e}") from None
            try:
                with _core_call():
                    runner = _core.CellRunner(**spawn, zygote=zygote.link)
            except SandboxError as e:
                if getattr(e, "layer", None) != "zygote":
                    raise
                failure = str(e)
                zygotes.discard(zygote)
                continue
            self._start_note = f"warm: forked from zygote {zygote.pid} (prelude and modules shared copy-on-write)"
            return runner
        self._start_note = f"cold: the zygote failed to fork twice: {failure}"
        return None

    def _prepare_disk(self) -> bool:
        """Makes disk_bytes a filesystem limit on the workdir where the host allows it: a
        size-capped ext4 image mounted at the workdir before any process or caller sees it
        (see _workdir_image). Decided once per Session; restarts keep the mount. Where it
        cannot be done, the supervisor's watchdog enforces disk_bytes and _disk_note says
        why. Returns True when this call mounted the image."""
        p = self.policy
        if p.disk_bytes is None or self._disk_mode == "watchdog":
            return False
        if self._image is not None and self._image.mounted:
            # Before every interpreter start: the workdir must still be this image. Something
            # may have unmounted it since (it was found unmounted by an outside review: a
            # second backend's cleanup); an interpreter must never start on the bare host
            # directory, which no cap covers.
            if self._image.still_mounted():
                return False
            self._image.mounted = False
        # The image's root belongs to the sandbox's host id (the session's own, when root).
        uid, gid = self._host_ids()
        image = WorkdirImage(self._table.root, self._workdir, p.disk_bytes, uid, gid, self._table.spares)
        try:
            image.mount()
        except HostSpaceLow:
            raise  # refused: a workdir on a nearly full host, capped or not, would lose writes
        except Exception as e:
            if image.path.exists():
                # The workdir's files live in that image: an empty directory in its place
                # would look like a lost workdir. Fail closed.
                raise SandboxError(
                    f"workdir: the session's files are in {image.path}, which could not be "
                    f"mounted at {self._workdir}: {e}"
                ) from e
            # No image yet and none can be made here: the watchdog, and say why.
            self._disk_note = str(e) if isinstance(e, ImageUnavailable) else f"the workdir image could not be made: {e}"
        else:
            self._image, self._disk_mode = image, "image"
            self._table.images.add(os.path.realpath(image.path))
            # A persistent workdir may start full: only growth from here is the session's.
            self._disk_used = image_usage(self._workdir)[0]
            return True
        self._disk_mode = "watchdog"
        # A workdir already past the cap (files from before) refuses cells from the start.
        used = _core.disk_usage(str(self._workdir))
        self._disk_over = used if used is not None and used > p.disk_bytes else None
        return False

    def _release_disk(self) -> None:
        if self._image is not None:
            self._image.unmount()

    def _spawn_args(self) -> tuple[_core.ResourceLimits, _core.Isolation, _core.CgroupLimits | None]:
        """The launcher's limits and isolation layers for this session's policy."""
        p = self.policy
        cg = cgroup_support()
        memory_cgroup = p.memory_bytes is not None and cg.get("memory")
        pids_cgroup = p.max_processes is not None and cg.get("pids")
        cpu_cgroup = p.cpus is not None and cg.get("cpu_limit")  # else _start refused the policy
        limits = _core.ResourceLimits(
            cpu_seconds=None if p.cpu_s is None else max(1, math.ceil(p.cpu_s)),
            file_bytes=p.max_file_bytes,
            open_files=p.max_open_files,
            # RLIMIT_AS is the fallback only: with a memory cgroup it would turn a cell's
            # large virtual reservations (thread stacks, numpy arenas) into false failures.
            address_space=None if memory_cgroup else p.memory_bytes,
            processes=p.max_processes if p.namespaces else None,
        )
        cgroup = (
            _core.CgroupLimits(
                memory_bytes=p.memory_bytes if memory_cgroup else None,
                max_processes=p.max_processes if pids_cgroup else None,
                cpus=p.cpus if cpu_cgroup else None,
            )
            if (memory_cgroup or pids_cgroup or cpu_cgroup or cg.get("cpu"))
            else None
        )
        # Every layer is named, on or off: _core.Isolation has no "missing means off".
        layers: dict[str, Any] = {
            "namespaces": p.namespaces,
            "network": p.network,
            "drop_caps": True,
            "landlock": p.landlock,
            "seccomp": p.seccomp,
        }
        if not p.namespaces:
            return limits, _core.Isolation(**layers), cgroup
        readonly, symlinks = _system_view()
        extra = [os.path.realpath(x) for x in p.readonly_paths]
        readonly = tuple(sorted(set(readonly) | {x for x in extra if os.path.exists(x)}, key=len))
        workdir = str(self._workdir)
        readonly = tuple(r for r in readonly if not (workdir + "/").startswith(r + "/"))
        mountpoint = self._table.mountpoint(self._workdir.name)
        uid, gid = self._host_ids()
        if os.geteuid() == 0:
            # The sandbox's user is an unprivileged host id: it must own its workdir, and
            # what an earlier session (another id) left in it.
            _host_ids.own_tree(workdir, uid, gid)
        # Policy.mounts, checked and resolved at every start (_mounts).
        mounts = _mounts.resolve(
            p.mounts, workdir=self._workdir, sandbox_root=self._table.root, system_paths=readonly, uid=uid, gid=gid
        )
        isolation = _core.Isolation(
            **layers,
            mountpoint=str(mountpoint),
            readonly=list(readonly),
            symlinks=list(symlinks),
            tmp_bytes=p.disk_bytes or (1 << 30),
            outside_uid=uid,
            outside_gid=gid,
            hostname=_core.SANDBOX_HOSTNAME,
            mounts=mounts,
        )
        return limits, isolation, cgroup

    def _host_ids(self) -> tuple[int, int]:
        """The host uid and gid the sandbox's user maps to (a root backend's choice; an
        unprivileged launcher maps the caller's own and ignores these). The session's own
        id is taken at its first start and kept across restarts until close()."""
        p = self.policy
        if os.geteuid() != 0:
            return os.geteuid(), os.getegid()
        if p.host_uid is not None:
            return p.host_uid, p.host_gid if p.host_gid is not None else p.host_uid
        if self._host_id is None:
            rng = self._table.host_id_range()
            self._host_id = self._table.ids.take(rng) or _host_ids.allocate(rng)
        return self._host_id.value, self._host_id.value

    def _release_host_id(self) -> None:
        """Gives the id back (the session's processes are gone: _stop() waited for the
        launcher, whose exit ends the pid namespace; the next allocate() checks /proc too)."""
        host_id, self._host_id = self._host_id, None
        if host_id is not None:
            host_id.release()

    @property
    def enforcement(self) -> dict[str, str]:
        """Which mechanism enforces each policy field for this session, on this host."""
        host_id = self._host_id
        allocated = (
            f"per-session host uid and gid {host_id.value} from range {host_id.range.describe()}"
            if host_id is not None
            else None
        )
        out = self.policy.enforcement(
            cgroup_support(),
            host_ids=self.policy.host_ids(os.geteuid(), allocated),
            workdir_image=self._disk_mode == "image",
            workdir_note=self._disk_note,
        )
        out["start"] = self._start_note or "not started"
        return out

    def _stop(self) -> None:
        with self._runner_lock:
            runner, self._runner = self._runner, None
        if runner is not None:
            runner.terminate()

    def _kill_running(self, why: str) -> None:
        """Ends the interpreter now, whether or not a cell runs (it ends as crashed, saying
        ``why``); the next cell starts a fresh one and reports ``why`` as the restart's reason."""
        with self._runner_lock:
            runner = self._runner
            if runner is None or not runner.alive():
                return
            self._end_reason = why
            runner.terminate()

    def _ensure_started(self) -> str | None:
        """Starts the interpreter if it is not running; when that was a restart, says why
        the previous one ended."""
        if self._closed:
            raise SessionClosedError(f"session {self.name!r} is closed")
        if self._runner is not None and self._runner.alive():
            return None
        reason = None
        if self._runner is not None:
            reason = self._end_reason or f"the worker {self._runner.exit_description()}"
        self._end_reason = None
        self._stop()
        self._start()
        return reason

    def start(self) -> None:
        """Starts the interpreter if the session has none yet (Sandbox.session() does this;
        run() itself starts a fresh one when the last one died). SessionClosedError when closed."""
        with self._lock:
            if self._closed:
                raise SessionClosedError(f"session {self.name!r} is closed")
            if self._runner is None:
                self._start()

    def watch_disk(self) -> float:
        """The Sandbox's watchdog, between cells: ends an interpreter whose processes grow
        the workdir past disk_bytes while no cell runs (a thread or process a cell left
        behind). With an image the kernel already stops the writes (ENOSPC); the
        interpreter that filled the filesystem since the last cell is ended all the same.
        Returns the seconds the measurement took."""
        limit = self.policy.disk_bytes
        runner = self._runner
        if limit is None or runner is None or self._closed or not self._lock.acquire(blocking=False):
            return 0.0
        try:
            if self._runner is not runner or not runner.alive():
                return 0.0
            import time

            t0 = time.monotonic()
            used: int | None
            if self._disk_mode == "image":
                used, avail = image_usage(self._workdir)
                over = avail < full_threshold(limit) and used > self._disk_used
                self._disk_used = used
            else:
                used, over = runner.check_disk(str(self._workdir), limit)
                if over:
                    self._disk_over = used
            if over:
                self._end_reason = (
                    f"the session's processes grew the workdir to {used} bytes between cells, "
                    f"past the {limit}-byte disk limit; the interpreter was ended"
                )
                runner.terminate()
            return time.monotonic() - t0
        finally:
            self._lock.release()

    def _disk_refusal(self) -> Result | None:
        """Watchdog only: while the workdir is past disk_bytes no cell runs (a cell could
        write another burst before the watchdog sees it, and a restart would not help).
        Measured again first: files removed from the host, or held only by an interpreter
        that has since ended, count no more."""
        limit = self.policy.disk_bytes
        if self._disk_mode != "watchdog" or self._disk_over is None or limit is None:
            return None
        runner = self._runner
        used = None
        if runner is not None and runner.alive():
            used, _ = runner.check_disk(str(self._workdir), limit)
        if used is None:
            used = _core.disk_usage(str(self._workdir))
        if used is not None and used <= limit:
            self._disk_over = None
            return None
        self._disk_over = used if used is not None else self._disk_over
        reason = (
            f"the workdir holds {self._disk_over} bytes, past the {limit}-byte disk limit: no cell runs "
            "until it is back under it; delete files from Session.workdir on the host, or call "
            "Session.restart() when the space is held by files the interpreter keeps open"
        )
        error: ErrorInfo = {
            "ename": "DiskLimitExceeded",
            "evalue": reason,
            "traceback": [f"DiskLimitExceeded: {reason}"],
        }
        return Result(
            status="disk", outputs=[{"output_type": "error", **error}], error=error, execution_count=None, reason=reason
        )

    def restart(self) -> None:
        """A fresh interpreter, same name and workdir; the namespace is gone. A running cell
        is ended first (status "crashed", reason: the restart), not waited for."""
        self._check_owner()
        if self._cell_running:
            self._kill_running("the session was restarted (Session.restart()) while the cell ran")
        with self._lock:
            if self._closed:
                raise SessionClosedError(f"session {self.name!r} is closed")
            # The cell this restart ended has read its reason by now (it held the lock): the
            # fresh interpreter starts with none.
            self._end_reason = None
            self._stop()
            self._start()

    def interrupt(self) -> None:
        """KeyboardInterrupt in the running cell; the namespace is kept."""
        with self._runner_lock:
            if self._runner is not None:
                self._runner.interrupt()

    def close(self, *, remove_workdir: bool = False) -> None:
        """Ends the interpreter and every process it started. The workdir is kept: where
        disk_bytes is a filesystem limit its image is unmounted (its files are then seen
        through the next session of this name, also in a new Sandbox on the same root).
        ``remove_workdir=True`` deletes the workdir (and its image) as well."""
        if os.getpid() != self._owner_pid:
            # A forked copy of the backend: the interpreter, the image, the host id and the
            # lock are the parent's. Drop this copy's references, end nothing.
            self._closed = True
            with self._runner_lock:
                self._runner = None
            for lock in (self._workdir_lock, self._name_lock):
                if lock is not None:
                    lock.release()
            return
        done = self._table.begin_close(self)  # before _closed: a get sees one or the other
        self._closed = True
        try:
            self._close_owned(remove_workdir)
        finally:
            self._table.end_close(self, done)

    def _close_owned(self, remove_workdir: bool) -> None:
        """close() in the process that owns the session: everything it holds ends."""
        if self._cell_running:
            self._end_reason = "the session was closed while the cell ran"
            collector = self._live_collector
            if collector is not None:
                collector.abandon()
        self._stop()
        with self._lock:  # wait for a running cell to see the end
            self._stop()  # a start that raced with close() left no interpreter
            # Unmounted while this session still holds the workdir's lock: a mount at a
            # workdir exists only while a live session (or a dead backend's leftover) has it.
            self._release_disk()
            self._release_host_id()
        self._table.forget(self)
        if remove_workdir:
            if self._image is not None:
                self._image.discard()  # unmounted above: the files go with the image
            _remove_tree(self._workdir)  # before the lock goes: nobody else is in it yet
            if self._home is not None:
                _claim_marker(self._workdir.parent, self._workdir.name).unlink(missing_ok=True)
        else:
            self._move_home()  # a pooled session's files, to its name's directory
        for attr in ("_workdir_lock", "_name_lock"):
            lock = getattr(self, attr)
            setattr(self, attr, None)
            if lock is not None:
                lock.release()
        _supervisor_log.drain()

    # --- running --------------------------------------------------------------------------
    def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
        mode: Mode | None = None,
        cell_id: str | None = None,
    ) -> Result:
        """Runs one cell. Never raises for what the cell does; see Result.status. `mode`:
        "ipython" or "exec" for this run (default: the session's mode; see _modes).
        ``cell_id``: the caller's name for the cell, in its audit record (Sandbox(audit=...))."""
        _check_run_args(code, timeout)
        _audit.check_cell_id(cell_id)
        run_mode = self.mode if mode is None else check_mode(mode)
        self._check_owner()
        with self._lock:
            if self._cell_running:
                raise RuntimeError(f"a cell of session {self.name!r} is running on this thread (run_async)")
            self._cell_running = True
            try:
                refusal, restart_reason = self._before_cell()
                effective = timeout if timeout is not None else self.policy.timeout_s
                if refusal is not None:
                    return self._audit_refusal(refusal, code, cell_id, effective)
                self._count += 1
                result = self._execute(
                    code, self._count, effective, on_output, restart_reason, run_mode, self._audit_begin(code, cell_id)
                )
                self._checkpoint_after(result)
                return result
            finally:
                self._cell_running = False

    def _check_owner(self) -> None:
        """A forked copy of the backend inherits the Session object, not the session: its
        interpreter, rings and workdir stay the parent's."""
        if os.getpid() != self._owner_pid:
            raise SandboxError(
                f"session {self.name!r} belongs to process {self._owner_pid}; a forked process cannot use it: "
                "open a Sandbox of its own"
            )

    def _before_cell(self) -> tuple[Result | None, str | None]:
        """Under the lock, before a cell: a refusal (its workdir is over its disk cap), else
        the interpreter started (and why it was restarted, if it was). Its callers (run,
        run_async) checked the owner already."""
        if self._closed:
            raise SessionClosedError(f"session {self.name!r} is closed")
        refusal = self._disk_refusal()
        if refusal is not None:
            return refusal, None
        return None, self._ensure_started()

    async def run_async(
        self,
        code: str,
        *,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
        mode: Mode | None = None,
        cell_id: str | None = None,
    ) -> Result:
        """run() without blocking the event loop, and without a thread while the cell runs:
        the loop waits on the session's doorbell and its worker's pidfd (add_reader) and on
        the cell's next deadline (call_later), and steps the cell in between. on_output is
        called on the loop's thread. Starting the interpreter (the first cell, or after a
        restart) and measuring a workdir that was past its cap run in a short-lived thread. Cancelling
        interrupts the cell; the session stays usable."""
        import asyncio

        _check_run_args(code, timeout)
        _audit.check_cell_id(cell_id)
        run_mode = self.mode if mode is None else check_mode(mode)
        self._check_owner()
        await self._acquire_cell_async()
        task: asyncio.Task[Result] | None = None
        try:
            # A running interpreter and a workdir within its cap: the checks are a few system
            # calls, done here. A start (or a disk measurement) takes a short-lived thread.
            runner = self._runner
            quick = self._disk_over is None and runner is not None and runner.alive()
            refusal, restart_reason = self._before_cell() if quick else await asyncio.to_thread(self._before_cell)
            effective = timeout if timeout is not None else self.policy.timeout_s
            if refusal is not None:
                return self._audit_refusal(refusal, code, cell_id, effective)
            self._count += 1
            cell = self._open_cell(self._count, on_output, self._audit_begin(code, cell_id))
            running = cell.runner.begin_cell(*self._cell_args(cell, code, effective, run_mode))
            task = asyncio.ensure_future(self._drive_cell(running, cell, effective, restart_reason))
        finally:
            if task is None:
                self._release_cell()
        task.add_done_callback(lambda _: self._release_cell())
        try:
            result = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The task runs on to the cell's end, then frees the session: an interrupt now,
            # and the interpreter killed if the cell ignores it for the grace period.
            self.interrupt()
            grace = self.policy.interrupt_grace_s
            why = f"the cell was cancelled and ignored the interrupt for {grace:g} s; the session was killed"
            asyncio.get_running_loop().call_later(grace, lambda: None if task.done() else self._kill_running(why))
            raise
        if self.policy.checkpoint == "after_cell":
            await asyncio.to_thread(self._checkpoint_after_async, result)
        return result

    async def _acquire_cell_async(self) -> None:
        """The session's lock for a cell, taken on the loop's thread without blocking it."""
        import asyncio

        # The lock may be held by another thread (run()), so it cannot be awaited: look again
        # after a pause that grows to 50 ms while the session stays busy with a long cell.
        pause = 0.001
        while True:
            if self._lock.acquire(blocking=False):
                if not self._cell_running:
                    self._cell_running = True
                    return
                self._lock.release()  # this thread's own earlier run_async() holds it
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _release_cell(self) -> None:
        self._cell_running = False
        self._lock.release()

    async def _drive_cell(
        self, running: _core.CellRun, cell: _OpenCell, timeout: float | None, restart_reason: str | None
    ) -> Result:
        """Steps a cell from the event loop until it ends."""
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            while True:
                outcome = running.step(0)
                if outcome is not None:
                    break
                if running.arm():
                    await _readable_or_due(loop, running.wait_fds(), running.next_timer_ms())
                else:
                    # More is there already (a flood): read on after the loop's other work, so
                    # a busy cell costs the loop one step (at most 1 MiB) at a time.
                    await asyncio.sleep(0)
        except BaseException:
            # Cancelled (the loop shuts down, or someone cancelled this task) or failed: the
            # session is freed when this returns, so the cell ends first, here.
            self._finish_abandoned(running)
            raise
        return self._cell_result(cell, outcome, timeout, restart_reason)

    def _finish_abandoned(self, running: _core.CellRun) -> None:
        """Ends a cell nobody will step any more before its session is freed (its outputs
        would otherwise reach the next cell): an interrupt, the grace period for the cell to
        end, then the interpreter killed. Blocks the caller at most about that long."""
        grace = self.policy.interrupt_grace_s
        self.interrupt()
        deadline = time.monotonic() + grace
        while not running.finished and time.monotonic() < deadline:
            running.step(max(1, int((deadline - time.monotonic()) * 1000)))
        if running.finished:
            return
        self._kill_running(f"the cell was abandoned (its event loop stopped) and ignored the interrupt for {grace:g} s")
        for _ in range(100):  # the worker's exit reaches the cell within a step or two
            if running.step(100) is not None:
                return

    def _execute(
        self,
        code: str,
        count: int,
        timeout: float | None,
        on_output: OnOutput | None,
        restart_reason: str | None,
        mode: Mode,
        audit: _audit.Pending | None = None,
    ) -> Result:
        """Runs one cell on this thread and makes its Result."""
        cell = self._open_cell(count, on_output, audit)
        token = object()
        _calls_in_core.add(token)
        try:
            outcome = cell.runner.run_cell(*self._cell_args(cell, code, timeout, mode))
        finally:
            _calls_in_core.discard(token)
        return self._cell_result(cell, outcome, timeout, restart_reason)

    # --- calls that are not cells (_calls) --------------------------------------------------
    def _call(
        self,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None,
        max_reply_bytes: int,
        sizes: list[int] | None = None,
        cell_id: str | None = None,
    ) -> Any:
        """One call into the session's worker (see _calls): its reply's value, parsed from JSON
        and nothing else. Raises CallError when the called code raised or the call was ended
        (the session stays usable), SessionClosedError when closed. ``sizes``, when given,
        receives the reply message's length in bytes. ``cell_id``: the caller's name for it,
        in its audit record."""
        _check_run_args("", timeout)
        _audit.check_cell_id(cell_id)
        self._check_owner()
        with self._lock:
            if self._cell_running:
                raise RuntimeError(f"a cell of session {self.name!r} is running on this thread (run_async)")
            self._cell_running = True
            try:
                refusal, restart_reason = self._before_cell()
                return self._call_started(
                    op,
                    args,
                    timeout=timeout,
                    max_reply_bytes=max_reply_bytes,
                    sizes=sizes,
                    cell_id=cell_id,
                    restart_reason=restart_reason,
                    refusal=refusal,
                )
            finally:
                self._cell_running = False

    def _call_started(
        self,
        op: str,
        args: dict[str, Any],
        *,
        timeout: float | None,
        max_reply_bytes: int,
        sizes: list[int] | None = None,
        cell_id: str | None = None,
        restart_reason: str | None = None,
        refusal: Result | None = None,
    ) -> Any:
        """_call()'s work, for a caller that holds the lock with the interpreter started (also
        a start's automatic restore, a cell's automatic checkpoint). Audited as any call."""
        cap = min(max_reply_bytes, MAX_MESSAGE_BYTES)
        self._calls += 1
        call_id = CALL_ID_BASE + self._calls
        request = call_request(op, args, call_id)
        auditor = self._table.auditor
        pending = auditor.begin("call", request.decode("ascii"), cell_id, op) if auditor else None
        if refusal is not None:
            error = CallError(f"{op}: {refusal.reason}", status=refusal.status, reason=refusal.reason)
            self._audit_call(pending, error, None, timeout, cap, restart_reason, None)
            raise error
        runner = self._runner
        if runner is None:
            raise SessionClosedError(f"session {self.name!r} is closed")
        collector = CallCollector()
        token = object()
        _calls_in_core.add(token)
        try:
            outcome = runner.run_cell(
                request,
                timeout or 0.0,
                self.policy.interrupt_grace_s,
                cap + 4096,  # the reply and the end-of-call report
                cap,
                collector.feed,
                _core.StreamText(),
                _core.StreamText(),
                False,
                str(self._workdir),
                self._disk_watch_limit() or 0,
                call_id,
                # What the worker's threads print while the call runs is not charged to the
                # call's cap (a background printer would crowd out the reply): discarded.
                discard_streams=True,
            )
        finally:
            _calls_in_core.discard(token)
        # Not kept in this frame past the call: a CallError's traceback holds the frame, and a
        # caller that keeps the error (a log, an error report) would keep a runner that a
        # restart or close has ended open with it (its ring, pipes and pidfd).
        worker_pid = runner.worker_pid
        del runner
        try:
            value = _call_value(op, outcome, collector, timeout, self._end_reason)
        except CallError as e:
            self._audit_call(pending, e, outcome, timeout, cap, restart_reason, worker_pid)
            raise
        self._audit_call(pending, None, outcome, timeout, cap, restart_reason, worker_pid)
        if sizes is not None:
            sizes.append(collector.reply_bytes)
        return value

    # --- the audit trail's hooks (_audit) ----------------------------------------------------
    def _audit_begin(self, code: str, cell_id: str | None) -> _audit.Pending | None:
        auditor = self._table.auditor
        return auditor.begin("cell", code, cell_id) if auditor is not None else None

    def _audit_refusal(self, refusal: Result, code: str, cell_id: str | None, timeout: float | None) -> Result:
        """A refused cell's record (it never ran), then the refusal."""
        auditor = self._table.auditor
        if auditor is not None:
            pending = auditor.begin("cell", code, cell_id)
            auditor.end(
                self, pending, status=refusal.status, reason=refusal.reason, outcome=None, execution_count=None,
                timeout=timeout, restart_reason=None, worker_pid=None,
            )  # fmt: skip
        return refusal

    def _audit_call(
        self,
        pending: _audit.Pending | None,
        error: CallError | None,
        outcome: _core.CellOutcome | None,
        timeout: float | None,
        cap: int,
        restart_reason: str | None,
        worker_pid: int | None,
    ) -> None:
        _supervisor_log.drain()
        auditor = self._table.auditor
        if auditor is None or pending is None:
            return
        auditor.end(
            self, pending, status=error.status if error is not None else "ok",
            reason=error.reason if error is not None else None, outcome=outcome, execution_count=None,
            timeout=timeout, restart_reason=restart_reason, worker_pid=worker_pid, reply_cap=cap,
        )  # fmt: skip

    def call(self, function: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Calls a function the session's prelude defined, with JSON arguments, and returns
        its JSON result: no execution count, no outputs, no history (a capture hook, an
        inspection helper). The function is looked up among the names the prelude defined,
        not in the namespace a cell may have rebound. Raises CallError when it raises (or
        its result is not JSON), TypeError when the arguments are not JSON."""
        try:
            json.dumps([args, kwargs], allow_nan=False)
        except (TypeError, ValueError) as e:
            raise TypeError(f"call({function!r}): the arguments must be JSON values: {e}") from None
        return self._call(
            "call",
            {"function": function, "args": list(args), "kwargs": kwargs},
            timeout=timeout if timeout is not None else self.policy.timeout_s,
            max_reply_bytes=self.policy.max_output_bytes,
        )

    def checkpoint(self, *, timeout: float | None = None, durable: bool = True) -> dict[str, Any]:
        """Saves the picklable part of the namespace inside the sandbox, to
        ``<workdir>/.sandbox_exec/state/checkpoint`` (atomically: the previous checkpoint
        stays until the new one is whole; sha256 of the payload; format version). Returns the
        report: ``saved`` (names), ``skipped`` (``{"name", "type", "kind", "reason"}``; kinds
        ``prelude``, ``module``, ``cell_defined``, ``unpicklable``, ``name``), ``bytes``,
        ``sha256``, ``format``, ``python``, ``path``, ``created``, ``duration_s``. Takes no
        execution count. Raises CheckpointError (``kind``) when it cannot be saved; the
        namespace and the previous checkpoint are then untouched. ``durable``: the state
        directory is fsync'd after the rename, so the new checkpoint survives a power cut once
        this returns (the file itself always is, before the rename: a power cut brings back
        the previous checkpoint or the new one, whole)."""
        try:
            value = self._call(
                "checkpoint",
                self._checkpoint_args(durable),
                timeout=timeout if timeout is not None else self.policy.timeout_s,
                max_reply_bytes=_checkpoint.REPLY_LIMIT,
            )
        except CheckpointError:
            raise
        except CallError as e:
            raise _checkpoint.as_checkpoint_error("checkpoint", e) from None
        finally:
            self._checkpoint_written()
        self.last_checkpoint = report = _checkpoint.checkpoint_report(value)
        return report

    def _checkpoint_args(self, durable: bool) -> dict[str, Any]:
        """Where the watchdog enforces disk_bytes, a checkpoint stops at the room left (else
        it could write past the cap between two of the watchdog's looks, and replace the last
        good checkpoint with one that leaves the workdir over it)."""
        room = None
        limit = self._disk_watch_limit()
        if limit is not None:
            used = _core.disk_usage(str(self._workdir))
            room = max(0, limit - used) if used is not None else 0
        return _checkpoint.checkpoint_args(self._workdir, room, durable)

    def _checkpoint_written(self) -> None:
        """The workdir image's use after a checkpoint: the checkpoint's growth is the
        session's own doing, not leftovers' (the disk watchdog compares with this)."""
        if self._disk_mode == "image":
            self._disk_used = image_usage(self._workdir)[0]

    def restore(self, *, timeout: float | None = None) -> dict[str, Any]:
        """Loads the session's last checkpoint inside the sandbox (also one a previous
        interpreter, or a previous backend on the same root, saved): checked (format, Python
        version, sha256) and unpickled whole into a new dict before the namespace is updated
        with it (names not in the checkpoint are kept). Returns ``{"found": True, "restored":
        [names], "bytes", "sha256", "format", "python", "path", "created", "duration_s"}``.
        Raises CheckpointError (``kind``: missing, corrupt, foreign, unsafe, load, or how the
        call ended) and leaves the namespace untouched when it cannot be loaded."""
        try:
            value = self._call(
                "restore",
                _checkpoint.restore_args(self._workdir, missing_ok=False, set_aside=False),
                timeout=timeout if timeout is not None else self.policy.timeout_s,
                max_reply_bytes=_checkpoint.REPLY_LIMIT,
            )
        except CheckpointError:
            raise
        except CallError as e:
            raise _checkpoint.as_checkpoint_error("restore", e) from None
        self.last_restore = report = _checkpoint.restore_report(value)
        return report

    def _checkpoint_after(self, result: Result) -> None:
        """Policy.checkpoint == "after_cell": a checkpoint after a cell that left its
        interpreter alive (the caller holds the lock). Its failure is recorded and logged,
        never the cell's."""
        if self.policy.checkpoint != "after_cell" or result.status not in ("ok", "error", "interrupted", "timeout"):
            return
        if not self.alive:
            return
        try:
            value = self._call_started(
                "checkpoint",
                self._checkpoint_args(durable=False),
                timeout=self.policy.timeout_s,
                max_reply_bytes=_checkpoint.REPLY_LIMIT,
            )
            self._checkpoint_written()
            self.last_checkpoint = _checkpoint.checkpoint_report(value)
        except CallError as e:
            failure = e if isinstance(e, CheckpointError) else _checkpoint.as_checkpoint_error("checkpoint", e)
            self.last_checkpoint = _checkpoint.failure_record(failure)
            _checkpoint.logger.warning(
                "session %r: the checkpoint after cell %s failed: %s", self.name, result.execution_count, failure
            )

    def _checkpoint_after_async(self, result: Result) -> None:
        """_checkpoint_after() for run_async(), on a short-lived thread once the cell has
        freed the session (a cell started since has its own checkpoint)."""
        with self._lock:
            if self._cell_running or self._closed:
                return
            self._cell_running = True
            try:
                self._checkpoint_after(result)
            finally:
                self._cell_running = False

    def _auto_restore(self) -> None:
        """Policy.restore_on_start: loads the last checkpoint, if any, into the interpreter
        just started (the caller holds the lock). One that fails to load is set aside
        (checkpoint.rejected) and the session starts empty; one whose loading ended the
        interpreter (a pickle that exits, or is too large for the memory limit or the
        deadline) is set aside by a fresh interpreter, which the session then keeps."""
        if self._checkpoint_suspect:
            # The last interpreter restored from it died before any cell ended: set it aside.
            self._checkpoint_suspect = False
            self.last_restore = {
                "error": "the interpreter restored from this checkpoint died before a cell ended; it was set aside",
                "kind": "load",
                "status": "crashed",
            }
            _checkpoint.logger.warning(
                "session %r: the interpreter restored at its last start died before any cell ended; "
                "its checkpoint is set aside and the session starts empty",
                self.name,
            )
            self._set_checkpoint_aside()
            return
        args = _checkpoint.restore_args(self._workdir, missing_ok=True, set_aside=True)
        try:
            value = self._call_started(
                "restore", args, timeout=self.policy.timeout_s, max_reply_bytes=_checkpoint.REPLY_LIMIT
            )
            self.last_restore = _checkpoint.restore_report(value)
            self._restore_unproven = bool(self.last_restore.get("found"))
            return
        except CallError as e:
            failure = e if isinstance(e, CheckpointError) else _checkpoint.as_checkpoint_error("restore", e)
        self.last_restore = _checkpoint.failure_record(failure)
        _checkpoint.logger.warning("session %r: the restore at start failed, it starts empty: %s", self.name, failure)
        if self.alive:
            if failure.status == "timeout":
                # Interrupted while it read the file (too large for the deadline): every later
                # start would wait the whole deadline again. Set aside as a failed load is.
                self._set_checkpoint_aside()
            return
        self._end_reason = None
        self._stop()
        self._start(restore=False)
        self._set_checkpoint_aside()

    def _set_checkpoint_aside(self) -> None:
        """Renames the checkpoint to checkpoint.rejected, in the sandbox, without loading it."""
        aside = _checkpoint.restore_args(self._workdir, missing_ok=True, set_aside=True, load=False)
        try:
            self._call_started("restore", aside, timeout=self.policy.timeout_s, max_reply_bytes=_checkpoint.REPLY_LIMIT)
        except CallError as e:
            _checkpoint.logger.warning("session %r: the failed checkpoint could not be set aside: %s", self.name, e)

    def reset(
        self, *, keep_prelude: bool = True, seed: int | Literal["fresh"] | None = None, timeout: float | None = None
    ) -> dict[str, int]:
        """Empties the namespace without a new interpreter, in milliseconds (see
        _worker/reset.py for everything it clears and keeps): back to the names the prelude
        bound (``keep_prelude=False``: to a fresh module's, builtins only), IPython's history
        fresh (in an IPython-mode session), open figures closed, the last result and
        traceback dropped and their memory collected. Modules stay imported; os.environ,
        sys.path, the working directory, the files, the mode and the execution count (it
        counts on, as after Jupyter's ``%reset -f``) are kept. `seed`: None keeps the
        ``random`` and numpy global streams going; an int reseeds both with it; "fresh"
        reseeds both from the kernel. Returns the names in the namespace before and after
        and the figures closed. Not a security boundary: a cell's code can survive it
        (restart() cannot be survived). Raises CallError if the worker's reset fails."""
        args = reset_args(keep_prelude, seed)
        value = self._call(
            "reset",
            args,
            timeout=timeout if timeout is not None else self.policy.timeout_s,
            max_reply_bytes=4096,
        )
        return reset_report(value)

    def variables(
        self,
        *,
        previews: str = "safe",
        preview_chars: int = _variables.DEFAULT_PREVIEW_CHARS,
        include_private: bool = False,
        include_prelude: bool = False,
        max_variables: int = _variables.DEFAULT_MAX_VARIABLES,
        max_bytes: int = _variables.DEFAULT_MAX_BYTES,
        timeout: float | None = None,
    ) -> _variables.Variables:
        """JSON-safe summaries of the namespace's variables, in definition order: dicts with
        the keys ``name``, ``type`` (the class's qualified name), ``module`` (the class's),
        ``length`` (builtin containers and strings), ``shape`` (numpy, pandas), ``dtype``
        (arrays, series), ``columns`` (DataFrames: ``[{"name", "dtype"}]``, at most 50) and
        ``columns_total``, ``size`` (bytes, shallow: numpy's nbytes, pandas' memory_usage
        (deep=False), sys.getsizeof of builtins, the object's own struct otherwise),
        ``preview`` (at most ``preview_chars`` characters, or None) and ``error`` (why this
        variable could not be inspected), None where not applicable. No execution count is
        taken and no output produced.

        ``previews``: ``"safe"`` runs no code of the user's classes (builtins, numpy arrays and
        plain pandas frames are previewed, other objects are not), ``"repr"`` also calls
        ``repr()`` of other objects in the sandbox (a raising one is marked, a hanging one
        ends the call at ``timeout``), ``"none"`` writes none. Skipped: modules, IPython's
        history names, names starting with ``_`` (unless ``include_private``) and the
        prelude's names while still bound to what the prelude left (unless
        ``include_prelude``). At most ``max_variables`` summaries and ``max_bytes`` of reply:
        the returned list's ``truncated`` says some were left out, ``total`` how many
        matched, ``malformed`` how many ill-shaped summaries were dropped. Raises CallError
        when the worker fails or the call is ended."""
        if previews not in _variables.PREVIEW_MODES:
            raise ValueError(f"previews must be one of {_variables.PREVIEW_MODES}, not {previews!r}")
        for label, n in (("preview_chars", preview_chars), ("max_variables", max_variables), ("max_bytes", max_bytes)):
            if type(n) is not int or n < 0:
                raise ValueError(f"{label} must be a non-negative int")
        max_bytes = min(max_bytes, MAX_MESSAGE_BYTES - 4096)
        reply = self._call(
            "variables",
            {
                "previews": previews,
                "preview_chars": preview_chars,
                "include_private": include_private is True,
                "include_prelude": include_prelude is True,
                "max_variables": max_variables,
                "max_bytes": max_bytes,
            },
            timeout=timeout if timeout is not None else self.policy.timeout_s,
            max_reply_bytes=max_bytes + 4096,
        )
        return _variables.parse_reply(reply, preview_chars=preview_chars, max_variables=max_variables)

    def fetch(
        self,
        name: str,
        *,
        format: str = "auto",
        max_bytes: int = _fetch.DEFAULT_MAX_BYTES,
        as_pandas: bool = False,
        timeout: float | None = None,
    ) -> Any:
        """One variable's value, sent in a format whose reading cannot run code. ``format``:
        ``"json"`` (plain data: dict with str keys, list, tuple, str, int, float, bool, None;
        NaN and infinities arrive as None; returns the value), ``"arrow"`` (a pandas
        DataFrame as Arrow IPC; returns a ``pyarrow.Table``), ``"records"`` (a DataFrame as
        Jupyter's table schema, ``application/vnd.dataresource+json``; returns ``{"schema":
        {"fields", "primaryKey"}, "data": [rows]}``), ``"npy"`` (a numpy array of a
        non-object dtype; returns a ``numpy.ndarray``) or ``"auto"`` (arrow for a DataFrame
        when pyarrow >= 14.0.1 is in both the sandbox and here, records otherwise; npy for
        an array; json for the rest). ``as_pandas=True`` returns a DataFrame for arrow and
        records. ``max_bytes`` (default 32 MiB, at most MAX_FETCH_BYTES ~48 MiB) limits the
        encoded value: measured in the worker before sending and again here. Raises
        CallError (ename and evalue from the worker: NameError, TypeError for a value the
        format cannot carry, ValueError past max_bytes; status "violation" for a reply
        refused here), ValueError for bad arguments."""
        if type(name) is not str or not name:
            raise ValueError("fetch: name must be a non-empty str")
        if format not in _fetch.FORMATS:
            raise ValueError(f"fetch: format must be one of {_fetch.FORMATS}, not {format!r}")
        if type(max_bytes) is not int or not 0 < max_bytes <= _fetch.MAX_FETCH_BYTES:
            raise ValueError(f"fetch: max_bytes must be an int in 1..{_fetch.MAX_FETCH_BYTES}")
        accept = _fetch.accepted_formats()
        if format != "auto" and format not in accept:
            raise ValueError(f"fetch: format {format!r} needs pyarrow >= 14.0.1 in the backend")
        sizes: list[int] = []
        reply = self._call(
            "fetch",
            {"name": name, "format": format, "accept": accept, "max_bytes": max_bytes},
            timeout=timeout if timeout is not None else self.policy.timeout_s,
            max_reply_bytes=_fetch.reply_cap(max_bytes),
            sizes=sizes,
        )
        return _fetch.decode(reply, format, accept, max_bytes, sizes[0], as_pandas)

    def _open_cell(self, count: int, on_output: OnOutput | None, audit: _audit.Pending | None = None) -> _OpenCell:
        """What a cell needs before it is sent: its runner and its output collector. (The
        workdir image's use before it, to tell what the cell itself wrote, is read by the
        core: _cell_args' measure_image.)"""
        runner = self._runner
        if runner is None:  # close() ended it since the caller started it
            raise SessionClosedError(f"session {self.name!r} is closed")
        collector = OutputCollector(on_output, execution_count=count)
        self._live_collector = collector  # close() abandons it (no more on_output calls)
        return _OpenCell(runner, collector, count, audit)

    def _cell_args(self, cell: _OpenCell, code: str, timeout: float | None, mode: Mode) -> tuple[Any, ...]:
        """The core's arguments for one cell (run_cell and begin_cell take the same)."""
        request = cell_request(code, cell.execution_count, mode)
        cap = self.policy.max_output_bytes
        texts = cell.collector.texts
        return (
            request,
            timeout or 0.0,
            self.policy.interrupt_grace_s,
            cap,
            min(cap, self.policy.max_single_output_bytes, MAX_MESSAGE_BYTES),
            cell.collector.feed,
            texts["stdout"],
            texts["stderr"],
            cell.collector.live,
            str(self._workdir),
            self._disk_watch_limit() or 0,
            cell.execution_count,
            # The image's use before and after the cell, read by the core around it
            # (statvfs, without the GIL): CellOutcome.image_*, for _disk_after_cell.
            self._disk_image_limit() is not None,
        )

    def _cell_result(
        self, cell: _OpenCell, outcome: _core.CellOutcome, timeout: float | None, restart_reason: str | None
    ) -> Result:
        """The cell's Result: the supervisor's outcome, the disk measured after it, the
        status that follows from both, the outputs."""
        runner, collector, count = cell.runner, cell.collector, cell.execution_count
        disk_hit, disk_bytes = self._disk_after_cell(runner, outcome)
        status, error, reason = self._cell_status(runner, outcome, collector, timeout, disk_hit, disk_bytes)
        cap = self.policy.max_output_bytes
        past_cell_cap = outcome.dropped_output_bytes - collector.oversize_dropped_bytes
        if past_cell_cap > 0:
            collector.add_marker(
                f"\n[sandbox_exec: output truncated: {past_cell_cap} bytes "
                f"past the per-cell limit of {cap} bytes were dropped]\n"
            )
        if status in _SUPERVISOR_ENDS and error is None:
            # The supervisor ended the cell: its reason, as an error output the notebook shows.
            # Host full: not the cell's limit (DiskLimitExceeded would send its author to shrink it).
            ename = "HostDiskFull" if status == "disk" and self._host_short else _SUPERVISOR_ENDS[status]
            error = {"ename": ename, "evalue": reason or status, "traceback": [f"{ename}: {reason or status}"]}
            collector.add_error(error)
        outputs, stdout, stderr = collector.finish()
        result = make_result(
            {
                "status": status,
                "outputs": outputs,
                "error": error,
                "stdout": stdout,
                "stderr": stderr,
                "execution_count": count,
                "duration_s": outcome.duration_s,
                "cpu_s": outcome.cpu_s,
                "peak_memory_bytes": outcome.peak_rss_bytes,
                "display_ids": dict(collector.display_ids),
                "display_updates": collector.display_updates,
                "reason": reason if status not in ("ok", "error") else None,
                "truncated_bytes": outcome.dropped_output_bytes,
                "session_restarted": restart_reason is not None,
                "restart_reason": restart_reason,
            }
        )
        if self._restore_unproven:
            # A cell ended after a restore at start: the restored interpreter works (ok), or
            # died before one ended (the checkpoint is suspect: the next start sets it aside).
            self._restore_unproven = False
            self._checkpoint_suspect = status == "crashed"
        _supervisor_log.drain()
        if cell.audit is not None and self._table.auditor is not None:
            self._table.auditor.end(
                self, cell.audit, status=result.status, reason=result.reason, outcome=outcome, execution_count=count,
                timeout=timeout, restart_reason=restart_reason, worker_pid=runner.worker_pid,
            )  # fmt: skip
        if collector.callback_error is not None:
            raise collector.callback_error
        return result

    def _disk_image_limit(self) -> int | None:
        """disk_bytes when a size-capped image is the workdir, else None."""
        return self.policy.disk_bytes if self._disk_mode == "image" else None

    def _disk_watch_limit(self) -> int | None:
        """disk_bytes when the supervisor's watchdog measures the workdir, else None."""
        return self.policy.disk_bytes if self._disk_mode == "watchdog" else None

    def _disk_after_cell(self, runner: _core.CellRunner, outcome: _core.CellOutcome) -> tuple[bool, int | None]:
        """Whether the cell met disk_bytes, and the workdir's bytes after it."""
        disk_hit, disk_bytes = outcome.disk_hit, outcome.workdir_bytes
        self._host_short = None
        image_limit, watch_limit = self._disk_image_limit(), self._disk_watch_limit()
        if image_limit is not None:
            # The filesystem is the cap: the cell met it when it filled it (its writes past
            # it failed with ENOSPC). The core read the image's use right before sending the
            # cell and when the cell ended (_cell_args: measure_image).
            used_before, used, avail = outcome.image_used_before, outcome.image_used, outcome.image_avail
            if used is None or avail is None:  # its statvfs failed: again here (raises if it fails)
                used, avail = image_usage(self._workdir)
            if used_before is None:  # the same before the cell: the last figure known
                used_before = self._disk_used
            disk_hit = used > used_before and (
                avail < full_threshold(image_limit) or _enospc(outcome.done_payload if outcome.end == "done" else b"")
            )
            # The image is sparse: a cell that grew it needs room on the host filesystem too
            # (_host_space). One statvfs, only after growth.
            self._host_short = shortage(self._table.root / ".images", image_limit) if used > used_before else None
            self._disk_used = used
            return disk_hit, used
        if watch_limit is not None:
            if outcome.end != "done" or disk_bytes is None:
                # The cell ended without the supervisor's end-of-cell look (a crash, a
                # kill): look now, before another cell can start.
                alive = runner.alive()
                disk_bytes = runner.check_disk(str(self._workdir), watch_limit)[0] if alive else None
                if disk_bytes is None:
                    disk_bytes = _core.disk_usage(str(self._workdir))
            self._disk_over = disk_bytes if disk_bytes is not None and disk_bytes > watch_limit else None
        return disk_hit, disk_bytes

    def _cell_status(
        self,
        runner: _core.CellRunner,
        outcome: _core.CellOutcome,
        collector: OutputCollector,
        timeout: float | None,
        disk_hit: bool,
        disk_bytes: int | None,
    ) -> tuple[Status, ErrorInfo | None, str | None]:
        """(status, the cell's own error, the reason) from how the cell ended."""
        reason = outcome.reason or None
        if outcome.end == "done":
            try:
                done = parse_cell_done(outcome.done_payload)
            except MalformedMessage as e:
                runner.terminate()
                return "crashed", None, f"protocol violation: {e}"
            return self._done_status(done, outcome, timeout, disk_hit, disk_bytes, reason)
        if outcome.end == "violation" and collector.violation:
            reason = f"protocol violation: {collector.violation}"
        if outcome.end == "crashed" and self._end_reason is not None:
            reason = self._end_reason  # the backend ended it: restart(), close(), a cancelled cell
        if self._host_short is not None and outcome.end in ("timeout", "disk"):
            return "disk", None, self._host_short  # what matters more than the deadline: lost writes
        return _END_STATUS.get(outcome.end, "crashed"), None, reason

    def _done_status(
        self,
        done: CellDone,
        outcome: _core.CellOutcome,
        timeout: float | None,
        disk_hit: bool,
        disk_bytes: int | None,
        reason: str | None,
    ) -> tuple[Status, ErrorInfo | None, str | None]:
        """The status of a cell that reported its end (it may still have met a limit)."""
        error = done["error"]
        limit = self.policy.disk_bytes
        if self._host_short is not None:  # the host is full, not (only) the cell's cap
            return "disk", error, self._host_short
        if disk_hit and self._disk_image_limit() is not None:
            return (
                "disk",
                error,
                (
                    f"the cell filled the workdir to its {limit}-byte disk limit ({disk_bytes} "
                    "bytes used); writes past it fail with ENOSPC"
                ),
            )
        if disk_hit:
            return (
                "disk",
                error,
                (
                    f"the cell grew the workdir to {disk_bytes} bytes, past the {limit}-byte "
                    "disk limit" + (" and was interrupted" if done["status"] == "error" else "")
                ),
            )
        if outcome.deadline_hit:
            return "timeout", error, f"the cell ran past its {timeout or 0:g} s deadline and was interrupted"
        if done["status"] == "ok":
            return "ok", error, reason
        if error and error["ename"] == "KeyboardInterrupt":
            return "interrupted", error, reason
        if error and error["ename"] == "MemoryError" and self.policy.memory_bytes:
            return "memory", error, reason
        return "error", error, reason


class Sandbox:
    """One supervisor: starts, runs and ends sessions. Thread-safe; a context manager."""

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        root: str | os.PathLike[str] | None = None,
        host_id_range: tuple[int, int] | None = None,
        warm: bool = True,
        pool_size: int = 0,
        audit: _audit.AuditHook | None = None,
        audit_log: str | os.PathLike[str] | None = None,
        audit_code: bool = False,
        tracing: object = None,
    ) -> None:
        """`host_id_range` (first, count): the host ids a root backend gives its sessions, one
        each while they live (default: /etc/subuid and /etc/subgid of the user sandbox_exec,
        else 2,000,000,000 + 65536; see _host_ids). An unprivileged backend cannot map other
        ids: it refuses an explicit range.

        `warm`: sessions are forked from a zygote per (prelude, environment) that has the
        prelude loaded (see _zygotes), each contained exactly as a cold one; False starts
        every interpreter fresh (``Session.enforcement["start"]`` says which happened).

        `pool_size`: keep up to this many sessions of each shape (prelude and policy) already
        asked for started and idle, so a new notebook's session starts at once (see _pool).

        The audit trail (see _audit; docs/api.md, "The audit trail"): one record per cell and
        per call, a dict (``sandbox_exec.AuditRecord``) given to `audit` (a callable) and
        appended as one JSON line to `audit_log` (created 0600; no symlink followed). The
        code is hashed, and kept in clear only with `audit_code=True`. `tracing`: an
        OpenTelemetry span per cell and call — None: when opentelemetry-api is installed,
        through its global tracer provider; False: none; True: required; or a
        TracerProvider to use. A failing sink is logged (``sandbox_exec.audit``), never
        fails a cell."""
        if not isinstance(warm, bool):
            raise TypeError("warm must be True or False")
        if not isinstance(pool_size, int) or isinstance(pool_size, bool) or pool_size < 0:
            raise ValueError(f"pool_size must be an integer >= 0, got {pool_size!r}")
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError("policy must be a sandbox_exec.Policy")
        if host_id_range is not None and os.geteuid() != 0:
            raise SandboxError(
                "host_id_range needs a backend running as root: an unprivileged backend "
                "maps only its own uid (no newuidmap), so every session shares it"
            )
        id_range = _host_ids.resolve_range(host_id_range) if host_id_range is not None else None
        self.policy = policy or Policy()
        self._owner_pid = os.getpid()
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="sandbox_exec-")) if root is None else Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        auditor = _audit.Auditor.make(audit, audit_log, audit_code, tracing)
        self._table = _SessionTable(self.root, id_range, ZygoteTable(self.root) if warm else None, auditor)
        self._stop_watch = threading.Event()
        self._watchdog = threading.Thread(target=self._watch, name="sandbox_exec-disk-watchdog", daemon=True)
        self._watchdog.start()
        self._pool = SessionPool(pool_size, self._start_slot) if pool_size else None
        self._reclaim_slots()
        reclaim_spares(self.root / ".images")  # those of a backend that died
        reclaim_left_mounts(self.root)  # the workdir images of a backend that died with its reaper
        _open_sandboxes.add(self)

    def _reclaim_slots(self) -> None:
        """Removes pool slots a backend left behind (it died while a slot was idle or being
        started): a slot nobody holds the lock of, with no image mounted on it."""
        try:
            names = [e.name for e in os.scandir(self.root) if e.name.startswith(SLOT_PREFIX)]
        except OSError:
            return
        for name in names:
            try:
                lock = _WorkdirLock(self.root, name, "reclaiming a left pool slot")
            except SandboxError:
                continue  # a live session (of any backend) has it
            try:
                slot = self.root / name
                if _core.workdir_image.mounted_image(str(slot)):
                    continue  # the reaper's, or a live mount: not ours to touch
                image = self.root / ".images" / (name + ".img")
                claim = _claim_marker(self.root, name)
                if claim.exists():
                    # A notebook's files: they go where its name's directory is, as its close
                    # would have moved them (or stay, when that name has a directory already).
                    owner = claim.read_text("utf-8", "surrogateescape")
                    if _move_slot(self.root, name, self.root / _dir_name(owner)):
                        claim.unlink()
                    continue  # (not moved: the marker stays, so the files are never removed)
                if image.exists():
                    image.unlink()
                _remove_tree(slot)
            except OSError:
                pass
            finally:
                lock.release()

    def _start_slot(self, slot: str, prelude: str | None, policy: Policy, mode: Mode) -> Session:
        """A started session in a new pool slot directory (the pool's refill thread)."""
        lock = _WorkdirLock(self.root, slot, slot)
        s = Session(self._table, slot, policy, prelude, self.root / slot, lock, mode)
        try:
            s.start()
        except BaseException:
            s.close(remove_workdir=True)
            raise
        return s

    def _from_pool(self, name: str, policy: Policy, prelude: str | None, mode: Mode) -> Session | None:
        """An idle pooled session adopted as `name`, when `name` is a new notebook (no
        workdir yet, no image) and the pool has one of its shape; else None."""
        if self._pool is None:
            return None
        dir_name = _dir_name(name)
        home = self.root / dir_name
        if os.path.lexists(home) or os.path.lexists(self.root / ".images" / (dir_name + ".img")):
            return None
        s = self._pool.take(prelude, policy, mode)
        if s is None:
            return None
        try:
            lock = _WorkdirLock(self.root, dir_name, name)
        except BaseException:
            # Called under the session table's lock, which closing a session takes: the idle
            # session goes back (a found review: closing it here hung the Sandbox).
            self._pool.put_back(s)
            raise
        s._adopt(name, lock, home)
        return s

    def pool_idle(self) -> int:
        """Idle pooled sessions, all shapes together (0 without a pool)."""
        return self._pool.idle_total() if self._pool is not None else 0

    def _watch(self) -> None:
        """Measures idle sessions' workdirs. A round every 0.2 s at most, and never more
        than a tenth of the time (the walks of many or large workdirs stretch the interval)."""
        while not self._stop_watch.wait(self._watch_interval):
            _supervisor_log.drain()  # what sessions' threads logged between their cells
            spent = 0.0
            for s in self.sessions():
                try:
                    spent += s.watch_disk()
                except Exception:  # a failing check must not stop the watchdog
                    pass
            self._watch_interval = min(5.0, max(0.2, 10 * spent))

    _watch_interval = 0.2

    @property
    def closed(self) -> bool:
        return self._table.closed

    @property
    def owned_here(self) -> bool:
        """False in a forked copy of the backend: its sessions are the parent's."""
        return os.getpid() == self._owner_pid

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Sandbox:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() waits for every interpreter to end: not on the event loop's thread.
        import asyncio

        await asyncio.to_thread(self.close)

    def session(
        self, name: str, *, policy: Policy | None = None, prelude: str | None = None, mode: Mode | None = None
    ) -> Session:
        """Gets the named session, creating and starting it if needed. `mode`: "ipython"
        (the default for a new session) or "exec", the default of its runs and its
        prelude's mode, kept across restarts (see _modes)."""
        if not isinstance(name, str) or not name:
            raise ValueError("a session name must be a non-empty string")
        if mode is not None:
            check_mode(mode)
        if not self.owned_here:
            raise SandboxError(
                f"this Sandbox belongs to process {self._owner_pid}; a forked process cannot use it: "
                "open a Sandbox of its own"
            )
        table = self._table
        with table.settled(name, _CLOSE_WAIT_S):  # a close of this name under way: after it
            if table.closed:
                raise SessionClosedError("this Sandbox is closed")
            s = table.by_name.get(name)
            if s is not None:
                if (
                    (policy is not None and policy != s.policy)
                    or (prelude is not None and prelude != s.prelude)
                    or (mode is not None and mode != s.mode)
                ):
                    raise ValueError(
                        f"session {name!r} exists with another policy, prelude or mode; close it first to change them"
                    )
            else:
                s = self._from_pool(name, policy or self.policy, prelude, mode or "ipython")
                if s is None:
                    dir_name = _dir_name(name)
                    # Refuses (SandboxError) a workdir that another live session holds.
                    lock = _WorkdirLock(self.root, dir_name, name)
                    s = Session(
                        table, name, policy or self.policy, prelude, self.root / dir_name, lock, mode or "ipython"
                    )
                table.by_name[name] = s
        if self._pool is not None:
            self._pool.want(prelude, policy or self.policy, s.mode)
        try:
            s.start()
        except BaseException:
            with table.lock:
                forget = table.by_name.get(name) is s
            if forget:  # a session that failed to start is not kept: no process, id or lock
                s.close()
            raise
        return s

    def sessions(self) -> list[Session]:
        return self._table.live()

    def run_once(
        self,
        code: str,
        *,
        policy: Policy | None = None,
        timeout: float | None = None,
        on_output: OnOutput | None = None,
        mode: Mode = "ipython",
        cell_id: str | None = None,
    ) -> Result:
        """A fresh interpreter for one cell; nothing survives it (its workdir included)."""
        _audit.check_cell_id(cell_id)
        name = f"ephemeral-{uuid.uuid4().hex}"
        s = self.session(name, policy=policy, mode=mode)
        try:
            return s.run(code, timeout=timeout, on_output=on_output, cell_id=cell_id)
        finally:
            s.close(remove_workdir=True)

    def close(self) -> None:
        """Ends every session this Sandbox started (and unmounts their workdir images)."""
        with self._table.lock:
            self._table.closed = True
            sessions = list(self._table.by_name.values())
        self._stop_watch.set()
        idle = self._pool.close() if self._pool is not None else []
        for s in sessions:
            s.close()  # in a forked copy of the backend: lets go without ending anything
        for s in idle:
            s.close(remove_workdir=self.owned_here)  # an idle slot holds nobody's files
        if self._pool is not None and self.owned_here:
            # A slot being started now is closed by the refill thread itself: wait for it, so
            # no slot outlives close() (a process that exits next would leave it behind).
            self._pool.join(self.policy.start_timeout_s + 5.0)
        if self._table.zygotes is not None and self.owned_here:
            self._table.zygotes.close()
        if self.owned_here:
            self._table.spares.close()
            self._table.ids.close()
            # The images were unmounted lazily: their loop devices go when the kernel lets
            # go of the filesystems, which may come after the sessions' processes are gone.
            reclaim_left_mounts(self.root)  # another backend's, dead with its reaper meanwhile
            images, spares = self._table.images, self._table.spares
            still = wait_detached(lambda backing: backing in images or spares.owns(backing))
            if still:
                logging.getLogger(__name__).warning(
                    "Sandbox.close(): loop devices %s still serve workdir images under %s "
                    "(something outside the sandbox holds their filesystems)",
                    ", ".join(still),
                    self.root,
                )
        if self._own_root and os.getpid() == self._owner_pid:
            _remove_tree(self.root)
        if self.owned_here:
            retire_reaper_if_idle()
        if self._table.auditor is not None:
            self._table.auditor.close()
        _supervisor_log.drain()


#: Every Sandbox of this process not yet closed: the exit hook closes them.
_open_sandboxes: weakref.WeakSet[Sandbox] = weakref.WeakSet()
#: A token per blocking call into the core in progress (the GIL released in C++).
_calls_in_core: set[object] = set()


@contextlib.contextmanager
def _core_call() -> Iterator[None]:
    """Marks a blocking call into the core (a session's start) for the exit hook; the hot
    paths (a cell, a call) mark theirs inline."""
    token = object()
    _calls_in_core.add(token)
    try:
        yield
    finally:
        _calls_in_core.discard(token)


def _close_at_exit() -> None:
    """At interpreter exit, before threads are torn down: closes every Sandbox still open
    here, then waits (bounded) for the threads that were inside the core to come out.

    Why: a daemon thread blocked in ``run()`` would otherwise still be inside the core's C++
    frames when the interpreter finalizes; CPython 3.11 ends such a thread with
    ``pthread_exit`` when it asks for the GIL back, an unwind through C++ frames that calls
    ``std::terminate`` (the backend aborts at exit). Closing the sessions ends their cells,
    so those threads return. It also unmounts the workdir images of Sandboxes never closed.
    """
    for box in list(_open_sandboxes):
        if box.owned_here and not box.closed:
            try:
                box.close()
            except Exception:  # the others are still closed
                logging.getLogger("sandbox_exec").exception("closing a Sandbox at exit failed")
    deadline = time.monotonic() + 5.0
    while _calls_in_core and time.monotonic() < deadline:
        time.sleep(0.005)  # the GIL goes to those threads meanwhile
    release_reaper_at_exit()


atexit.register(_close_at_exit)

_default: Sandbox | None = None
_default_lock = threading.Lock()


def _default_sandbox() -> Sandbox:
    global _default
    with _default_lock:
        if _default is None or _default.closed or not _default.owned_here:
            _default = Sandbox()  # a forked process gets its own, never its parent's
        return _default


def run(
    code: str,
    *,
    session: str | None = None,
    policy: Policy | None = None,
    timeout: float | None = None,
    on_output: OnOutput | None = None,
    mode: Mode | None = None,
    cell_id: str | None = None,
) -> Result:
    """The drop-in for ``exec(code, notebook_globals[session])``; see spec/api.md. `mode`:
    this run's ("exec": exec()'s rules; default: the session's, "ipython" for a new one).
    ``cell_id`` names the cell in the audit trail (the default Sandbox has none: tracing only)."""
    box = _default_sandbox()
    if session is None:
        return box.run_once(
            code, policy=policy, timeout=timeout, on_output=on_output, mode=mode or "ipython", cell_id=cell_id
        )
    return box.session(session, policy=policy).run(
        code, timeout=timeout, on_output=on_output, mode=mode, cell_id=cell_id
    )
