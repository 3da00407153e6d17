"""Output conformance against the nbclient test corpus (corpus/nbclient, with its license).

Each corpus notebook's code cells run, in order, in ONE sandbox_exec session, as nbclient
runs them in one kernel: empty cells and cells tagged ``skip-execution`` are not run; a
cell that raises stops the notebook unless it is tagged ``raises-exception`` or its stored
outputs hold the error (the notebook was executed with ``allow_errors``, as nbclient's own
tests run ``Error.ipynb`` and ``Skip Exceptions.ipynb``). The files next to the notebook
(``python.png``, ...) are copied into ``Session.workdir`` first, as Jupyter starts the
kernel in the notebook's directory. ``update_display`` calls that target outputs of earlier
cells are applied there from ``Result.display_updates`` / ``Result.display_ids``, as
nbclient does with its display-id map; that is the harness playing nbclient's part.

Every cell's normalised outputs (normalize.py) are compared with the normalised stored
outputs, which a real ipykernel produced. Every ``Result.outputs`` must also validate as
nbformat v4. Notebooks that exercise Jupyter machinery a sandbox does not have (widgets,
comms, stdin, kernel death, interrupts, parallel kernels, kernel internals) are skipped,
each with its reason in ``SKIPPED``. A summary (cells matching of total, notebooks
skipped and why) is written to stdout when the module ends.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import nbformat
import pytest

from . import normalize

pytestmark = pytest.mark.b

# The nbclient test notebooks, copied into the repo with their license (corpus/nbclient/README.md).
CORPUS = Path(__file__).resolve().parent / "corpus" / "nbclient"

SKIP_TAG = "skip-execution"
RAISES_TAG = "raises-exception"
CELL_TIMEOUT_S = 20.0  # the slowest corpus cell sleeps 1 s

#: Corpus notebooks that test nbclient/kernel machinery rather than cell outputs.
SKIPPED: dict[str, str] = {
    "Autokill.ipynb": "kills its own kernel (os.kill(os.getpid(), SIGTERM)): tests nbclient's dead-kernel "
    "handling; it stores no outputs (sandbox crash handling is covered elsewhere)",
    "Check History in Memory.ipynb": "asserts get_ipython().history_manager.hist_file == ':memory:', a setting "
    "nbclient passes when it launches the kernel; no IPython shell in the sandbox",
    "Disable Stdin.ipynb": "calls input() to test nbclient's allow_stdin=False path (StdinNotImplementedError); "
    "stores no outputs and is not tagged raises-exception",
    "Interrupt.ipynb": "an endless loop that nbclient's test stops through the kernel's interrupt machinery "
    "(timeout + interrupt_on_timeout); the stored KeyboardInterrupt depends on that harness",
    "JupyterWidgets.ipynb": "needs ipywidgets and a comm channel to a front end (widget model ids differ per run)",
    "Other Comms.ipynb": "opens comms to the front end (comm.create_comm, comm.send): no comm channel in the sandbox",
    "Output.ipynb": "ipywidgets Output widgets capture outputs through comm messages to the front end",
    "Parallel Execute A.ipynb": "needs its twin notebook (B) running at the same time in another kernel and "
    "NBEXECUTE_TEST_PARALLEL_TMPDIR set by nbclient's test",
    "Parallel Execute B.ipynb": "needs its twin notebook (A) running at the same time in another kernel and "
    "NBEXECUTE_TEST_PARALLEL_TMPDIR set by nbclient's test",
    "update-display-id.ipynb": "publishes raw Jupyter messages through the kernel's own iopub socket "
    "(get_ipython().kernel.session.send): ipykernel internals, not a display API; "
    "display-id updates are covered by conformance/notebooks/display_ids.ipynb",
}

#: Notebooks whose stored copy had volatile outputs removed: what to expect instead.
TIMESTAMP_RE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
_TIMESTAMP_STREAM = [{"output_type": "stream", "name": "stdout", "text": "<timestamp>"}]
EXPECTED_OVERRIDES: dict[str, dict[str, Any]] = {
    "Sleep1s.ipynb": {
        "reason": "stored without outputs (nbclient's test reads only the timing metadata); its two print "
        "cells must print one timestamp each in the notebook's format",
        "mask": (TIMESTAMP_RE, "<timestamp>"),
        "cells": {2: _TIMESTAMP_STREAM, 3: _TIMESTAMP_STREAM},
    },
}

NOTEBOOKS = sorted(CORPUS.glob("*.ipynb"), key=lambda p: p.name.lower())

# Filled by the tests, printed by the module fixture.
_SUMMARY: dict[str, Any] = {"run": {}, "skipped": {}}


def _write_summary(config: pytest.Config) -> None:
    run: dict[str, dict[str, Any]] = _SUMMARY["run"]
    skipped: dict[str, str] = _SUMMARY["skipped"]
    matched = sum(r["matched"] for r in run.values())
    total = sum(r["total"] for r in run.values())
    share = f" ({100 * matched / total:.1f} %)" if total else ""
    lines = [
        "",
        f"sandbox_exec output conformance, nbclient corpus: {matched}/{total} cells match{share} "
        f"in {len(run)} notebooks run; {len(skipped)} notebooks skipped",
    ]
    width = max((len(n) for n in run), default=0)
    for name, r in sorted(run.items(), key=lambda kv: kv[0].lower()):
        detail = f"  mismatched cells: {', '.join(map(str, r['mismatched']))}" if r["mismatched"] else ""
        lines.append(f"  {name:<{width}}  {r['matched']}/{r['total']}{detail}")
    if skipped:
        lines.append("skipped:")
        lines.extend(f"  {name}: {why}" for name, why in sorted(skipped.items(), key=lambda kv: kv[0].lower()))
    text = "\n".join(lines) + "\n"
    capture = config.pluginmanager.getplugin("capturemanager")
    if capture is not None:
        with capture.global_and_fixture_disabled():
            print(text, flush=True)
    else:
        print(text, flush=True)


@pytest.fixture(scope="module", autouse=True)
def conformance_summary(pytestconfig: pytest.Config):
    """Collects per-notebook counts; writes the summary to stdout at the end of the module."""
    _SUMMARY["run"].clear()
    _SUMMARY["skipped"].clear()
    yield _SUMMARY
    if _SUMMARY["run"] or _SUMMARY["skipped"]:
        _write_summary(pytestconfig)


def _copy_neighbours(src: Path, workdir: Path) -> None:
    """The regular files next to the notebook (python.png, ...), not the notebooks."""
    for entry in sorted(src.iterdir()):
        if entry.is_file() and entry.suffix != ".ipynb" and not entry.name.startswith("."):
            shutil.copyfile(entry, workdir / entry.name)


def _validation_problem(cell: Any, outputs: list[dict[str, Any]], count: int | None) -> str | None:
    """None when ``outputs`` are valid nbformat v4 outputs of a code cell."""
    try:
        node = nbformat.v4.new_code_cell(
            cell.source, outputs=[nbformat.from_dict(o) for o in outputs], execution_count=count
        )
        nbformat.validate(nbformat.v4.new_notebook(cells=[node]))
    except nbformat.ValidationError as e:
        return str(e).splitlines()[0]
    return None


class _DisplayMap:
    """nbclient's display-id bookkeeping across cells: display_id -> [(cell, output index)]."""

    def __init__(self) -> None:
        self.targets: dict[str, list[tuple[int, int]]] = {}

    def apply(self, index: int, result: Any, actual: dict[int, list[dict[str, Any]]]) -> None:
        def update(display_id: str, data: Any, metadata: Any) -> None:
            for cell_i, out_i in self.targets.get(display_id, ()):
                target = actual[cell_i][out_i]
                target["data"] = json.loads(json.dumps(data))
                target["metadata"] = json.loads(json.dumps(metadata or {}))

        for upd in result.display_updates:  # update_display_data aimed at earlier cells
            update(upd["display_id"], upd["data"], upd["metadata"])
        outputs = actual[index]
        for out_i, display_id in sorted(result.display_ids.items()):
            # A new display with a known id also updates the earlier ones (nbclient's rule).
            update(display_id, outputs[out_i].get("data", {}), outputs[out_i].get("metadata", {}))
        for out_i, display_id in sorted(result.display_ids.items()):
            self.targets.setdefault(display_id, []).append((index, out_i))


