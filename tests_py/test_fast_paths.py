"""Ladder A: the round trip's fast paths give what the general paths give (issue 9; see
docs/benchmarks.md, "Where a round trip's time goes").

  fast path                                         compared with
  ------------------------------------------------  ----------------------------------------
  a one-line cell compiled from its text            IPython's rule through Python AST objects
  _json.loads (the C scanner on the UTF-8 text)     json.loads: same value, same error
  _json.cell_request                                json.dumps of the request
  the worker's encoder and its end-of-cell report   json.dumps with the worker's options
"""

from __future__ import annotations

import dis
import io
import json
import re
import types
from typing import Any

import pytest

from sandbox_exec import _json
from sandbox_exec._worker.channel import ok_report
from sandbox_exec._worker.execute import compile_cell, compile_statements, one_simple_statement

pytestmark = pytest.mark.a

FILENAME = "Cell In[7]"

ONE_LINERS = [
    "1+1",
    "x = 1",
    "x += 1",
    "a, b = b, a",
    "import os",
    "import a.b.c as d",
    "from os import path",
    "from os import *",
    "from __future__ import annotations",
    "del x",
    "del a[0], b.c",
    "pass",
    "global x",
    "raise ValueError('a')",
    "raise",
    "assert x, 'm'",
    "print('hi')",
    "print(x, end='')",
    "'a string alone'",
    "await asyncio.sleep(0)",
    "x = [i async for i in aiter()]",
    "[i for i in range(3)]",
    "lambda x=1, *a, **k: x",
    "f(a=1)",
    "a == b",
    "x = 1 if y else 2",
    "(x := 5)",
    "-x",
    "not x",
    "None",
    "...",
    "f'{x!r}'",
    "x @ y",
    "x @= y",
    "match(x)",
    "\u00e9 = 3",
    "1+1  # a comment",
    "x = 1  ",
    "1+1\n",
    "1+1\n\n",
    "1+1 \r\n",
    # errors: the fast path's failure falls back to the general path's own error
    "x = yield",
    "(yield)",
    "nonlocal x",
    "break",
    "return 5",
    "x = 1 2",
    "del",
    "import",
    "\\",
    "  1+1",
    "x = '\x00'",
    # not one simple statement: the general path only
    "# a comment",
    "for i in range(3): i",
    "for i in range(3): i\n",
    "if x: y",
    "if x: y\n",
    "with f() as g: g\n",
    "1+1;",
    "a; b",
    "x: int = 5",
    "x = 1\ny",
    "def f(): pass",
    "{1: 2}",
    "x[1:2]",
]


def _shape(code: types.CodeType) -> tuple[Any, ...]:
    """Everything about a code object that running it or its tracebacks can see."""
    text = io.StringIO()
    dis.dis(code, file=text)
    consts = tuple(_shape(c) if isinstance(c, types.CodeType) else c for c in code.co_consts)
    return (
        re.sub(r" at 0x[0-9a-f]+", "", text.getvalue()),
        consts,
        code.co_names,
        code.co_varnames,
        code.co_flags,
        code.co_filename,
        code.co_name,
        code.co_stacksize,
        list(code.co_lines()),
        list(code.co_positions()),
        code.co_exceptiontable,
    )


def _compiled(compile_fn: Any, code: str) -> Any:
    try:
        return [_shape(c) for c in compile_fn(code, FILENAME)]
    except (SyntaxError, ValueError) as exc:
        return (type(exc), str(exc))


@pytest.mark.parametrize("code", ONE_LINERS)
def test_a_cell_compiles_to_the_general_paths_code_or_error(code):
    assert _compiled(compile_cell, code) == _compiled(compile_statements, code)


def test_the_fast_path_is_taken_only_for_one_simple_statement():
    assert all(one_simple_statement(c) for c in ("1+1", "x = 1", "print(1)\n", "await f()", "import os"))
    assert not any(one_simple_statement(c) for c in ("", "  \n", "# c", "x = 1\ny", "a; b", "if x: y", "x[1:]"))


JSON_TEXTS = [
    b'{"output_type":"execute_result","execution_count":5,"data":{"text/plain":"2"},"metadata":{}}',
    b'{"status":"ok","execution_count":5,"error":null}',
    b'{"a":[1,2.5,-3e2,true,false,null,"\\u00e9\\n"]}',
    '{"s":"\u00e9\u4e2d\U0001f600"}'.encode(),
    b' {"a":1} ',
    b'{"a":1}\n',
    b"\xef\xbb\xbf" + b'{"a":1}',
    b'{"a":NaN}',
    b'{"a":Infinity}',
    b'{"a":1}x',
    b'{"a":1',
    b"",
    b"[",
    b'"\\ud800"',
    b"\xff\xfe",
    b'{"a":"\x01"}',
    b"[" * 100_000 + b"]" * 100_000,
]


def _loaded(fn: Any, data: bytes) -> Any:
    try:
        return ("value", fn(data))
    except RecursionError:
        return ("error", RecursionError)
    except ValueError as exc:
        return ("error", type(exc), str(exc))


@pytest.mark.parametrize("data", JSON_TEXTS, ids=range(len(JSON_TEXTS)))
def test_loads_gives_json_loads_value_or_error(data):
    assert _loaded(_json.loads, data) == _loaded(json.loads, data)


@pytest.mark.parametrize("code", ["1+1", 'print("\u00e9\\n")\n', "\x00\x1f\ud800 \\ '\"", ""])
def test_the_cell_request_is_the_json_of_the_request(code):
    request = _json.cell_request(code, 12)
    assert request.isascii()
    assert json.loads(request) == json.loads(json.dumps({"code": code, "execution_count": 12}))


MESSAGES = [
    {"output_type": "execute_result", "execution_count": 3, "data": {"text/plain": "2"}, "metadata": {}},
    {"output_type": "display_data", "data": {"text/plain": "\u00e9\ud800"}, "metadata": {"w": 1.5}},
    {"status": "ok", "execution_count": 1, "error": None, "dropped_output_bytes": 0},
    {"odd": object.__new__(object), "tuple": (1, 2)},
]


@pytest.mark.parametrize("message", MESSAGES, ids=range(len(MESSAGES)))
def test_the_worker_encoder_writes_what_json_dumps_wrote(message):
    options: dict[str, Any] = {"ensure_ascii": False, "separators": (",", ":"), "default": repr, "allow_nan": False}
    assert _json.WORKER_ENCODER.encode(message) == json.dumps(message, **options)


def test_the_worker_encoder_refuses_nan_as_json_dumps_did():
    with pytest.raises(ValueError):
        _json.WORKER_ENCODER.encode({"v": float("nan")})


@pytest.mark.parametrize("count, dropped", [(1, 0), (123456, 1 << 40)])
def test_the_ok_report_is_the_encoders(count, dropped):
    report = {"status": "ok", "execution_count": count, "error": None, "dropped_output_bytes": dropped}
    assert ok_report(count, dropped) == _json.WORKER_ENCODER.encode(report)
