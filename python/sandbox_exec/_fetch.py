"""The backend's side of ``Session.fetch()``: reading one value the sandbox sent, in a format
whose reading cannot run code (issue 10, item 3; the worker's side is _worker/fetch.py).

Everything here is hostile input (a cell can replace the worker's encoder and send any reply):

- ``json``: the value as the rings delivered it (the supervisor's JSON guard bounded its
  nesting and Python footprint; parsed with the json module only). Its size is checked
  against ``max_bytes`` from the reply message's length.
- ``npy``: the header is parsed by numpy's own reader (``numpy.lib.format``, a literal of at
  most 10,000 characters) and checked *before* numpy allocates anything: no object dtype
  (``.npy`` holds objects only as pickles), and the header's shape times the item size must
  equal the bytes that follow (a forged header cannot make ``numpy.load`` allocate more than
  was sent); then ``numpy.load(..., allow_pickle=False)`` reads it (refusing pickles again).
- ``arrow``: an IPC *stream* is accepted only when every message is a schema, dictionary batch
  or record batch without body compression: a compressed body states its own decompressed
  size, so 32 MiB of zstd could expand to a terabyte in the backend (the check reads the
  messages' flatbuffers: arrow's reader verifies them, and each offset is bounds-checked
  here); no field may have an extension type (pyarrow before 14.0.1 unpickled one of them,
  and a registered one runs its class's code); the table is validated in full
  (``Table.validate(full=True)``: offsets, UTF-8, dictionary indices) before anyone reads a
  value. pyarrow older than 14.0.1 is treated as absent (the worker then sends ``records``).
  The table's *decoded* size is bounded too, because Arrow states lengths apart from bytes:
  a null column of 10**7 rows is a 224-byte stream and an 80 MB DataFrame. So the table's
  cells (see ``table_cells``) may not exceed ``max_bytes``: one per byte of the limit. A
  cell is one value of one column (a row, and recursively every value a list, struct or map
  row holds; a dictionary column's indices plus its dictionary, once), and a row of a
  list, struct, map or union column, which pandas turns into a Python object of its own (a
  dict, an array: 100-200 bytes), counts NESTED_ROW_CELLS. Types whose logical size does not
  follow from their bytes are refused: run-end encoded (a run is any length), list views
  (views may overlap, so each child value counts any number of times), string and binary
  views (every row may view the same long buffer), and dictionaries below the top level
  (pyarrow decodes those to one copy per row). What this guarantees:
  ``as_pandas=True`` converts with ``Table.to_pandas()``, which makes at most one numpy
  slot (8 bytes at most) or one Python object per cell: numbers and dates take at most 8x
  max_bytes; strings take their own bytes, which are bytes received, plus pandas' per-value
  cost (none when pandas stores them in Arrow, as pandas 3 does; a Python str of about 50
  bytes otherwise); a dictionary column stays a Categorical (its values once). The worst
  case measured (peak allocation during to_pandas, pyarrow 26, pandas 3.1) is about 12x
  max_bytes, for a struct column of nulls sent in about 300 bytes (a null column: 8x); it is
  checked to stay under 16x in tests_py/test_fetch_attacks.py
  (``test_the_decoded_size_is_bounded_by_the_limit``). The ``pyarrow.Table`` returned without
  as_pandas holds the bytes received; its own ``to_pandas()`` has the bound above, but
  ``to_pylist()`` expands a dictionary column to one Python value per row (a 50 KB value
  in 1000 rows is 50 MB): decode it with ``to_pandas()`` or check
  ``column.dictionary`` sizes first. ``to_pandas()`` reads the schema's ``pandas``
  metadata: JSON naming the index columns and dtypes, interpreted by pyarrow and pandas
  (dtype names are looked up, never imported or evaluated).
- ``records``: Jupyter's table schema (``{"schema": {"fields": [...], "primaryKey": ...},
  "data": [...]}``), each part's shape checked; ``as_pandas=True`` builds a DataFrame from
  the rows with the schema's column order and index.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import struct
from typing import Any

from ._core import MAX_MESSAGE_BYTES
from .errors import CallError

DEFAULT_MAX_BYTES = 32 << 20
#: The most a fetch can carry: the binary formats' base64 (4 bytes per 3) and the reply's
#: envelope must fit one message of the rings.
MAX_FETCH_BYTES = (MAX_MESSAGE_BYTES - (64 << 10)) // 4 * 3
FORMATS = ("auto", "json", "arrow", "records", "npy")
_ENVELOPE = 4096  # the reply's keys around the payload
_NPY_MAX_HEADER = 10_000


def reply_cap(max_bytes: int) -> int:
    """The supervisor's cap on the reply message: the payload's base64 and the envelope."""
    return -(-max_bytes // 3) * 4 + _ENVELOPE


def _refused(what: str) -> CallError:
    return CallError(f"fetch: {what}", status="violation", reason=what)


# --- what this backend reads ----------------------------------------------------------------
def pyarrow_usable() -> bool:
    """pyarrow is importable and new enough to read IPC without unpickling anything."""
    try:
        import pyarrow  # type: ignore[import-untyped]
    except Exception:
        return False
    try:
        parts = tuple(int(p) for p in pyarrow.__version__.split(".")[:3])
    except ValueError:
        return False
    return parts >= (14, 0, 1)


def accepted_formats() -> list[str]:
    return ["json", "npy", "records"] + (["arrow"] if pyarrow_usable() else [])


# --- npy -------------------------------------------------------------------------------------
def load_npy(data: bytes, max_bytes: int) -> Any:
    import numpy as np
    from numpy.lib import format as npy_format

    stream = io.BytesIO(data)
    try:
        version = npy_format.read_magic(stream)
        if version == (1, 0):
            header = npy_format.read_array_header_1_0(stream, max_header_size=_NPY_MAX_HEADER)
        elif version == (2, 0):
            header = npy_format.read_array_header_2_0(stream, max_header_size=_NPY_MAX_HEADER)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, SyntaxError, TypeError, OverflowError, MemoryError, RecursionError) as e:
        raise _refused(f"the .npy header is not valid: {e}") from None
    shape, _, dtype = header
    if dtype.hasobject:
        raise _refused(f"the .npy array has dtype {dtype}, which holds Python objects (pickles): refused")
    count = math.prod(shape)
    body = len(data) - stream.tell()
    if count > max_bytes or count * dtype.itemsize != body:
        raise _refused(f"the .npy header says {shape} of {dtype} but {body} bytes of data follow")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise _refused(f"the .npy data is not valid: {e}") from None


# --- arrow -----------------------------------------------------------------------------------
_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH = 1, 2, 3


class _Flat:
    """Just enough of a flatbuffer reader for Arrow's Message tables, every read bounds-checked."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def _unpack(self, fmt: str, at: int) -> int:
        if at < 0 or at + struct.calcsize(fmt) > len(self.data):
            raise ValueError("an offset outside the message")
        value: int = struct.unpack_from(fmt, self.data, at)[0]
        return value

    def root(self) -> int:
        return self._unpack("<I", 0)

    def field(self, table: int, index: int) -> int | None:
        """Where a table's field lies, or None when it is absent."""
        vtable = table - self._unpack("<i", table)
        size = self._unpack("<H", vtable)
        if 4 + 2 * index + 2 > size:
            return None
        offset = self._unpack("<H", vtable + 4 + 2 * index)
        return table + offset if offset else None

    def ubyte(self, at: int) -> int:
        return self._unpack("<B", at)

    def deref(self, at: int) -> int:
        return at + self._unpack("<I", at)


