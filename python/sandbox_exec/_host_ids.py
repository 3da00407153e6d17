"""Host ids for sessions: each live session's user is its own host uid and gid.

Why: the kernel keeps per-user counters and limits keyed by host uid, and sessions that
share a host uid share them. Two kinds:

* per ``user_struct`` (the real uid): descriptors in flight over UNIX sockets (SCM_RIGHTS,
  bounded by the sender's RLIMIT_NOFILE: ETOOMANYREFS), pipe buffer pages, epoll watches;
* per user-namespace owner (``ucounts``, charged at every level of the namespace tree to
  the owner of the namespace below): inotify instances and watches, fanotify groups, user
  namespaces, pending signals, POSIX message queue bytes. The launcher makes each session's
  user namespace owned by its host id (as root it clones with that effective id).

With one shared id, a session that creates ``fs.inotify.max_user_instances`` inotify
instances makes inotify_init1 fail with EMFILE in every other session, new ones included.
So a root backend gives each live session its own id (uid = gid = the same number) from a
range reserved for sandboxes, as Docker's userns-remap, nsjail's id maps and systemd's
DynamicUser do:

* the range: ``Sandbox(host_id_range=(first, count))``, else the subordinate range of the
  user ``sandbox_exec`` in /etc/subuid and /etc/subgid (the ids in both), else
  :data:`DEFAULT_RANGE` (2,000,000,000 .. 2,000,065,535: above every range distributions
  and systemd hand out, below 2**31 so no tool reads them as negative). No id of the
  range may belong to an account of /etc/passwd or /etc/group (checked; fail closed);
* the lock: a live session holds ``flock`` on ``<STATE_DIR>/<id>.lock``. The directory is
  host-global (/run), so two backend processes on one host never hand out the same id;
  the kernel drops the lock when the holder's descriptor closes, even if it crashes;
* reuse: an id is handed out only when no process on the host runs with it (any of the
  real, effective, saved or filesystem uids or gids, read from /proc/<pid>/status), so a
  process left by its last holder keeps the id out of use until it is gone.

* ahead: allocate() reads every process's status (a few ms; more on a host with many
  processes), so a Sandbox keeps :data:`RESERVE` id allocated ahead by a background thread
  (:class:`IdReserve`): allocated exactly as above, its lock held from the /proc check on,
  so no process can take it up meanwhile (only a lock holder starts processes with it), and
  handed to the next session that needs one. Only from a range of at least
  :data:`RESERVE_MIN_RANGE` ids: an id held ahead in a small range could refuse another
  backend's session.

An unprivileged backend cannot map other ids (that takes newuidmap, a setuid helper, and an
entry in /etc/subuid): its sessions all run as the backend's own uid, and
``Session.enforcement["host_uid"]`` says so.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import subprocess
import threading
from dataclasses import dataclass

from . import _start_gate
from .errors import SandboxError

#: The built-in range when neither the Sandbox nor /etc/subuid names one.
DEFAULT_RANGE = (2_000_000_000, 65536)
#: Where the per-id lock files live (host-global: every backend process on the host agrees).
STATE_DIR = "/run/sandbox_exec/ids"
#: The account whose /etc/subuid and /etc/subgid entries give the range.
SUBID_USER = "sandbox_exec"
#: The largest id a uid_map accepts (2**32 - 1 is the invalid id).
MAX_ID = 2**32 - 2


@dataclass(frozen=True)
class IdRange:
    first: int
    count: int
    source: str  # where the range came from, for enforcement and doctor

    @property
    def last(self) -> int:
        return self.first + self.count - 1

    def describe(self) -> str:
        return f"{self.first}..{self.last} ({self.source})"


def _check_range(first: object, count: object, source: str) -> IdRange:
    if not (isinstance(first, int) and isinstance(count, int)) or isinstance(first, bool) or isinstance(count, bool):
        raise SandboxError(f"host id range from {source}: first and count must be integers, got {first!r}, {count!r}")
    if first < 1 or count < 1 or first + count - 1 > MAX_ID:
        raise SandboxError(
            f"host id range from {source}: {first}+{count} must lie within 1..{MAX_ID} "
            "(0 is root; 2**32-1 is the invalid id)"
        )
    return IdRange(first, count, source)


def _subids(path: str, user: str) -> list[tuple[int, int]]:
    """The (first, count) entries of `user` in an /etc/subuid-style file."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    except OSError as e:
        raise SandboxError(f"host ids: cannot read {path}: {e}") from e
    out = []
    for line in lines:
        parts = line.strip().split(":")
        if len(parts) == 3 and parts[0] == user:
            try:
                out.append((int(parts[1]), int(parts[2])))
            except ValueError:
                raise SandboxError(f"host ids: malformed line in {path}: {line!r}") from None
    return out


