"""Ladder C: a hostile cell forges the worker's replies to fetch() and variables() (it patches
sandbox_exec._worker.calls.OPS, as test_calls.py does): pickled .npy, lying .npy headers,
garbage, truncated, compressed or extension-typed Arrow, JSON bombs, replies past the limit,
wrong shapes. None of them makes the backend run code, crash or take more than the limit:
each ends in a clear CallError and the session runs on."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy  # noqa: F401  (the test extra: never skipped)
import pyarrow  # noqa: F401  (the test extra: never skipped)
import pytest

import sandbox_exec
from sandbox_exec import CallError

pytestmark = pytest.mark.c

SETUP = (
    "import base64, io, pickle, builtins, numpy as np, pyarrow as pa\n"
    "import sandbox_exec._worker.calls as c\n"
    "REPLY = None\n"
    "c.OPS['fetch'] = lambda worker, args: REPLY\n"
    "c.OPS['variables'] = lambda worker, args: REPLY\n"
    "def b64(data):\n    return base64.b64encode(bytes(data)).decode()\n"
    "def arrow(table, **options):\n"
    "    sink = pa.BufferOutputStream()\n"
    "    with pa.ipc.new_stream(sink, table.schema, options=pa.ipc.IpcWriteOptions(**options)) as w:\n"
    "        w.write_table(table)\n"
    "    return sink.getvalue().to_pybytes()\n"
    "class Payload:\n"
    "    def __init__(self, path):\n        self.path = path\n"
    "    def __reduce__(self):\n"
    '        return (builtins.exec, (f\'open({self.path!r}, "w").write("ran")\',))\n'
)


def _ok(result: sandbox_exec.Result) -> None:
    assert result.ok, result.error


@pytest.fixture
def s(sandbox: sandbox_exec.Sandbox):
    session = sandbox.session(f"forge-{uuid.uuid4().hex[:8]}")
    _ok(session.run(SETUP))
    yield session
    session.close()


def forged(s: sandbox_exec.Session, reply: str) -> None:
    _ok(s.run(f"REPLY = {reply}"))


def still_usable(s: sandbox_exec.Session) -> None:
    assert s.run("21 * 2").outputs[0]["data"]["text/plain"] == "42"


def test_a_pickled_npy_is_never_loaded(s: sandbox_exec.Session, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    _ok(
        s.run(
            f"buf = io.BytesIO()\nnp.save(buf, np.array([Payload({str(marker)!r})], dtype=object), allow_pickle=True)\n"
            "pickled = buf.getvalue()"
        )
    )
    forged(s, "{'format': 'npy', 'data': b64(pickled)}")
    with pytest.raises(CallError, match="holds Python objects"):
        s.fetch("x")
    # The same pickle with a header that claims a plain dtype: the sizes do not match.
    forged(s, "{'format': 'npy', 'data': b64(pickled.replace(b\"'|O'\", b\"'<i8'\"))}")
    with pytest.raises(CallError, match="npy"):
        s.fetch("x")
    assert not marker.exists()
    still_usable(s)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        # A header that claims 10**12 float64s over 8 bytes: refused before numpy allocates.
        (
            "b'\\x93NUMPY\\x01\\x00' + (lambda h: len(h).to_bytes(2, 'little') + h)("
            "b\"{'descr': '<f8', 'fortran_order': False, 'shape': (1000000000000,), }\".ljust(117) + b'\\n') + bytes(8)",
            "bytes of data follow",
        ),
        (
            "b'\\x93NUMPY\\x01\\x00' + (lambda h: len(h).to_bytes(2, 'little') + h)("
            "b\"{'descr': '<f8', 'fortran_order': False, 'shape': (__import__('os').getpid(),), }\".ljust(117) + b'\\n')",
            "header is not valid",
        ),
        ("b'PK\\x03\\x04' + bytes(100)", "header is not valid"),  # an .npz (zip)
        ("(lambda b: (np.save(b, np.arange(1000)), b.getvalue()[:-8])[1])(io.BytesIO())", "bytes of data follow"),
        ("b''", "header is not valid"),
    ],
    ids=["huge-shape", "code-in-header", "npz", "truncated", "empty"],
)
def test_lying_npy_is_refused(s: sandbox_exec.Session, payload: str, match: str) -> None:
    forged(s, f"{{'format': 'npy', 'data': b64({payload})}}")
    with pytest.raises(CallError, match=match) as e:
        s.fetch("x")
    assert e.value.status == "violation"
    still_usable(s)


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        ("b'\\xff\\xff\\xff\\xff' + bytes(range(256)) * 4", "not valid"),
        ("(lambda b: b[: len(b) // 2])(arrow(pa.table({'a': list(range(1000))})))", "not valid"),
        ("arrow(pa.table({'a': list(range(1000))}), compression='zstd')", "compressed record batch"),
        (
            "arrow(pa.table({'a': pa.array([0, 1, 2]).dictionary_encode()}), compression='lz4')",
            "compressed record batch",
        ),
        (
            "arrow(pa.table({'t': pa.ExtensionArray.from_storage(pa.fixed_shape_tensor(pa.int8(), [2]),"
            " pa.array([[1, 2]], pa.list_(pa.int8(), 2)))}))",
            "extension type",
        ),
        (
            # The string column's offsets [0, 5, 10] rewritten to point past its data.
            "arrow(pa.table({'s': ['hello', 'world']})).replace(np.array([0, 5, 10], np.int32).tobytes(),"
            " np.array([0, 5, 100000], np.int32).tobytes())",
            "not valid",
        ),
    ],
    ids=["garbage", "truncated", "zstd", "lz4-dictionary", "extension", "offsets-out-of-bounds"],
)
def test_bad_arrow_is_refused(s: sandbox_exec.Session, payload: str, match: str) -> None:
    forged(s, f"{{'format': 'arrow', 'data': b64({payload})}}")
    with pytest.raises(CallError, match=match) as e:
        s.fetch("x")
    assert e.value.status == "violation"
    still_usable(s)


def test_a_pickled_extension_type_runs_nothing(s: sandbox_exec.Session, tmp_path: Path) -> None:
    # pyarrow before 14.0.1 unpickled 'arrow.py_extension_type' metadata when reading IPC.
    marker = tmp_path / "ran"
    _ok(
        s.run(
            "meta = {b'ARROW:extension:name': b'arrow.py_extension_type',"
            f" b'ARROW:extension:metadata': pickle.dumps(Payload({str(marker)!r}))}}\n"
            "schema = pa.schema([pa.field('x', pa.int64(), metadata=meta)])\n"
            "evil = arrow(pa.table({'x': [1, 2]}, schema=schema))\n"
        )
    )
    forged(s, "{'format': 'arrow', 'data': b64(evil)}")
    try:
        s.fetch("x", as_pandas=True)
    except CallError:
        pass  # refusing it is fine too: what matters is that nothing ran
    assert not marker.exists()
    still_usable(s)


def test_json_bombs_are_refused_by_the_supervisor(s: sandbox_exec.Session) -> None:
    forged(s, "{'format': 'json', 'value': (lambda: [x := [], [x := [x] for _ in range(500)]][-1][-1])()}")
    with pytest.raises(CallError, match="JSON check"):
        s.fetch("x")
    forged(s, "{'format': 'json', 'value': [[]] * 2_000_000}")
    with pytest.raises(CallError, match="JSON check"):
        s.fetch("x")
    still_usable(s)


def test_replies_past_the_limit_are_refused(s: sandbox_exec.Session) -> None:
    # Past the supervisor's cap on the message (the limit's base64): dropped there.
    forged(s, "{'format': 'npy', 'data': 'A' * 200_000}")
    with pytest.raises(CallError, match="larger than the call's reply limit"):
        s.fetch("x", max_bytes=100_000)
    # Under that cap but past the limit once decoded or measured: refused here.
    forged(s, "{'format': 'npy', 'data': b64(bytes(100_002))}")
    with pytest.raises(CallError, match="past the fetch limit of 100000 bytes"):
        s.fetch("x", max_bytes=100_000)
    forged(s, "{'format': 'json', 'value': 'x' * 120_000}")
    with pytest.raises(CallError, match="past the fetch limit of 100000 bytes"):
        s.fetch("x", max_bytes=100_000)
    still_usable(s)


@pytest.mark.parametrize(
    "reply",
    [
        "[1, 2]",
        "{'format': 'exe', 'data': ''}",
        "{'format': 'npy', 'data': 123}",
        "{'format': 'npy', 'data': '!!not base64!!'}",
        "{'format': 'json'}",
        "{'format': 'records', 'value': {'schema': {'fields': 'a'}, 'data': []}}",
        "{'format': 'records', 'value': {'schema': {'fields': [{'name': 1}]}, 'data': []}}",
        "{'format': 'records', 'value': {'schema': {'fields': []}, 'data': [1]}}",
        "{'format': 'records', 'value': {'schema': {'fields': [], 'primaryKey': 3}, 'data': []}}",
        "None",
    ],
)
def test_wrong_shapes_are_refused(s: sandbox_exec.Session, reply: str) -> None:
    forged(s, reply)
    with pytest.raises(CallError) as e:
        s.fetch("x")
    assert e.value.status == "violation"
    still_usable(s)


def test_a_reply_in_another_format_than_asked_is_refused(s: sandbox_exec.Session) -> None:
    forged(s, "{'format': 'json', 'value': [1]}")
    with pytest.raises(CallError, match="asked for 'npy'"):
        s.fetch("x", format="npy")


def test_forged_variable_summaries_are_checked(s: sandbox_exec.Session) -> None:
    forged(
        s,
        "{'variables': ["
        "{'name': 'ok', 'type': 'int', 'size': 28, 'preview': 'p' * 10_000, 'extra': {'x': 1}},"
        "{'name': 'ok', 'type': 'int'},"  # a repeated name
        "{'name': 'bad_size', 'type': 'int', 'size': -1},"
        "{'name': 'bad_bool', 'type': 'int', 'length': True},"
        "{'name': 'bad_shape', 'type': 'x', 'shape': [1, 'a']},"
        "{'name': 'bad_cols', 'type': 'x', 'columns': [{'name': 1, 'dtype': 'i'}]},"
        "{'name': '', 'type': 'x'}, {'type': 'x'}, 'a string', 7, None,"
        "{'name': 'n' * 1000, 'type': 'x'},"
        "{'name': 'cols', 'type': 'T' * 1000, 'columns': [{'name': 'c', 'dtype': 'i'}] * 500, 'shape': [1] * 10},"
        "], 'total': 'lots', 'truncated': 'no'}",
    )
    got = s.variables(preview_chars=50)
    assert [v["name"] for v in got] == ["ok", "cols"]
    assert got.malformed == 11
    assert got[0]["preview"] == "p" * 50 + "..." and "extra" not in got[0]
    assert len(got[1]["columns"]) == 50 and len(got[1]["type"]) == 200
    assert got.truncated  # dropped summaries mean some variables are not here
    for reply in ("[1]", "{'variables': 'x'}"):
        forged(s, reply)
        with pytest.raises(CallError, match="variables"):
            s.variables()
    forged(s, "{'variables': [{'name': f'v{i}', 'type': 'int'} for i in range(100)], 'total': 100}")
    assert len(s.variables(max_variables=5)) == 5
    still_usable(s)


# The decoded size of an Arrow table (backend-side, no sandbox needed: what load_arrow() does
# with bytes a hostile worker sent). Arrow states lengths apart from bytes, so these tables
# are a few hundred bytes each; each is built at the largest size the rule admits for a
# 1 MiB limit, and to_pandas() must stay under 16x the limit.
def _forged_tables() -> dict[str, Any]:
    import pyarrow as pa

    return {
        "null": lambda n: pa.table({"n": pa.nulls(n)}),
        "struct of nulls": lambda n: pa.table({"s": pa.StructArray.from_arrays([pa.nulls(n)], ["a"])}),
        "empty structs": lambda n: pa.table({"s": pa.array([{}] * n, pa.struct([]))}),
        "empty lists": lambda n: pa.table({"l": pa.array([[]] * n, pa.list_(pa.null()))}),
        "zero-size fixed lists": lambda n: pa.table({"l": pa.array([[]] * n, pa.list_(pa.null(), 0))}),
        "lists of nulls": lambda n: pa.table({"l": pa.array([[None] * 4] * n, pa.list_(pa.null()))}),
        "empty maps": lambda n: pa.table({"m": pa.array([[]] * n, pa.map_(pa.int8(), pa.null()))}),
    }


def _ipc(table: Any) -> bytes:
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("kind", list(_forged_tables()))
def test_the_decoded_size_is_bounded_by_the_limit(kind: str) -> None:
    import gc
    import tracemalloc

    import pyarrow as pa

    from sandbox_exec._fetch import load_arrow, table_cells

    limit = 1 << 20
    make = _forged_tables()[kind]
    lo, hi = 1, limit  # the most rows the rule admits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if table_cells(pa, make(mid), limit) <= limit else (lo, mid - 1)
    with pytest.raises(CallError, match="cells"):
        load_arrow(_ipc(make(lo + 1)), limit)
    pa.table({"warm": [1]}).to_pandas()  # pandas' imports are not the conversion's
    data = _ipc(make(lo))
    gc.collect()
    tracemalloc.start()
    try:
        frame = load_arrow(data, limit).to_pandas()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(frame) == lo and len(data) < limit
    assert peak <= 16 * limit, f"{kind}: {lo} rows from {len(data)} bytes peaked at {peak / limit:.1f}x the limit"


@pytest.mark.parametrize(
    "column",
    [
        "pa.RunEndEncodedArray.from_arrays([10**9], ['x'])",
        "pa.array([[1]], pa.list_view(pa.int8()))",
        "pa.array(['x' * 1000] * 4, pa.string_view())",
        "pa.ListArray.from_arrays([0, 1], pa.array(['a']).dictionary_encode())",
    ],
)
def test_types_whose_decoded_size_does_not_follow_from_the_bytes_are_refused(column: str) -> None:
    import pyarrow as pa

    from sandbox_exec._fetch import load_arrow

    try:
        array = eval(column, {"pa": pa})  # the test's own literal
    except (AttributeError, pa.ArrowException, TypeError) as e:
        pytest.skip(f"this pyarrow cannot build it: {e}")
    with pytest.raises(CallError, match=r"decoded|dictionary nested"):
        load_arrow(_ipc(pa.table({"c": array})), 1 << 20)
