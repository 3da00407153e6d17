"""sandbox_exec: run untrusted notebook cells in supervised child interpreters.

    import sandbox_exec
    result = sandbox_exec.run("x = 41\\nx + 1", session="nb-42")
    result.outputs  # [{"output_type": "execute_result", "data": {"text/plain": "42"}, ...}]

See the API contract (docs/api.md in the project) and docs/ for the architecture and the threat model.
"""

from typing import TYPE_CHECKING, Any

from ._version import __version__ as __version__
from .errors import (
    CallError,
    CheckpointError,
    PolicyError,
    PreludeError,
    SandboxError,
    SessionClosedError,
    WorkdirInUseError,
)
from .policy import Mount, Policy
from .result import (
    STATUSES,
    ClearOutputEvent,
    DisplayDataOutput,
    DisplayUpdate,
    ErrorInfo,
    ErrorOutput,
    ExecuteResultOutput,
    LiveDisplayData,
    LiveExecuteResult,
    Output,
    OutputEvent,
    Result,
    Status,
    StreamOutput,
    Transient,
    UpdateDisplayDataEvent,
)

if TYPE_CHECKING:
    from ._audit import AuditLimit, AuditRecord
    from .sandbox import Sandbox, Session, run


def __getattr__(name: str) -> Any:
    # The supervisor side (threads, asyncio, the spawn logic) loads on first use: the worker
    # inside each sandbox imports this package too, and must not pay for it at every start.
    if name in ("Sandbox", "Session", "run"):
        from . import sandbox

        return getattr(sandbox, name)
    if name in ("AuditRecord", "AuditLimit"):  # the audit trail's record (docs/api.md)
        from . import _audit

        return getattr(_audit, name)
    raise AttributeError(f"module 'sandbox_exec' has no attribute {name!r}")


__all__ = [
    "STATUSES",
    "AuditLimit",
    "AuditRecord",
    "CallError",
    "CheckpointError",
    "ClearOutputEvent",
    "DisplayDataOutput",
    "DisplayUpdate",
    "ErrorInfo",
    "ErrorOutput",
    "ExecuteResultOutput",
    "LiveDisplayData",
    "LiveExecuteResult",
    "Mount",
    "Output",
    "OutputEvent",
    "Policy",
    "PolicyError",
    "PreludeError",
    "Result",
    "Sandbox",
    "SandboxError",
    "Session",
    "SessionClosedError",
    "Status",
    "StreamOutput",
    "Transient",
    "UpdateDisplayDataEvent",
    "WorkdirInUseError",
    "run",
]