def _batch_compressed(flat: _Flat, batch: int) -> bool:
    return flat.field(batch, 3) is not None  # RecordBatch.compression


def _check_messages(pa: Any, buffer: Any) -> None:
    """Only schema, dictionary and record batch messages, none with a compressed body."""
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(buffer))
    while True:
        try:
            message = reader.read_next_message()
        except StopIteration:
            return
        flat = _Flat(message.metadata.to_pybytes())
        root = flat.root()
        kind_at, header_at = flat.field(root, 1), flat.field(root, 2)
        kind = flat.ubyte(kind_at) if kind_at is not None else 0
        if kind not in (_SCHEMA, _DICTIONARY_BATCH, _RECORD_BATCH) or header_at is None:
            raise ValueError(f"an IPC message of type {kind} (only schemas and record batches are read)")
        header = flat.deref(header_at)
        if kind == _DICTIONARY_BATCH:
            data_at = flat.field(header, 1)
            if data_at is None:
                raise ValueError("a dictionary batch without data")
            header = flat.deref(data_at)
        if kind != _SCHEMA and _batch_compressed(flat, header):
            raise ValueError("a compressed record batch (its stated size is not checked before it is inflated)")


def _children(t: Any) -> list[Any]:
    types = [t.field(i).type for i in range(t.num_fields)] if hasattr(t, "field") else []
    for attr in ("value_type", "key_type", "item_type", "index_type"):
        if hasattr(t, attr):
            types.append(getattr(t, attr))
    return types


