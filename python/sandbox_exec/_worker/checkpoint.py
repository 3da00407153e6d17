"""Checkpoint and restore of the session's namespace, inside the sandbox (issue 10, item 1).

The backend never unpickles anything: these ops pickle and unpickle here, in the user's own
sandbox, and answer with a JSON report (sandbox_exec/_checkpoint.py checks its shape).

Where: ``<workdir>/.sandbox_exec/state/checkpoint`` (``STATE_DIR``, ``CHECKPOINT``), inside
the workdir, so it counts against ``disk_bytes``, lives on the workdir's image, and moves
with a pooled session's files. Written as ``checkpoint.tmp-<pid>-<random>`` in the same
directory, fsync'd, renamed over ``checkpoint``, then the directory fsync'd: a reader sees
the previous checkpoint or the new one, never a mix; a failed or interrupted write leaves
the previous one as it was (its temporary file is removed, or by the next checkpoint when
the interpreter died). A checkpoint an automatic restore refused is renamed
``checkpoint.rejected`` (so the next automatic checkpoint does not overwrite it).

The file (format 1), one file so that one rename publishes it whole:

    HEAD       b"sandbox_exec checkpoint\\n"                 (24 bytes)
    payload    one pickle, protocol 5, of {name: value}      (payload_bytes)
    manifest   JSON, ASCII: format, python, implementation, pickle_protocol,
               payload_bytes, sha256 (of the payload), count, created, sandbox_exec
    length     the manifest's length, 4 bytes big-endian
    TAIL       b"\\nend of sandbox_exec checkpoint\\n"

A restore reads the manifest from the end, checks magic, sizes, format and Python version,
hashes the payload, and only then unpickles it, whole, into a new dict; the namespace is
updated from that dict only when everything loaded. One pickle of one dict keeps shared
references shared (``b = a`` is one object again after a restore).

What is saved: every name of the namespace except dunder names, the IPython history names
the worker keeps (``In``, ``Out``, ``_``, ``__``, ``___``, ``_i``, ``_ii``, ``_iii``,
``_i<N>``, ``_<N>``: never saved, not reported), and, reported as skipped with a reason:
names still bound to what the prelude bound them to (``prelude``: the prelude makes them
again at the next start; an object the prelude made and a cell changed in place is not
saved), modules (``module``), functions and classes defined in a cell, and values that
contain one (``cell_defined``: pickle saves functions and classes by their module and name,
and a new interpreter has no cell-defined ones), and values pickle refuses
(``unpicklable``: the exception's type and message).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import re
import secrets
import stat
import sys
import time
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .main import Worker

FORMAT = 1
PICKLE_PROTOCOL = 5
STATE_DIR = (".sandbox_exec", "state")
CHECKPOINT = "checkpoint"
REJECTED = "checkpoint.rejected"
TEMP_PREFIX = "checkpoint.tmp-"
HEAD = b"sandbox_exec checkpoint\n"
TAIL = b"\nend of sandbox_exec checkpoint\n"
MAX_MANIFEST_BYTES = 1 << 20
_LENGTH_BYTES = 4
_CHUNK = 4 << 20  # the checksum pass reads this much at a time
_MAX_REASON = 500  # characters of a skipped value's reason (an exception message can be huge)
_HISTORY = re.compile(r"In|Out|_{1,3}|_i{1,3}|_i?\d+")


# The ops' errors: their class names are the ename the backend maps to CheckpointError.kind.
class CheckpointMissing(Exception):
    """No checkpoint in the state directory."""


class CheckpointCorrupt(Exception):
    """Not a checkpoint, truncated, or its payload does not match its checksum."""


class CheckpointForeign(Exception):
    """Another format version, or another Python version's pickle."""


class CheckpointUnsafe(Exception):
    """A path of the state directory is not what a checkpoint leaves there (a link, a FIFO,
    a file where a directory should be): something a cell put there."""


