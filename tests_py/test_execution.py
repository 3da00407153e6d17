"""Ladder B: real cells end to end: state, every output type, ordering, errors, IPython's
rules for the last expression, and nbformat-valid outputs."""

from __future__ import annotations

import nbformat
import pytest

pytestmark = pytest.mark.b


def validate_outputs(outputs):
    """Every Result.outputs must validate as a code cell's outputs under nbformat v4."""
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("x", execution_count=1)
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    nb.cells.append(cell)
    nbformat.validate(nb)


def test_state_persists_across_cells(session):
    assert session.run("x = 41").status == "ok"
    r = session.run("x + 1")
    assert r.status == "ok"
    assert r.outputs == [
        {"output_type": "execute_result", "execution_count": 2, "data": {"text/plain": "42"}, "metadata": {}}
    ]


def test_execution_count_counts_like_jupyter(session):
    counts = [session.run(code).execution_count for code in ("1", "1/0", "1 +", "pass")]
    assert counts == [1, 2, 3, 4]
    assert session.execution_count == 4


def test_stream_outputs_and_concatenation(session):
    r = session.run("import sys\nprint('out 1')\nprint('out 2')\nprint('err', file=sys.stderr)")
    assert r.stdout == "out 1\nout 2\n"
    assert r.stderr == "err\n"
    # consecutive chunks of one stream are merged, as Jupyter stores them
    assert r.outputs == [
        {"output_type": "stream", "name": "stdout", "text": "out 1\nout 2\n"},
        {"output_type": "stream", "name": "stderr", "text": "err\n"},
    ]
    validate_outputs(r.outputs)


def test_interleaved_streams_and_display_keep_order(session):
    code = "import sys\nprint('a')\nprint('b', file=sys.stderr)\ndisplay('shown')\nprint('c')\n'last'"
    r = session.run(code)
    assert [o["output_type"] for o in r.outputs] == ["stream", "stream", "display_data", "stream", "execute_result"]
    assert r.outputs[0]["text"] == "a\n" and r.outputs[1]["name"] == "stderr"
    assert r.outputs[2]["data"] == {"text/plain": "'shown'"}
    assert r.outputs[3]["text"] == "c\n"
    assert r.outputs[4]["data"] == {"text/plain": "'last'"}
    validate_outputs(r.outputs)


def test_fd_level_output_is_captured_in_order(session):
    r = session.run(
        "import os\nprint('py 1')\nos.system('echo from-shell')\nos.write(2, b'raw stderr\\n')\nprint('py 2')"
    )
    assert r.status == "ok"
    assert r.stdout == "py 1\nfrom-shell\npy 2\n"
    assert r.stderr == "raw stderr\n"
    assert [o.get("name") for o in r.outputs] == ["stdout", "stderr", "stdout"]


def test_last_expression_rules(session):
    assert session.run("None").outputs == []
    assert session.run("1 + 1;").outputs == []
    assert session.run("1 + 1  # comment").outputs[0]["data"]["text/plain"] == "2"
    assert session.run("x = 3").outputs == []
    assert session.run("if True:\n    5").outputs == []  # only a top-level expression shows
    r = session.run("y = 2\ny * 10")
    assert r.outputs[0]["data"]["text/plain"] == "20"
    assert session.run("_").outputs[0]["data"]["text/plain"] == "20"  # IPython's _ history
    r = session.run("'a;b'")  # a ';' inside a string is not a trailing ';'
    assert r.outputs[0]["data"]["text/plain"] == "'a;b'"


def test_top_level_await(session):
    r = session.run("import asyncio\nawait asyncio.sleep(0)\n'awaited'")
    assert r.status == "ok", r.error
    assert r.outputs[0]["data"]["text/plain"] == "'awaited'"


def test_pretty_printing_matches_ipython(session):
    pytest.importorskip("IPython")
    from IPython.lib.pretty import pretty

    value = {f"key{i}": list(range(i)) for i in range(8)}
    r = session.run(f"{value!r}")
    assert r.outputs[0]["data"]["text/plain"] == pretty(value)


