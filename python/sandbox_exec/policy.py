"""Policy: the limits and permissions of a session, a frozen dataclass with safe defaults.

Each field says which layer enforces it. A field that asks for a protection this build
cannot enforce raises :class:`PolicyError` when a session starts (fail closed), never
silently runs without it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Mapping

from .errors import PolicyError

MiB = 1 << 20
GiB = 1 << 30


@dataclass(frozen=True)
class Policy:
    #: Wall-clock seconds per cell (the supervisor's deadline: SIGINT, then after
    #: ``interrupt_grace_s`` the session is killed). ``None``: no deadline.
    timeout_s: float | None = 60.0
    #: CPU seconds per interpreter (RLIMIT_CPU on the worker: SIGXCPU, then the session
    #: ends as "crashed"). ``None``: unlimited.
    cpu_s: float | None = None
    #: Memory of the session. This build enforces it as the worker's address space
    #: (RLIMIT_AS): a cell that allocates past it gets MemoryError (status "memory").
    memory_bytes: int | None = None
    #: Processes and threads of the session together. Needs the cgroup pids controller,
    #: which this build does not drive yet: setting it raises PolicyError.
    max_processes: int | None = None
    #: Size of any one file written (RLIMIT_FSIZE: the write fails with EFBIG).
    max_file_bytes: int | None = 1 * GiB
    #: Disk used by the workdir plus the private /tmp. Needs a size-capped mount, which
    #: this build does not set up yet: setting it raises PolicyError.
    disk_bytes: int | None = None
    #: Descriptors per process (RLIMIT_NOFILE).
    max_open_files: int | None = 1024
    #: Output bytes per cell (streams and rich outputs together); past it output is
    #: dropped and the cell's outputs end with a truncation marker. Enforced by the
    #: supervisor, whatever the worker does.
    max_output_bytes: int = 16 * MiB
    #: ``False`` asks for no network at all. This build has no network namespace yet, so
    #: ``False`` raises PolicyError; ``True`` (the default until then) is the named opt-out.
    network: bool = True
    #: Seconds a cell has to stop after the deadline's interrupt before the session is killed.
    interrupt_grace_s: float = 2.0
    #: Seconds the interpreter may take to start and report ready (prelude excluded).
    start_timeout_s: float = 30.0
    #: Extra environment variables for the worker. Nothing of the backend's environment
    #: reaches the sandbox except what is named here.
    env: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("timeout_s", "cpu_s"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PolicyError(f"Policy.{name} must be a positive number of seconds or None, got {value!r}")
        for name in ("interrupt_grace_s", "start_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise PolicyError(f"Policy.{name} must be a positive number of seconds, got {value!r}")
        for name in ("memory_bytes", "max_processes", "max_file_bytes", "disk_bytes", "max_open_files"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise PolicyError(f"Policy.{name} must be a positive integer or None, got {value!r}")
        if not (isinstance(self.max_output_bytes, int) and self.max_output_bytes > 0):
            raise PolicyError(f"Policy.max_output_bytes must be a positive integer, got {self.max_output_bytes!r}")
        if self.max_open_files is not None and self.max_open_files < 16:
            raise PolicyError("Policy.max_open_files must be at least 16: the interpreter needs a few itself")
        if not isinstance(self.network, bool):
            raise PolicyError(f"Policy.network must be True or False, got {self.network!r}")
        if not all(isinstance(k, str) and isinstance(v, str) and "=" not in k and "\0" not in k + v
                   for k, v in dict(self.env).items()):
            raise PolicyError("Policy.env must map names (without '=' or NUL) to strings")
        object.__setattr__(self, "env", dict(self.env))

    def replace(self, **changes: object) -> "Policy":
        """A copy with some fields changed (validated like a new Policy)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def unenforceable(self) -> list[str]:
        """The fields this build cannot enforce as asked, each with the reason."""
        missing = []
        if not self.network:
            missing.append("network=False needs a network namespace, which this build does not set up yet")
        if self.max_processes is not None:
            missing.append("max_processes needs the cgroup pids controller, which this build does not drive yet")
        if self.disk_bytes is not None:
            missing.append("disk_bytes needs a size-capped workdir and /tmp, which this build does not mount yet")
        return missing

    def enforcement(self) -> dict[str, str]:
        """Which mechanism enforces each field, as this build applies it."""
        return {
            "timeout_s": "supervisor deadline (SIGINT, then kill)",
            "cpu_s": "RLIMIT_CPU (per interpreter)" if self.cpu_s else "unlimited",
            "memory_bytes": "RLIMIT_AS (address space)" if self.memory_bytes else "unlimited",
            "max_processes": "not enforced" if self.max_processes is None else "unavailable",
            "max_file_bytes": "RLIMIT_FSIZE" if self.max_file_bytes else "unlimited",
            "disk_bytes": "not enforced" if self.disk_bytes is None else "unavailable",
            "max_open_files": "RLIMIT_NOFILE" if self.max_open_files else "unlimited",
            "max_output_bytes": "supervisor output cap",
            "network": "host network (not isolated)" if self.network else "unavailable",
        }
