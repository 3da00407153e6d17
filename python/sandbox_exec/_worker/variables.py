"""The worker's side of ``Session.variables()``: JSON-safe summaries of the namespace's
variables (issue 10, item 2), made without running the user's code by default.

What runs user code in an inspection is any method the object's class may define: ``__repr__``,
``__len__``, ``__sizeof__``, a ``shape`` property, even ``__class__`` (``isinstance`` reads
it). Such code may raise, hang, print or change state, and one bad variable must not cost
the listing of the others. So, with ``previews="safe"`` (the default):

- a value's class is found with ``type()`` (cannot be faked) and its name and module are read
  through ``type``'s own descriptors (a metaclass cannot override them), and every further
  step is chosen by exact class: builtins by ``type(v) is list`` and the like, arrays and
  frames by ``type(v) is numpy.ndarray`` (``pandas.DataFrame``, ``pandas.Series``), pandas'
  indexes, numpy's scalars and dtypes by being a class of that library found under its own
  name in the module that defined it, and only when the cell already imported numpy or
  pandas (this never imports them). A *subclass* a cell defined (a DataFrame subclass with a
  ``shape`` property, an ndarray subclass with ``nbytes``) is any other user object: its
  properties and methods are never run in a safe listing;
- lengths, shapes, dtypes and sizes are read only from builtins, numpy and pandas objects;
  other objects get their class and a shallow size (``object.__sizeof__``) only;
- previews are written by this module for builtins (its own bounded walk: never a user
  ``__repr__`` of an element), by numpy for arrays of non-object dtype, by pandas for the
  first rows of frames and series whose object columns, column labels and index and column
  names hold only strings, numbers and None; anything else has no preview (``None``).

With ``previews="repr"`` user code runs anyway, so there subclasses of numpy's and pandas'
classes are summarised as their base classes are.

``previews="repr"`` also calls ``repr()`` of other objects (cut to the preview length; an
exception becomes a ``<repr failed: ...>`` preview); ``previews="none"`` writes none. Every
variable is summarised under its own ``try``: an exception in one marks that one
(``"error"``) and the listing goes on. A hang (a user ``__repr__`` that never returns) is
ended by the call's deadline: the whole op runs as user code, so the deadline's interrupt
ends it with KeyboardInterrupt and the session keeps its state (the call fails as a timeout).

Skipped: names that are not strings or are longer than MAX_NAME, modules, the IPython history
(``In``, ``Out``, ``_``, ``__``, ``___``, ``_i``, ``_ii``, ``_iii``, ``_i<N>``, ``_<N>``), names
starting with ``_`` unless ``include_private``, and the prelude's names (bound to the object
the prelude left there) unless ``include_prelude``. The reply is capped in count
(``max_variables``) and in JSON size (``max_bytes``); it says how many it left out.
"""

from __future__ import annotations

import json
import re
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .main import Worker

MAX_NAME = 256  # a longer name is skipped (it is not one a person typed)
MAX_COLUMNS = 50  # per DataFrame; "columns_total" says how many it has
MAX_TEXT = 200  # type names, dtypes, column names: cut to this
_HISTORY = re.compile(r"_i{1,3}|_{1,3}|_i?\d+")
_PREVIEW_ITEMS = 8  # per container, in the safe preview
_PREVIEW_DEPTH = 3
_PREVIEW_MODES = ("safe", "repr", "none")


def _type_text(cls: type) -> tuple[str, str | None]:
    """A class's qualified name and module, read through type's own descriptors: a metaclass
    that defines ``__qualname__`` or ``__module__`` properties does not get to run."""
    try:
        qualname = type.__dict__["__qualname__"].__get__(cls, type)
    except Exception:
        qualname = None
    try:
        module = type.__dict__["__module__"].__get__(cls, type)
    except Exception:
        module = None
    name = qualname if type(qualname) is str else "?"
    return name[:MAX_TEXT], (module[:MAX_TEXT] if type(module) is str else None)


def _is(value: Any, module: str, attr: str, exact: bool = True) -> bool:
    """Whether value's class is module.attr (``exact``), or derives from it, when that module
    is already loaded. Exact unless a listing runs user code anyway (previews="repr")."""
    mod = sys.modules.get(module)
    cls = vars(mod).get(attr) if mod is not None else None
    if not isinstance(cls, type):
        return False
    return type(value) is cls if exact else issubclass(type(value), cls)


def _library_class(cls: type) -> bool:
    """Whether ``cls`` is a class of numpy, pandas or pyarrow itself: its module is one of
    theirs, already loaded, and holds ``cls`` under its own name (a user class that merely
    sets ``__module__ = "pandas"`` is not found there)."""
    qualname, module = _type_text(cls)
    if module is None or module.split(".")[0] not in ("numpy", "pandas", "pyarrow"):
        return False
    mod = sys.modules.get(module)
    return mod is not None and vars(mod).get(qualname) is cls


