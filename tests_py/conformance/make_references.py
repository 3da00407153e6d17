"""Regenerates tests_py/conformance/references/*.ipynb with a REAL Jupyter kernel.

    cd /work/main && .venv/bin/python tests_py/conformance/make_references.py [NAME.ipynb ...]

Each notebook in ``notebooks/`` is executed by an ipykernel (started through
jupyter_client's ``KernelManager``, the machinery nbclient uses) and the executed copy is
written to ``references/`` under the same name. The outputs are recorded as nbclient records
them:

- one ``execute_request`` per non-empty code cell (``store_history=True``, so execution
  counts run 1, 2, 3, ...); empty cells and cells tagged ``skip-execution`` are left alone;
- iopub ``stream`` / ``display_data`` / ``execute_result`` / ``error`` messages become
  outputs (``nbformat.v4.output_from_msg``), in arrival order;
- ``clear_output`` clears the cell's outputs at once, or before the next output with
  ``wait=True``;
- ``update_display_data`` (and a new ``display_data`` / ``execute_result`` carrying a
  display_id that was shown before) updates every earlier output with that display_id,
  in this cell and in earlier cells, as nbclient's ``_update_display_id`` does;
- a cell that raises stops the run unless it is tagged ``raises-exception`` (the kernel
  runs with ``stop_on_error``, as nbclient runs it);
- cell metadata gets ``execution`` timestamps as nbclient writes them.

The only liberty taken: consecutive stream outputs of the same name are merged (what
Jupyter front ends store, and what makes regenerated files stable, since how ipykernel
chunks a stream depends on flush timing). ``\\r`` and ANSI codes are kept as the kernel sent
them; ``normalize.py`` applies the comparison rules to both sides.

The kernel starts in the notebooks directory, without a user profile (a fresh
IPYTHONDIR), with its history in memory (as nbclient starts it) and without MPLBACKEND, so
ipykernel picks its default matplotlib inline backend. The kernel's interpreter is the
one running this script (the project's .venv), so library versions match the sandbox's.

``execute_notebook()`` is imported by test_against_ipykernel.py to regenerate one reference
live and compare it with the committed one.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import queue
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core: no platformdirs migration warning

import nbformat
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager

HERE = Path(__file__).resolve().parent
NOTEBOOKS = HERE / "notebooks"
REFERENCES = HERE / "references"
SKIP_TAG = "skip-execution"
RAISES_TAG = "raises-exception"


class _ThisInterpreter(KernelSpecManager):
    """Every kernel name resolves to ipykernel on this interpreter (not whatever python3
    kernelspec the Jupyter paths happen to hold)."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:  # type: ignore[override]
        return KernelSpec(
            argv=[sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            display_name="Python 3 (ipykernel)",
            language="python",
            resource_dir="",
            metadata={"debugger": False},
        )


def _timestamp() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def kernel_env(ipython_dir: str) -> dict[str, str]:
    env = dict(os.environ)
    # PYTEST_CURRENT_TEST would make ipykernel leave fds 1/2 alone (no os.system capture).
    for name in ("MPLBACKEND", "PYTHONSTARTUP", "COLUMNS", "LINES", "PYTEST_CURRENT_TEST"):
        env.pop(name, None)
    env.update(
        {
            "IPYTHONDIR": ipython_dir,
            "MPLCONFIGDIR": os.path.join(ipython_dir, "matplotlib"),
            "JUPYTER_PLATFORM_DIRS": "1",
            "PYDEVD_DISABLE_FILE_VALIDATION": "1",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


class _Recorder:
    """nbclient's output bookkeeping for one notebook."""

    def __init__(self, nb: Any) -> None:
        self.nb = nb
        # display_id -> {cell index: [output indices]}
        self.display_map: dict[str, dict[int, list[int]]] = {}
        self.clear_before_next = False

    def _clear(self, cell_index: int) -> None:
        self.nb.cells[cell_index].outputs = []
        for cell_map in self.display_map.values():
            cell_map.pop(cell_index, None)

    def _update_display_id(self, display_id: str, content: dict[str, Any]) -> None:
        for cell_index, output_indices in self.display_map.get(display_id, {}).items():
            outputs = self.nb.cells[cell_index].outputs
            for i in output_indices:
                if i < len(outputs) and outputs[i].output_type in ("display_data", "execute_result"):
                    outputs[i]["data"] = nbformat.from_dict(content["data"])
                    outputs[i]["metadata"] = nbformat.from_dict(content.get("metadata", {}))

    def message(self, cell_index: int, msg: dict[str, Any]) -> None:
        msg_type = msg["msg_type"]
        content = msg["content"]
        cell = self.nb.cells[cell_index]
        if msg_type == "clear_output":
            if content.get("wait"):
                self.clear_before_next = True
            else:
                self.clear_before_next = False
                self._clear(cell_index)
            return
        if msg_type not in ("stream", "display_data", "execute_result", "error", "update_display_data"):
            return  # status, execute_input, comm_*: not outputs
        display_id = None
        if msg_type in ("display_data", "execute_result", "update_display_data"):
            display_id = (content.get("transient") or {}).get("display_id")
            if display_id:
                self._update_display_id(display_id, content)
        if msg_type == "update_display_data":
            return
        out = nbformat.v4.output_from_msg(msg)
        if self.clear_before_next:
            self._clear(cell_index)
            self.clear_before_next = False
        outputs = cell.outputs
        if (
            out.output_type == "stream"
            and outputs
            and outputs[-1].output_type == "stream"
            and outputs[-1].name == out.name
        ):
            outputs[-1].text += out.text
            return
        if display_id:
            self.display_map.setdefault(display_id, {}).setdefault(cell_index, []).append(len(outputs))
        outputs.append(out)


def _execute_cell(kc: Any, recorder: _Recorder, cell_index: int, code: str, timeout: float) -> dict[str, Any]:
    msg_id = kc.execute(code, store_history=True, allow_stdin=False, stop_on_error=True)
    deadline = time.monotonic() + timeout
    idle = False
    reply: dict[str, Any] | None = None
    while not (idle and reply is not None):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"cell {cell_index} did not finish within {timeout} s")
        if reply is None:
            try:
                msg = kc.get_shell_msg(timeout=0.01)
                if msg["parent_header"].get("msg_id") == msg_id:
                    reply = msg["content"]
            except queue.Empty:
                pass
        try:
            msg = kc.get_iopub_msg(timeout=min(remaining, 0.05))
        except queue.Empty:
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            idle = True
            continue
        recorder.message(cell_index, msg)
    return reply


def execute_notebook(nb: Any, cwd: str | os.PathLike[str], *, timeout: float = 60.0) -> Any:
    """Executes a copy of ``nb`` in a fresh ipykernel started in ``cwd``; returns the copy."""
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    with tempfile.TemporaryDirectory(prefix="conformance-ipython-") as ipython_dir:
        # IPC sockets in the private directory: no TCP ports, no "unencrypted TCP" warning.
        km = KernelManager(
            kernel_name="python3",
            kernel_spec_manager=_ThisInterpreter(),
            transport="ipc",
            ip=os.path.join(ipython_dir, "kernel-ipc"),
        )
        km.start_kernel(
            cwd=str(cwd),
            env=kernel_env(ipython_dir),
            extra_arguments=["--HistoryManager.hist_file=:memory:"],
            stdout=subprocess.DEVNULL,
        )  # ipykernel echoes captured fd output there
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=60)
            info = kc.kernel_info(reply=True, timeout=30)["content"]
            recorder = _Recorder(nb)
            for index, cell in enumerate(nb.cells):
                if cell.cell_type != "code":
                    continue
                tags = cell.metadata.get("tags", [])
                if not cell.source.strip() or SKIP_TAG in tags:
                    continue
                cell.outputs = []
                execution = {"iopub.execute_input": _timestamp()}
                reply = _execute_cell(kc, recorder, index, cell.source, timeout)
                execution["shell.execute_reply"] = _timestamp()
                cell.execution_count = reply.get("execution_count")
                cell.metadata["execution"] = execution
                if reply["status"] != "ok" and RAISES_TAG not in tags:
                    raise RuntimeError(
                        f"cell {index} raised {reply.get('ename')}: {reply.get('evalue')} "
                        f"and is not tagged {RAISES_TAG}:\n{cell.source}"
                    )
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.metadata["language_info"] = info.get("language_info", {})
    nb.metadata["conformance_reference"] = {
        "generator": "tests_py/conformance/make_references.py (jupyter_client KernelManager + ipykernel)",
        "implementation": info.get("implementation"),
        **library_versions(),
    }
    nbformat.validate(nb)
    return nb


#: The libraries whose versions shape the reference outputs (the kernel runs this interpreter).
LIBRARIES = ("ipykernel", "IPython", "jupyter_client", "matplotlib", "matplotlib_inline", "numpy", "pandas")


def library_versions() -> dict[str, str]:
    """Versions of this interpreter and of LIBRARIES, as recorded in the references."""
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name.lower()] = metadata.version(name.replace("_", "-"))
        except metadata.PackageNotFoundError:
            versions[name.lower()] = "not installed"
    return versions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook file names in notebooks/ (default: all)")
    args = parser.parse_args(argv)
    paths = [NOTEBOOKS / n for n in args.names] if args.names else sorted(NOTEBOOKS.glob("*.ipynb"))
    REFERENCES.mkdir(exist_ok=True)
    for path in paths:
        started = time.monotonic()
        nb = nbformat.read(path, as_version=4)
        executed = execute_notebook(nb, NOTEBOOKS)
        target = REFERENCES / path.name
        with open(target, "w", encoding="utf-8") as f:
            nbformat.write(executed, f)
        print(
            f"{path.name}: {sum(len(c.get('outputs', [])) for c in executed.cells)} outputs "
            f"-> {target.relative_to(HERE.parents[1])} ({time.monotonic() - started:.1f}s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
