"""Ladder B: execution modes (issue 10, item 6). ``mode="exec"`` runs a cell with exec()'s
rules -- compared here against real exec() in a plain interpreter, cell by cell --, and
``mode="ipython"`` stays IPython's (tests_py/conformance/ compares it against ipykernel).
A session's mode is its runs' default and its prelude's, kept across restarts and part of
its warm-start and pool shape; a run may name the other one."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import sandbox_exec

pytestmark = pytest.mark.b

#: Cells whose behaviour differs between exec() and IPython (shown values, input
#: transformations, top-level await, history names, annotations, partial execution).
CELLS = [
    "x = 1\ny = x + 1",
    "y",
    "print('hi', x)\nx * 10\n",
    "def f(n):\n    return 10 / n\nz = f(2)",
    "f(0)",
    "import math as m\nres = [m.sqrt(i) for i in range(3)]\nres",
    "  indented = 1",
    "!ls",
    "%matplotlib inline",
    "del x\n'x' in dir()",
    "import asyncio\nawait asyncio.sleep(0)",
    "class C:\n    pass\nc = C()\nc.v = 3\nc",
    "q: int = 5\nann = dict(__annotations__)",
    "raise KeyError('k')",
    "_ = 'mine'\nunder = _",
    "a = 1\nb = undefined_name",
    "print(__name__)\nimport builtins\nprint(hasattr(builtins, 'get_ipython'))",
    "for i in range(3):\n    i\nlast = i;",
    "1 +",
]
#: Run after every cell, on both sides: the namespace's names (dunder names aside: a module
#: has its own), with the type and, for plain values, the repr.
INSPECT = (
    "print(sorted((k, type(v).__name__, repr(v) if type(v) in (int, str, float, list, dict, bool) else '')"
    " for k, v in globals().items() if not (k.startswith('__') and k.endswith('__'))))"
)

REFERENCE = r"""
import io, json, sys, traceback, types
cells = json.load(open(sys.argv[1]))
namespace = vars(types.ModuleType("__main__"))  # exec() in a fresh module's namespace
results = []
for count, code in enumerate(cells, 1):
    out = io.StringIO()
    sys.stdout = out
    error = None
    try:
        exec(compile(code, f"Cell In[{count}]", "exec", 0, True), namespace)
    except BaseException as exc:
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("Cell In[")]
        where = [frames[-1].filename, frames[-1].lineno] if frames else None
        if isinstance(exc, SyntaxError):
            where = [exc.filename, exc.lineno]
        error = [type(exc).__name__, str(exc), where]
    finally:
        sys.stdout = sys.__stdout__
    results.append({"stdout": out.getvalue(), "error": error})