def _unbounded(pa: Any, t: Any) -> str | None:
    """Why a type's decoded size does not follow from its bytes (refused), or None."""
    types = pa.types
    for name in ("is_run_end_encoded", "is_list_view", "is_large_list_view", "is_string_view", "is_binary_view"):
        check = getattr(types, name, None)  # absent in older pyarrow: so are the types
        if check is not None and check(t):
            return f"a column of type {t} (its decoded size does not follow from the bytes sent)"
    return None


def _check_types(pa: Any, schema: Any) -> None:
    pending = [(field.type, 0) for field in schema]
    seen = 0
    while pending:
        t, depth = pending.pop()
        seen += 1
        if seen > 100_000:
            raise ValueError("the schema's types are nested too many")
        if isinstance(t, pa.BaseExtensionType):
            raise ValueError(f"a column of extension type {t.extension_name!r} (not read)")
        why = _unbounded(pa, t)
        if why is not None:
            raise ValueError(why)
        if depth and pa.types.is_dictionary(t):
            raise ValueError(f"a dictionary nested in a column ({t}): decoded once per row (not read)")
        pending.extend((child, depth + 1) for child in _children(t))


#: What one row of a nested column (list, struct, map, union) counts: pandas makes a Python
#: object of it (a dict, an ndarray), 100-200 bytes, where a plain value takes 8.
NESTED_ROW_CELLS = 16


def table_cells(pa: Any, table: Any, limit: int) -> int:
    """The table's cells as the module's docstring counts them; stops counting past
    ``limit`` (the answer is then some number above it). Reads offsets only (no copies)."""
    types = pa.types
    pending = [chunk for column in table.columns for chunk in column.chunks]
    total = 0
    while pending and total <= limit:
        array = pending.pop()
        t = array.type
        n = len(array)
        nested = types.is_struct(t) or types.is_list(t) or types.is_large_list(t) or types.is_union(t)
        nested = nested or types.is_fixed_size_list(t) or types.is_map(t)
        total += n * (NESTED_ROW_CELLS if nested else 1)
        if types.is_dictionary(t):
            pending.append(array.dictionary)
        elif types.is_struct(t):
            pending.extend(array.field(i) for i in range(t.num_fields))
        elif types.is_union(t):
            pending.extend(array.field(i) for i in range(t.num_fields))  # whole children: an upper bound
        elif types.is_fixed_size_list(t):
            pending.append(array.values.slice(array.offset * t.list_size, n * t.list_size))
        elif (types.is_list(t) or types.is_large_list(t) or types.is_map(t)) and n:
            offsets = array.offsets  # this slice's n + 1 offsets
            first, last = offsets[0].as_py(), offsets[n].as_py()
            pending.append(array.values.slice(first, last - first))
    return total


