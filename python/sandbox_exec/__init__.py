"""sandbox_exec: run untrusted notebook cells in supervised child interpreters.

    import sandbox_exec
    result = sandbox_exec.run("x = 41\\nx + 1", session="nb-42")
    result.outputs  # [{"output_type": "execute_result", "data": {"text/plain": "42"}, ...}]

See spec/api.md for the contract and docs/ for the architecture and the threat model.
"""

from .errors import PolicyError, PreludeError, SandboxError, SessionClosedError
from .policy import Policy
from .result import STATUSES, Result, Status
from .sandbox import Sandbox, Session, run

__version__ = "0.1.0"

__all__ = [
    "run",
    "Sandbox",
    "Session",
    "Policy",
    "Result",
    "Status",
    "STATUSES",
    "SandboxError",
    "PolicyError",
    "PreludeError",
    "SessionClosedError",
]
