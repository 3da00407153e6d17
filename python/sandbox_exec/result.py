"""Result: what one cell did, as the supervisor measured it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: ``ok``: ran to the end. ``error``: the cell raised. ``timeout``: the wall-clock deadline
#: passed. ``interrupted``: Session.interrupt() (or a KeyboardInterrupt) stopped it.
#: ``crashed``: the interpreter died (signal, os._exit, killed, protocol violation).
#: ``memory``: the memory limit was hit. ``disk``: the cell met ``Policy.disk_bytes`` in its
#: workdir: it filled the size-capped workdir image (writes past it failed with ENOSPC), or,
#: where only the watchdog enforces it, grew the workdir past it (the cell was interrupted,
#: and later cells are refused until files are deleted or the session restarted).
Status = Literal["ok", "error", "timeout", "interrupted", "crashed", "memory", "disk"]
STATUSES: tuple[str, ...] = ("ok", "error", "timeout", "interrupted", "crashed", "memory", "disk")


@dataclass
class Result:
    status: Status
    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    stdout: str = ""
    stderr: str = ""
    execution_count: int | None = None
    duration_s: float = 0.0
    cpu_s: float | None = None
    peak_memory_bytes: int | None = None
    display_ids: dict[int, str] = field(default_factory=dict)
    display_updates: list[dict[str, Any]] = field(default_factory=list)
    #: Why the cell ended as it did when that was not the cell's own doing ("killed by
    #: signal 11 (SIGSEGV)", "protocol violation: ...", ...); None otherwise.
    reason: str | None = None
    #: Output bytes the per-cell cap dropped.
    truncated_bytes: int = 0
    #: True when this call found its session dead and started a fresh interpreter first.
    session_restarted: bool = False
    #: Why the previous interpreter had ended, when ``session_restarted``.
    restart_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"
