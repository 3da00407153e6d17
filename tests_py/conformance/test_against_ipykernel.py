"""sandbox_exec against a real Jupyter kernel, one notebook per feature.

``notebooks/*.ipynb`` are small notebooks, one per output feature (display protocol,
display ids and clear_output, matplotlib figures, pandas/numpy, streams, errors,
execute_result rules, unicode). ``references/*.ipynb`` are the same notebooks executed by
ipykernel through jupyter_client (``make_references.py``; regenerate them with
``.venv/bin/python tests_py/conformance/make_references.py``). Each notebook is run with
``sandbox_exec.notebook.run_notebook`` (one session, nbclient's rules, display updates
across cells applied, ``allow_errors=True`` so that every cell runs) and every cell's
outputs, normalised on both sides by normalize.py, must equal the reference's.

``test_reference_regenerates_live`` executes one notebook through a live ipykernel and
checks that it still gives the committed reference, so the references are known to come
from a real kernel (and not, say, from sandbox_exec itself).
"""

from __future__ import annotations

import os

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")  # before jupyter_client/jupyter_core are imported

from pathlib import Path
from typing import Any

import nbformat
import pytest

pytestmark = [pytest.mark.b, pytest.mark.jupyter]

pytest.importorskip("jupyter_client", reason="jupyter_client is needed to run ipykernel (pip install .[test])")
pytest.importorskip("ipykernel", reason="ipykernel is needed for the reference kernel (pip install .[test])")

from sandbox_exec.notebook import run_notebook  # noqa: E402

from . import make_references, normalize  # noqa: E402

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE / "notebooks"
REFERENCES = HERE / "references"
NAMES = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
#: The notebook regenerated live by test_reference_regenerates_live (small, but with a
#: stream, an fd-level write, a display, an execute_result and an error).
LIVE_NOTEBOOK = "unicode.ipynb"

#: Per-cell deadline for sandbox_exec: every cell here takes well under a second (the first
#: matplotlib import about two), so a hung cell costs seconds, not the default minute.
CELL_TIMEOUT_S = 10.0

_runs: dict[str, Any] = {}


def sandbox_run(sandbox: Any, name: str) -> Any:
    """The notebook executed by sandbox_exec (once per module)."""
    if name not in _runs:
        _runs[name] = run_notebook(NOTEBOOKS / name, sandbox=sandbox, allow_errors=True, timeout=CELL_TIMEOUT_S)
    return _runs[name]


def code_cells(nb: Any) -> list[Any]:
    return [c for c in nb.cells if c.cell_type == "code"]


def compare(expected_nb: Any, actual_nb: Any, label: str) -> list[str]:
    """Descriptions of the code cells whose normalised outputs differ."""
    problems = []
    expected_cells, actual_cells = code_cells(expected_nb), code_cells(actual_nb)
    assert [c.source for c in expected_cells] == [c.source for c in actual_cells], "not the same notebook"
    for number, (exp, act) in enumerate(zip(expected_cells, actual_cells), start=1):
        want = normalize.normalize_outputs(exp.get("outputs", []))
        got = normalize.normalize_outputs(act.get("outputs", []))
        if want != got:
            source = "\n".join("    | " + line for line in exp.source.splitlines()[:10])
            problems.append(
                f"--- code cell {number} ({exp.get('id', '?')}):\n{source}\n"
                f"  ipykernel (normalised):\n{normalize.render(want)}\n"
                f"  {label} (normalised):\n{normalize.render(got)}"
            )
    return problems


def test_every_notebook_has_a_current_reference() -> None:
    assert len(NAMES) >= 8, NAMES
    for name in NAMES:
        path = REFERENCES / name
        assert path.is_file(), f"no reference for {name}: run make_references.py"
        reference = nbformat.read(path, as_version=4)
        nbformat.validate(reference)
        source = nbformat.read(NOTEBOOKS / name, as_version=4)
        assert [(c.get("id"), c.source) for c in reference.cells] == [(c.get("id"), c.source) for c in source.cells], (
            f"{name}: reference is stale, rerun make_references.py"
        )
        made_by = reference.metadata.get("conformance_reference", {})
        assert made_by.get("implementation") == "ipython" and "ipykernel" in made_by, made_by
        ran = [c for c in code_cells(reference) if c.source.strip()]
        assert all(c.execution_count for c in ran), f"{name}: reference has cells that did not run"


@pytest.mark.parametrize("name", NAMES, ids=[n.removesuffix(".ipynb") for n in NAMES])
def test_matches_ipykernel(name: str, sandbox: Any) -> None:
    reference = nbformat.read(REFERENCES / name, as_version=4)
    executed = sandbox_run(sandbox, name)
    problems = compare(reference, executed, "sandbox_exec")
    total = len([c for c in code_cells(reference) if c.source.strip()])
    made_with = reference.metadata.get("conformance_reference", {})
    drift = {k: (v, made_with.get(k)) for k, v in make_references.library_versions().items() if made_with.get(k) != v}
    note = (
        (
            f"\n(note: the reference was made with other versions, (here, reference): {drift}; "
            "if the differences come from that, rerun make_references.py)"
        )
        if drift
        else ""
    )
    assert not problems, f"{name}: {len(problems)} of {total} code cells differ from ipykernel{note}\n" + "\n".join(
        problems
    )


def test_stored_streams_have_carriage_returns_applied(sandbox: Any) -> None:
    """Result.outputs are in stored form: a ``\\r`` that overwrites its line has been applied
    (nbconvert's rule), as a Jupyter front end stores progress lines."""
    executed = sandbox_run(sandbox, "streams.ipynb")
    leftovers = []
    for cell in code_cells(executed):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                text = output["text"]
                if normalize.apply_carriage_returns(text) != text:
                    leftovers.append(f"{cell.source!r}: {text!r}")
    assert not leftovers, "stream text still holds line-overwriting \\r:\n" + "\n".join(leftovers)


def test_reference_regenerates_live() -> None:
    """A live ipykernel (jupyter_client KernelManager) still produces the committed reference."""
    source = nbformat.read(NOTEBOOKS / LIVE_NOTEBOOK, as_version=4)
    live = make_references.execute_notebook(source, NOTEBOOKS)
    assert live.metadata["conformance_reference"]["implementation"] == "ipython"
    assert live.metadata["language_info"]["name"] == "python"
    committed = nbformat.read(REFERENCES / LIVE_NOTEBOOK, as_version=4)
    problems = compare(committed, live, "live ipykernel")
    assert not problems, "the committed reference no longer matches a live ipykernel run:\n" + "\n".join(problems)
