"""Descriptor-relative file operations for trees a cell controls (its workdir).

A cell can leave anything in its workdir: symlinks to host files, hard links to host files
(where the filesystem allows it), FIFOs, sockets, device nodes, trees thousands of levels
deep. The backend may run as root, so every operation it makes inside such a tree must be
unable to reach outside it. Every helper here therefore:

- works relative to a directory descriptor and opens each component with O_NOFOLLOW (a
  symlink is never followed, at any level);
- looks at an entry through an O_PATH descriptor first and opens only regular files and
  directories for real (opening a FIFO would block, opening a device has side effects);
- never writes through an existing inode: a destination name is unlinked and a fresh file
  created with O_CREAT|O_EXCL|O_NOFOLLOW (an existing inode may be a hard link to a host
  file);
- gives what it creates to the owner of the directory it creates it in (a root backend
  must not leave root-owned files where the sandbox's unprivileged user lives);
- walks trees iteratively with a bounded number of open descriptors (no recursion limit,
  no descriptor exhaustion on a 2000-deep tree).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

__all__ = ["UnsafeEntry", "copy_into", "list_dir", "open_dir", "open_regular", "remove_tree", "remove_tree_at"]

_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_PATH = getattr(os, "O_PATH", 0)
#: Opening a directory of the hostile tree: never through a link, never as a terminal.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | _CLOEXEC
_CHUNK = 1 << 20


class UnsafeEntry(OSError):
    """An entry is not what the operation accepts: a symlink, FIFO, socket, device, or a
    directory where a file was expected."""


def _kind(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def open_dir(name: str | os.PathLike[str], dir_fd: int | None = None) -> int:
    """A descriptor of the directory ``name`` (relative to ``dir_fd`` when given); refuses a
    symlink as the last component (UnsafeEntry)."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise UnsafeEntry(e.errno, f"not a directory (or a symlink): {os.fspath(name)!r}") from None
        raise


def _open_path(name: str, dir_fd: int, follow: bool) -> tuple[int, os.stat_result]:
    """An O_PATH descriptor (opens nothing for real: no FIFO wait, no device side effect)."""
    flags = _O_PATH | _CLOEXEC | (0 if follow else os.O_NOFOLLOW)
    fd = os.open(name, flags, dir_fd=dir_fd)
    try:
        return fd, os.fstat(fd)
    except BaseException:
        os.close(fd)
        raise


def open_regular(name: str, dir_fd: int, *, follow: bool = False) -> tuple[int, os.stat_result]:
    """Opens the regular file ``name`` in ``dir_fd`` for reading; anything else (a symlink
    unless ``follow``, a FIFO, socket, device or directory) raises UnsafeEntry without
    being opened for real. Returns (descriptor, its stat)."""
    if not _O_PATH:  # pragma: no cover - Linux has O_PATH
        raise OSError(errno.ENOSYS, "O_PATH is needed")
    try:
        pfd, st = _open_path(name, dir_fd, follow)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise UnsafeEntry(errno.ELOOP, f"{name!r} is a symlink") from None
        raise
    try:
        if stat.S_ISLNK(st.st_mode):  # O_PATH|O_NOFOLLOW opens the link itself
            raise UnsafeEntry(errno.ELOOP, f"{name!r} is a symlink")
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeEntry(errno.EINVAL, f"{name!r} is a {_kind(st.st_mode)}, not a regular file")
        # Reopening through /proc/self/fd opens exactly the inode just checked, whatever
        # the name points to by now.
        try:
            fd = os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | _CLOEXEC)
        except FileNotFoundError:
            # No /proc: open the name again (O_NONBLOCK: a FIFO swapped in meanwhile does
            # not block) and accept it only if it is the inode just checked.
            fd = os.open(
                name,
                os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK | _CLOEXEC | (0 if follow else os.O_NOFOLLOW),
                dir_fd=dir_fd,
            )
    finally:
        os.close(pfd)
    try:
        st2 = os.fstat(fd)
        if (st2.st_dev, st2.st_ino) != (st.st_dev, st.st_ino) or not stat.S_ISREG(st2.st_mode):
            raise UnsafeEntry(errno.EINVAL, f"{name!r} changed while it was opened")
        return fd, st2
    except BaseException:
        os.close(fd)
        raise


def list_dir(dir_fd: int) -> list[tuple[str, str]]:
    """(name, kind) of each entry of ``dir_fd``, sorted by name, from lstat (nothing is
    followed or opened); kind is file, directory, symlink, FIFO, socket, device or
    special file."""
    out: list[tuple[str, str]] = []
    with os.scandir(dir_fd) as it:  # scandir duplicates the descriptor
        for entry in it:
            try:
                mode = os.stat(entry.name, dir_fd=dir_fd, follow_symlinks=False).st_mode
            except OSError:
                continue
            out.append((entry.name, _kind(mode)))
    out.sort()
    return out


