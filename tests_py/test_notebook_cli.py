"""The notebook runner: `python -m sandbox_exec run NOTEBOOK` and notebook.run_notebook."""

from __future__ import annotations

import ast
import importlib.resources
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from conftest import CORPUS
from sandbox_exec.notebook import CellExecutionError, run_notebook

pytestmark = pytest.mark.b


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sandbox_exec", "run", *args], cwd=cwd, capture_output=True, text=True, timeout=180
    )


def read(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def stream_text(cell: nbformat.NotebookNode, name: str = "stdout") -> str:
    return "".join(o["text"] for o in cell.outputs if o["output_type"] == "stream" and o["name"] == name)


def code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in nb.cells if c.cell_type == "code"]


# --- the embedded example ------------------------------------------------------------------


def test_demo_is_packaged_valid_and_clean() -> None:
    ref = importlib.resources.files("sandbox_exec") / "examples" / "demo.ipynb"
    assert ref.is_file()
    nb = nbformat.reads(ref.read_text(encoding="utf-8"), as_version=4)
    nbformat.validate(nb)
    cells = code_cells(nb)
    assert len(cells) >= 8
    assert all(c.outputs == [] and c.execution_count is None for c in cells)


def test_demo_runs_without_argument(tmp_path: Path) -> None:
    proc = run_cli(cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "demo.executed.ipynb"
    nb = read(out)
    cells = {c.id: c for c in nb.cells}
    run = code_cells(nb)
    assert [c.execution_count for c in run] == list(range(1, len(run) + 1))
    assert all("shell.execute_reply" in c.metadata["execution"] for c in run)

    assert cells["state"].outputs[0]["data"]["text/plain"] == "'HELLO FROM THE SANDBOX'"
    assert stream_text(cells["primes"]) == "[2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47]\n"
    assert stream_text(cells["streams"]) == "15 primes below 50, the largest is 47\n"
    assert stream_text(cells["streams"], "stderr") == "this line goes to stderr\n"
    stats = ast.literal_eval(cells["stats"].outputs[0]["data"]["text/plain"])
    assert stats == {
        "count": 15,
        "sum": 328,
        "mean": 21.867,
        "twin_primes": [(3, 5), (5, 7), (11, 13), (17, 19), (29, 31), (41, 43)],
    }
    assert stream_text(cells["table"]).splitlines()[2].split() == ["2", "4", "True"]
    badge, progress = cells["display"].outputs
    assert badge["output_type"] == "display_data" and badge["data"]["text/html"] == "<b>rich output</b>"
    # The update in the next cell reached this cell's display.
    assert progress["data"]["text/plain"] == "'progress: 100%'"
    assert cells["update"].outputs == []  # update_display and a trailing ';' show nothing
    assert stream_text(cells["files"]) == "read back 15 primes; same as computed: True\n"
    listing = ast.literal_eval(cells["files"].outputs[-1]["data"]["text/plain"])
    assert listing == ["demo.ipynb", "primes.txt"]  # the notebook's neighbours were copied in
    assert stream_text(cells["exceptions"]).splitlines() == [
        "parsed: {'ok': True}",
        "caught: JSONDecodeError - Expecting property name enclosed in double quotes",
        "caught: ZeroDivisionError('division by zero')",
    ]
    lines = proc.stderr.splitlines()
    assert f"[1/{len(run)}] ok" in "\n".join(lines)
    assert any(line.startswith(f"ran {len(run)} of {len(run)} code cells") for line in lines)


def test_output_to_stdout_and_quiet(tmp_path: Path) -> None:
    proc = run_cli("-o", "-", "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    nb = nbformat.reads(proc.stdout, as_version=4)
    nbformat.validate(nb)
    assert code_cells(nb)[-1].execution_count == len(code_cells(nb))
    assert list(tmp_path.iterdir()) == []


def test_help_documents_the_default_output() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_exec", "run", "--help"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0
    assert ".executed.ipynb" in proc.stdout and "--allow-errors" in proc.stdout


def test_missing_notebook_is_a_usage_error(tmp_path: Path) -> None:
    proc = run_cli("nope.ipynb", cwd=tmp_path)
    assert proc.returncode == 2
    assert "nope.ipynb" in proc.stderr


# --- the nbclient corpus -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["HelloWorld", "Factorials", "Unicode"])
def test_corpus_streams_match(tmp_path: Path, name: str) -> None:
    out = tmp_path / f"{name}.out.ipynb"
    proc = run_cli(str(CORPUS / f"{name}.ipynb"), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    got, want = read(out), nbformat.read(CORPUS / f"{name}.ipynb", as_version=4)
    assert len(got.cells) == len(want.cells)
    for g, w in zip(code_cells(got), code_cells(want)):
        assert stream_text(g) == stream_text(w)
        assert stream_text(g, "stderr") == stream_text(w, "stderr")
        assert g.execution_count == w.execution_count


def test_corpus_default_output_path(tmp_path: Path) -> None:
    src = tmp_path / "HelloWorld.ipynb"
    src.write_bytes((CORPUS / "HelloWorld.ipynb").read_bytes())
    proc = run_cli(str(src), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stream_text(read(tmp_path / "HelloWorld.executed.ipynb").cells[0]) == "Hello World\n"


def test_corpus_error_stops_with_exit_1(tmp_path: Path) -> None:
    out = tmp_path / "e.ipynb"
    proc = run_cli(str(CORPUS / "Error.ipynb"), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 1
    assert "code cell 1 of 1" in proc.stderr and "ZeroDivisionError" in proc.stderr
    (error,) = read(out).cells[0].outputs  # written anyway, with what ran
    assert error["output_type"] == "error" and error["ename"] == "ZeroDivisionError"


def test_corpus_error_allowed(tmp_path: Path) -> None:
    out = tmp_path / "e.ipynb"
    proc = run_cli(str(CORPUS / "Error.ipynb"), "-o", str(out), "--allow-errors", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cell = read(out).cells[0]
    assert cell.execution_count == 1
    assert [(o["output_type"], o["ename"], o["evalue"]) for o in cell.outputs] == [
        ("error", "ZeroDivisionError", "division by zero")
    ]


def test_corpus_skip_execution_tag(tmp_path: Path) -> None:
    out = tmp_path / "s.ipynb"
    proc = run_cli(str(CORPUS / "Skip Execution with Cell Tag.ipynb"), "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    skipped, ran = read(out).cells
    assert "skip-execution" in skipped.metadata.tags
    assert skipped.outputs == [] and skipped.execution_count is None and "execution" not in skipped.metadata
    assert stream_text(ran) == "ok\n" and ran.execution_count == 1
    assert "skipped (skip-execution)" in proc.stderr


def test_corpus_raises_exception_tag(tmp_path: Path) -> None:
    nb = run_notebook(CORPUS / "Skip Exceptions with Cell Tags.ipynb")
    first, second = nb.cells
    assert [o.get("ename") for o in first.outputs if o["output_type"] == "error"] == ["Exception"]
    assert stream_text(first) == "hello\n" and stream_text(first, "stderr") == "errorred\n"
    assert stream_text(second) == "ok\n"


# --- run_notebook --------------------------------------------------------------------------


def test_display_updates_reach_earlier_cells() -> None:
    nb = new_notebook(
        cells=[
            new_code_cell('h = display("a", display_id="d1")'),
            new_markdown_cell("between"),
            new_code_cell('display("other", display_id="d2")\nprint("x")'),
            new_code_cell('h.update("b")'),
        ]
    )
    original = nbformat.from_dict(nb)
    lines: list[str] = []
    out = run_notebook(nb, progress=lines.append)
    nbformat.validate(out)
    assert nb == original  # the input notebook is not modified
    (first,) = out.cells[0].outputs
    assert first["output_type"] == "display_data" and first["data"]["text/plain"] == "'b'"
    other = out.cells[2].outputs[0]
    assert other["data"]["text/plain"] == "'other'"  # another display id is left alone
    assert out.cells[3].outputs == []
    assert [c.execution_count for c in code_cells(out)] == [1, 2, 3]
    assert lines[0].startswith("[1/3] ok") and lines[-1].startswith("ran 3 of 3 code cells")


def test_error_stops_the_run_and_writes(tmp_path: Path) -> None:
    nb = new_notebook(
        cells=[new_code_cell("x = 1"), new_code_cell("raise ValueError('boom')"), new_code_cell("print('never')")]
    )
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", name="stdout", text="stale\n")]
    out = tmp_path / "out.ipynb"
    with pytest.raises(CellExecutionError) as info:
        run_notebook(nb, output_path=out)
    assert info.value.code_cell_number == 2 and info.value.result.error["ename"] == "ValueError"
    assert "code cell 2 of 3" in str(info.value) and "ValueError: boom" in str(info.value)
    written = read(out)
    assert written.cells[1].outputs[0]["ename"] == "ValueError"
    assert stream_text(written.cells[2]) == "stale\n"  # not run: left as it was, as nbclient does


def test_timeout_is_an_error_with_its_reason(tmp_path: Path) -> None:
    nb = new_notebook(cells=[new_code_cell("import time\ntime.sleep(30)"), new_code_cell("print('after')")])
    path = tmp_path / "slow.ipynb"
    nbformat.write(nb, path)
    proc = run_cli(str(path), "--timeout", "0.5", cwd=tmp_path)
    assert proc.returncode == 1
    assert "timeout" in proc.stderr and "deadline" in proc.stderr
    written = read(tmp_path / "slow.executed.ipynb")
    assert written.cells[1].outputs == []
    proc = run_cli(str(path), "--timeout", "0.5", "--allow-errors", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert stream_text(read(tmp_path / "slow.executed.ipynb").cells[1]) == "after\n"


def test_neighbour_files_are_copied_into_the_workdir(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text("42\n")
    (tmp_path / ".secret").write_text("no")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "deep.txt").write_text("no")
    nb = new_notebook(
        cells=[
            new_code_cell(
                "from pathlib import Path\nprint(Path('data.txt').read_text().strip())\n"
                "sorted(p.name for p in Path('.').iterdir())"
            )
        ]
    )
    path = tmp_path / "files.ipynb"
    nbformat.write(nb, path)
    out = run_notebook(path)
    assert stream_text(out.cells[0]) == "42\n"
    assert ast.literal_eval(out.cells[0].outputs[-1]["data"]["text/plain"]) == ["data.txt", "files.ipynb"]


def test_progress_lines_and_summary_go_to_stderr(tmp_path: Path) -> None:
    nb = new_notebook(cells=[new_code_cell("1"), new_code_cell("   "), new_code_cell("2")])
    path = tmp_path / "p.ipynb"
    nbformat.write(nb, path)
    proc = run_cli(str(path), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    # each cell's line carries a progress bar
    assert any(line.startswith("|#######-------------| [1/3] ok ") and line.endswith("s") for line in lines)
    assert "|#############-------| [2/3] skipped (empty)" in lines
    assert any(line.startswith("ran 2 of 3 code cells") for line in lines)
    written = json.loads((tmp_path / "p.executed.ipynb").read_text())
    assert written["cells"][1]["execution_count"] is None


def test_ctrl_c_interrupts_the_cell_and_writes(tmp_path: Path) -> None:
    cells = [new_code_cell("'started'"), new_code_cell("import time\ntime.sleep(60)"), new_code_cell("print('never')")]
    path = tmp_path / "slow.ipynb"
    nbformat.write(new_notebook(cells=cells), path)
    # The runner gets SIGINT as a terminal's Ctrl-C delivers it, whatever this suite inherited:
    # started in the background of a non-interactive shell (`nohup ... &`, some CI agents), it
    # has SIGINT ignored, a child would inherit that through exec, and Python keeps an ignored
    # SIGINT ignored (the cell then ran to its 60 s deadline). A handled signal is reset to the
    # default at exec, an ignored one is not.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "sandbox_exec", "run", str(path)], cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )
    finally:
        signal.signal(signal.SIGINT, inherited)
    with proc:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("running ")
        # The interpreter has started (however long that took on a loaded machine) once the
        # first cell's line is out; the second cell is then a step away, and sleeps.
        line = proc.stderr.readline()
        assert "[1/3] ok" in line, line
        time.sleep(1)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(timeout=30) == 130, rest
    assert time.monotonic() - started < 20  # not the cell's whole 60 s
    assert "interrupted (Ctrl-C) at code cell 2 of 3" in rest
    cells = read(tmp_path / "slow.executed.ipynb").cells
    assert cells[0].outputs[0]["data"]["text/plain"] == "'started'"
    assert [o.get("ename") for o in cells[1].outputs] == ["KeyboardInterrupt"]
    assert cells[2].outputs == []


def test_run_in_a_given_sandbox_keeps_the_workdir(tmp_path: Path) -> None:
    from sandbox_exec import Policy, Sandbox

    nb = new_notebook(cells=[new_code_cell("open('made.txt', 'w').write('hi')")])
    path = tmp_path / "nb" / "maker.ipynb"
    path.parent.mkdir()
    nbformat.write(nb, path)
    with Sandbox(Policy(timeout_s=30), root=tmp_path / "root") as box:
        out = run_notebook(path, sandbox=box)
        assert out.cells[0].outputs[0]["data"]["text/plain"] == "2"
        assert box.sessions() == []  # the notebook's session is closed at the end
    # the workdir persists: where it is a size-capped image (a root backend) its files are
    # seen again through a session of a Sandbox on the same root
    with Sandbox(Policy(timeout_s=30), root=tmp_path / "root") as box:
        assert (box.session("maker").workdir / "made.txt").read_text() == "hi"
    assert not (tmp_path / "nb" / "made.txt").exists()  # the notebook's own directory is untouched
