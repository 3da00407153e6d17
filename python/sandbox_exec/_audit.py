"""The audit trail: one record per cell and per call, to a hook, a JSON-lines file and an
OpenTelemetry span.

``Sandbox(audit=hook, audit_log=path, audit_code=False, tracing=None)`` makes an
:class:`Auditor`; its sessions hand it each cell's and call's ingredients when it ends
(``Session._cell_result``, ``Session._call``), and it builds one :class:`AuditRecord` and
delivers it to every sink. Nothing is built when no sink would take it (no hook, no log, and
no recording span), so a Sandbox without an audit pays one ``is None`` per cell.

Where the fields come from (docs/threat_model.md, "The audit trail"): the backend writes
every record itself. The code's hash, the cell id, the session's name, the start time and
the limits are the backend's own; duration, CPU, peak memory, output and truncated bytes,
and the ends the supervisor imposed (timeout, memory under a cgroup, disk, crashed) are the
supervisor's measurements. From the worker, as it reported them in its end-of-cell message
(a hostile cell can claim anything there): ``ok`` against ``error``, and of an error, the
exception's name that makes it ``interrupted`` (KeyboardInterrupt) or ``memory``
(MemoryError, where RLIMIT_AS is the memory limit); and ``worker_truncated_bytes``, kept
apart from the supervisor's ``truncated_bytes``. No field is text the worker chose, except
as quoted inside a supervisor's ``reason`` (capped, and JSON-escaped in the log).

The limits and the mechanism enforcing each are computed once per interpreter start
(``Session.enforcement``), cached on the session; per record only the cell's own deadline
is set. The code is hashed (sha256), never kept in clear unless ``audit_code=True``.

A failing sink never fails a cell: its exception is logged on ``sandbox_exec.audit`` and
the other sinks still get the record.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import json
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from . import _safe_fs
from ._version import __version__
from .errors import SandboxError

if TYPE_CHECKING:
    from .sandbox import Session

__all__ = [
    "AUDIT_SCHEMA",
    "AUDIT_STATUSES",
    "AuditHook",
    "AuditLimit",
    "AuditRecord",
    "Auditor",
    "Pending",
    "validate_record",
]

log = logging.getLogger("sandbox_exec.audit")

#: The record format's name and version: a field's meaning never changes under one version.
AUDIT_SCHEMA = "sandbox_exec.audit/1"
#: A record's statuses: a cell's (Result.status) and a call's (CallError.status).
AUDIT_STATUSES = ("ok", "error", "timeout", "interrupted", "crashed", "memory", "disk", "violation")
#: A supervisor's reason is capped in a record: it may quote what a worker sent.
MAX_REASON_CHARS = 2000
#: The longest cell id a caller may give.
MAX_CELL_ID_CHARS = 1024


class AuditLimit(TypedDict):
    """One limit in force: its value (None: no limit) and the mechanism enforcing it."""

    value: int | float | bool | str | None
    mechanism: str


class AuditRecord(TypedDict):
    """One cell or call, as the backend saw it end. Every key is always present."""

    schema: str  # AUDIT_SCHEMA
    kind: Literal["cell", "call"]
    session: str  # the session's name
    cell_id: str | None  # the caller's (run(cell_id=...)), else None
    op: str | None  # a call's operation ("call", "variables", ...); None for a cell
    execution_count: int | None  # a cell's; None for a call and a refused cell
    code_sha256: str  # of the cell's code (UTF-8), or of a call's request as sent (JSON)
    code_bytes: int  # that text's length in bytes
    code: str | None  # the text itself, only with audit_code=True
    start: str  # when the backend sent it: ISO 8601, UTC, microseconds
    start_unix: float  # the same, seconds since the epoch
    duration_s: float  # supervisor: from the request to the end
    cpu_s: float | None  # supervisor: CPU seconds of the session's processes in the cell
    peak_memory_bytes: int | None  # supervisor: peak resident memory
    status: str  # one of AUDIT_STATUSES
    reason: str | None  # why it ended so, when not the code's own doing (capped)
    output_bytes: int  # supervisor: output bytes the worker sent (and it let through)
    truncated_bytes: int  # supervisor: output bytes it dropped past the caps
    worker_truncated_bytes: int  # the worker's claim: output it says it did not send (its cap)
    worker_pid: int | None  # the interpreter's pid (host's view); None when refused
    interpreter_restarted: bool  # a fresh interpreter was started first (the last one died)
    restart_reason: str | None  # why the last one ended, when restarted (capped)
    interpreter_start: str  # Session.enforcement["start"]: warm (zygote) or cold, and why
    limits: dict[str, AuditLimit]  # every Policy limit and isolation layer, and its mechanism


#: What Sandbox(audit=...) is called with, once per record (its return value is ignored).
AuditHook = Callable[[AuditRecord], object]

_OPTIONAL_STR = (str, type(None))
_OPTIONAL_INT = (int, type(None))
_OPTIONAL_NUM = (int, float, type(None))
# Each key's accepted types (bool is an int: excluded separately where it matters).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "schema": (str,),
    "kind": (str,),
    "session": (str,),
    "cell_id": _OPTIONAL_STR,
    "op": _OPTIONAL_STR,
    "execution_count": _OPTIONAL_INT,
    "code_sha256": (str,),
    "code_bytes": (int,),
    "code": _OPTIONAL_STR,
    "start": (str,),
    "start_unix": (float,),
    "duration_s": (int, float),
    "cpu_s": _OPTIONAL_NUM,
    "peak_memory_bytes": _OPTIONAL_INT,
    "status": (str,),
    "reason": _OPTIONAL_STR,
    "output_bytes": (int,),
    "truncated_bytes": (int,),
    "worker_truncated_bytes": (int,),
    "worker_pid": _OPTIONAL_INT,
    "interpreter_restarted": (bool,),
    "restart_reason": _OPTIONAL_STR,
    "interpreter_start": (str,),
    "limits": (dict,),
}
assert set(_FIELD_TYPES) == set(AuditRecord.__annotations__)


def validate_record(record: Any) -> list[str]:
    """The ways ``record`` is not a complete, valid AuditRecord ([] when it is one): every
    key present with its type, no other key, the enumerations and formats, and the limits'
    shape. Used by the tests on every record they see; cheap enough for a caller's own."""
    if not isinstance(record, dict):
        return [f"not a dict: {type(record).__name__}"]
    problems = [f"missing {k!r}" for k in _FIELD_TYPES if k not in record]
    problems += [f"unknown key {k!r}" for k in record if k not in _FIELD_TYPES]
    for key, types in _FIELD_TYPES.items():
        if key not in record:
            continue
        value = record[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            problems.append(f"{key}: {type(value).__name__} {value!r:.80}")
    if problems:
        return problems
    if record["schema"] != AUDIT_SCHEMA:
        problems.append(f"schema {record['schema']!r}")
    if record["kind"] not in ("cell", "call"):
        problems.append(f"kind {record['kind']!r}")
    if (record["kind"] == "call") != (record["op"] is not None):
        problems.append("op is set for a call and only for a call")
    if record["kind"] == "call" and record["execution_count"] is not None:
        problems.append("a call has no execution count")
    if record["status"] not in AUDIT_STATUSES:
        problems.append(f"status {record['status']!r}")
    digest = record["code_sha256"]
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        problems.append(f"code_sha256 {digest!r}")
    if record["code"] is not None and hashlib.sha256(_utf8(record["code"])).hexdigest() != digest:
        problems.append("code does not hash to code_sha256")
    try:
        start = datetime.datetime.fromisoformat(record["start"])
        if start.utcoffset() != datetime.timedelta(0) or abs(start.timestamp() - record["start_unix"]) > 1e-3:
            problems.append("start and start_unix disagree (or start is not UTC)")
    except ValueError:
        problems.append(f"start {record['start']!r}")
    for key in ("code_bytes", "output_bytes", "truncated_bytes", "worker_truncated_bytes", "duration_s"):
        if record[key] < 0:
            problems.append(f"{key} < 0")
    for key in ("reason", "restart_reason"):
        if record[key] is not None and len(record[key]) > MAX_REASON_CHARS:
            problems.append(f"{key} is longer than {MAX_REASON_CHARS} characters")
    if record["interpreter_restarted"] != (record["restart_reason"] is not None):
        problems.append("restart_reason is set when, and only when, the interpreter was restarted")
    for name, limit in record["limits"].items():
        if not (isinstance(limit, dict) and set(limit) == {"value", "mechanism"}):
            problems.append(f"limits[{name!r}] is not {{value, mechanism}}")
        elif not isinstance(limit["mechanism"], str) or not isinstance(limit["value"], (int, float, str, type(None))):
            problems.append(f"limits[{name!r}]: {limit!r:.80}")
    for name in _POLICY_LIMITS:
        if name not in record["limits"]:
            problems.append(f"limits: missing {name!r}")
    return problems


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate is hashed, not refused


def _cap(text: str | None) -> str | None:
    if text is None or len(text) <= MAX_REASON_CHARS:
        return text
    return text[: MAX_REASON_CHARS - 20] + f"... [{len(text) - MAX_REASON_CHARS + 20} more]"


def check_cell_id(cell_id: object) -> None:
    """run()'s ``cell_id``: None or a str of at most MAX_CELL_ID_CHARS characters."""
    if cell_id is not None and not isinstance(cell_id, str):
        raise TypeError(f"cell_id must be a str or None, not {type(cell_id).__name__}")
    if cell_id is not None and len(cell_id) > MAX_CELL_ID_CHARS:
        raise ValueError(f"cell_id is longer than {MAX_CELL_ID_CHARS} characters")


# --- limits in force ------------------------------------------------------------------------
# The Policy fields a record names, in the order of Session.enforcement; each is
# {"value": the policy's value, "mechanism": Session.enforcement[name]}.
_POLICY_LIMITS = (
    "timeout_s",
    "cpu_s",
    "cpus",
    "memory_bytes",
    "max_processes",
    "max_file_bytes",
    "disk_bytes",
    "max_open_files",
    "max_output_bytes",
    "max_single_output_bytes",
    "network",
    "namespaces",
    "seccomp",
    "landlock",
    "host_uid",
)
_DEADLINE = "supervisor deadline (SIGINT, then kill)"


@dataclass(frozen=True)
class Enforced:
    """What a session enforces, computed once per interpreter start (Session.enforcement)."""

    limits: tuple[tuple[str, Any, str], ...]  # (name, value, mechanism), but the deadline
    limits_json: str  # those as the members of a JSON object: '"cpu_s":{...},...'
    start: str  # Session.enforcement["start"]


# The log's encoding: strict JSON, ASCII only (every control and non-ASCII character
# escaped: one record is one line, whatever a reason quotes), compact.
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def enforced(session: Session) -> Enforced:
    """The session's limits in force now (but the per-cell deadline), and the mechanism of
    each; with their JSON, so that a record's line encodes only what changes per cell."""
    mechanisms = session.enforcement
    policy = session.policy
    limits = tuple((name, getattr(policy, name, None), mechanisms.get(name, "none")) for name in _POLICY_LIMITS[1:])
    as_json = _ENCODER.encode({name: {"value": value, "mechanism": m} for name, value, m in limits})[1:-1]
    return Enforced(limits, as_json, mechanisms.get("start", "not started"))


# --- the JSON-lines file --------------------------------------------------------------------
_LOG_FLAGS = (
    os.O_WRONLY
    | os.O_APPEND
    | os.O_CREAT
    | os.O_NOFOLLOW
    | os.O_NONBLOCK  # a FIFO planted at the name does not block the open (it is refused next)
    | os.O_NOCTTY
    | getattr(os, "O_CLOEXEC", 0)
)


def open_log(path: str | os.PathLike[str]) -> int:
    """Opens (creates 0600) the audit log for appending: no symlink is followed at any level
    of the path, and only a regular file of this process's user with one link is taken (a
    planted link, FIFO, device or another user's file is refused with SandboxError)."""
    full = os.path.abspath(os.fspath(path))
    parent, name = os.path.split(full)
    if not name:
        raise SandboxError(f"audit_log: {full!r} names a directory, not a file")
    dir_fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in (p for p in parent.split("/") if p):
            try:
                next_fd = _safe_fs.open_dir(part, dir_fd)
            except _safe_fs.UnsafeEntry:
                raise SandboxError(
                    f"audit_log: {part!r} in {parent!r} is a symlink (or not a directory); an audit log's path "
                    "is followed by no link: give the real path"
                ) from None
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            fd = os.open(name, _LOG_FLAGS, 0o600, dir_fd=dir_fd)
        except OSError as e:
            why = "is a symlink" if e.errno == errno.ELOOP else e.strerror
            raise SandboxError(f"audit_log: cannot open {full!r}: {why}") from e
    except OSError as e:
        raise SandboxError(f"audit_log: cannot open {full!r}: {e}") from e
    finally:
        os.close(dir_fd)
    st = os.fstat(fd)
    problem = (
        "is not a regular file"
        if not stat.S_ISREG(st.st_mode)
        else f"belongs to uid {st.st_uid}, not this process's {os.geteuid()}"
        if st.st_uid != os.geteuid()
        else f"has {st.st_nlink} hard links"
        if st.st_nlink != 1
        else None
    )
    if problem is not None:
        os.close(fd)
        raise SandboxError(f"audit_log: {full!r} {problem}; refused")
    return fd


# --- OpenTelemetry ----------------------------------------------------------------------------
def make_tracer(tracing: object) -> Any:
    """The tracer for ``Sandbox(tracing=...)``: None (off) when False, or when None and
    opentelemetry-api is not installed; the global tracer provider's for None and True; the
    given provider's for a TracerProvider."""
    if tracing is False:
        return None
    if tracing is None or tracing is True:
        try:
            from opentelemetry import trace
        except ImportError:
            if tracing:
                raise ImportError("tracing=True needs opentelemetry-api (pip install opentelemetry-api)") from None
            return None
        return trace.get_tracer("sandbox_exec", __version__)
    get_tracer = getattr(tracing, "get_tracer", None)
    if not callable(get_tracer):
        raise TypeError("tracing must be None, True, False or an OpenTelemetry TracerProvider")
    return get_tracer("sandbox_exec", __version__)


def _span_attributes(record: AuditRecord) -> dict[str, Any]:
    """The record as span attributes (``sandbox_exec.<field>``; each limit as
    ``sandbox_exec.limit.<name>`` and ``...mechanism``); None values are left out."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "limits":
            for name, limit in record["limits"].items():
                if limit["value"] is not None:
                    out[f"sandbox_exec.limit.{name}"] = limit["value"]
                out[f"sandbox_exec.limit.{name}.mechanism"] = limit["mechanism"]
        elif value is not None:
            out[f"sandbox_exec.{key}"] = value
    return out


def _end_span(span: Any, record: AuditRecord, end_ns: int) -> None:
    from opentelemetry.trace import Status, StatusCode

    span.set_attributes(_span_attributes(record))
    if record["status"] != "ok":
        span.set_status(Status(StatusCode.ERROR, f"{record['status']}: {record['reason'] or record['status']}"))
    span.end(end_time=end_ns)


# --- the auditor --------------------------------------------------------------------------
@dataclass(slots=True)
class Pending:
    """A cell or call between its request and its record."""

    kind: Literal["cell", "call"]
    text: str  # the code, or the call's request as sent
    cell_id: str | None
    op: str | None
    start_ns: int  # time.time_ns() when it was sent


class Auditor:
    """A Sandbox's audit sinks. Thread-safe: sessions of many threads report at once."""

    def __init__(
        self, hook: AuditHook | None, log_path: str | os.PathLike[str] | None, code: bool, tracer: Any
    ) -> None:
        if hook is not None and not callable(hook):
            raise TypeError("audit must be a callable taking one record (a dict)")
        self._hook = hook
        self._code = code
        self._tracer = tracer
        self._lock = threading.Lock()  # the log's descriptor and its writes
        self._fd = open_log(log_path) if log_path is not None else None

    @classmethod
    def make(
        cls, hook: AuditHook | None, log_path: str | os.PathLike[str] | None, code: bool, tracing: object
    ) -> Auditor | None:
        """An Auditor, or None when there is nothing to deliver to (no hook, log or tracer)."""
        if not isinstance(code, bool):
            raise TypeError("audit_code must be True or False")
        tracer = make_tracer(tracing)
        if hook is None and log_path is None and tracer is None:
            return None
        return cls(hook, log_path, code, tracer)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def begin(self, kind: Literal["cell", "call"], text: str, cell_id: str | None, op: str | None = None) -> Pending:
        return Pending(kind, text, cell_id, op, time.time_ns())

    def end(
        self,
        session: Session,
        pending: Pending,
        *,
        status: str,
        reason: str | None,
        outcome: Any,
        execution_count: int | None,
        timeout: float | None,
        restart_reason: str | None,
        worker_pid: int | None,
        reply_cap: int | None = None,
    ) -> None:
        """Builds the record of a finished cell or call (``outcome``: its CellOutcome, None
        when it was refused before it ran) and delivers it. Never raises for a sink."""
        end_ns = time.time_ns()
        span = None
        if self._tracer is not None:
            try:
                span = self._tracer.start_span(f"sandbox_exec.{pending.kind}", start_time=pending.start_ns)
                if not span.is_recording():
                    span = None
            except Exception:
                log.exception("audit: the OpenTelemetry tracer failed to start a span")
                span = None
        if self._hook is None and self._fd is None and span is None:
            return
        record, line = self._record(
            session, pending, status, reason, outcome, execution_count, timeout, restart_reason, worker_pid, reply_cap
        )
        if self._fd is not None:
            try:
                self._write(line())
            except Exception:
                log.exception("audit: writing the audit log failed (the record of %s is not in it)", _what(pending))
        if span is not None:
            try:
                _end_span(span, record, end_ns)
            except Exception:
                log.exception("audit: the OpenTelemetry span of %s failed", _what(pending))
        if self._hook is not None:
            try:
                self._hook(record)
            except Exception:
                log.exception("audit: the audit hook raised on the record of %s", _what(pending))

    def _write(self, line: bytes) -> None:
        with self._lock:
            if self._fd is None:
                raise SandboxError("the audit log is closed (the Sandbox was closed)")
            view = memoryview(line)
            while view:
                view = view[os.write(self._fd, view) :]

    def _record(
        self,
        session: Session,
        p: Pending,
        status: str,
        reason: str | None,
        outcome: Any,
        execution_count: int | None,
        timeout: float | None,
        restart_reason: str | None,
        worker_pid: int | None,
        reply_cap: int | None,
    ) -> tuple[AuditRecord, Callable[[], bytes]]:
        """The record, and a function making its JSON line (the log's): the same as
        encoding the record whole, with the limits' JSON taken from the per-start cache."""
        got = session._audit_enforced  # the session's cache, reset at each start
        if got is None:
            got = session._audit_enforced = enforced(session)
        # The deadline of this cell (run(timeout=...) overrides the policy's) comes first.
        per_cell: dict[str, AuditLimit] = {
            "timeout_s": {"value": timeout or None, "mechanism": _DEADLINE if timeout else "none"}
        }
        limits = per_cell.copy()
        for name, value, mechanism in got.limits:
            limits[name] = {"value": value, "mechanism": mechanism}
        if reply_cap is not None:
            limits["max_reply_bytes"] = per_cell["max_reply_bytes"] = {
                "value": reply_cap,
                "mechanism": "supervisor per-message cap (the one reply)",
            }
        raw = _utf8(p.text)
        start_s = p.start_ns / 1e9
        base: dict[str, Any] = {
            "schema": AUDIT_SCHEMA,
            "kind": p.kind,
            "session": session.name,
            "cell_id": p.cell_id,
            "op": p.op,
            "execution_count": execution_count,
            "code_sha256": hashlib.sha256(raw).hexdigest(),
            "code_bytes": len(raw),
            "code": p.text if self._code else None,
            "start": datetime.datetime.fromtimestamp(start_s, datetime.timezone.utc).isoformat(timespec="microseconds"),
            "start_unix": start_s,
            "duration_s": outcome.duration_s if outcome is not None else 0.0,
            "cpu_s": outcome.cpu_s if outcome is not None else None,
            "peak_memory_bytes": outcome.peak_rss_bytes if outcome is not None else None,
            "status": status,
            "reason": _cap(reason),
            "output_bytes": outcome.output_bytes if outcome is not None else 0,
            "truncated_bytes": outcome.dropped_output_bytes - outcome.worker_dropped_bytes
            if outcome is not None
            else 0,
            "worker_truncated_bytes": outcome.worker_dropped_bytes if outcome is not None else 0,
            "worker_pid": worker_pid,
            "interpreter_restarted": restart_reason is not None,
            "restart_reason": _cap(restart_reason),
            "interpreter_start": got.start,
        }

        def line() -> bytes:
            own = _ENCODER.encode(per_cell)  # '{"timeout_s":{...}[,"max_reply_bytes":{...}]}'
            if reply_cap is not None:  # the cached limits go between the deadline and the reply cap
                cut = own.index(',"max_reply_bytes"')
                members = f"{own[1:cut]},{got.limits_json}{own[cut:-1]}"
            else:
                members = f"{own[1:-1]},{got.limits_json}"
            return f'{_ENCODER.encode(base)[:-1]},"limits":{{{members}}}}}\n'.encode("ascii")

        record: Any = {**base, "limits": limits}  # base stays without them, for line()
        return record, line


def _what(p: Pending) -> str:
    return f"call {p.op!r}" if p.kind == "call" else f"cell {p.cell_id!r}" if p.cell_id is not None else "a cell"
