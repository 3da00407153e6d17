"""The errors of sandbox_exec.ray."""

from __future__ import annotations

from ..errors import SandboxError


class PlacementError(SandboxError):
    """No node of the cluster has room for the session: what it asked for, what each node
    has free, and whether it could ever fit."""


class SessionLostError(SandboxError):
    """The session's node (or its host process) died: its interpreter and namespace are
    gone. ``RaySession.restart()`` places it again."""