def test_error_output_and_traceback_show_user_frames_only(session):
    r = session.run("def f():\n    return 1 / 0\n\nf()")
    assert r.status == "error"
    assert r.error["ename"] == "ZeroDivisionError"
    assert r.error["evalue"] == "division by zero"
    tb = "\n".join(r.error["traceback"])
    assert 'File "Cell In[1]", line 4' in tb and "return 1 / 0" in tb
    assert "sandbox_exec" not in tb and "_worker" not in tb
    assert r.outputs == [{"output_type": "error", **r.error}]
    validate_outputs(r.outputs)


def test_output_before_an_error_is_kept(session):
    r = session.run("print('before')\nraise ValueError('bad value')")
    assert r.status == "error"
    assert [o["output_type"] for o in r.outputs] == ["stream", "error"]
    assert r.error["ename"] == "ValueError" and r.error["evalue"] == "bad value"


def test_syntax_error_is_reported_like_an_error(session):
    r = session.run("x = (1,\n")
    assert r.status == "error"
    assert r.error["ename"] == "SyntaxError"
    tb = "\n".join(r.error["traceback"])
    assert "Cell In[1]" in tb and "ast.py" not in tb
    # the session is fine afterwards
    assert session.run("2 * 21").outputs[0]["data"]["text/plain"] == "42"


def test_input_gives_a_clear_error(session):
    r = session.run("input('name? ')")
    assert r.status == "error"
    assert r.error["ename"] == "RuntimeError"
    assert "input() is not available" in r.error["evalue"]


def test_system_exit_and_keyboard_interrupt_do_not_end_the_session(session):
    r = session.run("import sys\nsys.exit(3)")
    assert r.status == "error" and r.error["ename"] == "SystemExit"
    r = session.run("raise KeyboardInterrupt")
    assert r.status == "interrupted"
    assert session.run("'alive'").outputs[0]["data"]["text/plain"] == "'alive'"


def test_display_protocol_basics(session):
    code = """
class Rich:
    def _repr_html_(self): return "<b>rich</b>"
    def _repr_markdown_(self): return "**rich**"
    def __repr__(self): return "Rich()"
class Bundle:
    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/plain": "B", "application/json": {"k": [1, 2]}}, {"application/json": {"expanded": True}}
class Png:
    def _repr_png_(self): return b"\\x89PNG fake"
display(Rich(), Bundle())
display(Png())
Rich()
"""
    r = session.run(code)
    assert r.status == "ok", r.error
    d1, d2, d3, res = r.outputs
    assert d1["data"] == {"text/html": "<b>rich</b>", "text/markdown": "**rich**", "text/plain": "Rich()"}
    assert d2["data"] == {"text/plain": "B", "application/json": {"k": [1, 2]}}
    assert d2["metadata"] == {"application/json": {"expanded": True}}
    import base64

    assert base64.b64decode(d3["data"]["image/png"]) == b"\x89PNG fake"
    assert res["output_type"] == "execute_result" and res["data"]["text/html"] == "<b>rich</b>"
    validate_outputs(r.outputs)


def test_display_id_update_and_clear_output(session):
    r = session.run("h = display('first', display_id='d1')\nh.update('second')\ndisplay('other')")
    assert r.display_ids == {0: "d1"}
    assert r.outputs[0]["data"] == {"text/plain": "'second'"}  # updated in place
    assert r.display_updates == [{"display_id": "d1", "data": {"text/plain": "'second'"}, "metadata": {}}]
    # an update from a later cell is reported for the caller to apply to the earlier cell
    r2 = session.run("h.update('third')")
    assert r2.outputs == []
    assert r2.display_updates[0]["display_id"] == "d1"
    r3 = session.run("print('gone')\nimport builtins\nbuiltins.display.__self__.clear_output()\nprint('kept')")
    assert r3.outputs == [{"output_type": "stream", "name": "stdout", "text": "kept\n"}]


