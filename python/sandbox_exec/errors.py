"""The exceptions sandbox_exec raises.

Only problems of the sandbox itself raise; whatever a cell's code does is reported in the
:class:`~sandbox_exec.Result`. ``SandboxError`` is defined by the C++ core (so errors from
the supervisor arrive as it) and carries ``layer``, ``call`` and ``errno`` when the core
raised it.
"""

from __future__ import annotations

from ._core import SandboxError


class PolicyError(SandboxError, ValueError):
    """A Policy value is invalid, or asks for a protection this build cannot enforce."""


class SessionClosedError(SandboxError):
    """The session (or its Sandbox) was closed; create a new one."""


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


__all__ = ["CallError", "PolicyError", "PreludeError", "SandboxError", "SessionClosedError"]