class CheckpointNoSpace(Exception):
    """The checkpoint does not fit: the workdir's disk_bytes (ENOSPC) or max_file_bytes (EFBIG)."""


class CheckpointLoadFailed(Exception):
    """The payload is intact but unpickling it raised (a class or module no longer there)."""


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def _python() -> str:
    return f"{sys.version_info[0]}.{sys.version_info[1]}"


def _clip(text: str, limit: int = _MAX_REASON) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _describe(exc: BaseException) -> str:
    try:
        message = str(exc)
    except Exception:  # a user exception whose __str__ raises
        message = "<str() failed>"
    return _clip(f"{type(exc).__name__}: {message}" if message else type(exc).__name__)


def _type_name(value: Any) -> str:
    cls = type(value)
    module = getattr(cls, "__module__", "") or ""
    name = getattr(cls, "__qualname__", "") or cls.__name__
    return _clip(name if module == "builtins" else f"{module}.{name}", 200)


# --- the state directory, opened without following links --------------------------------------
def _open_state_dir(workdir: str, *, create: bool) -> int:
    """A descriptor of <workdir>/.sandbox_exec/state. Each component is opened relative to the
    last, as a directory, without following a link: a cell may have put anything there."""
    fd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    path = ""
    try:
        for part in STATE_DIR:
            path = f"{path}/{part}" if path else part
            if create:
                try:
                    os.mkdir(part, 0o700, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(
                    part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd
                )
            except FileNotFoundError:
                raise CheckpointMissing(f"no checkpoint: {path} does not exist") from None
            except OSError as e:
                if e.errno in (errno.ENOTDIR, errno.ELOOP):
                    raise CheckpointUnsafe(f"{path} is not a directory (a link or a file was put there)") from None
                raise
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _remove_stale_temps(dir_fd: int) -> None:
    """Temporary files of checkpoints whose interpreter died while writing them."""
    for name in os.listdir(dir_fd):
        if name.startswith(TEMP_PREFIX):
            try:
                os.unlink(name, dir_fd=dir_fd)  # never follows a link; a directory stays
            except OSError:
                pass


# --- writing -----------------------------------------------------------------------------------
class _Writer:
    """The temporary file: counts and hashes what the pickler writes; remembers a write that
    failed, so a full disk ends the checkpoint instead of being taken for an unpicklable value."""

    def __init__(self, fd: int, max_bytes: int | None) -> None:
        self.fd = fd
        self.max_bytes = max_bytes  # the room the backend measured (disk_bytes by its watchdog)
        self.pos = 0
        self.sha = hashlib.sha256()
        self.error: OSError | None = None

    def raw(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if self.max_bytes is not None and self.pos + len(view) > self.max_bytes:
            self.error = OSError(errno.ENOSPC, f"past the {self.max_bytes} bytes left under the workdir's disk_bytes")
            raise self.error
        while view:
            try:
                n = os.write(self.fd, view)
            except OSError as e:
                self.error = e
                raise
            view = view[n:]
            self.pos += n

    def write(self, data: Any) -> int:
        # The pickler's frames (about 64 KiB) and large buffers (an array's data) as they are.
        view = memoryview(data).cast("B")
        self.sha.update(view)
        self.raw(view)
        return len(view)

    def rewind(self, pos: int) -> None:
        os.ftruncate(self.fd, pos)
        os.lseek(self.fd, pos, os.SEEK_SET)
        self.pos = pos
        self.sha = hashlib.sha256()


class _NullSink:
    """Where a value is pickled only to learn whether it can be."""

    def write(self, data: Any) -> int:
        return len(memoryview(data))


class _CellDefined(pickle.PicklingError):
    pass


def _prelude_object(qualname: str, prelude: dict[str, Any]) -> Any:
    obj: Any = prelude
    for i, part in enumerate(qualname.split(".")):
        obj = obj.get(part) if i == 0 else getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _defined_in_a_cell(obj: Any, prelude: dict[str, Any]) -> bool:
    """A function or class of __main__ that the prelude did not define: pickle would save it
    by name, and a new interpreter (whose __main__ the prelude makes) would not find it."""
    if not isinstance(obj, (types.FunctionType, type)) or getattr(obj, "__module__", None) != "__main__":
        return False
    qualname = getattr(obj, "__qualname__", "")
    return not isinstance(qualname, str) or _prelude_object(qualname, prelude) is not obj


class _Pickler(pickle.Pickler):
    """Protocol 5; refuses functions and classes defined in a cell, wherever they appear."""

    def __init__(self, file: Any, prelude: dict[str, Any]) -> None:
        super().__init__(file, protocol=PICKLE_PROTOCOL)
        self._prelude = prelude

    def reducer_override(self, obj: Any) -> Any:
        # Called for objects that are not of a builtin container or atomic type only.
        if _defined_in_a_cell(obj, self._prelude):
            kind = "class" if isinstance(obj, type) else "function"
            raise _CellDefined(
                f"{kind} {obj.__qualname__!r} is defined in a cell: pickle saves it by name, and a new "
                "interpreter does not have it (run the cell that defines it again)"
            )
        return NotImplemented


def _skip(name: str, value: Any, kind: str, reason: str) -> dict[str, str]:
    return {"name": name, "type": _type_name(value), "kind": kind, "reason": reason}


def _select(namespace: dict[str, Any], prelude: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The names to save, and those skipped before pickling (see the module's docstring)."""
    candidates: dict[str, Any] = {}
    skipped: list[dict[str, str]] = []
    for name, value in list(namespace.items()):
        if not isinstance(name, str):
            skipped.append(_skip(_clip(repr(name), 200), value, "name", "not a string: not a variable name"))
            continue
        if (name.startswith("__") and name.endswith("__")) or _HISTORY.fullmatch(name):
            continue
        if name in prelude and prelude[name] is value:
            skipped.append(_skip(name, value, "prelude", "bound by the prelude, which binds it again at every start"))
        elif isinstance(value, types.ModuleType):
            skipped.append(_skip(name, value, "module", "a module: import it again (a prelude import is redone)"))
        elif _defined_in_a_cell(value, prelude):
            reason = "defined in a cell: pickle saves functions and classes by name; run the cell again"
            skipped.append(_skip(name, value, "cell_defined", reason))
        else:
            candidates[name] = value
    return candidates, skipped


def _dump(
    writer: _Writer, candidates: dict[str, Any], skipped: list[dict[str, str]], prelude: dict[str, Any]
) -> list[str]:
    """Pickles the candidates as one dict; the names saved. First all at once (the usual
    case: one pass); when that fails, each value alone to learn which ones pickle refuses,
    then the others at once."""
    start = writer.pos
    try:
        _Pickler(writer, prelude).dump(candidates)
        return list(candidates)
    except Exception:
        if writer.error is not None:
            raise writer.error from None
    writer.rewind(start)
    good: dict[str, Any] = {}
    for name, value in candidates.items():
        try:
            _Pickler(_NullSink(), prelude).dump(value)
        except _CellDefined as e:
            skipped.append(_skip(name, value, "cell_defined", _clip(str(e))))
        except Exception as e:
            skipped.append(_skip(name, value, "unpicklable", _describe(e)))
        else:
            good[name] = value
    _Pickler(writer, prelude).dump(good)
    return list(good)


def _write(
    dir_fd: int,
    worker: Worker,
    candidates: dict[str, Any],
    skipped: list[dict[str, str]],
    max_bytes: int | None,
    durable: bool,
) -> dict[str, Any]:
    """Writes the checkpoint file (temporary, then renamed over the last one)."""
    tmp = f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    try:
        writer = _Writer(fd, max_bytes)
        writer.raw(HEAD)
        with worker.user_code:  # a value's __reduce__ is the user's code: interruptible
            saved = _dump(writer, candidates, skipped, worker.executor.prelude_namespace)
        payload_bytes = writer.pos - len(HEAD)
        manifest = {
            "format": FORMAT,
            "python": _python(),
            "implementation": sys.implementation.name,
            "pickle_protocol": PICKLE_PROTOCOL,
            "payload_bytes": payload_bytes,
            "sha256": writer.sha.hexdigest(),
            "count": len(saved),
            "created": time.time(),
        }
        current = _unchanged(dir_fd, manifest)
        if current is None:
            encoded = json.dumps(manifest, separators=(",", ":")).encode("ascii")
            writer.raw(encoded + len(encoded).to_bytes(_LENGTH_BYTES, "big") + TAIL)
            os.fsync(fd)
    except BaseException as e:
        os.close(fd)
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        if isinstance(e, OSError) and e.errno in _NO_SPACE:
            raise CheckpointNoSpace(
                f"the checkpoint does not fit ({_describe(e)}): the workdir's disk_bytes or max_file_bytes, "
                "or the filesystem of the Sandbox root is full; the previous checkpoint is kept"
            ) from None
        raise
    os.close(fd)
    if current is not None:
        # The namespace pickles to what the checkpoint already holds (a cell that changed no
        # variable): no second copy, no fsync.
        os.unlink(tmp, dir_fd=dir_fd)
        if durable:
            os.fsync(dir_fd)
        return {"saved": saved, **current, "unchanged": True}
    os.rename(tmp, CHECKPOINT, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    if durable:
        # The rename itself survives a power cut. Without it (the automatic checkpoint after
        # each cell: this fsync is a few ms) a power cut may bring back the previous
        # checkpoint, whole: the file's own fsync above keeps either one intact.
        os.fsync(dir_fd)
    return {"saved": saved, "bytes": writer.pos, **manifest, "unchanged": False}


def _unchanged(dir_fd: int, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The current checkpoint's manifest and size when it holds exactly this payload (its
    manifest says so, and its payload hashes to it), else None."""
    try:
        fd = _open_checkpoint(dir_fd)
    except (CheckpointMissing, CheckpointUnsafe, OSError):
        return None
    try:
        current, payload = _manifest(fd)
        if current["sha256"] != manifest["sha256"] or payload != manifest["payload_bytes"]:
            return None
        _verify(fd, payload, manifest["sha256"])
        return {**current, "bytes": os.fstat(fd).st_size}
    except (CheckpointCorrupt, CheckpointForeign, OSError):
        return None
    finally:
        os.close(fd)


def op_checkpoint(worker: Worker, args: dict[str, Any]) -> dict[str, Any]:
    workdir, max_bytes, durable = args.get("workdir"), args.get("max_bytes"), args.get("durable", True)
    if (
        not isinstance(workdir, str)
        or not (max_bytes is None or isinstance(max_bytes, int))
        or not isinstance(durable, bool)
    ):
        raise TypeError("checkpoint: bad request")
    t0 = time.monotonic()
    candidates, skipped = _select(worker.executor.namespace, worker.executor.prelude_namespace)
    dir_fd = _open_state_dir(workdir, create=True)
    try:
        _remove_stale_temps(dir_fd)
        written = _write(dir_fd, worker, candidates, skipped, max_bytes, durable)
    finally:
        os.close(dir_fd)
    return {
        "path": "/".join((*STATE_DIR, CHECKPOINT)),
        "saved": written["saved"],
        "skipped": skipped,
        "bytes": written["bytes"],
        "sha256": written["sha256"],
        "format": FORMAT,
        "python": written["python"],
        "created": written["created"],
        "unchanged": written["unchanged"],
        "duration_s": time.monotonic() - t0,
    }


# --- reading -----------------------------------------------------------------------------------
class _Slice:
    """The payload's bytes of the open checkpoint, as the unpickler reads a file: nothing
    before or past them."""

    def __init__(self, fd: int, start: int, length: int) -> None:
        self.fd, self.pos, self.end = fd, start, start + length

    def read(self, n: int = -1) -> bytes:
        n = self.end - self.pos if n < 0 else min(n, self.end - self.pos)
        data = os.pread(self.fd, n, self.pos) if n > 0 else b""
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        view = view[: max(0, self.end - self.pos)]
        got = 0
        while got < len(view):
            n = os.preadv(self.fd, [view[got:]], self.pos)
            if n == 0:
                break
            got += n
            self.pos += n
        return got

    def readline(self) -> bytes:
        # Protocol 5 needs no line reads; text opcodes of a foreign pickle still work.
        chunk = os.pread(self.fd, min(1 << 16, self.end - self.pos), self.pos)
        cut = chunk.find(b"\n")
        data = chunk if cut < 0 else chunk[: cut + 1]
        self.pos += len(data)
        return data


def _open_checkpoint(dir_fd: int) -> int:
    try:
        # O_NONBLOCK: a FIFO put in its place opens at once (and is refused below) instead of
        # waiting for a writer.
        fd = os.open(CHECKPOINT, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        raise CheckpointMissing("no checkpoint has been saved for this session") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise CheckpointUnsafe("the checkpoint's path is a symbolic link (a cell put it there)") from None
        raise
    kind = stat.S_IFMT(os.fstat(fd).st_mode)
    if kind != stat.S_IFREG:
        os.close(fd)
        raise CheckpointUnsafe(f"the checkpoint's path is not a regular file (mode {kind:#o}; a cell put it there)")
    return fd


def _manifest(fd: int) -> tuple[dict[str, Any], int]:
    """The checked manifest and the payload's length."""
    size = os.fstat(fd).st_size
    fixed = len(HEAD) + _LENGTH_BYTES + len(TAIL)
    if size < fixed or os.pread(fd, len(HEAD), 0) != HEAD:
        raise CheckpointCorrupt(f"not a sandbox_exec checkpoint ({size} bytes, no header)")
    end = os.pread(fd, _LENGTH_BYTES + len(TAIL), size - _LENGTH_BYTES - len(TAIL))
    if end[_LENGTH_BYTES:] != TAIL:
        raise CheckpointCorrupt(f"the checkpoint is truncated or damaged ({size} bytes, no end marker)")
    length = int.from_bytes(end[:_LENGTH_BYTES], "big")
    if length > MAX_MANIFEST_BYTES or length > size - fixed:
        raise CheckpointCorrupt(f"the checkpoint's manifest length {length} is impossible ({size} bytes)")
    try:
        manifest = json.loads(os.pread(fd, length, size - _LENGTH_BYTES - len(TAIL) - length))
    except ValueError as e:
        raise CheckpointCorrupt(f"the checkpoint's manifest is not JSON: {_describe(e)}") from None
    if not isinstance(manifest, dict):
        raise CheckpointCorrupt("the checkpoint's manifest is not an object")
    if manifest.get("format") != FORMAT:
        raise CheckpointForeign(
            f"the checkpoint has format {_clip(repr(manifest.get('format')), 40)}; this sandbox_exec reads format {FORMAT}"
        )
    here = _python()
    there = manifest.get("python"), manifest.get("implementation")
    if there != (here, sys.implementation.name):
        raise CheckpointForeign(
            f"the checkpoint was written by {_clip(repr(there[1]), 40)} {_clip(repr(there[0]), 40)}, this is "
            f"{sys.implementation.name} {here}: pickles of one Python version are not promised to load in another"
        )
    payload = size - fixed - length
    sha = manifest.get("sha256")
    if manifest.get("payload_bytes") != payload or not isinstance(sha, str):
        raise CheckpointCorrupt(
            f"the checkpoint is truncated or damaged: its manifest says {_clip(repr(manifest.get('payload_bytes')), 40)} "
            f"payload bytes, the file holds {payload}"
        )
    return manifest, payload


def _verify(fd: int, payload: int, expected: str) -> None:
    sha = hashlib.sha256()
    buffer = bytearray(min(_CHUNK, max(payload, 1)))
    pos, end = len(HEAD), len(HEAD) + payload
    while pos < end:
        view = memoryview(buffer)[: min(len(buffer), end - pos)]
        n = os.preadv(fd, [view], pos)
        if n == 0:
            raise CheckpointCorrupt("the checkpoint got shorter while it was read")
        sha.update(view[:n])
        pos += n
    if sha.hexdigest() != expected:
        raise CheckpointCorrupt("the checkpoint's payload does not match its sha256: it was damaged or changed")


def _load(fd: int, payload: int) -> dict[str, Any]:
    source = _Slice(fd, len(HEAD), payload)
    try:
        loaded = pickle.Unpickler(source).load()
    except Exception as e:
        raise CheckpointLoadFailed(f"the checkpoint could not be loaded: {_describe(e)}") from None
    if not isinstance(loaded, dict) or not all(isinstance(k, str) for k in loaded):
        raise CheckpointCorrupt("the checkpoint's payload is not a namespace")
    if source.pos != source.end:
        raise CheckpointCorrupt("the checkpoint's payload has data past its pickle")
    return loaded


def _set_aside(dir_fd: int) -> bool:
    try:
        os.rename(CHECKPOINT, REJECTED, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)  # the entry itself, whatever it is
    except OSError:
        return False
    return True


def op_restore(worker: Worker, args: dict[str, Any]) -> dict[str, Any]:
    """args: workdir; missing_ok (no checkpoint: an empty report, found False); set_aside
    (a checkpoint that fails to load is renamed checkpoint.rejected); load (False: only set
    aside)."""
    workdir = args.get("workdir")
    missing_ok, set_aside, load = args.get("missing_ok"), args.get("set_aside"), args.get("load", True)
    if not isinstance(workdir, str) or not all(isinstance(x, bool) for x in (missing_ok, set_aside, load)):
        raise TypeError("restore: bad request")
    t0 = time.monotonic()
    path = "/".join((*STATE_DIR, CHECKPOINT))
    empty = {"found": False, "path": path, "restored": [], "duration_s": 0.0}
    try:
        dir_fd = _open_state_dir(workdir, create=False)
    except CheckpointMissing:
        if missing_ok:
            return empty
        raise
    try:
        if not load:
            return {**empty, "set_aside": _set_aside(dir_fd)}
        try:
            loaded, manifest, size = _read(dir_fd, worker)
        except CheckpointMissing:
            if missing_ok:
                return empty
            raise
        except (CheckpointCorrupt, CheckpointForeign, CheckpointUnsafe, CheckpointLoadFailed) as e:
            if set_aside and _set_aside(dir_fd):
                raise type(e)(f"{e} (set aside as {'/'.join((*STATE_DIR, REJECTED))})") from None
            raise
    finally:
        os.close(dir_fd)
    # Everything loaded: only now does the namespace change (one update, no user code of ours
    # between its items).
    worker.executor.namespace.update(loaded)
    return {
        "found": True,
        "path": path,
        "restored": list(loaded),
        "bytes": size,
        "sha256": manifest["sha256"],
        "format": FORMAT,
        "python": manifest["python"],
        "created": manifest.get("created") if isinstance(manifest.get("created"), (int, float)) else None,
        "duration_s": time.monotonic() - t0,
    }


def _read(dir_fd: int, worker: Worker) -> tuple[dict[str, Any], dict[str, Any], int]:
    fd = _open_checkpoint(dir_fd)
    try:
        manifest, payload = _manifest(fd)
        with worker.user_code:  # a large file's hash and a value's __setstate__: interruptible
            _verify(fd, payload, manifest["sha256"])
            loaded = _load(fd, payload)
        return loaded, manifest, os.fstat(fd).st_size
    finally:
        os.close(fd)
