"""Host data mounts (``Policy.mounts``): the backend's checks at every start.

The launcher binds each host directory at its path in the workdir (cpp/launcher/data_mounts.h)
and refuses, on its own, a symlink or a file on that path and a symlink in the host path.
This module decides *which* host directories may be bound and hands the launcher their paths
as given (normalized, never resolved), so that what it opens is what was checked here:

* no part of the host path is a symlink (PolicyError naming it): the path is never resolved
  through a link, and the launcher opens it with ``RESOLVE_NO_SYMLINKS``, so a link put in
  after this check is refused there too;
* every directory above the host directory, / down to its parent, is owned by root or the
  backend's euid and is not group- or world-writable unless sticky (sshd's StrictModes):
  nobody else may rename or replace a part of the path between sessions' starts, e.g. a
  cell through a writable mount, which a root backend's sessions need world-writable, so a
  directory in a writable mount cannot be another mount's host directory;
* the host directory exists and is a directory (PolicyError otherwise);
* it is not under /proc, /sys or /dev (the host's kernel interfaces, not data);
* it neither is, nor contains, nor lies in the Sandbox root: the root holds every session's
  workdir, images and locks, which a cell may not reach through a mount (and a host path in
  a workdir is a path a cell can change);
* a writable one neither contains nor lies in the sandbox's read-only system paths (the
  interpreter, site-packages, this package, ``readonly_paths``: a cell could rewrite code the
  backend runs) or another mount's host directory (a cell could plant a symlink in place of
  the other mount's host path);
* the sandbox's user, by its host uid and gid (a root backend's per-session id; an
  unprivileged backend's own uid), may search and read it, and write it when writable, by
  the directory's mode bits (no supplementary groups reach the sandbox; ACLs are not read).

It also looks at the mount's path in the workdir first (lstat, no link followed), so that a
symlink or a file a cell left there gives a message naming it; the launcher's own refusal is
what holds (tests_py/test_mounts.py checks it with this look switched off).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

from .errors import PolicyError, SandboxError
from .policy import Mount

KERNEL_TREES = ("/proc", "/sys", "/dev")


def _overlap(a: str, b: str) -> bool:
    """Whether one of two real paths is, or lies in, the other."""
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def _allows(st: os.stat_result, uid: int, gid: int, need: int) -> bool:
    """Whether mode bits give (uid, gid), with no supplementary group, the `need` bits (rwx = 4 2 1)."""
    if st.st_uid == uid:
        bits = st.st_mode >> 6
    elif st.st_gid == gid:
        bits = st.st_mode >> 3
    else:
        bits = st.st_mode
    return bits & need == need


def _checked_host_path(where: str, host: str) -> str:
    """The host path, normalized (no link followed), after the symlink and ancestor checks above."""
    path = os.path.normpath(host)
    euid = os.geteuid()
    parts = [p for p in path.split("/") if p]
    current = "/"
    for i in range(len(parts) + 1):
        if i:
            current = os.path.join(current, parts[i - 1])
        try:
            st = os.lstat(current)
        except OSError as e:
            at = "" if current == path else f"{current}: "
            raise PolicyError(f"{where} cannot be used: {at}{e.strerror}") from None
        if stat.S_ISLNK(st.st_mode):
            raise PolicyError(
                f"{where} has a symlink in its path, {current}: give the path with no symlink in it "
                "(a link is never followed, so that nobody can point a mount elsewhere by changing it)"
            )
        if i == len(parts):
            break  # the host directory itself: its own checks follow in resolve()
        if not stat.S_ISDIR(st.st_mode):
            raise PolicyError(f"{where} cannot be used: {current} is not a directory")
        shared = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
        if st.st_uid not in (0, euid) or shared:
            raise PolicyError(
                f"{where} lies in {current} (mode {stat.filemode(st.st_mode)}, owner {st.st_uid}), which "
                f"{'is group- or world-writable' if shared else 'is owned by neither root nor the backend'}: "
                "someone else (e.g. a session through a writable mount) could rename or replace a part of the "
                f"path; every directory above a host directory must be owned by root or uid {euid} and "
                "writable by its owner only (or sticky)"
            )
    return path


def check_workdir_path(workdir: Path, mount: Mount) -> None:
    """A clear SandboxError when a part of the mount's path in the workdir is a symlink or not
    a directory (a cell left it there). A missing part is fine: the launcher makes it."""
    current = workdir
    for part in mount.path.split("/"):
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return
        if not stat.S_ISDIR(st.st_mode):
            what = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a directory"
            raise SandboxError(
                f"Policy.mounts: {str(current.relative_to(workdir))!r} in the workdir {str(workdir)!r} is {what}, "
                f"where the mount {mount.path!r} goes (left by a cell?); it is never followed: remove it from the "
                "workdir to start the session"
            )


def resolve(
    mounts: Iterable[Mount],
    *,
    workdir: Path,
    sandbox_root: Path,
    system_paths: Iterable[str],
    uid: int,
    gid: int,
) -> list[tuple[str, str, bool]]:
    """The launcher's (host path, path, writable) for each mount, after every check above."""
    mounts = list(mounts)
    if not mounts:
        return []
    root = os.path.realpath(sandbox_root)
    system = [os.path.realpath(p) for p in system_paths]
    out: list[tuple[str, str, bool]] = []
    for m in mounts:
        where = f"Policy.mounts: the host directory of {m.path!r} ({m.host})"
        host = _checked_host_path(where, m.host)  # no symlink in it: as given is as resolved
        try:
            st = os.lstat(host)
        except OSError as e:
            raise PolicyError(f"{where} cannot be used: {e.strerror}") from None
        if not stat.S_ISDIR(st.st_mode):
            raise PolicyError(f"{where} is not a directory")
        if any(host == tree or host.startswith(tree + "/") for tree in KERNEL_TREES):
            raise PolicyError(f"{where} is in the host's kernel interfaces (/proc, /sys, /dev), not data")
        if _overlap(host, root):
            raise PolicyError(
                f"{where} is, contains or lies in the Sandbox root {root}: sessions' workdirs and state are not data"
            )
        if m.writable:
            for path in system:
                if _overlap(host, path):
                    raise PolicyError(
                        f"{where} is writable and overlaps the sandbox's read-only path {path}: a cell could "
                        "change what is read-only to every session"
                    )
        need = 7 if m.writable else 5
        if not _allows(st, uid, gid, need):
            raise PolicyError(
                f"{where} does not let the sandbox's user (host uid {uid}, gid {gid}) "
                f"{'read, search and write' if m.writable else 'read and search'} it (mode {stat.filemode(st.st_mode)}, "
                f"owner {st.st_uid}:{st.st_gid}): make it (and its files) "
                f"{'writable' if m.writable else 'readable'} by others, or give the sessions a fixed "
                "Policy.host_uid that owns it"
            )
        out.append((host, m.path, m.writable))
    for i, (a, pa, wa) in enumerate(out):
        for j, (b, pb, wb) in enumerate(out):
            if i < j and (wa or wb) and _overlap(a, b):
                raise PolicyError(
                    f"Policy.mounts: the host directories of {pa!r} and {pb!r} overlap ({a}, {b}) and one is "
                    "writable: a cell could replace the other's host path"
                )
    for m in mounts:
        check_workdir_path(workdir, m)
    return out
