"""Spare workdir images: formatted ahead, so a new workdir's image is a rename and a mount.

A new session's workdir image (_workdir_image) costs a mkfs.ext4 (a process, ~5-10 ms)
before the session can start. A Sandbox that has made one image of some ``disk_bytes``
keeps up to :data:`PER_SIZE` more of that size formatted in the background, for at most
:data:`MAX_SIZES` sizes (the most recently used), in its root's ``.images`` directory. A
new workdir of that size takes one: the file is linked to the workdir's image name and its
spare name removed (so exactly one workdir ever has it), then mounted, checked and given
to the session's host id as a freshly formatted one is. Nothing is reused: a spare is a
new, empty filesystem that no session has ever mounted, and a closed session's image is
never made a spare.

Where the kernel has the new mount API (5.2+), a spare is also mounted ahead, detached
(``fsmount``: attached to no path, its only handle a descriptor the Sandbox holds; its
``lost+found`` removed): a new workdir then costs a rename and a ``move_mount``, not a
mkfs and a mount. A detached mount ends when its descriptor closes, also when the backend
is killed: nothing is left mounted.

Names: ``.spare-<tag>-<disk_bytes>-<n>.img`` (ready) and ``...tmp`` (being formatted),
where ``<tag>`` (``<pid>-<random hex>``) names the Sandbox that made them. That Sandbox
holds ``flock`` on ``.spare-<tag>.lock`` while it lives; the kernel drops it when the
backend dies however it dies. :func:`reclaim` (each new Sandbox on the root runs it)
removes the spares of tags whose lock nobody holds, and of tags with no lock file at all:
the lock file is created, locked, and only then renamed into place, so it exists (locked)
before its tag's first spare.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import _start_gate
from .errors import SandboxError

#: Spares kept ready per disk_bytes.
PER_SIZE = 2
#: Sizes kept at once (the most recently used); a dropped size's spares are removed.
MAX_SIZES = 4
PREFIX = ".spare-"
_NAME = re.compile(r"\.spare-(\d+-[0-9a-f]+)-(\d+)-(\d+)\.(img|tmp)")
_LOCK = re.compile(r"\.spare-(\d+-[0-9a-f]+)\.lock")
_NEW_LOCK = re.compile(r"\.spare-new-\d+-[0-9a-f]+")

#: Formats an image file (path, size in bytes, disk_bytes) with root owned by 0:0.
Formatter = Callable[[Path, int, int], None]
#: Mounts an image detached (attached to no path); returns the mount's descriptor.
Mounter = Callable[[Path], int]
#: Renames (source, target) unless target exists: False then.
Renamer = Callable[[Path, Path], bool]


@dataclass
class Spare:
    """A spare image: its file and, when the host has the new mount API, its filesystem
    mounted detached (reachable only through this descriptor, lost+found already removed)."""

    path: Path
    mount_fd: int | None = None

    def close(self) -> None:
        """Closes the detached mount (the kernel unmounts it) if it is still ours."""
        fd, self.mount_fd = self.mount_fd, None
        if fd is not None:
            os.close(fd)


def _held(path: Path) -> bool:
    """Whether a live process holds flock on `path` (one that cannot be opened counts as held)."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # drops our lock, if we took it
    return False