print(json.dumps(results))
"""


def _where(error: dict[str, Any]) -> list[Any] | None:
    """The innermost cell frame of a sandbox traceback: [filename, line]."""
    found = re.findall(r'File "(Cell In\[\d+\])", line (\d+)', "\n".join(error["traceback"]))
    return [found[-1][0], int(found[-1][1])] if found else None


def _reference(cells: list[str], tmp_path: Path) -> list[dict[str, Any]]:
    (tmp_path / "cells.json").write_text(json.dumps(cells))
    (tmp_path / "reference.py").write_text(REFERENCE)
    done = subprocess.run(
        [sys.executable, "-I", str(tmp_path / "reference.py"), str(tmp_path / "cells.json")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return list(json.loads(done.stdout))


def _sandboxed(session: sandbox_exec.Session, cells: list[str], mode: str | None) -> list[dict[str, Any]]:
    results = []
    for code in cells:
        r = session.run(code, mode=mode)  # type: ignore[arg-type]
        error = None
        if r.error is not None:
            error = [r.error["ename"], r.error["evalue"], _where(r.error)]
        # exec() shows nothing: no execute_result, no display, only what was printed.
        assert [o["output_type"] for o in r.outputs if o["output_type"] != "error"] == (
            ["stream"] if r.stdout else []
        ), r.outputs
        results.append({"stdout": r.stdout, "error": error})
    return results


def _with_inspection(cells: list[str]) -> list[str]:
    return [c for cell in cells for c in (cell, INSPECT)]


@pytest.mark.parametrize("how", ["session", "run"])
def test_exec_mode_matches_exec_in_a_plain_interpreter(sandbox: sandbox_exec.Sandbox, tmp_path: Path, how: str) -> None:
    cells = _with_inspection(CELLS)
    expected = _reference(cells, tmp_path)
    if how == "session":  # the session's mode
        s = sandbox.session(f"exec-{uuid.uuid4().hex[:8]}", mode="exec")
        mode = None
    else:  # an IPython-mode session, every run in exec mode
        s = sandbox.session(f"exec-{uuid.uuid4().hex[:8]}")
        mode = "exec"
    try:
        got = _sandboxed(s, cells, mode)
    finally:
        s.close()
    for code, want, have in zip(cells, expected, got):
        if how == "run" and code == INSPECT:
            # The session started in IPython mode: its history names are there (none is
            # added by an exec-mode run); the rest must match.
            have = dict(have, stdout=re.sub(r"\('(In|Out|_i{1,3}|__?_?)', [^)]*\), ", "", have["stdout"]))
            want = dict(want, stdout=re.sub(r"\('(__?_?)', [^)]*\), ", "", want["stdout"]))
        assert have == want, code


def test_the_same_cells_in_ipython_mode_still_follow_ipython(session: sandbox_exec.Session) -> None:
    r = session.run("x = 1\nx")
    assert r.outputs[0]["output_type"] == "execute_result"
    r = session.run("  y = 2\n  y")  # dedented, shown
    assert r.status == "ok" and r.outputs[0]["data"]["text/plain"] == "2"
    r = session.run("import asyncio\nawait asyncio.sleep(0)\n'awaited'")
    assert r.outputs[0]["data"]["text/plain"] == "'awaited'"
    r = session.run("In[1], Out[1], _i1, 'get_ipython' in dir(__builtins__)")
    assert r.outputs[0]["data"]["text/plain"] == "('x = 1\\nx', 1, 'x = 1\\nx', True)"


def test_switching_modes_per_run(session: sandbox_exec.Session) -> None:
    assert session.mode == "ipython"
    session.run("v = 41")
    r = session.run("v += 1\nv", mode="exec")
    assert r.status == "ok" and r.outputs == [] and r.execution_count == 2
    r = session.run("v, In[2], '_i2' in dir(), 2 in Out")
    # the exec-mode cell is in no history: In[2] is "" and neither _i2 nor Out[2] exist
    assert r.outputs[0]["data"]["text/plain"] == "(42, '', False, False)"
    r = session.run("1 + 1", mode="exec")
    assert r.outputs == []
    assert session.run("1 + 1").outputs[0]["data"]["text/plain"] == "2"
    with pytest.raises(ValueError, match="mode"):
        session.run("1", mode="eval")  # type: ignore[arg-type]


def test_an_exec_session_keeps_its_mode_across_restarts(sandbox: sandbox_exec.Sandbox) -> None:
    name = f"exec-{uuid.uuid4().hex[:8]}"
    s = sandbox.session(name, mode="exec", prelude="import os\nP = 1\nP")
    try:
        assert sandbox.session(name) is s  # no mode named: the existing session
        with pytest.raises(ValueError, match="mode"):
            sandbox.session(name, mode="ipython")
        for _ in range(2):
            r = s.run("print(sorted(k for k in globals() if not k.startswith('__')))\n1 + 1")
            # the prelude ran in exec mode too: no history names, no _ from its last line
            assert r.stdout == "['P', 'os']\n" and r.outputs[-1]["output_type"] == "stream"
            assert s.run("import os\nprint(os.environ.get('SANDBOX_EXEC_MODE'))").stdout == "None\n"
            s.restart()
        assert s.mode == "exec"
        # an IPython-mode run in an exec session: the history appears then
        r = s.run("'In' in dir()", mode="ipython")
        assert r.outputs[0]["data"]["text/plain"] == "True"
    finally:
        s.close()


def test_pooled_sessions_are_of_their_mode(tmp_path: Path) -> None:
    with sandbox_exec.Sandbox(root=tmp_path, pool_size=1) as box:
        first = box.session("one", mode="exec")
        from conftest import wait_until

        wait_until(lambda: box.pool_idle() == 1, timeout=60)
        served = box.session("two", mode="exec")
        assert "served from the pool" in served.enforcement["start"]
        assert served.mode == "exec"
        assert served.run("print('In' in dir())\n1").stdout == "False\n"
        plain = box.session("three")  # another shape: not the exec pool's
        assert "served from the pool" not in plain.enforcement["start"]
        assert plain.run("'In' in dir()").outputs[0]["data"]["text/plain"] == "True"
        first.close()


def test_display_and_figures_in_exec_mode(session: sandbox_exec.Session) -> None:
    session.run("class Bad:\n    def __repr__(self):\n        raise ValueError('no repr')")
    for mode in ("exec", "ipython"):
        # As ipykernel: the formatter's error is shown, the cell goes on and succeeds.
        r = session.run("display(Bad())\nprint('after')", mode=mode)  # type: ignore[arg-type]
        assert r.status == "ok" and r.stdout == "after\n", mode
        assert r.outputs[0]["output_type"] == "error" and r.outputs[0]["evalue"] == "no repr"
    assert session.run("Bad()", mode="exec").status == "ok"  # exec() shows nothing
    assert session.run("Bad()").status == "error"  # IPython's execute_result fails, as ipykernel's
    r = session.run("display('shown')\nprint('printed')\n'not shown'", mode="exec")
    assert [o["output_type"] for o in r.outputs] == ["display_data", "stream"]
    import matplotlib  # noqa: F401  (the test extra: never skipped)

    r = session.run("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nNone", mode="exec")
    assert [o["output_type"] for o in r.outputs] == ["display_data"]  # a figure left open
    assert "image/png" in r.outputs[0]["data"]


def test_annotations_are_the_cells_own(session: sandbox_exec.Session) -> None:
    # A cell gets no __future__ feature of the worker's code (the worker's execute.py has
    # "from __future__ import annotations"; ipykernel gives {'x': int} here).
    for mode in ("ipython", "exec"):
        r = session.run("x: int = 1\nprint(__annotations__)", mode=mode)  # type: ignore[arg-type]
        assert r.stdout == "{'x': <class 'int'>}\n", mode


PANDAS_OPTION = "import pandas as pd\nprint(pd.get_option('display.max_columns'))"


def test_pandas_display_options_are_the_librarys_defaults_in_exec_mode(
    sandbox: sandbox_exec.Sandbox, tmp_path: Path
) -> None:
    import pandas  # noqa: F401  (the test extra: never skipped)

    plain = subprocess.run(
        [sys.executable, "-I", "-c", PANDAS_OPTION], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    notebook = "20\n"  # pandas' default when get_ipython() has a kernel (a Jupyter notebook)
    assert plain != notebook
    s = sandbox.session(f"pd-{uuid.uuid4().hex[:8]}")
    e = sandbox.session(f"pd-{uuid.uuid4().hex[:8]}", mode="exec", prelude="import pandas")
    try:
        assert s.run(PANDAS_OPTION).stdout == notebook  # imported under IPython mode
        assert s.run(PANDAS_OPTION, mode="exec").stdout == plain  # used under exec mode
        assert s.run(PANDAS_OPTION).stdout == notebook
        s.run("pd.set_option('display.max_columns', 7)", mode="exec")  # the cell's own choice
        assert s.run(PANDAS_OPTION).stdout == "7\n"
        assert s.run(PANDAS_OPTION, mode="exec").stdout == "7\n"
        # An exec session whose prelude (in its zygote, when warm) imported pandas.
        assert e.run(PANDAS_OPTION).stdout == plain
        assert e.run(PANDAS_OPTION, mode="ipython").stdout == notebook
        assert e.run(PANDAS_OPTION).stdout == plain
    finally:
        s.close()
        e.close()


def test_module_run_takes_a_mode() -> None:
    r = sandbox_exec.run("x = 5\nx", mode="exec")
    assert r.status == "ok" and r.outputs == []
    r = sandbox_exec.run("x = 5\nx")
    assert r.outputs[0]["data"]["text/plain"] == "5"
