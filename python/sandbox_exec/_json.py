"""The json module's results for the few small messages of every cell, without its per-call
Python work: ``json.loads`` of bytes guesses the encoding and matches whitespace in Python
before its C scanner runs, and ``json.dumps`` with options builds a new encoder each call.
Each of those costs more than parsing or writing a message like ``{"status":"ok"}`` itself
(docs/benchmarks.md, "Where a round trip's time goes"). Shared by the backend and the worker.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

# The decoder's scanner: C (_json), or the json module's pure-Python one where _json is missing.
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_encode_ascii: Any = json.encoder.encode_basestring_ascii

#: The worker's encoding of every message: strict JSON (no NaN or Infinity), UTF-8, compact,
#: ``repr()`` for what JSON cannot hold. One instance: ``encode`` keeps no state between calls.
WORKER_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=repr, allow_nan=False)


def loads(data: bytes) -> Any:
    """``json.loads(data)``, same value and same errors: the C scanner reads the UTF-8 text
    from its first character; a text it does not take whole (whitespace around the value, a
    byte-order mark, invalid UTF-8 or JSON) goes through ``json.loads`` itself."""
    try:
        text = data.decode("utf-8")
        value, end = _scan(text, 0)
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
        return json.loads(data)
    if end != len(text):
        return json.loads(data)
    return value


def cell_request(code: str, execution_count: int, mode: str = "ipython") -> bytes:
    """The backend's request for one cell: what ``json.dumps({"code": code, "execution_count":
    execution_count}).encode("ascii")`` writes, without the spaces; ``"mode":"exec"`` added
    for an exec-mode run (an IPython-mode request is unchanged: the worker's default)."""
    extra = ',"mode":"exec"' if mode == "exec" else ""
    return f'{{"code":{_encode_ascii(code)},"execution_count":{int(execution_count)}{extra}}}'.encode("ascii")