def _subordinate_range(subuid: str, subgid: str) -> IdRange | None:
    """The first stretch of ids that /etc/subuid and /etc/subgid both give SUBID_USER."""
    uids, gids = _subids(subuid, SUBID_USER), _subids(subgid, SUBID_USER)
    if not uids and not gids:
        return None
    for ufirst, ucount in uids:
        for gfirst, gcount in gids:
            first, end = max(ufirst, gfirst), min(ufirst + ucount, gfirst + gcount)
            if end > first:
                return _check_range(first, end - first, f"{subuid} and {subgid}, user {SUBID_USER}")
    raise SandboxError(
        f"host ids: the entries of {SUBID_USER} in {subuid} and {subgid} share no id "
        "(each session's uid and gid are the same number)"
    )


def _accounts_in(rng: IdRange, paths: tuple[str, ...] = ("/etc/passwd", "/etc/group")) -> list[str]:
    """Accounts of the host whose id lies in the range (a range must be reserved)."""
    found = []
    for path in paths:
        try:
            with open(path) as f:
                for line in f:
                    parts = line.split(":")
                    if len(parts) > 2 and parts[2].isdigit() and rng.first <= int(parts[2]) <= rng.last:
                        found.append(f"{parts[0]} ({path}, id {parts[2]})")
        except FileNotFoundError:
            continue
    return found


def resolve_range(
    explicit: tuple[int, int] | None = None, *, subuid: str = "/etc/subuid", subgid: str = "/etc/subgid"
) -> IdRange:
    """The range sessions take their host ids from (see the module's docstring)."""
    if explicit is not None:
        if not (isinstance(explicit, (tuple, list)) and len(explicit) == 2):
            raise SandboxError(f"host_id_range must be (first, count), got {explicit!r}")
        rng = _check_range(explicit[0], explicit[1], "Sandbox(host_id_range=...)")
    else:
        rng = _subordinate_range(subuid, subgid) or _check_range(*DEFAULT_RANGE, "built-in default")
    clashes = _accounts_in(rng)
    if clashes:
        raise SandboxError(
            f"host id range {rng.describe()} holds ids of host accounts: {', '.join(clashes[:5])}; "
            "hint: give sandboxes a reserved range (Sandbox(host_id_range=...) or "
            f"/etc/subuid and /etc/subgid entries for {SUBID_USER})"
        )
    return rng


def ids_in_use() -> set[int]:
    """Every uid and gid (real, effective, saved, filesystem) of a process visible in /proc."""
    used: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                for line in f:
                    if line.startswith((b"Uid:", b"Gid:")):
                        used.update(int(x) for x in line.split()[1:])
        except (FileNotFoundError, ProcessLookupError):
            continue  # the process ended while we looked
    return used


