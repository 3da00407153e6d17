"""The worker's side of ``Session.fetch()``: one namespace value, encoded in a format whose
reading cannot run code (issue 10, item 3).

Formats (the backend says which it can read, ``accept``; ``auto`` picks by the value's class):

- ``json``: plain data only: dict (string keys), list, tuple (as a list), str, int, float,
  bool, None, and numpy scalars of those kinds, nested at most MAX_DEPTH deep. Each value's
  class is checked exactly (a subclass of dict may run code when iterated). NaN and
  +-Infinity are not JSON: they travel as null (as the rings' encoder, pandas' to_json and
  JavaScript's JSON.stringify write them); an int that a double cannot hold is refused (the
  supervisor's JSON guard would refuse it).
- ``arrow``: a pandas DataFrame as an Apache Arrow IPC stream (``pyarrow.Table.from_pandas``,
  uncompressed: the backend refuses compressed bodies), base64 in the reply.
- ``records``: a pandas DataFrame as Jupyter's table schema
  (``application/vnd.dataresource+json``, pandas' ``to_json(orient="table")``), when pyarrow
  is missing here or in the backend.
- ``npy``: a numpy array as ``.npy`` bytes, base64 in the reply; object dtypes (which ``.npy``
  can hold only as pickles) are refused.

The encoded size is measured here before anything is sent (JSON text bytes, or the binary
payload before base64) and a value past ``max_bytes`` is refused with a ValueError naming
both sizes; the backend enforces the same limit again on what it receives.

Why base64 in the reply, not a file in the workdir: the reply is one message of at most
MAX_MESSAGE_BYTES through the rings the call already uses, under its deadline and the
supervisor's size cap and JSON guard; a file would count against the workdir's disk quota,
would need a name the cell cannot race for, and would leave something to clean up. The cost
is base64's third more bytes, and it is small next to the encoding itself (docs/benchmarks.md).
"""

from __future__ import annotations

import base64
import io
import json
import math
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .main import Worker

MAX_DEPTH = 48  # the supervisor's JSON guard allows 64 levels, the reply's envelope takes 3
_FORMATS = ("auto", "json", "arrow", "records", "npy")
_DOUBLE_MAX = 1 << 1024


def _of(value: Any, module: str, attr: str) -> bool:
    mod = sys.modules.get(module)
    cls = getattr(mod, attr, None) if mod is not None else None
    return isinstance(cls, type) and issubclass(type(value), cls)


def _plain(value: Any, depth: int, path: str) -> Any:
    """value as JSON-safe plain data (a copy), or TypeError/ValueError naming where not."""
    t = type(value)
    if t is str or t is bool or value is None:
        return value
    if t is int:
        if abs(value) >= _DOUBLE_MAX:
            raise ValueError(f"{path}: an integer too large for JSON ({value.bit_length()} bits)")
        return value
    if t is float:
        return value if math.isfinite(value) else None
    if depth >= MAX_DEPTH:
        raise ValueError(f"{path}: nested deeper than {MAX_DEPTH} levels")
    if t is list or t is tuple:
        return [_plain(v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value)]
    if t is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise TypeError(f"{path}: a key of class {type(k).__name__} (JSON keys are strings)")
            out[k] = _plain(v, depth + 1, f"{path}[{k[:40]!r}]")
        return out
    if _of(value, "numpy", "generic") and value.dtype.kind in "biuf":
        return _plain(value.item(), depth, path)
    raise TypeError(f"{path}: a {t.__name__} is not plain data (dict, list, str, int, float, bool, None)")


def _too_big(what: str, size: int, max_bytes: int) -> ValueError:
    return ValueError(f"{what} is {size} bytes, past the fetch limit of {max_bytes} bytes (max_bytes)")


def _json(value: Any, max_bytes: int) -> dict[str, Any]:
    plain = _plain(value, 0, "value")
    size = len(json.dumps(plain, allow_nan=False, separators=(",", ":")))  # ASCII: bytes
    if size > max_bytes:
        raise _too_big("the value's JSON", size, max_bytes)
    return {"format": "json", "value": plain}


