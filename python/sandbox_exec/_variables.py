"""The backend's side of ``Session.variables()``: checking the worker's summaries of the
namespace (issue 10, item 2; the worker's side, and what it runs or not, is
_worker/variables.py).

The reply is hostile input (a cell can replace the worker's op and send anything that passes
the supervisor's JSON guard). Each summary is rebuilt here from the keys below, each value
checked by exact type and cut to its cap; a summary that is not an object, lacks a valid
name or type, repeats a name or has a key of the wrong type is dropped and counted
(``Variables.malformed``). What comes back is only str, int, bool, None and lists and dicts
of those: nothing the sandbox sent is evaluated, and no user ``__repr__`` runs here.
"""

from __future__ import annotations

from typing import Any

from ._calls import expect_dict, expect_list

MAX_NAME = 256
MAX_TEXT = 200
MAX_COLUMNS = 50
MAX_DIMS = 64
DEFAULT_PREVIEW_CHARS = 200
DEFAULT_MAX_VARIABLES = 500
DEFAULT_MAX_BYTES = 1 << 20
PREVIEW_MODES = ("safe", "repr", "none")

#: The keys of every summary; absent ones are None.
KEYS = ("name", "type", "module", "length", "shape", "dtype", "columns", "columns_total", "size", "preview", "error")


class Variables(list[dict[str, Any]]):
    """The summaries (a list of dicts), with what the listing left out: ``total`` variables
    matched, ``truncated`` when some of them are not here (the count or size cap),
    ``malformed`` summaries the backend dropped (a worker that sent ill-shaped ones; they
    count as left out too)."""

    total: int
    truncated: bool
    malformed: int


class _Malformed(Exception):
    pass


def _str(value: Any, limit: int, *, optional: bool = True) -> str | None:
    if value is None and optional:
        return None
    if type(value) is not str:
        raise _Malformed
    return value if len(value) <= limit else value[: limit - 3] + "..."


def _count(value: Any) -> int | None:
    if value is None:
        return None
    if type(value) is not int or value < 0:
        raise _Malformed
    return value


def _summary(raw: Any, preview_chars: int) -> dict[str, Any]:
    if type(raw) is not dict:
        raise _Malformed
    name = raw.get("name")
    if type(name) is not str or not 0 < len(name) <= MAX_NAME:
        raise _Malformed
    shape = raw.get("shape")
    if shape is not None:
        if type(shape) is not list or len(shape) > MAX_DIMS:
            raise _Malformed
        shape = [_count(n) for n in shape]
        if None in shape:
            raise _Malformed
    columns = raw.get("columns")
    if columns is not None:
        if type(columns) is not list:
            raise _Malformed
        checked = []
        for column in columns[:MAX_COLUMNS]:
            if type(column) is not dict:
                raise _Malformed
            checked.append(
                {
                    "name": _str(column.get("name"), MAX_TEXT, optional=False),
                    "dtype": _str(column.get("dtype"), MAX_TEXT, optional=False),
                }
            )
        columns = checked
    return {
        "name": name,
        "type": _str(raw.get("type"), MAX_TEXT, optional=False),
        "module": _str(raw.get("module"), MAX_TEXT),
        "length": _count(raw.get("length")),
        "shape": shape,
        "dtype": _str(raw.get("dtype"), MAX_TEXT),
        "columns": columns,
        "columns_total": _count(raw.get("columns_total")),
        "size": _count(raw.get("size")),
        "preview": _str(raw.get("preview"), preview_chars + 3),
        "error": _str(raw.get("error"), MAX_TEXT),
    }


def parse_reply(reply: Any, *, preview_chars: int, max_variables: int) -> Variables:
    """The checked summaries from the worker's reply (see the module's header)."""
    body = expect_dict(reply, "variables")
    raw = expect_list(body.get("variables"), "variables")
    out = Variables()
    names: set[str] = set()
    malformed = 0
    for item in raw:
        if len(out) >= max_variables:
            break
        try:
            summary = _summary(item, preview_chars)
        except _Malformed:
            malformed += 1
            continue
        if summary["name"] in names:
            malformed += 1
            continue
        names.add(summary["name"])
        out.append(summary)
    total = body.get("total")
    truncated = body.get("truncated")
    out.total = total if type(total) is int and total >= len(out) else len(out)
    out.truncated = (truncated is True) or len(raw) > len(out) or out.total > len(out)
    out.malformed = malformed
    return out
