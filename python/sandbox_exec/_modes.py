"""Execution modes, the backend's side: ``mode="ipython"`` (IPython's rules, the default) or
``mode="exec"`` (``exec()``'s), a session's option and a run's (see _worker/modes.py for what
each means inside the sandbox).

A session's mode is the default of its runs and the mode its prelude runs in; it reaches
the worker (and the zygote that runs the prelude for warm starts) as ``SANDBOX_EXEC_MODE``
in the worker's environment, which the worker removes before any cell runs. Being part of
that environment, it is part of a warm-start shape: exec-mode sessions fork from a zygote
of their own, whose prelude ran under exec()'s rules. An IPython-mode environment is
unchanged (no variable), so today's shapes are too.
"""

from __future__ import annotations

from typing import Literal

Mode = Literal["ipython", "exec"]
MODES: tuple[str, ...] = ("ipython", "exec")
ENV_VAR = "SANDBOX_EXEC_MODE"


def check_mode(mode: object) -> Mode:
    if mode == "ipython":
        return "ipython"
    if mode == "exec":
        return "exec"
    raise ValueError(f'mode must be "ipython" or "exec", got {mode!r}')


def with_mode(env: list[str], mode: Mode) -> list[str]:
    """The worker's environment for a session of `mode` (a policy's own SANDBOX_EXEC_MODE
    is replaced: the session's mode is the one that counts)."""
    out = [e for e in env if e.partition("=")[0] != ENV_VAR]
    if mode == "exec":
        out.append(f"{ENV_VAR}=exec")
    return out