def reclaim(images: Path) -> int:
    """Removes the spares (and lock files) of Sandboxes that are gone; returns how many
    files went. Never touches a tag whose lock a live backend holds."""
    try:
        names = os.listdir(images)
    except OSError:
        return 0
    live: dict[str, bool] = {}
    for name in names:
        m = _LOCK.fullmatch(name)
        if m is not None:
            live[m.group(1)] = _held(images / name)
    removed = 0
    for name in names:
        if _NEW_LOCK.fullmatch(name) and not _held(images / name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(images / name)  # a lock file that was never put in place
            continue
        m = _NAME.fullmatch(name) or _LOCK.fullmatch(name)
        if m is None or live.get(m.group(1), False):
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(images / name)
            removed += 1
    return removed


class SpareImages:
    """One Sandbox's spare images and the thread that formats them (see the module)."""

    def __init__(self, images: Path, formatter: Formatter, mounter: Mounter | None, renamer: Renamer) -> None:
        self.images = images
        self._format = formatter
        self._mount = mounter
        self._rename = renamer
        self._tag = f"{os.getpid()}-{secrets.token_hex(8)}"
        self._lock_fd: int | None = None
        self._mutex = threading.Lock()
        self._sizes: dict[int, int] = {}  # disk_bytes -> image size, most recent last
        self._ready: dict[int, list[Spare]] = {}  # disk_bytes -> ready spares
        self._count = 0
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.last_error = ""

    # --- the session's side ----------------------------------------------------------------
    def want(self, disk_bytes: int, size: int) -> None:
        """Keeps spares of this disk_bytes (formatted at `size` bytes, the size that fitted)."""
        with self._mutex:
            if self._closed:
                return
            self._sizes.pop(disk_bytes, None)
            self._sizes[disk_bytes] = size
            dropped = list(self._sizes)[:-MAX_SIZES]
            gone = []
            for d in dropped:
                del self._sizes[d]
                gone += self._ready.pop(d, [])
            if self._thread is None:
                self._thread = threading.Thread(target=self._fill, name="sandbox_exec-spare-images", daemon=True)
                self._thread.start()
        for spare in gone:
            spare.close()
            spare.path.unlink(missing_ok=True)
        self._wake.set()

    def take(self, disk_bytes: int, size: int, dest: Path) -> Spare | None:
        """Moves a ready spare of this disk_bytes and size to `dest` (renamed, never over an
        existing file) and hands it over: the caller attaches its mount (or mounts its file)
        and closes it. None when there was none."""
        with self._mutex:
            ready = self._ready.get(disk_bytes, [])
            spare = ready.pop(0) if ready else None
        self._wake.set()  # a refill, whether or not there was one
        if spare is None:
            return None
        try:
            # Formatted for another fitted size: not this one. A rename, not a link: the loop
            # device names its file by path (mounted_image reads it), and a rename keeps it.
            if spare.path.stat().st_size == size and self._rename(spare.path, dest):
                spare.path = dest
                return spare
        except (OSError, SandboxError):
            pass
        spare.close()
        spare.path.unlink(missing_ok=True)
        return None

    def ready(self) -> int:
        with self._mutex:
            return sum(len(v) for v in self._ready.values())

    def close(self) -> None:
        """Stops formatting and removes this Sandbox's spares and its lock file."""
        with self._mutex:
            self._closed = True
            spares = [p for v in self._ready.values() for p in v]
            self._ready.clear()
            thread = self._thread
        self._wake.set()
        if thread is not None:
            thread.join(30)
        for spare in spares:
            spare.close()
            spare.path.unlink(missing_ok=True)
        if self._lock_fd is not None:
            (self.images / f"{PREFIX}{self._tag}.lock").unlink(missing_ok=True)
            os.close(self._lock_fd)
            self._lock_fd = None

    # --- the formatting thread ---------------------------------------------------------------
    def owns(self, path: str) -> bool:
        """Whether `path` names one of this Sandbox's spare images (by its tag)."""
        return os.path.basename(path).startswith(f"{PREFIX}{self._tag}-")

    def _hold_tag(self) -> None:
        """Creates and locks this Sandbox's lock file, under a temporary name first: a
        reclaim never sees it unlocked."""
        if self._lock_fd is not None:
            return
        self.images.mkdir(mode=0o700, exist_ok=True)
        tmp = self.images / f".spare-new-{self._tag}"
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.rename(tmp, self.images / f"{PREFIX}{self._tag}.lock")
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        self._lock_fd = fd

    def _next(self) -> tuple[int, int] | None:
        with self._mutex:
            if self._closed:
                return None
            for disk_bytes, size in reversed(self._sizes.items()):
                if len(self._ready.get(disk_bytes, [])) < PER_SIZE:
                    return disk_bytes, size
        return None

    def _fill(self) -> None:
        # Behind the sessions' own work: formatting is never on a start's path, and on a
        # busy host it yields to the starts that need the CPU now (its mkfs inherits this).
        _start_gate.refill(self._wake, self._next, self._make_one, self._is_closed)

    def _is_closed(self) -> bool:
        with self._mutex:
            return self._closed

    def _make_one(self, job: tuple[int, int]) -> bool:
        try:
            self._make(*job)
        except Exception as e:  # no spare this time: starts format their own
            self.last_error = f"{type(e).__name__}: {e}"
            return False
        return True

    def _make(self, disk_bytes: int, size: int) -> None:
        self._hold_tag()
        self._count += 1
        base = f"{PREFIX}{self._tag}-{disk_bytes}-{self._count}"
        tmp, ready = self.images / (base + ".tmp"), self.images / (base + ".img")
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.close(fd)
        spare = Spare(ready)
        try:
            self._format(tmp, size, disk_bytes)
            os.rename(tmp, ready)
            if self._mount is not None:
                try:
                    spare.mount_fd = self._mount(ready)
                except SandboxError:
                    self._mount = None  # not on this host (no new mount API): files only
                else:
                    os.rmdir("lost+found", dir_fd=spare.mount_fd)  # the cell's directory starts empty
        except BaseException:
            spare.close()
            tmp.unlink(missing_ok=True)
            ready.unlink(missing_ok=True)
            raise
        with self._mutex:
            keep = not self._closed and self._sizes.get(disk_bytes) == size
            if keep:
                self._ready.setdefault(disk_bytes, []).append(spare)
        if not keep:
            spare.close()
            with contextlib.suppress(OSError):
                ready.unlink()
