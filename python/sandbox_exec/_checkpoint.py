"""Checkpoint and restore: the backend's side (issue 10, item 1).

The worker pickles and unpickles the namespace in the sandbox (sandbox_exec/_worker/
checkpoint.py, which documents the file and what is saved); the backend sends a call and
gets a JSON report. It never opens the checkpoint, never unpickles anything, and takes from
a report only the fields below, each checked for its type (a cell can forge a report: it
then lies only about its own session's state).

The checkpoint lives at ``<workdir>/.sandbox_exec/state/checkpoint``: inside the workdir,
under the Sandbox's one root, so it counts against ``disk_bytes``, moves with a pooled
session's files, and a new Sandbox on the same root finds it.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any

from .errors import CallError, CheckpointError

logger = logging.getLogger("sandbox_exec")

#: Where a session's checkpoint is, relative to its workdir, and the file format this version
#: writes and reads: the worker's (_worker/checkpoint.py, which never runs in the backend;
#: tests_py/test_checkpoint.py checks the two agree).
CHECKPOINT_PATH = ".sandbox_exec/state/checkpoint"
FORMAT = 1
#: The largest report a checkpoint or restore may send (names and skip reasons).
REPLY_LIMIT = 8 << 20

# The worker's error names (its exception classes) and the kinds they are.
_KINDS = {
    "CheckpointMissing": "missing",
    "CheckpointCorrupt": "corrupt",
    "CheckpointForeign": "foreign",
    "CheckpointUnsafe": "unsafe",
    "CheckpointNoSpace": "no_space",
    "CheckpointLoadFailed": "load",
}
_SHA256 = re.compile(r"[0-9a-f]{64}")


def checkpoint_args(workdir: Path, max_bytes: int | None, durable: bool) -> dict[str, Any]:
    """The workdir's path (not the worker's current directory: a cell may have changed it);
    `max_bytes`: the room left under disk_bytes where the supervisor's watchdog enforces it
    (a write that fails with ENOSPC does that where the workdir is an image); `durable`: the
    directory is fsync'd after the rename too."""
    return {"workdir": str(workdir), "max_bytes": max_bytes, "durable": durable}


def restore_args(workdir: Path, *, missing_ok: bool, set_aside: bool, load: bool = True) -> dict[str, Any]:
    return {"workdir": str(workdir), "missing_ok": missing_ok, "set_aside": set_aside, "load": load}


def as_checkpoint_error(op: str, e: CallError) -> CheckpointError:
    """The CallError of a checkpoint or restore call as a CheckpointError with its kind."""
    if e.status == "error":
        kind = _KINDS.get(e.ename or "", "error")
        message = f"{op}: {e.evalue}" if kind != "error" else str(e)
    else:
        kind, message = e.status, str(e)
    return CheckpointError(
        message, kind=kind, status=e.status, ename=e.ename, evalue=e.evalue, traceback=e.traceback, reason=e.reason
    )


def _violation(op: str, what: str) -> CheckpointError:
    return CheckpointError(f"{op}: the worker's report {what}", kind="violation", status="violation")


def _dict(op: str, value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _violation(op, f"{what} is not an object")
    return value


def _list(op: str, value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise _violation(op, f"{what} is not a list")
    return value


# The largest byte count a report may state: exact in a double, and far past any disk.
MAX_REPORTED_BYTES = 1 << 53


def _int(op: str, report: dict[str, Any], key: str) -> int:
    value = report.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_REPORTED_BYTES:
        raise _violation(op, f"has no valid {key!r}")
    return value


def _seconds(op: str, report: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = report.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise _violation(op, f"has no valid {key!r}")
    return float(value)


def _bool(op: str, report: dict[str, Any], key: str) -> bool:
    value = report.get(key)
    if not isinstance(value, bool):
        raise _violation(op, f"has no valid {key!r}")
    return value


def _str(op: str, report: dict[str, Any], key: str) -> str:
    value = report.get(key)
    if not isinstance(value, str):
        raise _violation(op, f"has no valid {key!r}")
    return value


def _names(op: str, value: Any, key: str) -> list[str]:
    names = _list(op, value, repr(key))
    if not all(isinstance(n, str) for n in names):
        raise _violation(op, f"has a {key!r} entry that is not a name")
    return list(names)


def _common(op: str, report: dict[str, Any]) -> dict[str, Any]:
    sha = _str(op, report, "sha256")
    if not _SHA256.fullmatch(sha):
        raise _violation(op, "has no valid 'sha256'")
    if report.get("format") != FORMAT:
        raise _violation(op, "names another format")
    return {
        "path": CHECKPOINT_PATH,
        "bytes": _int(op, report, "bytes"),
        "sha256": sha,
        "format": FORMAT,
        "python": _str(op, report, "python"),
    }


def checkpoint_report(value: Any) -> dict[str, Any]:
    """The checked report of a checkpoint call: only these keys, each of its type."""
    op = "checkpoint"
    report = _dict(op, value, "itself")
    skipped = []
    for entry in _list(op, report.get("skipped"), "'skipped'"):
        entry = _dict(op, entry, "a 'skipped' entry")
        fields = {key: entry.get(key) for key in ("name", "type", "kind", "reason")}
        if not all(isinstance(v, str) for v in fields.values()):
            raise _violation(op, "has a malformed 'skipped' entry")
        skipped.append(fields)
    return {
        "saved": _names(op, report.get("saved"), "saved"),
        "skipped": skipped,
        **_common(op, report),
        "created": _seconds(op, report, "created"),
        "unchanged": _bool(op, report, "unchanged"),
        "duration_s": _seconds(op, report, "duration_s"),
    }


def restore_report(value: Any) -> dict[str, Any]:
    """The checked report of a restore call (``found`` False: there was no checkpoint)."""
    op = "restore"
    report = _dict(op, value, "itself")
    found = report.get("found")
    if not isinstance(found, bool):
        raise _violation(op, "has no valid 'found'")
    restored = _names(op, report.get("restored"), "restored")
    duration = _seconds(op, report, "duration_s")
    if not found:
        return {"found": False, "path": CHECKPOINT_PATH, "restored": [], "duration_s": duration}
    return {
        "found": True,
        "restored": restored,
        **_common(op, report),
        "created": _seconds(op, report, "created", optional=True),
        "duration_s": duration,
    }


def failure_record(e: CheckpointError) -> dict[str, Any]:
    """What Session.last_checkpoint / last_restore hold after an automatic one failed."""
    return {"error": str(e), "kind": e.kind, "status": e.status}
