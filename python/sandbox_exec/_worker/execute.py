"""Running one cell: compile, execute, the last expression's result, tracebacks.

Follows IPython's rules (``ast_node_interactivity = "last_expr"``): only a final top-level
expression statement produces an ``execute_result``; ``None`` shows nothing; a trailing
``;`` suppresses it. Top-level ``await`` works as in IPython. Tracebacks show the user's
cell frames (as ``Cell In[N]``) and none of the worker's.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import io
import linecache
import re
import sys
import textwrap
import tokenize
import traceback
import types
from collections.abc import Callable
from typing import Any

from .display import format_bundle

_ALLOW_AWAIT = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
_CO_COROUTINE = inspect.CO_COROUTINE
_THIS_FILE = __file__
_WORKER_DIR = __file__.rsplit("/", 1)[0] + "/"


def cell_filename(execution_count: int) -> str:
    return f"Cell In[{execution_count}]"


def one_simple_statement(code: str) -> bool:
    """Whether the cell is one line (trailing blank lines aside) that holds one simple
    statement: a compound statement's header needs a ':', two statements need a ';' or a line
    break. Blank and comment-only cells are not (they hold no statement). (Four `in` tests,
    not a generator over the characters: this runs for every cell.)"""
    line = code.rstrip()
    return (
        bool(line) and line[0] != "#" and "\n" not in line and "\r" not in line and ":" not in line and ";" not in line
    )


_MAGIC_LINE = re.compile(r"^(\s*)%matplotlib\b.*$", re.MULTILINE)
_SHELL_LINE = re.compile(r"^(\s*)!(.*)$", re.MULTILINE)


def transform_cell(code: str) -> str:
    """The few IPython input transformations notebooks rely on: a cell indented as a whole
    is dedented; ``%matplotlib ...`` is a no-op (figures are always inline); ``!cmd`` runs a
    shell command. Other magics stay as written and fail as Python would."""
    if code[:1].isspace():  # else the first line is not blank and starts with no indent
        first = next((line for line in code.splitlines() if line.strip()), "")
        if first[:1] in (" ", "\t"):
            code = textwrap.dedent(code)
    if "%matplotlib" in code:
        code = _MAGIC_LINE.sub(lambda m: m.group(1) + "pass  # %matplotlib: inline already", code)
    if "!" in code:
        code = _SHELL_LINE.sub(lambda m: f"{m.group(1)}get_ipython().system({m.group(2)!r})", code)
    return code


def ends_with_semicolon(code: str) -> bool:
    """True when the last meaningful token of the cell is ';' (IPython's suppression rule)."""
    if ";" not in code:
        return False
    last = None
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type not in (
                tokenize.NEWLINE,
                tokenize.NL,
                tokenize.COMMENT,
                tokenize.ENDMARKER,
                tokenize.INDENT,
                tokenize.DEDENT,
            ):
                last = tok
    except (tokenize.TokenError, SyntaxError, IndentationError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


def compile_cell(code: str, filename: str) -> list[types.CodeType]:
    """The cell's code objects, IPython's way (``compile_statements``). A cell of one simple
    statement is compiled from its text as one interactive statement instead: the same code
    (an expression as "single", shown by the displayhook; another simple statement runs
    alike in either mode), without the round trip through Python AST objects, which costs
    more than the compile itself. A cell that fails there takes the general path, for its
    exact error.

    Every compile passes ``dont_inherit``: a cell gets no ``__future__`` feature but its own
    (IPython's compiler does the same; without it the cells inherited this file's
    ``annotations``, and their annotations became strings)."""
    if one_simple_statement(code):
        try:
            return [compile(code, filename, "single", _ALLOW_AWAIT, True)]
        except Exception:
            pass
    return compile_statements(code, filename)


def compile_module(code: str, filename: str) -> list[types.CodeType]:
    """exec()'s rule: the whole cell as one module; no expression is shown, no IPython
    input transformation, no top-level await. Compiled with no future feature but the
    cell's own (``dont_inherit``: not this file's ``annotations``)."""
    return [compile(code, filename, "exec", 0, True)]


def compile_statements(code: str, filename: str) -> list[types.CodeType]:
    """IPython's rule: the last top-level statement, when it is an expression not followed
    by ';', as an interactive statement (its value goes to the displayhook); what comes
    before it as a module."""
    tree = ast.parse(code, filename, "exec", type_comments=False)
    body = tree.body
    codes: list[types.CodeType] = []
    if body and isinstance(body[-1], ast.Expr) and not ends_with_semicolon(code):
        head, last = body[:-1], body[-1]
        if head:
            codes.append(compile(ast.Module(head, []), filename, "exec", _ALLOW_AWAIT, True))
        codes.append(compile(ast.Interactive([last]), filename, "single", _ALLOW_AWAIT, True))
    elif body:
        codes.append(compile(tree, filename, "exec", _ALLOW_AWAIT, True))
    return codes


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """Drops the worker's own frames (and asyncio's, for top-level await) from the front of
    a traceback: it starts at the first frame of a cell."""
    first = tb
    while tb is not None and not tb.tb_frame.f_code.co_filename.startswith("Cell In["):
        tb = tb.tb_next
    if tb is not None:
        return tb
    while first is not None and first.tb_frame.f_code.co_filename == _THIS_FILE:
        first = first.tb_next
    return first


def error_content(exc: BaseException, *, compiling: bool = False) -> dict[str, Any]:
    # A cell that does not compile has no frames of its own: show only where it is wrong,
    # as IPython does, not the compiler's call.
    tb = None if compiling else _user_frames(exc.__traceback__)
    te = traceback.TracebackException(type(exc), exc, tb, compact=True)
    # The innermost frame of an interrupt is the worker's SIGINT handler: not the user's.
    te.stack = traceback.StackSummary.from_list([f for f in te.stack if not f.filename.startswith(_WORKER_DIR)])
    lines = [_clip(chunk.rstrip("\n")) for chunk in te.format()][-_MAX_TRACEBACK_ENTRIES:]
    try:
        evalue = str(exc)
    except Exception as e:  # a broken __str__ must not break the report
        evalue = f"<exception str() failed: {type(e).__name__}>"
    return {"ename": type(exc).__name__, "evalue": _clip(evalue), "traceback": lines}


# An error report travels in one message; keep it far below the supervisor's message cap.
_MAX_ERROR_TEXT = 64 * 1024
_MAX_TRACEBACK_ENTRIES = 200


def _clip(text: str) -> str:
    if len(text) <= _MAX_ERROR_TEXT:
        return text
    return text[:_MAX_ERROR_TEXT] + f"... [{len(text) - _MAX_ERROR_TEXT} characters truncated]"


class Executor:
    """Owns the session's namespace and runs cells in it."""

    def __init__(self, publish: Callable[[dict[str, Any]], None], *, history: bool = True) -> None:
        """`history`: the IPython history names (``In``, ``Out``, ``_``, ``_i``...) are in the
        namespace from the start, as in a Jupyter kernel (an IPython-mode session); else they
        appear with the first IPython-mode cell, if any (an exec-mode session)."""
        self._publish = publish
        self.module = types.ModuleType("__main__")
        self.module.__dict__["__builtins__"] = builtins
        sys.modules["__main__"] = self.module
        self.namespace = self.module.__dict__
        # What a fresh module's namespace holds (__name__, __builtins__...): what a reset
        # without the prelude leaves.
        self.initial_namespace: dict[str, Any] = dict(self.namespace)
        self.input_history: list[str] = [""]  # In: In[n] is cell n's code
        self.output_history: dict[int, Any] = {}  # Out
        self.history_in_namespace = False
        if history:
            self.start_history()
        # The namespace as the prelude left it (execution count 0; the initial one without a
        # prelude): where calls find the prelude's functions.
        self.prelude_namespace: dict[str, Any] = dict(self.namespace)
        self._loop: Any = None  # the asyncio loop of top-level await, made on first use
        self.execution_count = 0
        sys.displayhook = self._displayhook

    def start_history(self) -> None:
        """Fresh IPython history names in the namespace (at the start, after a reset, or at
        the first IPython-mode cell of a session that had none)."""
        self.input_history = [""]
        self.output_history = {}
        self.namespace.update(
            {
                "In": self.input_history,
                "Out": self.output_history,
                "_": None,
                "__": None,
                "___": None,
                "_i": "",
                "_ii": "",
                "_iii": "",
            }
        )
        self.history_in_namespace = True

    # --- results -----------------------------------------------------------------------
    def _displayhook(self, value: Any) -> None:
        if value is None:
            return
        hook = getattr(value, "_ipython_display_", None)
        if callable(hook) and not isinstance(value, type):
            hook()  # IPython lets the object display itself instead of a result
            return
        ns = self.namespace
        setattr(builtins, "_", value)
        ns["___"], ns["__"], ns["_"] = ns.get("__"), ns.get("_"), value
        ns[f"_{self.execution_count}"] = value
        self.output_history[self.execution_count] = value
        data, metadata = format_bundle(value)
        self._publish(
            {
                "output_type": "execute_result",
                "execution_count": self.execution_count,
                "data": data,
                "metadata": metadata,
            }
        )

    # --- running -----------------------------------------------------------------------
    def _record_input(self, code: str) -> None:
        """IPython's input history: In[n] is cell n's code (cells that were not recorded, an
        exec-mode cell's or those before a reset, are ""). The prelude is not a cell: it
        is not recorded. The lists are the executor's: a cell that rebinds ``In`` does not
        stop the history (as in IPython)."""
        if not self.history_in_namespace:
            self.start_history()
        count = self.execution_count
        if count <= 0:
            return
        history = self.input_history
        if len(history) <= count:
            history.extend([""] * (count + 1 - len(history)))
        history[count] = code
        ns = self.namespace
        ns["_iii"], ns["_ii"], ns["_i"] = ns.get("_ii", ""), ns.get("_i", ""), code
        ns[f"_i{count}"] = code

    def _run_code(self, code_obj: types.CodeType) -> None:
        if code_obj.co_flags & _CO_COROUTINE:
            import asyncio  # only for cells with top-level await: keeps the start fast

            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(eval(code_obj, self.namespace))
        else:
            exec(code_obj, self.namespace)

    def run_cell(
        self, code: str, execution_count: int, user_code: UserCodeGuard, mode: str = "ipython"
    ) -> dict[str, Any] | None:
        """Runs one cell; returns the error content if it raised, else None. `mode` "exec":
        exec()'s rules (compile_module); the worker has switched the interpreter-wide state
        (modes.py) before."""
        self.execution_count = execution_count
        filename = cell_filename(execution_count)
        if mode == "exec":
            compile_code: Callable[[str, str], list[types.CodeType]] = compile_module
        else:
            self._record_input(code)
            code = transform_cell(code)
            compile_code = compile_cell
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        try:
            codes = compile_code(code, filename)
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            return error_content(exc, compiling=True)
        try:
            user_code.active = True  # what `with user_code:` does, without its two method calls
            try:
                for code_obj in codes:
                    self._run_code(code_obj)
            finally:
                user_code.active = False
        except BaseException as exc:  # everything the cell raises is the cell's result
            return error_content(exc)
        finally:
            if execution_count == 0:  # the prelude
                self.prelude_namespace = dict(self.namespace)
        return None


class UserCodeGuard:
    """Marks the span where SIGINT may raise KeyboardInterrupt (the user's code)."""

    def __init__(self) -> None:
        self.active = False

    def __enter__(self) -> UserCodeGuard:
        self.active = True
        return self

    def __exit__(self, *exc: object) -> None:
        self.active = False
