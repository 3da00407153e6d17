"""Run a whole notebook in one sandboxed session, as nbclient does with a Jupyter kernel.

    from sandbox_exec.notebook import run_notebook
    nb = run_notebook("analysis.ipynb", output_path="analysis.executed.ipynb")

The code cells run in order in ONE session (one interpreter, one namespace, one workdir),
named after the notebook file. The files that sit next to the notebook (not its
subdirectories, not dotfiles, at most ``max_copy_bytes`` together) are copied into the
session's workdir first, so relative paths such as ``open("data.csv")`` work as they do
when Jupyter starts the kernel in the notebook's directory. Files the cells write stay in
the session's workdir (a temporary directory when this function makes its own Sandbox).

As with nbclient:

- empty code cells and cells tagged ``skip-execution`` are left untouched;
- each run cell gets its outputs, its ``execution_count`` and timing in
  ``metadata.execution``;
- ``update_display`` calls that target outputs of earlier cells are applied there;
- a cell that ends with a status other than ``"ok"`` stops the run (the cells after it
  keep what they had) and :class:`CellExecutionError` is raised, after the notebook,
  with what ran, has been written to ``output_path``. ``allow_errors=True`` records the
  error in the cell's outputs and carries on; so does the ``raises-exception`` cell tag
  for that cell, for an exception the cell raised (``"error"`` or ``"memory"``), not for
  a timeout or a crash of the interpreter. After a crash, the next cell runs in a fresh
  interpreter (the namespace is lost; the progress line says so);
- Ctrl-C interrupts the running cell (a second one ends its interpreter), writes the
  notebook with what ran and raises :class:`NotebookInterrupted` (a KeyboardInterrupt).
"""

from __future__ import annotations

import datetime
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import nbformat

from .policy import Policy
from .result import Result
from .sandbox import Sandbox, Session

__all__ = ["run_notebook", "CellExecutionError", "NotebookInterrupted", "SKIP_TAG", "RAISES_TAG", "DEFAULT_MAX_COPY_BYTES"]

SKIP_TAG = "skip-execution"
RAISES_TAG = "raises-exception"
#: Statuses that the raises-exception tag allows: the cell's own code raised.
_EXPECTABLE = ("error", "memory")
#: At most this many bytes of the notebook's neighbouring files are copied into the workdir.
DEFAULT_MAX_COPY_BYTES = 50 << 20

Progress = Callable[[str], Any]


class CellExecutionError(Exception):
    """A cell ended with a status other than "ok" and errors were not allowed.

    Attributes: ``notebook`` (the notebook as far as it ran), ``cell_index`` (index in
    ``notebook.cells``), ``code_cell_number`` (1-based among the code cells),
    ``code_cell_total``, ``result`` (the cell's :class:`Result`) and ``output_path``
    (where the notebook was written, or None).
    """

    def __init__(self, message: str, *, notebook: Any, cell_index: int, code_cell_number: int,
                 code_cell_total: int, result: Result, output_path: str | None) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.cell_index = cell_index
        self.code_cell_number = code_cell_number
        self.code_cell_total = code_cell_total
        self.result = result
        self.output_path = output_path


class NotebookInterrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the run: the running cell was interrupted (a second Ctrl-C
    kills its interpreter), and the notebook was written with what ran. Attributes:
    ``notebook``, ``code_cell_number`` (the cell that was running, or None) and ``output_path``."""

    def __init__(self, message: str, *, notebook: Any, code_cell_number: int | None,
                 output_path: str | None) -> None:
        super().__init__(message)
        self.notebook = notebook
        self.code_cell_number = code_cell_number
        self.output_path = output_path


def _run_cell(session: Session, code: str, timeout: float | None) -> tuple[Result, bool]:
    """session.run() with a two-step Ctrl-C for the command line.

    The core alone turns a Ctrl-C into an interrupt of the cell and a KeyboardInterrupt once
    the cell returns. The runner wants more: the first Ctrl-C interrupts the cell (its
    namespace is kept), a second one ends the interpreter, and the run stops either way. So
    in the main thread the cell runs in a helper thread while this one waits for signals.
    Returns (result, whether the user interrupted).
    """
    if threading.current_thread() is not threading.main_thread():
        return session.run(code, timeout=timeout), False
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["result"] = session.run(code, timeout=timeout)
        except BaseException as e:  # handed to the caller below
            outcome["error"] = e
        finally:
            done.set()

    thread = threading.Thread(target=target, name=f"sandbox_exec-cell-{session.name}", daemon=True)
    thread.start()
    interrupts = 0
    while not done.is_set():
        try:
            done.wait()
        except KeyboardInterrupt:
            interrupts += 1
            if interrupts == 1:
                session.interrupt()
            else:
                session.close()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"], interrupts > 0


def _timestamp() -> str:
    """An ISO 8601 UTC timestamp as nbclient records them."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def _session_name(sandbox: Sandbox, base: str) -> str:
    taken = {s.name for s in sandbox.sessions()}
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def copy_neighbour_files(src_dir: Path, dest_dir: Path, *, max_total_bytes: int = DEFAULT_MAX_COPY_BYTES,
                         exclude: tuple[Path, ...] = ()) -> tuple[list[str], list[str]]:
    """Copies the regular files of ``src_dir`` (not recursive, no dotfiles) into ``dest_dir``.

    Files are taken by name order while the total stays within ``max_total_bytes``; the
    others are skipped. Returns (copied names, skipped names).
    """
    copied: list[str] = []
    skipped: list[str] = []
    total = 0
    excluded = {p.resolve() for p in exclude}
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        entries = sorted(src_dir.iterdir(), key=lambda p: p.name)
    except OSError:
        return copied, skipped
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if not entry.is_file() or entry.resolve() in excluded:
                continue
            size = entry.stat().st_size
        except OSError:
            continue
        if total + size > max_total_bytes:
            skipped.append(entry.name)
            continue
        try:
            shutil.copyfile(entry, dest_dir / entry.name)
        except OSError:
            skipped.append(entry.name)
            continue
        total += size
        copied.append(entry.name)
    return copied, skipped


def _error_summary(result: Result) -> str:
    if result.status in ("timeout", "crashed", "interrupted") and result.reason:
        return result.reason
    if result.error:
        evalue = result.error.get("evalue", "")
        return f"{result.error.get('ename', 'Error')}: {evalue}" if evalue else str(result.error.get("ename"))
    return result.reason or result.status


def _failure_message(cell: Any, index: int, number: int, total: int, result: Result, label: str) -> str:
    lines = [f"{label}: code cell {number} of {total} (cell index {index}) ended with status "
             f"{result.status!r}: {_error_summary(result)}"]
    if result.reason and result.reason not in lines[0]:
        lines.append(f"reason: {result.reason}")
    source = cell.source.rstrip("\n").splitlines()
    if source:
        shown = source[:10] + (["..."] if len(source) > 10 else [])
        lines.append("------------------")
        lines.extend(shown)
        lines.append("------------------")
    if result.error and result.error.get("traceback"):
        lines.extend(str(x) for x in result.error["traceback"])
    return "\n".join(lines)


def write_notebook(nb: Any, output_path: str | os.PathLike[str]) -> None:
    """Writes ``nb`` with nbformat; ``"-"`` is standard output. Files are replaced atomically."""
    if str(output_path) == "-":
        nbformat.write(nb, sys.stdout)
        sys.stdout.flush()
        return
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = path.stat().st_mode & 0o777  # an existing file keeps its mode
    except OSError:
        mode = 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """A text progress bar, e.g. ``|##########----------|`` for 5 of 10."""
    filled = round(width * done / total) if total else width
    return "|" + "#" * filled + "-" * (width - filled) + "|"