def _mask(outputs: list[dict[str, Any]], mask: tuple[re.Pattern[str], str] | None) -> list[dict[str, Any]]:
    if mask is None:
        return outputs
    pattern, replacement = mask
    for o in outputs:
        if o.get("output_type") == "stream":
            o["text"] = pattern.sub(replacement, o["text"])
    return outputs


def run_corpus_notebook(sandbox: Any, path: Path) -> dict[str, Any]:
    """Runs one corpus notebook in a fresh session; returns per-cell comparisons."""
    nb = nbformat.read(path, as_version=4)
    override = EXPECTED_OVERRIDES.get(path.name, {})
    actual: dict[int, list[dict[str, Any]]] = {}
    statuses: dict[int, str] = {}
    invalid: list[str] = []
    stopped_at: int | None = None
    displays = _DisplayMap()
    session = sandbox.session(f"corpus-{uuid.uuid4().hex[:12]}")
    try:
        _copy_neighbours(path.parent, session.workdir)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            tags = cell.get("metadata", {}).get("tags", []) or []
            if not cell.source.strip() or SKIP_TAG in tags:
                continue  # as nbclient: not run, left untouched, not compared
            if stopped_at is not None:
                statuses[index] = f"not run: the notebook stopped at cell {stopped_at}"
                continue
            result = session.run(cell.source, timeout=CELL_TIMEOUT_S)
            statuses[index] = result.status
            problem = _validation_problem(cell, result.outputs, result.execution_count)
            if problem:
                invalid.append(f"cell {index}: {problem}")
            actual[index] = json.loads(json.dumps(result.outputs))
            displays.apply(index, result, actual)
            stored_error = any(o.get("output_type") == "error" for o in cell.get("outputs", []))
            expected_error = result.status == "error" and (RAISES_TAG in tags or stored_error)
            if result.status != "ok" and not expected_error:
                stopped_at = index  # nbclient raises CellExecutionError here
    finally:
        session.close()

    cells: list[dict[str, Any]] = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        stored = override.get("cells", {}).get(index, cell.get("outputs", []))
        expected = normalize.normalize_outputs(stored)
        if index not in statuses:  # not run (empty or skip-execution): nothing to compare
            continue
        got = normalize.normalize_outputs(_mask(actual[index], override.get("mask"))) if index in actual else None
        cells.append(
            {
                "index": index,
                "source": cell.source,
                "status": statuses[index],
                "expected": expected,
                "actual": got,
                "match": got == expected,
            }
        )
    return {"cells": cells, "invalid": invalid, "stopped_at": stopped_at}


