"""Ladder A: the round trip's fast paths give what the general paths give (issue 9; see
docs/benchmarks.md, "Where a round trip's time goes").

  fast path                                         compared with
  ------------------------------------------------  ----------------------------------------
  a one-line cell compiled from its text            IPython's rule through Python AST objects
  _json.loads (the C scanner on the UTF-8 text)     json.loads: same value, same error
  _json.cell_request                                json.dumps of the request
  the worker's encoder and its end-of-cell report   json.dumps with the worker's options
  an execute_result of text/plain only, formatted   the worker's encoder
  the supervisor's ok report, told from its bytes   the report parsed as JSON
  make_result (a Result's fields set directly)      Result(**fields): equal, same repr,
                                                    frozen, pickles, asdict
"""

from __future__ import annotations

import dataclasses
import dis
import io
import json
import pickle
import re
import types
from typing import Any

import pytest

from sandbox_exec import _json
from sandbox_exec._outputs import MalformedMessage, parse_cell_done, parse_cell_done_json
from sandbox_exec._worker.channel import ok_report, plain_result_json
from sandbox_exec._worker.execute import compile_cell, compile_statements, one_simple_statement
from sandbox_exec.result import Result, make_result

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


class _Int(int):
    def __repr__(self) -> str:
        return "one"


def _result_message(count: Any = 3, data: Any = None, metadata: Any = None) -> dict[str, Any]:
    return {
        "output_type": "execute_result",
        "execution_count": count,
        "data": {"text/plain": "2"} if data is None else data,
        "metadata": {} if metadata is None else metadata,
    }


PLAIN_TEXTS = [
    "2",
    "",
    "None",
    "'a'",
    '"\\\n\t\x00\x1f\x7f',
    "\u00e9\u4e2d\U0001f600",
    "\ud800 lone",
    "\u2028\u2029",
    "x" * 70_000,
]


@pytest.mark.parametrize("text", PLAIN_TEXTS, ids=range(len(PLAIN_TEXTS)))
def test_a_plain_execute_result_is_written_as_the_worker_encoder_writes_it(text):
    message = _result_message(count=12, data={"text/plain": text})
    fast = plain_result_json(message)
    assert fast == _json.WORKER_ENCODER.encode(message)
    # and sent as send_json() sends it: UTF-8, a lone surrogate as "?"
    assert fast is not None and fast.encode("utf-8", "replace") == _json.WORKER_ENCODER.encode(message).encode(
        "utf-8", "replace"
    )


OTHER_MESSAGES = [
    _result_message(count=True),  # bool: an int subclass, written "true"
    _result_message(count=_Int(1)),
    _result_message(count=None),
    _result_message(data={"text/plain": "2", "text/html": "<b>2</b>"}),
    _result_message(data={"text/html": "<b>2</b>"}),
    _result_message(data={"text/plain": ["a", "b"]}),
    _result_message(metadata={"isolated": True}),
    {"execution_count": 3, "output_type": "execute_result", "data": {"text/plain": "2"}, "metadata": {}},
    {**_result_message(), "transient": {"display_id": "x"}},
    {"output_type": "display_data", "data": {"text/plain": "2"}, "metadata": {}},
    {"output_type": "error", "ename": "E", "evalue": "v", "traceback": []},
]


@pytest.mark.parametrize("message", OTHER_MESSAGES, ids=range(len(OTHER_MESSAGES)))
def test_any_other_message_takes_the_worker_encoder(message):
    assert plain_result_json(message) is None


def _done(parse: Any, payload: bytes) -> Any:
    try:
        return parse(payload)
    except MalformedMessage as e:
        return ("malformed", str(e))


DONE_PAYLOADS = [
    b'{"execution_count":1,"status":"ok"}',
    b'{"execution_count":0,"status":"ok"}',
    b'{"execution_count":1234567890123456789012,"status":"ok"}',
    b'{"execution_count":01,"status":"ok"}',
    b'{"execution_count":-1,"status":"ok"}',
    b'{"execution_count":,"status":"ok"}',
    b'{"execution_count":1 ,"status":"ok"}',
    b'{"execution_count":1.5,"status":"ok"}',
    b'{"execution_count":"1","status":"ok"}',
    b'{"execution_count":1,"status":"ok"} ',
    b'{"execution_count":1,"status":"error"}',
    b'{"execution_count":\xd9\xa1,"status":"ok"}',
    b'{"execution_count":1,"error":null,"status":"ok"}',
    b'{"status":"ok"}',
]


@pytest.mark.parametrize("payload", DONE_PAYLOADS, ids=range(len(DONE_PAYLOADS)))
def test_the_ok_report_told_from_its_bytes_is_what_parsing_it_gives(payload):
    assert _done(parse_cell_done, payload) == _done(parse_cell_done_json, payload)


RESULT_FIELDS: dict[str, Any] = {
    "status": "error",
    "outputs": [{"output_type": "stream", "name": "stdout", "text": "a"}],
    "error": {"ename": "E", "evalue": "v", "traceback": ["t"]},
    "stdout": "a",
    "stderr": "b",
    "execution_count": 4,
    "duration_s": 1.5e-5,
    "cpu_s": None,
    "peak_memory_bytes": 1 << 20,
    "display_ids": {0: "d"},
    "display_updates": [],
    "reason": "why",
    "truncated_bytes": 7,
    "session_restarted": True,
    "restart_reason": "crash",
}


def test_make_result_makes_the_result_the_constructor_makes():
    fast, general = make_result(dict(RESULT_FIELDS)), Result(**RESULT_FIELDS)
    assert type(fast) is Result
    assert fast == general and repr(fast) == repr(general)
    assert dataclasses.asdict(fast) == dataclasses.asdict(general)
    assert list(vars(fast)) == list(vars(general))  # fields in the class's order
    assert pickle.loads(pickle.dumps(fast)) == general
    assert dataclasses.replace(fast, status="ok") == dataclasses.replace(general, status="ok")
    assert not fast.ok and make_result({**RESULT_FIELDS, "status": "ok"}).ok
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.status = "ok"  # type: ignore[misc]
    with pytest.raises(TypeError):
        hash(fast)  # unhashable, as the constructor's (its fields hold lists)


def test_make_result_refuses_what_the_constructor_refuses():
    with pytest.raises(ValueError):
        make_result({**RESULT_FIELDS, "status": "fine"})
    with pytest.raises(ValueError):
        Result(**{**RESULT_FIELDS, "status": "fine"})
    partial = dict(RESULT_FIELDS)
    del partial["reason"]
    with pytest.raises(TypeError):
        make_result(partial)
    with pytest.raises(TypeError):
        make_result({**RESULT_FIELDS, "extra": 1})