def _of_library(value: Any, module: str, attr: str, exact: bool) -> bool:
    """Whether value derives from module.attr and (when ``exact``) its class is that
    library's own (pandas' RangeIndex, numpy's float64), not a cell's subclass."""
    return _is(value, module, attr, exact=False) and (not exact or _library_class(type(value)))


# --- the safe preview of builtins: this module's own walk, bounded -------------------------
_SCALARS = (int, float, complex, bool, type(None))
_BRACKETS: dict[type, tuple[str, str]] = {
    list: ("[", "]"),
    tuple: ("(", ")"),
    set: ("{", "}"),
    frozenset: ("frozenset({", "})"),
    dict: ("{", "}"),
}
_EMPTY: dict[type, str] = {list: "[]", tuple: "()", set: "set()", frozenset: "frozenset()", dict: "{}"}


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(0, limit - 3)] + "..."


def _plain_repr(value: Any, limit: int, depth: int = 0) -> str | None:
    """repr() of builtin data written here (element by element, by exact class, each
    container at most _PREVIEW_ITEMS items and _PREVIEW_DEPTH deep), or None when a value is
    not builtin data. Never longer than about ``limit``."""
    t = type(value)
    if t in _SCALARS:
        if t is int and value.bit_length() > 256:
            return f"<int of {value.bit_length()} bits>"
        return repr(value)  # the builtin repr of an exact builtin scalar
    if t is str or t is bytes or t is bytearray:
        return repr(value[: max(0, limit)]) + ("..." if len(value) > limit else "")
    if t is range:
        return repr(value)
    if t in (list, tuple, set, frozenset, dict):
        if depth >= _PREVIEW_DEPTH:
            return "..."
        opening, closing = _BRACKETS[t]
        if not value:
            return _EMPTY[t]
        parts: list[str] = []
        used = len(opening) + len(closing)
        items: Any = value.items() if t is dict else value
        for i, item in enumerate(items):
            if i >= _PREVIEW_ITEMS or used >= limit:
                parts.append("...")
                break
            if t is dict:
                key = _plain_repr(item[0], limit - used, depth + 1)
                val = _plain_repr(item[1], limit - used, depth + 1)
                text = f"{key if key is not None else '<' + _type_text(type(item[0]))[0] + '>'}: " + (
                    val if val is not None else "<" + _type_text(type(item[1]))[0] + ">"
                )
            else:
                one = _plain_repr(item, limit - used, depth + 1)
                text = one if one is not None else "<" + _type_text(type(item))[0] + ">"
            parts.append(text)
            used += len(text) + 2
        if t is tuple and len(value) == 1:
            return _cut(f"({parts[0]},)", limit)
        return _cut(opening + ", ".join(parts) + closing, limit)
    return None


def _pandas_cells_plain(frame: Any) -> bool:
    """Whether formatting these pandas rows runs only pandas' code: every object-dtype
    column's cells are strings, numbers or None (not objects with a __repr__ of their own)."""
    import pandas as pd  # type: ignore[import-untyped]

    plain = (str, int, float, bool, type(None))
    columns = [frame] if type(frame) is pd.Series else [frame.iloc[:, i] for i in range(frame.shape[1])]
    for column in columns:
        if column.dtype == object:
            for cell in column.tolist():
                if type(cell) not in plain:
                    return False
    # Labels and names are formatted too (str() of each): the same rule for them.
    indexes = [frame.index] if type(frame) is pd.Series else [frame.index, frame.columns]
    for index in indexes:
        if not all(type(n) in plain for n in index.names):
            return False
        labels_are_objects = type(index) is not pd.RangeIndex and index.dtype == object
        if labels_are_objects and not all(type(label) in plain for label in index.tolist()):
            return False
    return True


def _preview(value: Any, mode: str, limit: int) -> str | None:
    if mode == "none":
        return None
    text = _plain_repr(value, limit)
    if text is not None:
        return _cut(text, limit)
    exact = mode == "safe"
    if _is(value, "numpy", "ndarray", exact):
        if value.dtype.hasobject:
            return None if mode == "safe" else _cut(repr(value), limit)
        import numpy as np

        return _cut(np.array2string(value, threshold=20, edgeitems=3, max_line_width=limit), limit)
    if _of_library(value, "numpy", "generic", exact) and not _is(value, "numpy", "object_", exact=False):
        return _cut(repr(value), limit)
    if _is(value, "pandas", "DataFrame", exact) or _is(value, "pandas", "Series", exact):
        head = value.iloc[:5, :MAX_COLUMNS] if value.ndim == 2 else value.iloc[:5]
        if mode == "safe" and not _pandas_cells_plain(head):
            return None
        if value.ndim == 2:
            return _cut(head.to_string(max_cols=10, max_colwidth=30), limit)
        return _cut(head.to_string(), limit)
    if mode == "repr":
        try:
            return _cut(repr(value), limit)
        except Exception as exc:
            return f"<repr failed: {_type_text(type(exc))[0]}>"
    return None


