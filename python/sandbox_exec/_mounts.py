"""Host data mounts (``Policy.mounts``): the backend's checks at every start.

The launcher binds each host directory at its path in the workdir (cpp/launcher/data_mounts.h)
and refuses, on its own, a symlink or a file on that path and a symlink in the host path.
This module decides *which* host directories may be bound and hands the launcher their real
paths, so that what it opens is what was checked here:

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
    """The launcher's (host real path, path, writable) for each mount, after every check above."""
    mounts = list(mounts)
    if not mounts:
        return []
    root = os.path.realpath(sandbox_root)
    system = [os.path.realpath(p) for p in system_paths]
    out: list[tuple[str, str, bool]] = []
    for m in mounts:
        where = f"Policy.mounts: the host directory of {m.path!r} ({m.host})"
        host = os.path.realpath(m.host)
        try:
            st = os.stat(host)
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