def _arrow(frame: Any, max_bytes: int) -> dict[str, Any]:
    import pyarrow as pa  # type: ignore[import-untyped]

    table = pa.Table.from_pandas(frame)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:  # no compression: see the backend
        writer.write_table(table)
    data = sink.getvalue()
    if data.size > max_bytes:
        raise _too_big("the DataFrame's Arrow IPC stream", data.size, max_bytes)
    return {"format": "arrow", "data": base64.b64encode(memoryview(data)).decode("ascii"), "rows": table.num_rows}


def _refuse_object(obj: Any) -> Any:
    raise TypeError(f"a {type(obj).__name__} in a DataFrame cell has no table-schema JSON form")


def _records(frame: Any, max_bytes: int) -> dict[str, Any]:
    text = frame.to_json(orient="table", date_format="iso", default_handler=_refuse_object)
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise _too_big("the DataFrame's table-schema JSON", size, max_bytes)
    return {"format": "records", "value": json.loads(text)}


def _npy(array: Any, max_bytes: int) -> dict[str, Any]:
    import numpy as np

    if array.dtype.hasobject:
        raise TypeError(
            f"an array of dtype {array.dtype} holds Python objects: .npy can carry them only as "
            "pickles, which the backend never loads (convert it, e.g. .astype(str), or fetch a list)"
        )
    if array.nbytes > max_bytes:  # before writing a copy of a huge array
        raise _too_big("the array", array.nbytes, max_bytes)
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(array), allow_pickle=False)
    data = buffer.getbuffer()
    if data.nbytes > max_bytes:
        raise _too_big("the array's .npy", data.nbytes, max_bytes)
    return {"format": "npy", "data": base64.b64encode(data).decode("ascii")}


def _has_pyarrow() -> bool:
    try:
        import pyarrow  # noqa: F401
    except Exception:
        return False
    return True


def encode(value: Any, fmt: str, accept: list[str], max_bytes: int) -> dict[str, Any]:
    is_frame = _of(value, "pandas", "DataFrame")
    if fmt == "auto":
        if is_frame:
            fmt = "arrow" if "arrow" in accept and _has_pyarrow() else "records"
        elif _of(value, "numpy", "ndarray"):
            fmt = "npy"
        else:
            fmt = "json"
    if fmt not in accept:
        raise ValueError(f"the backend cannot read format {fmt!r} (it reads {', '.join(accept)})")
    if fmt in ("arrow", "records") and not is_frame:
        raise TypeError(f"format {fmt!r} is for pandas DataFrames, not a {type(value).__name__}")
    if fmt == "npy" and not _of(value, "numpy", "ndarray"):
        raise TypeError(f"format 'npy' is for numpy arrays, not a {type(value).__name__}")
    if fmt == "arrow":
        return _arrow(value, max_bytes)
    if fmt == "records":
        return _records(value, max_bytes)
    if fmt == "npy":
        return _npy(value, max_bytes)
    return _json(value, max_bytes)


def op_fetch(worker: Worker, args: dict[str, Any]) -> dict[str, Any]:
    """The op: ``{"format": ..., "value": ...}`` (JSON formats) or ``{"format": ..., "data":
    base64}`` (binary ones)."""
    name, fmt, accept, max_bytes = args.get("name"), args.get("format"), args.get("accept"), args.get("max_bytes")
    if (
        type(name) is not str
        or fmt not in _FORMATS
        or type(accept) is not list
        or not all(type(a) is str for a in accept)
        or type(max_bytes) is not int
    ):
        raise TypeError("fetch: bad request")
    namespace = worker.executor.namespace
    if name not in namespace:
        raise NameError(f"name {name!r} is not defined")
    with worker.user_code:  # pandas and pyarrow may take a while: the deadline interrupts them
        return encode(namespace[name], fmt, accept, max_bytes)
