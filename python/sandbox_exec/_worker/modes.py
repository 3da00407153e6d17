"""Execution modes: IPython's rules (``"ipython"``, the default) or ``exec()``'s (``"exec"``).

The mode is chosen per run (the request's ``"mode"``; a session's mode is the default its
backend sends, and the mode its prelude runs in). What differs, besides how the cell is
compiled and recorded (execute.py):

* ``get_ipython`` is a builtin in IPython mode, as in a Jupyter kernel, and absent in exec
  mode, as under ``exec()`` in a plain interpreter. Libraries probe it: pandas decides from
  it, when it is imported, whether it runs in a notebook (``display.max_columns`` 20) or a
  terminal (0: as many as fit);
* ``sys.displayhook`` is the executor's (execute_result, ``_`` and ``Out``) in IPython mode and
  Python's own in exec mode (``exec()`` never calls it for a module's expressions anyway);
* the library display defaults that follow from that probe: a module imported under one
  mode and used under the other gets the other mode's default, unless the cells set the
  option to something else (``_NOTEBOOK_DEFAULTS``).

The worker sets no pandas or numpy display option itself; ``display()`` and ``print`` work
in both modes.
"""

from __future__ import annotations

import builtins
import os
import sys
from typing import Any

from .shell import get_ipython

IPYTHON = "ipython"
EXEC = "exec"
MODES = (IPYTHON, EXEC)
#: How the backend tells a session's worker (and its zygote) the session's mode; removed
#: from os.environ as the worker starts, so cells never see it.
ENV_VAR = "SANDBOX_EXEC_MODE"

#: (module, option, its default in a notebook, its default in a plain interpreter): the
#: display options whose library default depends on the notebook probe.
_NOTEBOOK_DEFAULTS: tuple[tuple[str, str, Any, Any], ...] = (("pandas", "display.max_columns", 20, 0),)


def take_from_env() -> str:
    """The session's mode from the environment the backend gave (removed from it)."""
    mode = os.environ.pop(ENV_VAR, IPYTHON)
    return mode if mode in MODES else IPYTHON


class ModeSwitch:
    """The interpreter-wide state of the current mode, switched only when it changes (a cell
    that replaced sys.displayhook keeps its own while the mode stays)."""

    def __init__(self, ipython_displayhook: Any) -> None:
        self._ipython_displayhook = ipython_displayhook
        self.current = IPYTHON  # what Worker.__init__ set up

    def enter(self, mode: str) -> None:
        if mode == self.current:
            return
        self.current = mode
        if mode == EXEC:
            if getattr(builtins, "get_ipython", None) is get_ipython:
                delattr(builtins, "get_ipython")
            sys.displayhook = sys.__displayhook__
        else:
            setattr(builtins, "get_ipython", get_ipython)
            sys.displayhook = self._ipython_displayhook
        _library_defaults(mode)


def _library_defaults(mode: str) -> None:
    """An option still at the other mode's default moves to this mode's; one the cells set
    to anything else is theirs and stays. Modules not imported are left alone: they decide
    when they are imported, under the mode of that run."""
    for module_name, option, notebook, plain in _NOTEBOOK_DEFAULTS:
        module = sys.modules.get(module_name)
        get_option = getattr(module, "get_option", None)
        set_option = getattr(module, "set_option", None)
        if not callable(get_option) or not callable(set_option):
            continue
        want, other = (plain, notebook) if mode == EXEC else (notebook, plain)
        try:
            if get_option(option) == other:
                set_option(option, want)
        except Exception:  # a partly imported or patched module: its options are its own
            pass