def load_arrow(data: bytes, max_bytes: int) -> Any:
    import pyarrow as pa

    buffer = pa.py_buffer(data)
    try:
        _check_messages(pa, buffer)
        reader = pa.ipc.open_stream(buffer)
        _check_types(pa, reader.schema)
        table = reader.read_all()
        table.validate(full=True)
        cells = table_cells(pa, table, max_bytes)
    except (pa.ArrowException, OSError, ValueError, TypeError, OverflowError, IndexError, struct.error) as e:
        raise _refused(f"the Arrow IPC stream is not valid: {e}") from None
    if cells > max_bytes:
        raise _refused(
            f"the Arrow table decodes to more than {max_bytes} cells ({table.num_rows} rows): past the "
            f"fetch limit of {max_bytes} bytes, at most one cell per byte (max_bytes)"
        )
    return table


# --- records (Jupyter's table schema) --------------------------------------------------------
def check_records(value: Any) -> dict[str, Any]:
    """The table-schema document, its shape checked: {"schema": {"fields": [{"name": str,
    "type": str, ...}], "primaryKey": [str] (optional)}, "data": [{str: JSON value}]}."""
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("schema"), dict)
        or not isinstance(value.get("data"), list)
    ):
        raise _refused("the table-schema reply is not {'schema': {...}, 'data': [...]}")
    schema = value["schema"]
    fields = schema.get("fields")
    if not isinstance(fields, list) or not all(
        isinstance(f, dict) and isinstance(f.get("name"), str) and isinstance(f.get("type", "any"), str) for f in fields
    ):
        raise _refused("the table schema's fields are not [{'name': str, 'type': str}, ...]")
    key = schema.get("primaryKey")
    if key is not None and not (isinstance(key, list) and all(isinstance(k, str) for k in key)):
        raise _refused("the table schema's primaryKey is not a list of names")
    if not all(isinstance(row, dict) for row in value["data"]):
        raise _refused("the table's rows are not objects")
    return {"schema": schema, "data": value["data"]}


def records_to_pandas(doc: dict[str, Any]) -> Any:
    import pandas as pd  # type: ignore[import-untyped]

    fields = doc["schema"]["fields"]
    names = [f["name"] for f in fields]
    frame = pd.DataFrame.from_records(doc["data"], columns=names)
    for f in fields:
        if f.get("type") == "datetime":
            frame[f["name"]] = pd.to_datetime(frame[f["name"]], errors="coerce")
    key = doc["schema"].get("primaryKey")
    if key and all(k in names for k in key):
        frame = frame.set_index(key)
    return frame


# --- the reply -------------------------------------------------------------------------------
def _payload(reply: dict[str, Any], max_bytes: int) -> bytes:
    text = reply.get("data")
    if not isinstance(text, str):
        raise _refused("the reply has no base64 data")
    if len(text) > reply_cap(max_bytes):
        raise _refused(f"the reply's data is past the fetch limit of {max_bytes} bytes")
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise _refused(f"the reply's data is not base64: {e}") from None
    if len(data) > max_bytes:
        raise _refused(f"the value is {len(data)} bytes, past the fetch limit of {max_bytes} bytes (max_bytes)")
    return data


def decode(reply: Any, requested: str, accept: list[str], max_bytes: int, reply_bytes: int, as_pandas: bool) -> Any:
    """The fetched value from the worker's reply (hostile), or CallError."""
    if not isinstance(reply, dict) or reply.get("format") not in accept:
        raise _refused("the reply is not {'format': <a format this backend reads>, ...}")
    fmt = reply["format"]
    if requested != "auto" and fmt != requested:
        raise _refused(f"asked for {requested!r}, the reply is {fmt!r}")
    if fmt in ("json", "records"):
        if reply_bytes > max_bytes + _ENVELOPE:
            raise _refused(f"the reply is {reply_bytes} bytes, past the fetch limit of {max_bytes} bytes (max_bytes)")
        if "value" not in reply:
            raise _refused("the reply has no value")
        if fmt == "json":
            return reply["value"]
        doc = check_records(reply["value"])
        return records_to_pandas(doc) if as_pandas else doc
    data = _payload(reply, max_bytes)
    if fmt == "npy":
        return load_npy(data, max_bytes)
    table = load_arrow(data, max_bytes)
    if as_pandas:
        try:
            return table.to_pandas()
        except Exception as e:  # pyarrow's and pandas' errors, on a table that validated
            raise _refused(f"the Arrow table does not convert to pandas: {e}") from None
    return table
