#!/usr/bin/env python3
"""Session.fetch() of a 200,000-row DataFrame (issue 10, item 3): size and time, each as a
ratio to the same work done in-process in the same run.

Methods, interleaved round by round (a noisy moment on a shared machine hits them all alike):

- ``inproc_arrow``: what fetch('df') does minus the boundary, in one process: pyarrow's
  ``Table.from_pandas`` + IPC stream write + IPC read + ``Table.validate(full=True)``
  (pandas' own to-Arrow and from-Arrow);
- ``fetch_arrow``: ``session.fetch("df")`` (a pyarrow.Table);
- ``inproc_arrow_pandas`` / ``fetch_arrow_pandas``: the same, ending in ``to_pandas()``;
- ``inproc_records`` / ``fetch_records``: pandas' ``to_json(orient="table")`` + ``json.loads``,
  and ``session.fetch("df", format="records")``.

Usage: .venv/bin/python bench/fetch.py [--rounds N] [--rows N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

import sandbox_exec

FRAME = (
    "import numpy as np, pandas as pd\n"
    "n = {rows}\n"
    "df = pd.DataFrame({{'id': np.arange(n), 'x': np.linspace(0.0, 1.0, n), 'name': [f'row {{i}}' for i in range(n)],"
    " 'when': pd.date_range('2024-01-01', periods=n, freq='s'), 'cat': pd.Categorical(['a', 'b', 'c', 'd'] * (n // 4))}})\n"
)


def inproc_arrow(df: pd.DataFrame, to_pandas: bool) -> object:
    table = pa.Table.from_pandas(df)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    back = pa.ipc.open_stream(sink.getvalue()).read_all()
    back.validate(full=True)
    return back.to_pandas() if to_pandas else back


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    ns: dict[str, object] = {}
    exec(FRAME.format(rows=args.rows), ns)
    df = ns["df"]
    assert isinstance(df, pd.DataFrame)
    with sandbox_exec.Sandbox(root=tempfile.mkdtemp(prefix="bench-fetch-")) as box, box.session("bench") as s:
        r = s.run(FRAME.format(rows=args.rows))
        assert r.ok, r.error
        methods: dict[str, Callable[[], object]] = {
            "inproc_arrow": lambda: inproc_arrow(df, False),
            "fetch_arrow": lambda: s.fetch("df"),
            "inproc_arrow_pandas": lambda: inproc_arrow(df, True),
            "fetch_arrow_pandas": lambda: s.fetch("df", as_pandas=True),
            "inproc_records": lambda: json.loads(df.to_json(orient="table", date_format="iso")),
            "fetch_records": lambda: s.fetch("df", format="records", max_bytes=48_000_000),
        }
        times: dict[str, list[float]] = {m: [] for m in methods}
        for m in methods.values():  # warm up (imports, first allocations)
            m()
        for _ in range(args.rounds):
            for name, m in methods.items():
                t0 = time.perf_counter()
                m()
                times[name].append(time.perf_counter() - t0)
        table = s.fetch("df")
        assert isinstance(table, pa.Table) and table.num_rows == args.rows
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        arrow_bytes = sink.getvalue().size
        records_bytes = len(df.to_json(orient="table", date_format="iso"))
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    print(f"rows {args.rows}, frame memory_usage(deep=True) {int(df.memory_usage(deep=True).sum())} bytes")
    print(
        f"Arrow IPC {arrow_bytes} bytes (base64 in the reply {-(-arrow_bytes // 3) * 4}); records JSON {records_bytes} bytes"
    )
    for k, v in med.items():
        print(f"{k:22s} median {v:8.1f} ms  (min {min(times[k]) * 1000:.1f})")
    for kind in ("arrow", "arrow_pandas", "records"):
        print(f"ratio fetch_{kind} / inproc_{kind}: {med['fetch_' + kind] / med['inproc_' + kind]:.2f}")
    print(f"np {np.__version__} pandas {pd.__version__} pyarrow {pa.__version__}")


if __name__ == "__main__":
    main()