def open_state_dir(path: str) -> int:
    """Opens (creating) the lock directory; refuses one that others could write."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise SandboxError(
            f"host ids: cannot create the lock directory {path}: {e}; hint: the backend must be able to write /run"
        ) from e
    st = os.fstat(fd)
    if st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o022:
        os.close(fd)
        raise SandboxError(
            f"host ids: the lock directory {path} is not ours alone "
            f"(owner {st.st_uid}, mode {stat.S_IMODE(st.st_mode):o})"
        )
    return fd


class HostId:
    """One host id held for one session: the lock stays until release()."""

    def __init__(self, value: int, fd: int, rng: IdRange) -> None:
        self.value = value
        self.range = rng
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # drops the flock

    def __repr__(self) -> str:
        return f"<HostId {self.value} {'held' if self.held else 'released'}>"


def allocate(rng: IdRange, state_dir: str | None = None) -> HostId:
    """The lowest id of the range that no live session holds and no process runs with."""
    dir_fd = open_state_dir(state_dir or STATE_DIR)
    try:
        busy = 0
        for value in range(rng.first, rng.last + 1):
            fd = os.open(f"{value}.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                os.close(fd)
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    continue  # a live session holds it
                raise
            # Ours now, but the processes of its last holder may still be ending. /proc is
            # read after taking the lock: only a holder of the lock starts processes with
            # the id, so none can appear after this look.
            if value in ids_in_use():
                os.close(fd)
                busy += 1
                continue
            return HostId(value, fd, rng)
        raise SandboxError(
            f"host ids: every id of {rng.describe()} is taken ({busy} by processes still "
            "running with it, the rest by live sessions); hint: close sessions, or give "
            "sandboxes a larger range (Sandbox(host_id_range=...))"
        )
    finally:
        os.close(dir_fd)


#: Ids a Sandbox holds allocated ahead of the sessions that will take them.
RESERVE = 1
#: The smallest range ids are held ahead from (see the module's docstring).
RESERVE_MIN_RANGE = 1024


class IdReserve:
    """Host ids allocated ahead for one Sandbox's next sessions (see the module's docstring)."""

    def __init__(self, state_dir: str | None = None) -> None:
        self._state_dir = state_dir
        self._mutex = threading.Lock()
        self._held: list[HostId] = []
        self._range: IdRange | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.last_error = ""

    def take(self, rng: IdRange) -> HostId | None:
        """An id of `rng` allocated ahead (its lock held, no process running with it when it
        was checked), or None; either way the reserve refills in the background."""
        if rng.count < RESERVE_MIN_RANGE:
            return None
        with self._mutex:
            if self._closed:
                return None
            if self._range != rng:  # another range: what was held for the old one goes back
                stale, self._held = self._held, []
                self._range = rng
            else:
                stale = []
            got = self._held.pop(0) if self._held else None
            if self._thread is None:
                self._thread = threading.Thread(target=self._fill, name="sandbox_exec-host-ids", daemon=True)
                self._thread.start()
        for old in stale:
            old.release()
        self._wake.set()
        return got

    def held(self) -> list[int]:
        with self._mutex:
            return [h.value for h in self._held]

    def close(self) -> None:
        """Stops refilling and gives back every id held ahead."""
        with self._mutex:
            self._closed = True
            held, self._held = self._held, []
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(30)
        for h in held:
            h.release()

    def _want(self) -> IdRange | None:
        with self._mutex:
            if self._closed or self._range is None or len(self._held) >= RESERVE:
                return None
            return self._range

    def _fill(self) -> None:
        # Behind the sessions' own work (a start that found the reserve empty allocates itself).
        _start_gate.refill(self._wake, self._want, self._hold_one, self._is_closed)

    def _is_closed(self) -> bool:
        with self._mutex:
            return self._closed

    def _hold_one(self, rng: IdRange) -> bool:
        try:
            got = allocate(rng, self._state_dir)
        except Exception as e:  # none free now: sessions allocate (and say why) themselves
            self.last_error = f"{type(e).__name__}: {e}"
            return False
        with self._mutex:
            keep = not self._closed and self._range == rng and len(self._held) < RESERVE
            if keep:
                self._held.append(got)
        if not keep:
            got.release()
        return True


def own_tree(path: str, uid: int, gid: int, timeout_s: float = 300.0) -> None:
    """Gives a workdir and everything in it to (uid, gid) when its top belongs to another id
    (a previous session's files, under its own id, would be unwritable to this one).

    coreutils ``chown -R -P -h``: fts walks iteratively (a 2000-deep tree is fine, where
    os.fwalk recurses and holds a descriptor per level), never follows a symbolic link
    (-P) and changes links themselves (-h), and changes each directory after its contents,
    the top last: a walk cut short leaves the top with the old owner, so the next start
    walks again. Nothing of the sandbox runs while this does.
    """
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise SandboxError(f"workdir: {path} is not a directory")
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    try:
        r = subprocess.run(
            ["chown", "-R", "-P", "-h", f"{uid}:{gid}", "--", path],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise SandboxError(f"workdir: could not give {path} to host id {uid}: {e}") from e
    if r.returncode != 0:
        raise SandboxError(
            f"workdir: could not give {path} to host id {uid}: {r.stderr.decode(errors='replace').strip()[:500]}"
        )
