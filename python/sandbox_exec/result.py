"""Result: what one cell did, as the supervisor measured it; and the shapes of its outputs.

The output types are nbformat v4's: ``Output`` is what ``Result.outputs`` holds (the stored
form), ``OutputEvent`` what ``on_output`` receives (Jupyter's live message shapes, with
``transient`` display ids, ``update_display_data`` and ``clear_output``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, TypedDict

#: A mime bundle: mime type -> text (or, for JSON mime types, any JSON value).
MimeBundle = dict[str, Any]


class StreamOutput(TypedDict):
    output_type: Literal["stream"]
    name: Literal["stdout", "stderr"]
    text: str


class DisplayDataOutput(TypedDict):
    output_type: Literal["display_data"]
    data: MimeBundle
    metadata: dict[str, Any]


class ExecuteResultOutput(TypedDict):
    output_type: Literal["execute_result"]
    execution_count: int | None
    data: MimeBundle
    metadata: dict[str, Any]


class ErrorOutput(TypedDict):
    output_type: Literal["error"]
    ename: str
    evalue: str
    traceback: list[str]


#: One output as nbformat v4 stores it (``Result.outputs``).
Output = StreamOutput | DisplayDataOutput | ExecuteResultOutput | ErrorOutput


class ErrorInfo(TypedDict):
    """``Result.error``: what the cell raised (or why the supervisor ended it)."""

    ename: str
    evalue: str
    traceback: list[str]


class DisplayUpdate(TypedDict):
    """One ``update_display`` of the cell (``Result.display_updates``)."""

    display_id: str
    data: MimeBundle
    metadata: dict[str, Any]


class Transient(TypedDict):
    display_id: str


class _MaybeTransient(TypedDict, total=False):
    transient: Transient


class LiveDisplayData(DisplayDataOutput, _MaybeTransient):
    """display_data as ``on_output`` receives it: with its display id, when it has one."""


class LiveExecuteResult(ExecuteResultOutput, _MaybeTransient):
    """execute_result as ``on_output`` receives it."""


class UpdateDisplayDataEvent(TypedDict):
    output_type: Literal["update_display_data"]
    data: MimeBundle
    metadata: dict[str, Any]
    transient: Transient


class ClearOutputEvent(TypedDict):
    output_type: Literal["clear_output"]
    wait: bool


#: One live event, as ``on_output`` receives it.
OutputEvent = (
    StreamOutput | LiveDisplayData | LiveExecuteResult | ErrorOutput | UpdateDisplayDataEvent | ClearOutputEvent
)


#: ``ok``: ran to the end. ``error``: the cell raised. ``timeout``: the wall-clock deadline
#: passed. ``interrupted``: Session.interrupt() (or a KeyboardInterrupt) stopped it.
#: ``crashed``: the interpreter died (signal, os._exit, killed, protocol violation).
#: ``memory``: the memory limit was hit. ``disk``: the cell met ``Policy.disk_bytes`` in its
#: workdir: it filled the size-capped workdir image (writes past it failed with ENOSPC), or,
#: where only the watchdog enforces it, grew the workdir past it (the cell was interrupted,
#: and later cells are refused until files are deleted or the session restarted).
#: ``lost`` (sessions of ``sandbox_exec.ray`` only): the node holding the session, or its host
#: process, died before or while the cell ran; the interpreter and its namespace are gone, and
#: ``restart()`` places the session again.
Status = Literal["ok", "error", "timeout", "interrupted", "crashed", "memory", "disk", "lost"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "interrupted", "crashed", "memory", "disk", "lost")


@dataclass(frozen=True)
class Result:
    """What one cell did. Frozen: every field is final when the Result is made."""

    status: Status
    outputs: list[Output] = field(default_factory=list)
    error: ErrorInfo | None = None
    stdout: str = ""
    stderr: str = ""
    execution_count: int | None = None
    duration_s: float = 0.0
    cpu_s: float | None = None
    peak_memory_bytes: int | None = None
    display_ids: dict[int, str] = field(default_factory=dict)
    display_updates: list[DisplayUpdate] = field(default_factory=list)
    #: Why the cell ended as it did when that was not the cell's own doing ("killed by
    #: signal 11 (SIGSEGV)", "protocol violation: ...", ...); None otherwise.
    reason: str | None = None
    #: Output bytes the per-cell cap dropped.
    truncated_bytes: int = 0
    #: True when this call found its session dead and started a fresh interpreter first.
    session_restarted: bool = False
    #: Why the previous interpreter had ended, when ``session_restarted``.
    restart_reason: str | None = None

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"Result.status must be one of {', '.join(STATUSES)}, got {self.status!r}")

    @property
    def ok(self) -> bool:
        return self.status == "ok"


_FIELDS = frozenset(f.name for f in fields(Result))
_new = object.__new__


def make_result(values: dict[str, Any]) -> Result:
    """``Result(**values)`` for a ``values`` that names every field, made faster: a frozen
    dataclass's ``__init__`` sets each of its 15 fields through ``object.__setattr__``, which
    costs more than the rest of the backend's end of a cell (docs/benchmarks.md, "Where a
    round trip's time goes"). The same object: the instance dict holds the same values, so
    equality, ``repr``, pickling and frozenness are the class's own; ``__post_init__``'s check
    is kept. Every field must be given (no defaults are filled in), or it raises TypeError."""
    if values.keys() != _FIELDS:
        raise TypeError(f"make_result needs exactly Result's fields, got {sorted(values)}")
    if values["status"] not in STATUSES:
        raise ValueError(f"Result.status must be one of {', '.join(STATUSES)}, got {values['status']!r}")
    result: Result = _new(Result)
    result.__dict__.update(values)
    return result
