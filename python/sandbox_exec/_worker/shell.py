"""The little of IPython's shell that notebook code calls without importing IPython.

``get_ipython`` is a builtin inside a Jupyter kernel. Libraries probe it to learn they are in
a notebook (pandas shows 20 columns of a wide DataFrame there instead of fitting a terminal),
and notebooks exported as scripts call ``get_ipython().run_line_magic("matplotlib",
"inline")``. This shim answers those; it is not IPython, and magics other than
``%matplotlib`` raise NotImplementedError (docs/migration.md).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar


class SandboxShell:
    #: pandas (``is_terminal``) and others read the presence of ``kernel`` as "a notebook".
    kernel: ClassVar[Any] = None
    config: ClassVar[dict[str, Any]] = {"IPKernelApp": {}}

    def run_line_magic(self, magic_name: str, line: str, _stack_depth: int = 1) -> None:
        if magic_name == "matplotlib":
            return None  # figures are always inline here
        raise NotImplementedError(f"%{magic_name} is not available in sandbox_exec")

    def run_cell_magic(self, magic_name: str, line: str, cell: str) -> None:
        raise NotImplementedError(f"%%{magic_name} is not available in sandbox_exec")

    def system(self, cmd: str) -> int:
        """``!cmd``: the command's output appears in the cell, as in Jupyter."""
        return os.system(cmd)

    def __repr__(self) -> str:
        return "<sandbox_exec shell>"


_shell = SandboxShell()


def get_ipython() -> SandboxShell:
    return _shell
