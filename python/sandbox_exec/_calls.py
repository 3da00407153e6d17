"""Requests that are not cells: the backend's side of a call into a session.

A call (``Session.variables()``, ``fetch()``, ``checkpoint()``, ``restore()``, ``reset()``,
``call()``) travels as a cell does — the same rings, deadline, interrupt, memory and disk
watch, crash detection — but it takes no execution count, adds nothing to the namespace's
history and produces no outputs: the worker answers with one ``{"output_type": "reply",
"value": ...}`` message, then an end-of-call report. Anything else the call printed or
displayed is dropped here.

Everything in a reply is hostile input: it passed the supervisor's JSON guard (strict JSON,
bounded nesting and footprint, cpp/supervisor/json_guard.h), is parsed here with the json
module only, and each caller checks the shape it expects (``expect_*``). Nothing is ever
unpickled or evaluated.
"""

from __future__ import annotations

import json
from typing import Any

from ._outputs import (
    DROPPED_OUTPUT,
    REJECTED_OUTPUT,
    STALE,
    STREAM_NAMES,
    MalformedMessage,
    parse_cell_done,
    parse_json,
)
from .errors import CallError

# Calls take ids of their own, far above any cell's execution count, so that an end-of-call
# report can never be taken for a cell's (the supervisor discards a report whose count is
# not the one it waits for) and a cell's stale report never for a call's.
CALL_ID_BASE = 1 << 48


def call_request(op: str, args: dict[str, Any], call_id: int) -> bytes:
    """The request of one call: strict JSON (no NaN), ASCII."""
    return json.dumps(
        {"call": op, "args": args, "execution_count": call_id}, allow_nan=False, separators=(",", ":")
    ).encode("ascii")


class CallCollector:
    """The sink of one call's events: keeps its one reply, drops everything else (a call has
    no outputs), and remembers what was wrong with a reply that was not one."""

    def __init__(self) -> None:
        self.reply: Any = None
        self.replied = False
        self.problem: str | None = None  # why no usable reply came, when none did
        self.dropped_bytes = 0
        self.reply_bytes = 0  # the reply message's length (fetch() checks its limit on it)

    def feed(self, events: list[tuple[Any, ...]]) -> bool:
        for event in events:
            kind = event[0]
            if kind in STREAM_NAMES:
                continue  # what the call printed: not a reply, not an output
            if kind == STALE:
                continue  # an earlier cell's leftovers: not this call's
            if kind in (DROPPED_OUTPUT, REJECTED_OUTPUT):
                # The supervisor dropped a message (past the size cap) or rejected it (its
                # JSON guard): the reply, if that was it, is gone.
                self.problem = self.problem or _marker_reason(kind, event[1])
                continue
            try:
                message = parse_json(bytes(event[1]))
            except MalformedMessage as e:
                self.problem = self.problem or str(e)
                continue
            if message.get("output_type") != "reply" or "value" not in message:
                continue  # a display the called code made: dropped
            if self.replied:
                self.problem = "the worker sent more than one reply"
                continue
            self.reply, self.replied = message["value"], True
            self.reply_bytes = len(event[1])
        return True


def _marker_reason(kind: Any, detail: Any) -> str:
    text = bytes(detail).decode("utf-8", "replace") if isinstance(detail, (bytes, bytearray)) else str(detail)
    if kind == DROPPED_OUTPUT:
        return f"the reply ({text} bytes) was larger than the call's reply limit"
    return f"the reply was rejected by the supervisor's JSON check: {text}"


# --- shape checks for replies (hostile input) ------------------------------------------------
def expect_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CallError(f"{what}: the worker's reply is not an object", status="violation")
    return value


def expect_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise CallError(f"{what}: the worker's reply is not a list", status="violation")
    return value


_ENDS = {"timeout": "timeout", "disk": "disk", "memory": "memory", "violation": "violation"}


def call_value(op: str, outcome: Any, collector: CallCollector, timeout: float | None, end_reason: str | None) -> Any:
    """The value of a finished call (a CellOutcome and its collector), or CallError."""
    if outcome.end != "done":
        status = _ENDS.get(outcome.end, "crashed")
        reason = (end_reason if status == "crashed" and end_reason else None) or outcome.reason or status
        if status == "timeout":
            reason = f"the call ran past its {timeout or 0:g} s deadline: {reason}"
        raise CallError(f"{op}: {reason}", status=status, reason=reason)
    try:
        done = parse_cell_done(outcome.done_payload)
    except MalformedMessage as e:
        raise CallError(f"{op}: protocol violation: {e}", status="violation", reason=str(e)) from None
    error = done["error"]
    if outcome.disk_hit:
        # The supervisor's watchdog saw the workdir past disk_bytes during the call and
        # interrupted it (where the workdir is an image, writes fail with ENOSPC instead).
        reason = "the call grew the workdir past its disk_bytes limit and was interrupted"
        raise CallError(f"{op}: {reason}", status="disk", reason=reason)
    if outcome.deadline_hit:
        reason = f"the call ran past its {timeout or 0:g} s deadline and was interrupted"
        raise CallError(f"{op}: {reason}", status="timeout", reason=reason)
    if error is not None:
        raise CallError(
            f"{op}: {error['ename']}: {error['evalue']}",
            ename=error["ename"],
            evalue=error["evalue"],
            traceback=error["traceback"],
        )
    if not collector.replied or collector.problem is not None:
        reason = collector.problem or "the worker ended the call without a reply"
        raise CallError(f"{op}: {reason}", status="violation", reason=reason)
    return collector.reply
