"""The exceptions sandbox_exec raises.

Only problems of the sandbox itself raise; whatever a cell's code does is reported in the
:class:`~sandbox_exec.Result`. ``SandboxError`` is defined by the C++ core (so errors from
the supervisor arrive as it) and carries ``layer``, ``call`` and ``errno`` when the core
raised it.
"""

from __future__ import annotations

from typing import Any

from ._core import SandboxError


class PolicyError(SandboxError, ValueError):
    """A Policy value is invalid, or asks for a protection this build cannot enforce."""


class SessionClosedError(SandboxError):
    """The session (or its Sandbox) was closed; create a new one."""


class WorkdirInUseError(SandboxError):
    """Another live session (in this process or another) holds the session's workdir; the
    message names it. Close that session first."""


class PreludeError(SandboxError):
    """The session's prelude raised; the session was not started."""


class CallError(SandboxError):
    """A call into a session failed: the code it ran in the sandbox raised (``ename``,
    ``evalue``, ``traceback`` say what, as a cell's error would), or the call was ended
    (``status``: "timeout", "crashed", "memory", ...; ``reason`` says why). The session stays
    usable: after a crash, the next cell or call starts a fresh interpreter."""

    def __init__(
        self,
        message: str,
        *,
        status: str = "error",
        ename: str | None = None,
        evalue: str | None = None,
        traceback: list[str] | None = None,
        reason: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.ename = ename
        self.evalue = evalue
        self.traceback = traceback or []
        self.reason = reason


class CheckpointError(CallError):
    """``Session.checkpoint()`` or ``restore()`` failed; the namespace is as it was, and so is
    the last good checkpoint. ``kind`` says why: "missing" (none saved), "corrupt" (not a
    checkpoint, truncated, or its checksum does not match), "foreign" (another format
    version, or another Python version's pickle), "unsafe" (a link, FIFO or other non-file
    where the state directory or the checkpoint should be), "no_space" (it does not fit in
    the workdir's ``disk_bytes`` or ``max_file_bytes``), "load" (intact, but unpickling it
    raised, e.g. a class or module no longer there), "disk" (the call grew the workdir past
    ``disk_bytes``), or the call's ``status`` ("timeout", "crashed", "memory", ...), else
    "error" (the pickling code raised something else)."""

    def __init__(self, message: str, *, kind: str, **fields: Any) -> None:
        super().__init__(message, **fields)
        self.kind = kind


__all__ = [
    "CallError",
    "CheckpointError",
    "PolicyError",
    "PreludeError",
    "SandboxError",
    "SessionClosedError",
    "WorkdirInUseError",
]