def run_notebook(path_or_nb: Any, *, output_path: str | os.PathLike[str] | None = None,
                 timeout: float | None = None, allow_errors: bool = False, policy: Policy | None = None,
                 sandbox: Sandbox | None = None, progress: Progress | None = None,
                 files_dir: str | os.PathLike[str] | None = None, copy_files: bool = True,
                 max_copy_bytes: int = DEFAULT_MAX_COPY_BYTES, session_name: str | None = None) -> Any:
    """Runs the code cells of a notebook in one session; returns the executed notebook.

    ``path_or_nb``: a path to an .ipynb file or a notebook (NotebookNode or dict, which is
    not modified: a copy is executed). ``output_path``: where to write the executed
    notebook (``"-"``: standard output; None: not written). ``timeout``: wall-clock seconds
    per cell, overriding the policy's ``timeout_s``. ``policy``: for the session (default:
    the sandbox's). ``sandbox``: run in this Sandbox (default: a temporary one, closed
    and removed at the end). ``progress``: called with one line of text per code cell and
    a final summary line. ``files_dir``: the directory whose files are copied into the
    workdir (default: the notebook's directory when given a path; nothing when given a
    notebook object). ``session_name``: default: the notebook file's name without suffix.

    Raises :class:`CellExecutionError` when a cell fails and errors are not allowed (the
    notebook is written first), nbformat's ValidationError when the executed notebook
    does not validate although the input did, and SandboxError when no session can be
    started.
    """
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    source_path: Path | None = None
    if isinstance(path_or_nb, (str, os.PathLike)):
        source_path = Path(path_or_nb)
        nb = nbformat.read(source_path, as_version=4)
    elif isinstance(path_or_nb, dict):
        nb = nbformat.from_dict(path_or_nb)
        nb = nbformat.from_dict(nbformat.convert(nb, 4)) if nb.get("nbformat") != 4 else nb
    else:
        raise TypeError(f"path_or_nb must be a path or a notebook, not {type(path_or_nb).__name__}")
    if files_dir is None and source_path is not None:
        files_dir = source_path.resolve().parent
    if session_name is None:
        session_name = source_path.stem if source_path is not None and source_path.stem else "notebook"

    def say(line: str) -> None:
        if progress is not None:
            progress(line)

    try:
        nbformat.validate(nb)
        input_valid = True
    except nbformat.ValidationError as e:
        input_valid = False
        say(f"warning: the input notebook does not validate ({str(e).splitlines()[0]}); running it anyway")

    own_sandbox = sandbox is None
    box = Sandbox(policy) if own_sandbox else sandbox
    assert box is not None
    session: Session | None = None
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    total = len(code_cells)
    counts: dict[str, int] = {}
    failure: CellExecutionError | None = None
    interrupted_at: int | None = None
    started = time.monotonic()
    ran = 0
    try:
        session = box.session(_session_name(box, session_name), policy=None if own_sandbox else policy)
        if copy_files and files_dir is not None:
            # Before any cell runs: the notebook's neighbours, as Jupyter's kernel sees them.
            _, skipped = copy_neighbour_files(Path(files_dir), session.workdir, max_total_bytes=max_copy_bytes)
            if skipped:
                say(f"note: not copied into the workdir (over the {max_copy_bytes} byte limit or "
                    f"unreadable): {', '.join(skipped)}")
        # display_id -> [(cell index, output index)] for the outputs of the cells run so far.
        displays: dict[str, list[tuple[int, int]]] = {}
        for number, index in enumerate(code_cells, start=1):
            cell = nb.cells[index]
            tags = cell.get("metadata", {}).get("tags", []) or []
            if not cell.source.strip():
                say(f"[{number}/{total}] skipped (empty)")
                counts["skipped"] = counts.get("skipped", 0) + 1
                continue
            if SKIP_TAG in tags:
                say(f"[{number}/{total}] skipped ({SKIP_TAG})")
                counts["skipped"] = counts.get("skipped", 0) + 1
                continue
            cell.outputs = []
            execution: dict[str, str] = {"iopub.execute_input": _timestamp()}
            execution["shell.execute_reply.started"] = execution["iopub.execute_input"]
            result, user_interrupted = _run_cell(session, cell.source, timeout)
            execution["shell.execute_reply"] = _timestamp()
            ran += 1
            cell.outputs = [nbformat.from_dict(o) for o in result.outputs]
            cell.execution_count = result.execution_count
            cell.metadata["execution"] = execution
            for update in result.display_updates:
                for cell_i, out_i in displays.get(update["display_id"], ()):
                    target = nb.cells[cell_i].outputs[out_i]
                    target["data"] = nbformat.from_dict(update["data"])
                    target["metadata"] = nbformat.from_dict(update["metadata"])
            for out_i, display_id in result.display_ids.items():
                # Displaying again with an existing id also updates the earlier outputs with
                # that id (nbclient and Jupyter frontends do the same).
                shown = result.outputs[out_i]
                for cell_i, earlier_i in displays.get(display_id, ()):
                    if cell_i != index:
                        target = nb.cells[cell_i].outputs[earlier_i]
                        target["data"] = nbformat.from_dict(shown["data"])
                        target["metadata"] = nbformat.from_dict(shown["metadata"])
                displays.setdefault(display_id, []).append((index, out_i))

            expected = result.status in _EXPECTABLE and RAISES_TAG in tags
            counts[result.status] = counts.get(result.status, 0) + 1
            line = f"[{number}/{total}] {result.status} {result.duration_s:.2f}s"
            if result.status != "ok":
                line += f" {_error_summary(result)}"
                if expected:
                    line += f" (expected: {RAISES_TAG})"
            if result.session_restarted:
                line += " (the interpreter had died: this cell ran in a fresh one)"
            if result.truncated_bytes:
                line += f" ({result.truncated_bytes} output bytes dropped)"
            say(line)
            if user_interrupted:
                interrupted_at = number
                break
            if result.status != "ok" and not expected and not allow_errors:
                failure = CellExecutionError(
                    _failure_message(cell, index, number, total, result, "cell failed"),
                    notebook=nb, cell_index=index, code_cell_number=number, code_cell_total=total,
                    result=result, output_path=None if output_path is None else str(output_path))
                break
    finally:
        if session is not None:
            session.close()
        if own_sandbox:
            box.close()

    _set_language_info(nb)
    if input_valid:
        nbformat.validate(nb)
    if output_path is not None:
        write_notebook(nb, output_path)

    elapsed = time.monotonic() - started
    parts = [f"{n} {status}" for status, n in sorted(counts.items(), key=lambda kv: (kv[0] != "ok", kv[0]))]
    summary = f"ran {ran} of {total} code cells in {elapsed:.2f}s: {', '.join(parts) or 'nothing to run'}"
    if failure is not None:
        summary += f"; stopped at code cell {failure.code_cell_number} (status {failure.result.status})"
    if interrupted_at is not None:
        summary += f"; interrupted (Ctrl-C) at code cell {interrupted_at}"
    say(summary)
    if interrupted_at is not None:
        raise NotebookInterrupted(f"interrupted (Ctrl-C) at code cell {interrupted_at} of {total}",
                                  notebook=nb, code_cell_number=interrupted_at,
                                  output_path=None if output_path is None else str(output_path))
    if failure is not None:
        raise failure
    return nb


def _set_language_info(nb: Any) -> None:
    """The kernel's language_info, as nbclient records it."""
    info = nb.metadata.get("language_info") or {}
    info = dict(info)
    info.update({
        "name": "python",
        "version": platform.python_version(),
        "mimetype": "text/x-python",
        "file_extension": ".py",
        "codemirror_mode": {"name": "ipython", "version": 3},
        "pygments_lexer": "ipython3",
        "nbconvert_exporter": "python",
    })
    nb.metadata["language_info"] = nbformat.from_dict(info)
