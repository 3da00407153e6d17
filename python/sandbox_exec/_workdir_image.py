"""A session's workdir as a size-capped filesystem: Policy.disk_bytes enforced by the kernel.

Where the backend is root, each session's workdir is an ext4 filesystem in a sparse image
file, ``<sandbox root>/.images/<workdir name>.img``, formatted once with mkfs.ext4 (run
with a clean environment), attached to a loop device and mounted (nosuid, nodev) at the
workdir's host path while the Session lives (restarts keep it; close unmounts it lazily; a
new Sandbox on the same root mounts the same image again: the workdir persists). Its usable
space is about ``disk_bytes`` (the image is sized for the filesystem's own overhead and
checked after mounting), so every write past the cap fails with ENOSPC inside the cell,
however fast, and whatever holds the blocks: fallocate, files unlinked but held open,
descriptors in flight in a UNIX socket, processes left running. The ioctls and mounts are
C++ (cpp/supervisor/workdir_image.cc); this module sizes, formats and decides.

A new workdir's image may come ready-made: a Sandbox keeps spares formatted (and mounted
detached) ahead for the disk_bytes it has used (_spare_images), so a new image is then a
rename and a move_mount; it gets the same checks and owner as one formatted on the spot.

Where this cannot be done (not root, no /dev/loop-control, no mkfs.ext4, or a workdir that
already holds files outside an image), ``WorkdirImage.mount`` raises
:class:`ImageUnavailable` with the reason and the session falls back to the supervisor's
disk watchdog (Session.enforcement says which).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from . import _core
from ._host_space import check_room
from ._spare_images import Spare, SpareImages
from .errors import SandboxError

#: Where the e2fsprogs programs are looked for (never the backend's PATH).
_SBIN = "/usr/sbin:/sbin:/usr/bin:/bin"
_CLEAN_ENV = {"PATH": _SBIN, "LC_ALL": "C"}
MiB = 1 << 20


#: The reaper: a small process that outlives a backend killed outright (SIGKILL, a crash:
#: no close, no atexit) and lazily unmounts the workdirs it had mounted, so that neither
#: the mounts nor their loop devices stay behind. It reads "+<hex path>" / "-<hex path>"
#: lines from a pipe only the backend holds; end of file means the backend is gone.
_REAPER = r"""
import ctypes, fcntl, os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
libc = ctypes.CDLL(None, use_errno=True)
held = set()
for line in sys.stdin.buffer:
    path = bytes.fromhex(line[1:].strip().decode())
    if line[:1] == b"+":
        held.add(path)
    else:
        held.discard(path)