def _mismatch_report(name: str, cells: list[dict[str, Any]]) -> str:
    parts = []
    for c in cells:
        if c["match"]:
            continue
        source = "\n".join("    | " + line for line in c["source"].splitlines()[:8])
        got = "(not run)" if c["actual"] is None else normalize.render(c["actual"])
        parts.append(
            f"--- {name} cell {c['index']} (status {c['status']}):\n{source}\n"
            f"  expected (stored, normalised):\n{normalize.render(c['expected'])}\n"
            f"  sandbox_exec (normalised):\n{got}"
        )
    return "\n".join(parts)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_corpus_notebook(path: Path, sandbox: Any, conformance_summary: dict[str, Any]) -> None:
    if path.name in SKIPPED:
        conformance_summary["skipped"][path.name] = SKIPPED[path.name]
        pytest.skip(SKIPPED[path.name])
    outcome = run_corpus_notebook(sandbox, path)
    cells = outcome["cells"]
    mismatched = [c["index"] for c in cells if not c["match"]]
    conformance_summary["run"][path.name] = {
        "matched": len(cells) - len(mismatched),
        "total": len(cells),
        "mismatched": mismatched,
    }
    assert not outcome["invalid"], f"{path.name}: Result.outputs that do not validate as nbformat v4:\n" + "\n".join(
        outcome["invalid"]
    )
    assert not mismatched, (
        f"{path.name}: {len(mismatched)} of {len(cells)} cells differ from the stored "
        f"ipykernel outputs\n" + _mismatch_report(path.name, cells)
    )


def test_skip_list_names_corpus_notebooks() -> None:
    """Every skip reason names a notebook that is in the corpus (no stale entries)."""
    names = {p.name for p in NOTEBOOKS}
    assert set(SKIPPED) <= names, sorted(set(SKIPPED) - names)
    assert set(EXPECTED_OVERRIDES) <= names - set(SKIPPED)
    assert len(names - set(SKIPPED)) >= 10, "most of the corpus should run"