def test_unicode_round_trip(session):
    r = session.run("s = 'héllo ✓ 日本 \\U0001F600'\nprint(s)\ns")
    assert r.stdout == "héllo ✓ 日本 \U0001f600\n"
    assert r.outputs[1]["data"]["text/plain"] == repr("héllo ✓ 日本 \U0001f600")


def test_large_output_is_chunked_and_intact(session):
    r = session.run("print('x' * 3_000_000)\n'y' * 2_000_000")
    assert r.status == "ok"
    assert r.stdout == "x" * 3_000_000 + "\n"
    assert r.outputs[-1]["data"]["text/plain"] == repr("y" * 2_000_000)


def test_workdir_is_current_directory_and_persists(session):
    r = session.run("import os\nopen('note.txt', 'w').write('kept')\nos.getcwd()")
    assert r.outputs[0]["data"]["text/plain"] == repr(str(session.workdir))
    assert (session.workdir / "note.txt").read_text() == "kept"
    session.restart()
    assert session.run("open('note.txt').read()").outputs[0]["data"]["text/plain"] == "'kept'"


def test_backend_environment_does_not_reach_the_cell(session, monkeypatch):
    import os

    # the worker's environment is built from nothing: a secret set in the backend stays there
    assert "SANDBOX_TEST_SECRET" not in os.environ
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "hunter2")
    session.restart()
    r = session.run("import os\nos.environ.get('SANDBOX_TEST_SECRET')")
    assert r.outputs == []  # None: not there


def test_measurements_come_from_the_supervisor(session):
    r = session.run("x = bytearray(200 * 1024 * 1024)\nsum(range(3_000_000))")
    assert r.status == "ok"
    assert r.duration_s > 0
    assert r.cpu_s is not None and r.cpu_s > 0
    assert r.peak_memory_bytes is not None and r.peak_memory_bytes >= 200 * 1024 * 1024
    r = session.run("del x")
    # the peak is per cell: reset before each cell
    r = session.run("1")
    assert r.peak_memory_bytes is not None and r.peak_memory_bytes < 150 * 1024 * 1024


def test_round_trip_fast_paths_at_their_edges(session):
    """Cells at the edges of the round trip's fast paths (a one-line cell compiled from its
    text, an execute_result of text/plain written without the encoder, the ok report told
    from its bytes, Result made by make_result) give what Jupyter gives."""
    r = session.run("40 + 2")
    assert r.status == "ok" and r.error is None and r.reason is None
    assert r.outputs == [
        {
            "output_type": "execute_result",
            "execution_count": r.execution_count,
            "data": {"text/plain": "42"},
            "metadata": {},
        }
    ]
    assert r.stdout == r.stderr == "" and not r.session_restarted and r.truncated_bytes == 0
    assert session.run("40 + 2;").outputs == []  # a trailing ';' shows nothing
    assert session.run("None").outputs == []
    assert session.run("'\\ud800 \\u2028 \\x00 é'").outputs[0]["data"] == {"text/plain": "'\\ud800 \\u2028 \\x00 é'"}
    r = session.run("class R:\n    def __repr__(self): raise ValueError('no repr')\nR()")
    assert r.status == "error" and r.error is not None and r.error["ename"] == "ValueError"
    r = session.run("R()")  # one line, the fast compile: the same error
    assert r.status == "error" and r.error is not None and r.error["evalue"] == "no repr"
    assert [o["output_type"] for o in r.outputs] == ["error"]
    r = session.run("1 +")
    assert r.status == "error" and r.error is not None and r.error["ename"] == "SyntaxError"
    r = session.run("display(1); 2")
    assert [(o["output_type"], o["data"]) for o in r.outputs] == [
        ("display_data", {"text/plain": "1"}),
        ("execute_result", {"text/plain": "2"}),
    ]
    r = session.run("True")
    assert r.outputs[0]["data"] == {"text/plain": "True"}
    validate_outputs(r.outputs)