for path in held:
    # Only a workdir no live session holds: once the backend died, its workdir locks went
    # with it, and a new session may have taken the workdir (and this mount) over already.
    parent, name = os.path.split(path)
    try:
        fd = os.open(os.path.join(parent, b".locks", name + b".lock"), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        fd = None
    except OSError:
        continue
    # The dead backend's own lock goes a moment after its pipe closes (the kernel closes a
    # dying process's descriptors one by one): wait for it a little; a live session keeps it.
    locked = fd is None
    for _ in range(100):
        try:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = True
            break
        except OSError:
            time.sleep(0.02)
    if not locked:
        os.close(fd)
        continue  # a live session has it: not ours to unmount
    libc.umount2(path, 2 | 8)  # MNT_DETACH | UMOUNT_NOFOLLOW
    if fd is not None:
        os.close(fd)
"""
_reaper: subprocess.Popen[bytes] | None = None
_reaper_lock = threading.Lock()
#: The paths the reaper holds now (what it would unmount if the backend died this moment).
_reaper_held: set[Path] = set()


def _reaper_says(op: str, path: Path) -> None:
    global _reaper
    with _reaper_lock:
        if op == "+":
            _reaper_held.add(path)
        else:
            _reaper_held.discard(path)
        if _reaper is None or _reaper.poll() is not None:
            if op == "-":
                return
            _reaper = subprocess.Popen(
                [sys.executable, "-I", "-c", _REAPER],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=_CLEAN_ENV,
                start_new_session=True,
                close_fds=True,
            )
        try:
            assert _reaper.stdin is not None
            _reaper.stdin.write((op + os.fsencode(str(path)).hex() + "\n").encode())
            _reaper.stdin.flush()
        except OSError:
            pass


def retire_reaper_if_idle() -> None:
    """Ends the reaper when no workdir of this process is mounted (a closed Sandbox leaves
    no process or descriptor behind); the next mount starts a new one."""
    global _reaper
    with _reaper_lock:
        if _reaper is None or _reaper_held:
            return
        reaper, _reaper = _reaper, None
    _reaper_exit(reaper, wait=True)


def release_reaper_at_exit() -> None:
    """The backend exits (after its Sandboxes were closed): the reaper is told so. It holds
    nothing in the usual case and ends at once; a workdir still mounted (a close that
    failed) is unmounted by it once this process, which holds the workdir's lock, is gone,
    so it is not waited for."""
    global _reaper
    with _reaper_lock:
        reaper, _reaper = _reaper, None
        idle = not _reaper_held
    if reaper is not None:
        _reaper_exit(reaper, wait=idle)


def _reaper_exit(reaper: subprocess.Popen[bytes], *, wait: bool) -> None:
    try:
        if reaper.stdin is not None:
            reaper.stdin.close()
        if wait:
            reaper.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass


def _loop_backing_files() -> list[tuple[str, str]]:
    """(loop device, its backing file) of every attached loop device; a deleted backing
    file is named as it was (without the kernel's " (deleted)")."""
    import glob

    found = []
    for f in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            with open(f) as fh:
                found.append((f.split("/")[3], fh.read().strip().removesuffix(" (deleted)")))
        except OSError:
            pass  # detached while listing
    return found


def reclaim_left_mounts(root: Path) -> list[str]:
    """Unmounts the workdir images a dead backend left mounted under `root`, when its
    reaper died with it (a Ray worker's children are killed with the worker; the OOM killer
    or a cgroup kill takes both): each mount at ``<root>/<name>`` of
    ``<root>/.images/<name>.img`` whose workdir lock no live process holds (the lock is
    taken here for the moment of the unmount, so no session can bind the workdir meanwhile;
    one of this process's own sessions holds its lock too, and is left alone). A Sandbox
    does this when it starts and when it closes. Returns the workdirs unmounted."""
    import fcntl
    import re

    if os.geteuid() != 0:
        return []
    prefix = os.path.realpath(root)
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    unmounted = []
    for line in lines:
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        parent, name = os.path.split(point)
        if parent != prefix or name.startswith("."):
            continue
        there = _core.workdir_image.mounted_image(point)
        image = os.path.join(prefix, ".images", name + ".img")
        if not there or os.path.realpath(there.removesuffix(" (deleted)")) != image:
            continue
        try:
            fd = os.open(os.path.join(prefix, ".locks", name + ".lock"), os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue  # no lock file: not a session's workdir as this package makes them
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # a live session has it
            if _core.workdir_image.unmount(point):
                unmounted.append(point)
        finally:
            os.close(fd)
    return unmounted


def wait_detached(mine: Callable[[str], bool], timeout: float = 10.0) -> list[str]:
    """Waits until no loop device serves an image ``mine`` says is this Sandbox's (by its
    backing file's path); returns those that still do at the deadline. A workdir's unmount is
    lazy (MNT_DETACH): its filesystem, and the loop device under it, live on until their last
    reference goes, which the kernel drops asynchronously after the sandbox's processes and
    mount namespace are gone (on a loaded host, after Sandbox.close() had returned: the soak
    of issue 11 found 100 left attached). Sandbox.close() waits here, so a closed Sandbox
    leaves no loop device behind. Only its own: another Sandbox on the same root (another
    backend process, another Ray node's host) keeps its images attached, and waiting for
    those would hold this close() for the whole timeout."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        busy = sorted(name for name, backing in _loop_backing_files() if mine(backing))
        if not busy or time.monotonic() >= deadline:
            return busy
        time.sleep(0.02)


class ImageUnavailable(Exception):
    """The workdir cannot be a size-capped image here; the message says why."""


def _tool(name: str) -> str | None:
    return shutil.which(name, path=_SBIN)


@functools.cache
def support() -> tuple[bool, str]:
    """Whether this process can give workdirs a size-capped image: (possible, why not or how)."""
    if os.geteuid() != 0:
        return False, "the backend is not root (mounting a loop device needs CAP_SYS_ADMIN)"
    if not os.path.exists("/dev/loop-control"):
        return False, "no /dev/loop-control (the loop driver is not available)"
    if _tool("mkfs.ext4") is None:
        return False, "no mkfs.ext4 (install e2fsprogs)"
    return True, "size-capped ext4 image on a loop device"


def tolerance(disk_bytes: int) -> int:
    """How much more than disk_bytes the filesystem may give (block-group granularity)."""
    return max(256 << 10, disk_bytes // 256)


def full_threshold(disk_bytes: int) -> int:
    """Free space under which the workdir counts as full (a write has met the cap). ext4
    refuses a large write while some free space is left (space it keeps for the metadata
    of delayed allocations): measured, an 8 MiB write failed with 200 KiB still free."""
    return max(256 << 10, min(4 * MiB, disk_bytes // 32))


def usage(workdir: Path) -> tuple[int, int]:
    """(bytes used, bytes still available to the sandbox's user) of the workdir's filesystem."""
    v = os.statvfs(workdir)
    return (v.f_blocks - v.f_bfree) * v.f_frsize, v.f_bavail * v.f_frsize


def _run(argv: list[str], what: str) -> None:
    proc = subprocess.run(
        argv,
        env=_CLEAN_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
        timeout=300,
    )
    # e2fsck: 1 means "errors corrected", which is fine before a resize.
    if proc.returncode != 0 and not (argv[0].endswith("e2fsck") and proc.returncode == 1):
        raise SandboxError(f"workdir: {what} failed (exit {proc.returncode}): {proc.stdout.strip()[-500:]}")


# disk_bytes -> the image size whose filesystem held exactly that (this process, this host).
_FITTED_SIZES: dict[int, int] = {}


def _inodes(disk_bytes: int) -> int:
    # One per 4 KiB of cap (a cap full of small files), at least 1024, at most 4 Mi;
    # the inode tables of a sparse image cost the host nothing until used.
    return min(1 << 22, max(1024, disk_bytes // 4096))


def format_image(path: Path, size: int, disk_bytes: int, uid: int = 0, gid: int = 0) -> None:
    """Makes the existing file `path` a new, empty ext4 of `size` bytes for a workdir of
    `disk_bytes`, its root directory owned by uid:gid."""
    with open(path, "r+b") as f:
        f.truncate(size)
    _run(
        [
            _tool("mkfs.ext4") or "mkfs.ext4",
            "-q",
            "-F",
            "-m",
            "0",
            "-b",
            "4096",
            "-O",
            "^has_journal",
            "-N",
            str(_inodes(disk_bytes)),
            "-E",
            f"root_owner={uid}:{gid},lazy_itable_init=1,nodiscard",
            str(path),
        ],
        "mkfs.ext4",
    )


class WorkdirImage:
    """The image behind one session's workdir (see the module's docstring)."""

    def __init__(
        self, root: Path, workdir: Path, disk_bytes: int, uid: int, gid: int, spares: SpareImages | None = None
    ) -> None:
        self.path = root / ".images" / (workdir.name + ".img")
        self.workdir = workdir
        self.disk_bytes = disk_bytes
        self.uid, self.gid = uid, gid
        self.mounted = False
        self.spares = spares  # the Sandbox's images formatted ahead (_spare_images)
        self.from_spare = False  # whether _create took a spare

    # --- mounting -------------------------------------------------------------------------
    def mount(self) -> None:
        """Mounts the image at the workdir, making (or resizing) it first when needed."""
        possible, why = support()
        if not possible:
            raise ImageUnavailable(why)
        # The image is sparse: a host filesystem that is (nearly) full would drop its writes.
        check_room(self.path.parent, self.disk_bytes, f"mounting the workdir image of {self.workdir}")
        there = _core.workdir_image.mounted_image(str(self.workdir))
        if there:
            if os.path.realpath(there.removesuffix(" (deleted)")) != os.path.realpath(self.path):
                raise ImageUnavailable(f"another filesystem ({there}) is mounted at the workdir")
            # Left mounted by a backend that ended without closing its sessions: adopt it.
            _reaper_says("+", self.workdir)
            self.mounted = True
        else:
            if not self.path.exists():
                with os.scandir(self.workdir) as entries:
                    occupied = any(entries)
                if occupied:
                    raise ImageUnavailable(
                        "the workdir already holds files outside an image (made before workdir images, or by hand)"
                    )
                # A new image: no loop device can serve it yet (one left serving an earlier
                # image of this name serves a deleted file), so there is nothing to wait for
                # (the wait reads every loop device's backing file: ~10 ms with hundreds).
                self._create()
                return
            self._wait_released()
            self._attach()
        try:
            self._fit()
        except BaseException:
            self.unmount()
            raise

    def _wait_released(self, timeout: float = 10.0) -> None:
        """Waits until no loop device still serves this image: a filesystem unmounted
        lazily lives on while something holds it, and a second mount of the same image
        beside it would corrupt it."""
        import time

        mine = os.path.realpath(self.path)
        deadline = time.monotonic() + timeout
        while True:
            busy = [name for name, backing in _loop_backing_files() if os.path.realpath(backing) == mine]
            if not busy:
                return
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"workdir: the image {self.path} is still attached to {', '.join(busy)} "
                    "(an earlier mount of it is still in use); hint: end the processes that "
                    "use the old workdir"
                )
            time.sleep(0.05)

    def still_mounted(self) -> bool:
        """Whether this image is what is mounted at the workdir now."""
        there = _core.workdir_image.mounted_image(str(self.workdir))
        return bool(there) and os.path.realpath(there.removesuffix(" (deleted)")) == os.path.realpath(self.path)

    def unmount(self) -> None:
        if self.mounted:
            _core.workdir_image.unmount(str(self.workdir))
            self.mounted = False
            _reaper_says("-", self.workdir)

    def discard(self) -> None:
        """Unmounts and deletes the image (run_once: nothing of the session survives it)."""
        self.unmount()
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    # --- internals ------------------------------------------------------------------------
    def _attach_spare(self, spare: Spare) -> None:
        """Puts a spare's detached mount at the workdir (see _spare_images)."""
        assert spare.mount_fd is not None
        _reaper_says("+", self.workdir)  # first: a backend killed right after is covered
        try:
            _core.workdir_image.attach_detached(spare.mount_fd, str(self.workdir))
        except BaseException:
            _reaper_says("-", self.workdir)
            raise
        self.mounted = True

    def _attach(self) -> None:
        _reaper_says("+", self.workdir)  # first: a backend killed right after the mount is covered
        try:
            _core.workdir_image.mount(str(self.path), str(self.workdir))
        except BaseException:
            _reaper_says("-", self.workdir)
            raise
        self.mounted = True

    def _format(self, size: int) -> None:
        format_image(self.path, size, self.disk_bytes, self.uid, self.gid)

    def _create(self) -> None:
        self.path.parent.mkdir(mode=0o700, exist_ok=True)
        fitted = _FITTED_SIZES.get(self.disk_bytes)
        # A spare formatted ahead at the size that fitted (root owned by 0:0; given to the
        # session's id below, as a new one is), mounted ahead where it could be: a rename and
        # a move_mount instead of a mkfs and a mount.
        spare = self.spares.take(self.disk_bytes, fitted, self.path) if fitted and self.spares else None
        self.from_spare = spare is not None
        if spare is None:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.close(fd)
        try:
            if spare is None:
                # First guess: ext4's overhead (reserved clusters, bitmaps, inode tables) is a
                # few percent; _fit corrects it from what the mounted filesystem reports. The
                # size that fitted last time for this disk_bytes is remembered: later sessions
                # format once (each further pass is a mkfs, a mount and an unmount: ~10 ms).
                size = fitted or (self.disk_bytes + self.disk_bytes // 16 + _inodes(self.disk_bytes) * 256 + 4 * MiB)
                self._format(-(-size // 4096) * 4096)
                self._attach()
            elif spare.mount_fd is not None:
                self._attach_spare(spare)
            else:
                self._attach()
            self._fit(reformat=True)
            _FITTED_SIZES[self.disk_bytes] = self.path.stat().st_size
            try:
                (self.workdir / "lost+found").rmdir()  # the cell's directory starts empty
            except OSError:
                pass
            os.chown(self.workdir, self.uid, self.gid)
        except BaseException:
            self.unmount()
            self.path.unlink(missing_ok=True)
            raise
        finally:
            if spare is not None:
                spare.close()  # attached (the mount lives on at the workdir) or given up
        if self.spares is not None:  # the next new workdir of this size takes one
            self.spares.want(self.disk_bytes, _FITTED_SIZES[self.disk_bytes])

    def _capacity(self) -> int:
        """What the mounted filesystem can hold for the sandbox's user, empty: its data
        blocks less the clusters ext4 keeps back (min(2 %, 4096) of all its blocks)."""
        v = os.statvfs(self.workdir)
        total_blocks = self.path.stat().st_size // v.f_frsize
        return (v.f_blocks - min(total_blocks // 50, 4096)) * v.f_frsize

    def _fit(self, reformat: bool = False) -> None:
        """Makes the mounted filesystem's capacity disk_bytes (within tolerance()): a new
        image is formatted again at a corrected size; an existing one (made for another
        disk_bytes) is resized offline (e2fsck, resize2fs), which fails when its files do
        not fit the smaller size."""
        for _ in range(5):
            capacity = self._capacity()
            if self.disk_bytes <= capacity <= self.disk_bytes + tolerance(self.disk_bytes):
                return
            size = self.path.stat().st_size
            # The overhead grows with the size: scale the correction by size/capacity.
            new_size = size + (self.disk_bytes - capacity) * size // max(capacity, 1)
            new_size = -(-(new_size + 4096) // 4096) * 4096
            self.unmount()
            if reformat:
                self._format(new_size)
            else:
                self._resize(new_size)
            self._attach()
        raise SandboxError(
            f"workdir: the image {self.path} could not be sized to {self.disk_bytes} usable bytes "
            f"(it holds {self._capacity()})"
        )

    def _resize(self, size: int) -> None:
        _run([_tool("e2fsck") or "e2fsck", "-f", "-p", str(self.path)], "e2fsck")
        if size > self.path.stat().st_size:
            with open(self.path, "r+b") as f:
                f.truncate(size)
            _run([_tool("resize2fs") or "resize2fs", str(self.path)], "resize2fs")
        else:
            _run(
                [_tool("resize2fs") or "resize2fs", str(self.path), f"{size // 1024}K"],
                f"resize2fs to {size} bytes (do the workdir's files fit the new disk_bytes?)",
            )
            with open(self.path, "r+b") as f:
                f.truncate(size)