def _png(width: int, height: int) -> str:
    import base64
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + b"\x00\x00\x00" * width for _ in range(height))
    raw = (
        normalize.PNG_SIGNATURE
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(raw).decode()


def test_normalisation_rules() -> None:
    """The rules of normalize.py on small examples (both sides go through them)."""
    n = normalize.normalize_outputs
    stream = lambda name, text: {"output_type": "stream", "name": name, "text": text}  # noqa: E731
    # Streams: merged when consecutive and of one name; \r overwrites its line; ANSI gone.
    assert n(
        [
            stream("stdout", "\rprogress 0%\rprogress 5"),
            stream("stdout", "0%\n"),
            stream("stdout", "a\x1b[31mred\x1b[0m\r\n"),
        ]
    ) == [stream("stdout", "progress 50%\nared\r\n")]
    assert n([stream("stdout", "a\n"), stream("stderr", "b\n"), stream("stdout", "c\n")]) == [
        stream("stdout", "a\n"),
        stream("stderr", "b\n"),
        stream("stdout", "c\n"),
    ]
    assert n([stream("stdout", "a"), stream("stderr", ""), stream("stdout", "b")]) == [stream("stdout", "ab")]
    # Errors: ename/evalue only; SyntaxError's file name masked, its line kept.
    assert n(
        [
            {
                "output_type": "error",
                "ename": "SyntaxError",
                "evalue": "invalid syntax (Cell In[3], line 2)",
                "traceback": ["x"],
            }
        ]
    ) == n(
        [
            {
                "output_type": "error",
                "ename": "SyntaxError",
                "evalue": "invalid syntax (1850221797.py, line 2)",
                "traceback": ["\x1b[0;31mother\x1b[0m"],
            }
        ]
    )
    assert n([{"output_type": "error", "ename": "SyntaxError", "evalue": "bad (a.py, line 1)", "traceback": []}]) != n(
        [{"output_type": "error", "ename": "SyntaxError", "evalue": "bad (a.py, line 2)", "traceback": []}]
    )

    def shown(data: dict[str, Any], metadata: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return n([{"output_type": "display_data", "data": data, "metadata": metadata or {}}])

    # Addresses masked; figure text kept.
    assert shown({"text/plain": "<__main__.C at 0x7f3e8585e290>"}) == shown({"text/plain": "<__main__.C at 0x55aa>"})
    assert shown({"text/plain": "<Figure size 640x480 with 1 Axes>"}) != shown(
        {"text/plain": "<Figure size 640x400 with 1 Axes>"}
    )
    # PNG: decoded, sized from its header, compared within the tolerance, never by bytes.
    assert shown({"image/png": _png(100, 80)}) == shown({"image/png": _png(104, 82)})
    assert shown({"image/png": _png(100, 80)}) != shown({"image/png": _png(150, 80)})
    assert normalize.png_size(__import__("base64").b64decode(_png(7, 3))) == (7, 3)
    not_png = __import__("base64").b64encode(b"GIF89a" + bytes(40)).decode()
    assert shown({"image/png": not_png}) != shown({"image/png": not_png})  # invalid never matches
    assert shown({"image/png": "%%% not base64"}) != shown({"image/png": _png(1, 1)})
    # SVG: attribute order does not matter; JSON: key order does not matter.
    assert shown({"image/svg+xml": '<svg width="2" height="1"><rect y="0" x="0"/></svg>'}) == shown(
        {"image/svg+xml": '<svg height="1" width="2">\n  <rect x="0" y="0" />\n</svg>'}
    )
    assert shown({"application/json": {"b": 1, "a": [1, {"d": 2, "c": 3}]}}) == shown(
        {"application/json": {"a": [1, {"c": 3, "d": 2}], "b": 1}}
    )
    # Kernel-specific metadata dropped, other metadata compared.
    assert shown({"text/plain": "x"}, {"execution": {"t": 1}}) == shown({"text/plain": "x"})
    assert shown({"text/plain": "x"}, {"isolated": True}) != shown({"text/plain": "x"})


def test_validation_check_catches_invalid_outputs() -> None:
    cell = nbformat.v4.new_code_cell("print(1)")
    assert _validation_problem(cell, [{"output_type": "stream", "name": "stdout", "text": "1\n"}], 1) is None
    assert _validation_problem(cell, [{"output_type": "stream", "name": "stdout"}], 1) is not None
    assert _validation_problem(cell, [{"output_type": "execute_result", "data": {}, "metadata": {}}], 1) is not None
