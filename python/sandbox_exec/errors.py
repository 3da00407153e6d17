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


__all__ = ["PolicyError", "PreludeError", "SandboxError", "SessionClosedError"]