def _text(value: Any) -> str:
    """str() of a column name or dtype, only for the classes whose str is builtin or pandas'."""
    if type(value) in (str, int, float, bool, type(None)):
        return _cut(str(value), MAX_TEXT)
    if type(value) is tuple:
        return _cut(_plain_repr(value, MAX_TEXT) or "<tuple>", MAX_TEXT)
    if _library_class(type(value)):  # numpy's, pandas' and pyarrow's dtypes: their own str
        return _cut(str(value), MAX_TEXT)
    return "<" + _type_text(type(value))[0] + ">"


def _summary(name: str, value: Any, mode: str, preview_chars: int) -> dict[str, Any]:
    cls = type(value)
    exact = mode == "safe"  # subclasses are user objects unless user code runs anyway
    qualname, module = _type_text(cls)
    out: dict[str, Any] = {"name": name, "type": qualname, "module": module}
    try:
        if cls in (str, bytes, bytearray, list, tuple, dict, set, frozenset, range):
            out["length"] = len(value)
            out["size"] = sys.getsizeof(value)
        elif cls in _SCALARS:
            out["size"] = sys.getsizeof(value)
        elif _is(value, "numpy", "ndarray", exact):
            out["shape"] = [int(n) for n in value.shape]
            out["dtype"] = _text(value.dtype)
            out["size"] = int(value.nbytes)
        elif _is(value, "pandas", "DataFrame", exact):
            out["shape"] = [int(n) for n in value.shape]
            columns = list(value.columns[:MAX_COLUMNS])
            dtypes = list(value.dtypes.iloc[:MAX_COLUMNS])
            out["columns"] = [{"name": _text(c), "dtype": _text(d)} for c, d in zip(columns, dtypes)]
            out["columns_total"] = int(value.shape[1])
            out["size"] = int(value.memory_usage(index=True, deep=False).sum())
        elif _is(value, "pandas", "Series", exact) or _of_library(value, "pandas", "Index", exact):
            out["shape"] = [int(n) for n in value.shape]
            out["dtype"] = _text(value.dtype)
            series = _is(value, "pandas", "Series", exact=False)
            out["size"] = int(value.memory_usage(index=True, deep=False) if series else value.memory_usage(deep=False))
        else:
            out["size"] = object.__sizeof__(value)  # shallow, and no user __sizeof__
        out["preview"] = _preview(value, mode, preview_chars)
    except Exception as exc:  # this variable's summary fails alone
        out["error"] = _cut(f"{_type_text(type(exc))[0]}: could not inspect", MAX_TEXT)
    return out


def _skipped(name: Any, value: Any, worker: Worker, include_private: bool, include_prelude: bool) -> bool:
    if type(name) is not str or len(name) > MAX_NAME:
        return True
    if name in ("In", "Out", "__builtins__") or _HISTORY.fullmatch(name):
        return True
    if name.startswith("_") and not include_private:
        return True
    if issubclass(type(value), types.ModuleType):
        return True
    prelude = worker.executor.prelude_namespace
    return not include_prelude and name in prelude and prelude[name] is value


def op_variables(worker: Worker, args: dict[str, Any]) -> dict[str, Any]:
    """The op: ``{"variables": [summary, ...], "total": n, "truncated": bool}``."""
    mode = args.get("previews", "safe")
    preview_chars = args.get("preview_chars", 200)
    max_variables = args.get("max_variables", 500)
    max_bytes = args.get("max_bytes", 1 << 20)
    include_private = args.get("include_private", False) is True
    include_prelude = args.get("include_prelude", False) is True
    if mode not in _PREVIEW_MODES or not all(type(n) is int for n in (preview_chars, max_variables, max_bytes)):
        raise TypeError("variables: bad request")
    chosen: list[dict[str, Any]] = []
    total = 0
    used = 64  # the reply's envelope
    truncated = False
    with worker.user_code:  # the call's deadline interrupts it as it would a cell
        for name, value in list(worker.executor.namespace.items()):
            if _skipped(name, value, worker, include_private, include_prelude):
                continue
            total += 1
            if truncated:
                continue
            summary = _summary(name, value, mode, preview_chars)
            size = len(json.dumps(summary, default=str)) + 2
            if len(chosen) >= max_variables or used + size > max_bytes:
                truncated = True
                continue
            chosen.append(summary)
            used += size
    return {"variables": chosen, "total": total, "truncated": truncated}