def copy_into(
    src_fd: int, size: int, dir_fd: int, name: str, *, mode: int = 0o644, owner: tuple[int, int] | None = None
) -> None:
    """Writes ``size`` bytes read from ``src_fd`` to a NEW file ``name`` in ``dir_fd``.

    An existing entry of that name (a regular file, symlink, FIFO, socket, device) is
    unlinked first and never opened; a directory in the way raises UnsafeEntry. The new
    file is created with O_CREAT|O_EXCL|O_NOFOLLOW, so nothing planted between the unlink
    and the creation is written through. ``owner``: (uid, gid) to give the new file
    (default: the owner of ``dir_fd`` when this process is root)."""
    if "/" in name or name in ("", ".", ".."):
        raise UnsafeEntry(errno.EINVAL, f"not a plain file name: {name!r}")
    if owner is None and os.geteuid() == 0:
        st = os.fstat(dir_fd)
        owner = (st.st_uid, st.st_gid)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NOCTTY | os.O_NONBLOCK | _CLOEXEC
    for _ in range(5):
        try:
            old = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(old.st_mode):
                raise UnsafeEntry(errno.EISDIR, f"a directory named {name!r} is in the way")
            try:
                os.unlink(name, dir_fd=dir_fd)
            except FileNotFoundError:
                pass
        try:
            out = os.open(name, flags, mode & 0o777, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue  # something was planted again in between: unlink it again
    else:
        raise UnsafeEntry(errno.EEXIST, f"{name!r} kept reappearing while it was replaced")
    created = os.fstat(out)
    try:
        if owner is not None and (created.st_uid, created.st_gid) != owner:
            os.fchown(out, owner[0], owner[1])
        os.fchmod(out, mode & 0o777)  # the umask does not decide what the sandbox may do
        left = size
        while left > 0:
            chunk = os.read(src_fd, min(_CHUNK, left))
            if not chunk:
                break
            view = memoryview(chunk)
            while view:
                view = view[os.write(out, view) :]
            left -= len(chunk)
    except BaseException:
        os.close(out)
        _unlink_if_same(dir_fd, name, created)
        raise
    os.close(out)


def _unlink_if_same(dir_fd: int, name: str, st: os.stat_result) -> None:
    try:
        now = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


# --- removal --------------------------------------------------------------------------

#: Directories whose descriptors stay open while a tree is walked (the deepest ones); the
#: others are reached again from their parent, checked by device and inode.
_HELD = 32
#: Subdirectory names gathered per scan of a directory (memory stays bounded for huge ones).
_BATCH = 1024


@dataclass
class _Frame:
    name: str  # its name in the parent frame's directory
    dev: int
    ino: int
    fd: int | None
    pending: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # subdirectories that could not be removed
    scanned_empty: bool = False


def _unlink_entry(dir_fd: int, name: str, *, in_tree: bool = True) -> bool:
    try:
        os.unlink(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return True
    except PermissionError:
        if not in_tree:
            return False  # the tree's parent is the backend's: its mode is never touched
        # A directory the cell made read-only (an unprivileged backend owns it): make it
        # writable through the descriptor already held, then retry.
        try:
            os.fchmod(dir_fd, 0o700)
            os.unlink(name, dir_fd=dir_fd)
            return True
        except OSError:
            return False
    except OSError:
        return False


def _open_child_dir(parent_fd: int, name: str, dev: int) -> tuple[int, os.stat_result] | None:
    """A descriptor of the subdirectory ``name`` on device ``dev``; None when it is not a
    directory any more, is on another filesystem (a mount point) or cannot be opened."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except PermissionError:
        # Mode 000 set by the cell: open the entry as O_PATH (no link followed), check it
        # is a directory, and chmod the very inode through /proc/self/fd.
        try:
            pfd, st = _open_path(name, parent_fd, follow=False)
        except OSError:
            return None
        try:
            if not stat.S_ISDIR(st.st_mode) or st.st_dev != dev:
                return None
            os.chmod(f"/proc/self/fd/{pfd}", 0o700)
            fd = os.open(f"/proc/self/fd/{pfd}", _DIR_FLAGS & ~os.O_NOFOLLOW)
        except OSError:
            return None
        finally:
            os.close(pfd)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode) or st.st_dev != dev:
        os.close(fd)
        return None
    return fd, st


def _reach(stack: list[_Frame], level: int) -> int | None:
    """The descriptor of stack[level], reopened from the nearest held ancestor when it
    was closed; every step is checked against the device and inode recorded on the way
    down (a renamed or replaced directory is not entered)."""
    if stack[level].fd is not None:
        return stack[level].fd
    base = level - 1
    held = stack[base].fd
    while held is None:
        base -= 1
        held = stack[base].fd
    fd = held
    opened: list[int] = []
    try:
        for i in range(base + 1, level + 1):
            frame = stack[i]
            try:
                nfd = os.open(frame.name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                return None
            opened.append(nfd)
            st = os.fstat(nfd)
            if (st.st_dev, st.st_ino) != (frame.dev, frame.ino):
                return None
            fd = nfd
        stack[level].fd = opened.pop()
        return stack[level].fd
    finally:
        for x in opened:
            os.close(x)


def _release_old(stack: list[_Frame]) -> None:
    """Keeps at most _HELD descriptors: the top of the tree's and the deepest ones."""
    # Called after each push: only the frame that just left the window can be held past it.
    i = len(stack) - 1 - _HELD
    fd = stack[i].fd if i > 0 else None
    if fd is not None:
        os.close(fd)
        stack[i].fd = None


def _scan(frame: _Frame, fd: int) -> None:
    """Unlinks the non-directories of the frame's directory and gathers up to _BATCH of
    its subdirectories into frame.pending."""
    try:
        it = os.scandir(fd)
    except PermissionError:
        try:
            os.fchmod(fd, 0o700)
            it = os.scandir(fd)
        except OSError:
            frame.scanned_empty = True
            return
    except OSError:
        frame.scanned_empty = True
        return
    with it:
        for entry in it:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                continue
            if is_dir:
                if entry.name not in frame.failed and len(frame.pending) < _BATCH:
                    frame.pending.append(entry.name)
            else:
                _unlink_entry(fd, entry.name)
    if not frame.pending:
        frame.scanned_empty = True


def _parent_via_dotdot(parent: _Frame, child: _Frame) -> None:
    """Reopens a released parent through the child's "..": one open instead of a walk
    from the top; accepted only when it is the very directory recorded on the way down."""
    if child.fd is None:
        return
    try:
        fd = os.open("..", _DIR_FLAGS, dir_fd=child.fd)
    except OSError:
        return
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) == (parent.dev, parent.ino):
        parent.fd = fd
    else:
        os.close(fd)


def remove_tree_at(parent_fd: int, name: str) -> bool:
    """Removes ``name`` in ``parent_fd`` and, when it is a directory, everything under it:
    iteratively, never following a symlink, never leaving the directory's filesystem (a
    mount point inside is left), with at most _HELD + 1 extra descriptors open. Returns
    True when ``name`` is gone."""
    try:
        st = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return _unlink_entry(parent_fd, name, in_tree=False)
    opened = _open_child_dir(parent_fd, name, st.st_dev)
    if opened is None:
        return False
    fd, st = opened
    stack = [_Frame(name, st.st_dev, st.st_ino, fd)]
    try:
        while stack:
            if not _walk_step(stack, st.st_dev, parent_fd):
                return False
        try:
            os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
            return False
        except FileNotFoundError:
            return True
        except OSError:
            return False
    finally:
        for f in stack:
            if f.fd is not None:
                os.close(f.fd)


def _walk_step(stack: list[_Frame], dev: int, parent_fd: int) -> bool:
    """One step of remove_tree_at's walk: into the next subdirectory of the directory on
    top of ``stack``, or, once that one is empty, out of it and rmdir. False when the
    tree's top itself cannot be removed."""
    level = len(stack) - 1
    frame = stack[level]
    fd_now = _reach(stack, level)
    if fd_now is None:
        # The directory changed under the walk (only a process still running in it
        # could do that): give up on it.
        stack.pop()
        if stack:
            stack[-1].failed.add(frame.name)
            stack[-1].pending = [n for n in stack[-1].pending if n != frame.name]
        return True
    if not frame.pending and not frame.scanned_empty:
        _scan(frame, fd_now)
    if frame.pending:
        child = frame.pending.pop()
        opened = _open_child_dir(fd_now, child, dev)
        if opened is None:
            # Not a directory any more (unlink it), or one that cannot be entered.
            if not _unlink_entry(fd_now, child):
                frame.failed.add(child)
            return True
        cfd, cst = opened
        stack.append(_Frame(child, cst.st_dev, cst.st_ino, cfd))
        _release_old(stack)
        return True
    return _leave_dir(stack, frame, parent_fd)


def _leave_dir(stack: list[_Frame], frame: _Frame, parent_fd: int) -> bool:
    """Done with the directory on top (``frame``): back to its parent, then rmdir it there.
    False when it is the tree's top and cannot be removed."""
    stack.pop()
    if stack and stack[-1].fd is None:
        _parent_via_dotdot(stack[-1], frame)
    if frame.fd is not None:
        os.close(frame.fd)
        frame.fd = None
    parent_fd_now = _reach(stack, len(stack) - 1) if stack else parent_fd
    if parent_fd_now is None:
        return True
    try:
        os.rmdir(frame.name, dir_fd=parent_fd_now)
    except FileNotFoundError:
        pass
    except OSError as e:
        if stack and e.errno in (errno.EACCES, errno.EPERM):
            # (never for the tree's own parent, which is the backend's)
            try:
                os.fchmod(parent_fd_now, 0o700)
                os.rmdir(frame.name, dir_fd=parent_fd_now)
                return True
            except OSError:
                pass
        if stack:
            stack[-1].failed.add(frame.name)
        else:
            return False
    return True


def remove_tree(path: str | os.PathLike[str]) -> bool:
    """remove_tree_at for a path: its parent directories are trusted (they are the
    backend's), the last component and everything below it are not."""
    path = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(path)
    if not name:
        raise ValueError(f"refusing to remove {path!r}")
    try:
        pfd = os.open(parent or "/", os.O_RDONLY | os.O_DIRECTORY | _CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        return remove_tree_at(pfd, name)
    finally:
        os.close(pfd)
