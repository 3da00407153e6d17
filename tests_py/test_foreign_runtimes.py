"""Other C++ runtimes in the backend's process: a backend loads many libraries beside _core
(pyzmq's libzmq through jupyter_client, pyarrow's libarrow, pandas' extensions), each with
its own C++ runtime pieces. After sessions have run (output, a crash and a restart, close),
those libraries still work in the same process; and in the other order, sessions work in a
process that loaded and used them first, and the libraries still work afterwards.

Each order runs in a fresh interpreter (a subprocess), so that "first" is true: in this
pytest process other modules may have imported any of them already. The child checks that
none of them is loaded before it means to load it, and reports what each step computed;
the assertions are here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.b

_FOREIGN = ("zmq", "jupyter_client", "pyarrow", "pandas")

_CHILD = textwrap.dedent(
    r"""
    import json, sys

    FOREIGN = ("zmq", "jupyter_client", "pyarrow", "pandas")
    ORDER, ROOT = sys.argv[1], sys.argv[2]
    report = {"loaded_at_start": sorted(m for m in FOREIGN if m in sys.modules)}


    def use_libraries(tag):
        # pyzmq: a REQ/REP pair over inproc carrying a signed jupyter_client message.
        import zmq
        from jupyter_client.session import Session

        ctx = zmq.Context()
        rep = ctx.socket(zmq.REP)
        rep.bind("inproc://foreign-" + tag)
        req = ctx.socket(zmq.REQ)
        req.connect("inproc://foreign-" + tag)
        signer = Session(key=b"foreign-runtimes", username="backend")
        signer.send(req, "execute_request", content={"code": "1 + 1", "tag": tag})
        idents, frames = signer.feed_identities(rep.recv_multipart())
        msg = signer.deserialize(frames)
        rep.send_string("pong")
        reply = req.recv_string()
        for s in (req, rep):
            s.close(linger=0)
        ctx.term()
        zmq_result = [msg["header"]["msg_type"], msg["content"], reply]

        # pyarrow: a table, a computation, an IPC round trip.
        import pyarrow as pa
        import pyarrow.compute as pc

        table = pa.table({"n": pa.array(range(100000), pa.int64()), "s": [str(i % 7) for i in range(100000)]})
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=4096)
        back = pa.ipc.open_stream(sink.getvalue()).read_all()
        arrow_result = [pc.sum(back["n"]).as_py(), back.num_rows, back.equals(table),
                        pc.count_distinct(back["s"]).as_py()]

        # pandas: from Arrow, a group-by, and back to Arrow.
        import pandas as pd

        df = back.to_pandas()
        sums = df.groupby("s")["n"].sum().sort_index()
        again = pa.Table.from_pandas(pd.DataFrame({"s": sums.index, "n": sums.values}), preserve_index=False)
        pandas_result = [int(sums.sum()), list(sums.index), again.num_rows]
        return {"zmq": zmq_result, "arrow": arrow_result, "pandas": pandas_result}


    def use_sessions(tag, fetch):
        import sandbox_exec

        out = {}
        with sandbox_exec.Sandbox(root=ROOT + "/" + tag) as box:
            s = box.session("s-" + tag)
            try:
                r = s.run("x = 20\nprint('hello', x)\nx * 2 + 2")
                out["ok"] = [r.status, r.stdout, r.outputs[-1]["data"]["text/plain"]]
                r = s.run("import ctypes\nctypes.string_at(0)")
                out["crash"] = [r.status, "SIGSEGV" in (r.reason or "")]
                s.restart()
                r = s.run("print('x' in globals())")
                out["restart"] = [r.status, r.stdout]
                if fetch:
                    s.run("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2, 3], 'b': ['x', 'y', 'z']})")
                    t = s.fetch("df", format="arrow")
                    out["fetch"] = [t.num_rows, t.column("a").to_pylist(), t.column("b").to_pylist()]
            finally:
                s.close()
            out["closed"] = not s.alive
        return out


    if ORDER == "sessions-first":
        report["sessions"] = use_sessions("first", fetch=False)
        report["loaded_after_sessions"] = sorted(m for m in FOREIGN if m in sys.modules)
        report["libraries"] = use_libraries("after")
        # And sessions again beside the loaded libraries (pyarrow now read in this process).
        report["sessions_again"] = use_sessions("again", fetch=True)
        report["libraries_again"] = use_libraries("again")
    else:
        report["libraries"] = use_libraries("before")
        report["sessions"] = use_sessions("after", fetch=True)
        report["libraries_again"] = use_libraries("again")
    print("REPORT " + json.dumps(report))
    """
)

_EXPECTED_LIBRARIES = {
    "arrow": [sum(range(100000)), 100000, True, 7],
    "pandas": [sum(range(100000)), [str(i) for i in range(7)], 7],
}


def _run(order: str, root: Path) -> dict:
    env = dict(os.environ)
    env["JE_ARROW_MALLOC_CONF"] = "background_thread:false"
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, order, str(root)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, f"rc={proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    lines = [line for line in proc.stdout.splitlines() if line.startswith("REPORT ")]
    assert len(lines) == 1, proc.stdout
    report: dict = json.loads(lines[0][len("REPORT ") :])
    return report


def _check_libraries(result: dict, tag: str) -> None:
    assert result["zmq"] == ["execute_request", {"code": "1 + 1", "tag": tag}, "pong"]
    assert result["arrow"] == _EXPECTED_LIBRARIES["arrow"]
    assert result["pandas"] == _EXPECTED_LIBRARIES["pandas"]


def _check_sessions(result: dict, fetch: bool) -> None:
    assert result["ok"] == ["ok", "hello 20\n", "42"]
    assert result["crash"] == ["crashed", True]
    assert result["restart"] == ["ok", "False\n"]
    if fetch:
        assert result["fetch"] == [3, [1, 2, 3], ["x", "y", "z"]]
    assert result["closed"] is True


def test_libraries_work_after_sessions_in_the_same_process(tmp_path: Path) -> None:
    report = _run("sessions-first", tmp_path)
    assert report["loaded_at_start"] == []
    _check_sessions(report["sessions"], fetch=False)
    # the sessions alone loaded none of them: what follows is their first use here
    assert report["loaded_after_sessions"] == []
    _check_libraries(report["libraries"], "after")
    _check_sessions(report["sessions_again"], fetch=True)
    _check_libraries(report["libraries_again"], "again")


def test_sessions_work_after_the_libraries_in_the_same_process(tmp_path: Path) -> None:
    report = _run("libraries-first", tmp_path)
    assert report["loaded_at_start"] == []
    _check_libraries(report["libraries"], "before")
    _check_sessions(report["sessions"], fetch=True)
    _check_libraries(report["libraries_again"], "again")


def test_the_child_sees_none_of_them_loaded_by_sandbox_exec_import() -> None:
    # What "first" above relies on: importing sandbox_exec loads none of the foreign libraries.
    code = f"import sys, sandbox_exec\nprint(sorted(m for m in {_FOREIGN!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "[]"
