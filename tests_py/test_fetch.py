"""Ladder B: Session.fetch() (issue 10, item 3): one value in a format whose reading cannot
run code (JSON, Arrow IPC, Jupyter's table schema, .npy), with its own size limit, no
execution count and no outputs."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

import sandbox_exec
from sandbox_exec import CallError

pytestmark = pytest.mark.b

DATA = (
    "import numpy as np, pandas as pd\n"
    "plain = {'a': [1, 2.5, 'x', None, True], 't': (1, (2,)), 'nan': float('nan'), 'inf': -float('inf'),"
    " 'n': np.int64(7)}\n"
    "arr = np.arange(24, dtype='int32').reshape(2, 3, 4)\n"
    "strs = np.array(['ab', 'c'])\n"
    "objs = np.array([object()])\n"
    "df = pd.DataFrame({'i': range(200_000), 'f': np.linspace(0, 1, 200_000), 's': ['row'] * 200_000,"
    " 't': pd.date_range('2024-01-01', periods=200_000, freq='s')})\n"
    "small = pd.DataFrame({'x': [1, 2], 'y': ['a', None]}, index=pd.Index(['r1', 'r2'], name='key'))\n"
    "class Thing:\n    pass\n"
    "thing = Thing()\n"
)


def _ok(result: sandbox_exec.Result) -> None:
    assert result.ok, result.error


@pytest.fixture
def s(sandbox: sandbox_exec.Sandbox):
    session = sandbox.session(f"fetch-{uuid.uuid4().hex[:8]}")
    _ok(session.run(DATA))
    yield session
    session.close()


def test_plain_data_as_json(s: sandbox_exec.Session) -> None:
    count = s.execution_count
    got = s.fetch("plain")
    assert got == {"a": [1, 2.5, "x", None, True], "t": [1, [2]], "nan": None, "inf": None, "n": 7}
    assert s.fetch("plain", format="json") == got
    assert s.execution_count == count


def test_arrays_as_npy(s: sandbox_exec.Session) -> None:
    got = s.fetch("arr")
    assert isinstance(got, np.ndarray) and got.dtype == np.int32 and got.shape == (2, 3, 4)
    assert got.tolist() == np.arange(24).reshape(2, 3, 4).tolist()
    assert s.fetch("strs").tolist() == ["ab", "c"]
    with pytest.raises(CallError, match="holds Python objects") as e:
        s.fetch("objs")
    assert e.value.ename == "TypeError"


def test_a_200k_row_frame_as_arrow_and_as_records(s: sandbox_exec.Session) -> None:
    table = s.fetch("df")
    assert isinstance(table, pa.Table) and table.num_rows == 200_000
    assert table.column("s")[199_999].as_py() == "row"
    frame = s.fetch("df", as_pandas=True)
    assert isinstance(frame, pd.DataFrame) and frame.shape == (200_000, 4)
    assert frame["t"].iloc[-1] == pd.Timestamp("2024-01-01") + pd.Timedelta(seconds=199_999)
    doc = s.fetch("small", format="records")
    assert doc["schema"]["primaryKey"] == ["key"]
    assert [f["name"] for f in doc["schema"]["fields"]] == ["key", "x", "y"]
    assert doc["data"] == [{"key": "r1", "x": 1, "y": "a"}, {"key": "r2", "x": 2, "y": None}]
    back = s.fetch("small", format="records", as_pandas=True)
    assert back.index.tolist() == ["r1", "r2"] and back["x"].tolist() == [1, 2]
    assert s.fetch("small", as_pandas=True).index.tolist() == ["r1", "r2"]


def test_the_size_limit_is_checked_in_the_worker(s: sandbox_exec.Session) -> None:
    for fmt in ("arrow", "records"):
        with pytest.raises(CallError, match="past the fetch limit of 100000 bytes") as e:
            s.fetch("df", format=fmt, max_bytes=100_000)
        assert e.value.ename == "ValueError"
    with pytest.raises(CallError, match="past the fetch limit"):
        s.fetch("arr", max_bytes=50)
    s.run("big = ['x' * 100] * 1000")
    with pytest.raises(CallError, match="past the fetch limit"):
        s.fetch("big", max_bytes=10_000)
    assert len(s.fetch("big", max_bytes=200_000)) == 1000


def test_errors_are_clear_and_keep_the_session(s: sandbox_exec.Session) -> None:
    with pytest.raises(CallError, match="not plain data"):
        s.fetch("thing")
    with pytest.raises(CallError) as e:
        s.fetch("nowhere")
    assert e.value.ename == "NameError"
    with pytest.raises(CallError, match="for pandas DataFrames"):
        s.fetch("arr", format="arrow")
    with pytest.raises(CallError, match="for numpy arrays"):
        s.fetch("plain", format="npy")
    s.run("deep = []\nx = deep\nfor _ in range(100):\n    x.append([])\n    x = x[0]\n")
    with pytest.raises(CallError, match="nested deeper"):
        s.fetch("deep")
    s.run("huge = 10 ** 400\nkeys = {1: 2}")
    with pytest.raises(CallError, match="too large for JSON"):
        s.fetch("huge")
    with pytest.raises(CallError, match="JSON keys are strings"):
        s.fetch("keys")
    for bad in ({"format": "pickle"}, {"max_bytes": 0}, {"max_bytes": 1 << 30}):
        with pytest.raises(ValueError):
            s.fetch("plain", **bad)  # type: ignore[arg-type]
    r = s.run("print('still here'); 40 + 2")
    assert r.stdout == "still here\n" and r.outputs[-1]["data"]["text/plain"] == "42"


def test_records_when_the_backend_has_no_pyarrow(s: sandbox_exec.Session, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sandbox_exec._fetch.pyarrow_usable", lambda: False)
    doc = s.fetch("small")
    assert set(doc) == {"schema", "data"} and len(doc["data"]) == 2
    with pytest.raises(ValueError, match="needs pyarrow"):
        s.fetch("small", format="arrow")


def test_records_when_the_sandbox_has_no_pyarrow(s: sandbox_exec.Session) -> None:
    # (pandas itself may need pyarrow once loaded: the worker's probe is what says it is absent.)
    _ok(s.run("import sandbox_exec._worker.fetch as f\nf._has_pyarrow = lambda: False"))
    doc = s.fetch("small")
    assert doc["schema"]["primaryKey"] == ["key"]
