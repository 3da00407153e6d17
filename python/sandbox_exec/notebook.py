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
- an output the written notebook cannot hold (nbformat rejects it, or it cannot be
  encoded, such as a lone surrogate) is replaced by a marker output saying why (a stderr
  stream), so that one bad output never costs the other cells' outputs;
- Ctrl-C interrupts the running cell (a second one ends its interpreter), writes the
  notebook with what ran and raises :class:`NotebookInterrupted` (a KeyboardInterrupt).
"""

from __future__ import annotations

import copy
import datetime
import errno
import json
import os
import platform
import re
import stat
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import nbformat
from nbformat import validator as _nbvalidator

from . import _safe_fs
from ._terminal import escape_controls
from .policy import Policy
from .result import MimeBundle, Result
from .sandbox import Sandbox, Session

__all__ = [
    "DEFAULT_MAX_COPY_BYTES",
    "RAISES_TAG",
    "SKIP_TAG",
    "CellExecutionError",
    "NotebookInterrupted",
    "run_notebook",
]

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

    def __init__(
        self,
        message: str,
        *,
        notebook: Any,
        cell_index: int,
        code_cell_number: int,
        code_cell_total: int,
        result: Result,
        output_path: str | None,
    ) -> None:
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

    def __init__(self, message: str, *, notebook: Any, code_cell_number: int | None, output_path: str | None) -> None:
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


def copy_neighbour_files(
    src_dir: Path,
    dest_dir: Path,
    *,
    max_total_bytes: int = DEFAULT_MAX_COPY_BYTES,
    exclude: tuple[Path, ...] = (),
    follow_source_links: bool = False,
) -> tuple[list[str], list[str]]:
    """Copies the regular files of ``src_dir`` (not recursive, no dotfiles) into ``dest_dir``.

    Files are taken by name order while the total stays within ``max_total_bytes``; the
    others are skipped. Returns (copied names, skipped names).

    ``dest_dir`` is a workdir, which a cell controls: nothing in it is followed or written
    through (see _safe_fs.copy_into). A name already there is replaced by a fresh file
    owned by the workdir's owner; a directory of that name is left and the file skipped.
    In ``src_dir`` only regular files are read (a FIFO, socket or device is never opened);
    symlinks there are skipped unless ``follow_source_links`` (the runner never asks: a
    notebook's directory may be some session's workdir, whose links a cell chose, and which
    Sandbox made it cannot be told from the path).
    """
    copied: list[str] = []
    skipped: list[str] = []
    total = 0
    excluded = set()
    for p in exclude:
        try:
            st = os.stat(p)
            excluded.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        src_fd = os.open(src_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return copied, skipped
    dest_fd: int | None = None
    try:
        dest_fd = _safe_fs.open_dir(dest_dir)
        for name in sorted(os.listdir(src_fd)):
            if name.startswith("."):
                continue
            outcome, size = _copy_neighbour(
                src_fd, dest_fd, name, excluded=excluded, room=max_total_bytes - total, follow=follow_source_links
            )
            if outcome == "copied":
                total += size
                copied.append(name)
            elif outcome == "skipped":
                skipped.append(name)
    finally:
        os.close(src_fd)
        if dest_fd is not None:
            os.close(dest_fd)
    return copied, skipped


def _copy_neighbour(
    src_fd: int, dest_fd: int, name: str, *, excluded: set[tuple[int, int]], room: int, follow: bool
) -> tuple[Literal["copied", "skipped", "ignored"], int]:
    """Copies one entry of copy_neighbour_files' source: ("copied", its size), ("skipped", 0)
    for one the operator is told about, ("ignored", 0) for what is no neighbour to copy."""
    try:
        fd, st = _safe_fs.open_regular(name, src_fd, follow=follow)
    except OSError:
        # Not a regular file (or gone): not a neighbour to copy. A symlink is named,
        # so the operator knows why data.csv is missing.
        try:
            if stat.S_ISLNK(os.stat(name, dir_fd=src_fd, follow_symlinks=False).st_mode):
                return "skipped", 0
        except OSError:
            pass
        return "ignored", 0
    try:
        if (st.st_dev, st.st_ino) in excluded:
            return "ignored", 0
        if st.st_size > room:
            return "skipped", 0
        try:
            _safe_fs.copy_into(fd, st.st_size, dest_fd, name, mode=0o644)
        except OSError:
            return "skipped", 0
        return "copied", st.st_size
    finally:
        os.close(fd)


def _error_summary(result: Result) -> str:
    if result.status in ("timeout", "crashed", "interrupted") and result.reason:
        return result.reason
    if result.error:
        evalue = result.error.get("evalue", "")
        return f"{result.error.get('ename', 'Error')}: {evalue}" if evalue else str(result.error.get("ename"))
    return result.reason or result.status


def _failure_message(cell: Any, index: int, number: int, total: int, result: Result, label: str) -> str:
    # The summary is the cell's own text: one line here (its newlines escaped), so it cannot
    # start lines of its own that look like the runner's; the traceback below is multi-line.
    lines = [
        f"{label}: code cell {number} of {total} (cell index {index}) ended with status "
        f"{result.status!r}: {escape_controls(_error_summary(result), multiline=False)}"
    ]
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


#: Characters json.dumps(ensure_ascii=False) leaves raw that must not reach a terminal (DEL,
#: C1, separators, bidi controls) or cannot be encoded (lone surrogates). They only occur
#: inside JSON strings, where a \uXXXX escape stands for the same character.
_JSON_RAW_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\ud800-\udfff]")


#: A display's content (over _REPEAT_MIN_BYTES) is written at most this many times: outputs
#: sharing a display id all show its latest update, and a cell could otherwise make K tiny
#: outputs with one id and then one large update: K copies in the file.
_REPEAT_MAX = 4
_REPEAT_MIN_BYTES = 64 << 10


def _bound_repeated_displays(nb: Any) -> None:
    """Replaces the 5th and later copies of one large display content with a marker."""
    seen: dict[str, int] = {}
    sizes: dict[int, tuple[int, str]] = {}  # id(data) -> (size, digest): each object dumped once
    import hashlib

    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) if cell.get("cell_type") == "code" else []:
            data = output.get("data")
            if not isinstance(data, dict):
                continue
            if id(data) not in sizes:
                text = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
                sizes[id(data)] = (
                    len(text),
                    hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
                    if len(text) > _REPEAT_MIN_BYTES
                    else "",
                )
            size, digest = sizes[id(data)]
            if not digest:
                continue
            seen[digest] = seen.get(digest, 0) + 1
            if seen[digest] > _REPEAT_MAX:
                output["data"] = {
                    "text/plain": f"[sandbox_exec: the same {size}-character display as above "
                    f"(written {_REPEAT_MAX} times already); not repeated]"
                }
                output["metadata"] = {}


def _indent_cost(nb: Any) -> int:
    """The characters nbformat's one-space indentation adds (a newline and `depth` spaces
    per value): a deeply nested output can make that many times its own size."""
    cost, stack = 0, [(nb, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            cost += (depth + 2) * (len(value) + 1)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            cost += (depth + 2) * (len(value) + 1)
            stack.extend((v, depth + 1) for v in value)
    return cost


def notebook_text(nb: Any) -> str:
    """nbformat's JSON text of ``nb``, with the characters above written as \\uXXXX escapes:
    the same notebook for any JSON reader, always encodable as UTF-8 and safe to print.

    What a cell controls must not make the file many times what it sent: a large display
    content is written at most _REPEAT_MAX times, and a notebook whose indentation alone
    would pass 16 MiB is written without indentation (any JSON or nbformat reader reads it
    the same)."""
    _bound_repeated_displays(nb)
    if _indent_cost(nb) <= 16 << 20:
        text = nbformat.writes(nb)
    else:
        # nbformat's writer always indents; the same JSON without indentation, as its writer
        # prepares it (text split into lines, transient fields dropped, keys sorted).
        from nbformat.v4.rwbase import split_lines, strip_transient

        compact = strip_transient(split_lines(copy.deepcopy(nb)))
        text = json.dumps(compact, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    text = _JSON_RAW_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text if text.endswith("\n") else text + "\n"  # as nbformat.write ends a file


def write_notebook(nb: Any, output_path: str | os.PathLike[str]) -> None:
    """Writes ``nb`` as nbformat JSON (see notebook_text); ``"-"`` is standard output. Files
    are replaced atomically."""
    text = notebook_text(nb)
    if str(output_path) == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    path = Path(output_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The output may sit in a live session's workdir, where a cell can swap names under us:
    # everything below is relative to a descriptor of the directory, the temporary file is
    # created fresh (O_EXCL, O_NOFOLLOW), its mode set through its descriptor, and the file
    # that ends up at the name is checked to be ours.
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        mode = 0o644
        try:
            st = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
                mode = st.st_mode & 0o777  # our own earlier output keeps its mode
        except OSError:
            pass
        tmp = f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "w", encoding="utf-8", closefd=False) as f:
                f.write(text)
            os.fchmod(fd, mode)
            written = os.fstat(fd)
            os.replace(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            now = os.stat(path.name, dir_fd=dir_fd, follow_symlinks=False)
            if (now.st_dev, now.st_ino) != (written.st_dev, written.st_ino):
                try:
                    os.unlink(path.name, dir_fd=dir_fd)  # what was planted there, not followed
                except OSError:
                    pass
                raise OSError(
                    errno.EBUSY,
                    f"{path} was replaced by something else while it was written (is it in a live session's workdir?)",
                )
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dir_fd)
            except OSError:
                pass
            raise
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def _unwritable(obj: Any, ref: str, minor: int) -> str | None:
    """Why ``obj`` (a code cell or an output) cannot go into the written notebook, or None."""
    try:
        json.dumps(obj, ensure_ascii=False, allow_nan=False).encode("utf-8")
    except UnicodeEncodeError as e:
        return f"it cannot be encoded as UTF-8 ({e.reason} at position {e.start} of its JSON)"
    except RecursionError:
        return "it is nested too deeply"
    except (TypeError, ValueError) as e:
        return f"it is not valid JSON ({escape_controls(e, multiline=False)[:200]})"
    try:
        _nbvalidator.validate(obj, ref=ref, version=4, version_minor=minor)
    except nbformat.ValidationError as e:
        first = str(getattr(e, "message", "") or e).splitlines()[0] if str(e) else "invalid"
        return f"it does not validate as an nbformat {ref.replace('_', ' ')} ({escape_controls(first)[:200]})"
    return None


def _dropped_marker(why: str) -> Any:
    return nbformat.from_dict(
        {"output_type": "stream", "name": "stderr", "text": f"[sandbox_exec: an output was dropped: {why}]\n"}
    )


def make_writable(cell: Any, minor: int) -> list[str]:
    """Replaces each output of ``cell`` that would fail nbformat validation or could not be
    encoded with a marker saying so (a stderr stream output), and an execution count that
    is not one with None, so that one bad output never costs the other cells' outputs.
    Returns what was changed, one line each."""
    notes: list[str] = []
    count = cell.get("execution_count")
    if count is not None and (type(count) is not int or count < 0):
        cell["execution_count"] = None
        notes.append(f"its execution_count {escape_controls(repr(count))[:60]} is not a count; recorded as none")
    if _unwritable(cell, "code_cell", minor) is None:
        return notes
    outputs = []
    for j, output in enumerate(cell.get("outputs") or []):
        why = _unwritable(output, "output", minor)
        if why is None:
            outputs.append(output)
        else:
            outputs.append(_dropped_marker(why))
            notes.append(f"output {j + 1} was dropped: {why}")
    cell["outputs"] = outputs
    return notes


def progress_bar(done: int, total: int, width: int = 20) -> str:
    """A text progress bar, e.g. ``|##########----------|`` for 5 of 10."""
    filled = round(width * done / total) if total else width
    return "|" + "#" * filled + "-" * (width - filled) + "|"


def run_notebook(
    path_or_nb: Any,
    *,
    output_path: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
    allow_errors: bool = False,
    policy: Policy | None = None,
    sandbox: Sandbox | None = None,
    progress: Progress | None = None,
    files_dir: str | os.PathLike[str] | None = None,
    copy_files: bool = True,
    max_copy_bytes: int = DEFAULT_MAX_COPY_BYTES,
    session_name: str | None = None,
) -> Any:
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
    nb, source_path = _load_notebook(path_or_nb)
    if files_dir is None and source_path is not None:
        files_dir = source_path.resolve().parent
    if session_name is None:
        session_name = source_path.stem if source_path is not None and source_path.stem else "notebook"
    say = _sayer(progress)
    input_valid = _input_validates(nb, say)
    run = _NotebookRun(
        nb,
        say,
        timeout=timeout,
        allow_errors=allow_errors,
        output_path=None if output_path is None else str(output_path),
    )
    own_sandbox = sandbox is None
    box = Sandbox(policy) if sandbox is None else sandbox
    session: Session | None = None
    try:
        session = box.session(_session_name(box, session_name), policy=None if own_sandbox else policy)
        if copy_files and files_dir is not None:
            _copy_files_into(session, Path(files_dir), max_copy_bytes, say)
        run.run_cells(session)
    finally:
        if session is not None:
            session.close()
        if own_sandbox:
            box.close()
    _finish_notebook(nb, run, input_valid, output_path, say)
    say(run.summary())
    run.raise_if_stopped()
    return nb


def _load_notebook(path_or_nb: Any) -> tuple[Any, Path | None]:
    """The notebook to run (a v4 NotebookNode, a copy when given one) and its path, if any."""
    if isinstance(path_or_nb, (str, os.PathLike)):
        source_path = Path(path_or_nb)
        return nbformat.read(source_path, as_version=4), source_path
    if isinstance(path_or_nb, dict):
        nb = nbformat.from_dict(path_or_nb)
        return (nbformat.from_dict(nbformat.convert(nb, 4)) if nb.get("nbformat") != 4 else nb), None
    raise TypeError(f"path_or_nb must be a path or a notebook, not {type(path_or_nb).__name__}")


def _sayer(progress: Progress | None) -> Callable[[str], None]:
    def say(line: str) -> None:
        # Progress lines carry cell-controlled text (exception names and messages): no
        # terminal controls, and one line stays one line.
        if progress is not None:
            progress(escape_controls(line, multiline=False))

    return say


def _input_validates(nb: Any, say: Callable[[str], None]) -> bool:
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        say(f"warning: the input notebook does not validate ({str(e).splitlines()[0]}); running it anyway")
        return False
    return True


def _copy_files_into(session: Session, files_dir: Path, max_copy_bytes: int, say: Callable[[str], None]) -> None:
    """Before any cell runs: the notebook's neighbours, as Jupyter's kernel sees them, regular
    files only. Symlinks are not followed: the notebook may lie in some session's workdir
    (this Sandbox's or another's), where a cell chose them."""
    _, skipped = copy_neighbour_files(files_dir, session.workdir, max_total_bytes=max_copy_bytes)
    if skipped:
        say(
            f"note: not copied into the workdir (over the {max_copy_bytes} byte limit, "
            f"a symlink, or unreadable): {', '.join(escape_controls(n, multiline=False) for n in skipped)}"
        )


class _NotebookRun:
    """The code cells of one notebook run in order in one session, and what came of them."""

    def __init__(
        self, nb: Any, say: Callable[[str], None], *, timeout: float | None, allow_errors: bool, output_path: str | None
    ) -> None:
        self.nb = nb
        self.say = say
        self.timeout = timeout
        self.allow_errors = allow_errors
        self.output_path = output_path
        self.code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
        self.total = len(self.code_cells)
        self.counts: dict[str, int] = {}
        self.failure: CellExecutionError | None = None
        self.interrupted_at: int | None = None
        self.started = time.monotonic()
        self.ran = 0
        self.touched: set[int] = set()  # cells whose outputs this run wrote (run, or updated)
        # display_id -> [(cell index, output index)] for the outputs of the cells run so far.
        self.displays: dict[str, list[tuple[int, int]]] = {}

    def run_cells(self, session: Session) -> None:
        """Runs the code cells until the end, a failure that stops the run, or Ctrl-C."""
        for number, index in enumerate(self.code_cells, start=1):
            cell = self.nb.cells[index]
            tags = cell.get("metadata", {}).get("tags", []) or []
            skip = "empty" if not cell.source.strip() else SKIP_TAG if SKIP_TAG in tags else None
            if skip is not None:
                self.say(f"[{number}/{self.total}] skipped ({skip})")
                self.counts["skipped"] = self.counts.get("skipped", 0) + 1
                continue
            result, user_interrupted = self.run_cell(session, index)
            expected = result.status in _EXPECTABLE and RAISES_TAG in tags
            self.counts[result.status] = self.counts.get(result.status, 0) + 1
            self.say(_progress_line(number, self.total, result, expected))
            if user_interrupted:
                self.interrupted_at = number
                return
            if result.status != "ok" and not expected and not self.allow_errors:
                self.failure = CellExecutionError(
                    _failure_message(cell, index, number, self.total, result, "cell failed"),
                    notebook=self.nb,
                    cell_index=index,
                    code_cell_number=number,
                    code_cell_total=self.total,
                    result=result,
                    output_path=self.output_path,
                )
                return

    def run_cell(self, session: Session, index: int) -> tuple[Result, bool]:
        """Runs one cell and records its outputs, count and timing in the notebook."""
        cell = self.nb.cells[index]
        cell.outputs = []
        execution: dict[str, str] = {"iopub.execute_input": _timestamp()}
        execution["shell.execute_reply.started"] = execution["iopub.execute_input"]
        result, user_interrupted = _run_cell(session, cell.source, self.timeout)
        execution["shell.execute_reply"] = _timestamp()
        self.ran += 1
        self.touched.add(index)
        cell.outputs = [nbformat.from_dict(o) for o in result.outputs]
        cell.execution_count = result.execution_count
        cell.metadata["execution"] = execution
        self.apply_displays(index, result)
        return result, user_interrupted

    def apply_displays(self, index: int, result: Result) -> None:
        """Applies the cell's display updates (and its displays with an id that earlier
        outputs share) to the outputs of earlier cells, as nbclient does."""
        for update in result.display_updates:
            for cell_i, out_i in self.displays.get(update["display_id"], ()):
                self._show(cell_i, out_i, update["data"], update["metadata"])
        for out_i, display_id in result.display_ids.items():
            # Displaying again with an existing id also updates the earlier outputs with
            # that id (nbclient and Jupyter frontends do the same).
            shown = result.outputs[out_i]
            if shown["output_type"] != "display_data":
                continue
            for cell_i, earlier_i in self.displays.get(display_id, ()):
                if cell_i != index:
                    self._show(cell_i, earlier_i, shown["data"], shown["metadata"])
            self.displays.setdefault(display_id, []).append((index, out_i))

    def _show(self, cell_i: int, out_i: int, data: MimeBundle, metadata: dict[str, Any]) -> None:
        self.touched.add(cell_i)
        target = self.nb.cells[cell_i].outputs[out_i]
        target["data"] = nbformat.from_dict(data)
        target["metadata"] = nbformat.from_dict(metadata)

    def summary(self) -> str:
        elapsed = time.monotonic() - self.started
        parts = [f"{n} {status}" for status, n in sorted(self.counts.items(), key=lambda kv: (kv[0] != "ok", kv[0]))]
        line = f"ran {self.ran} of {self.total} code cells in {elapsed:.2f}s: {', '.join(parts) or 'nothing to run'}"
        if self.failure is not None:
            line += f"; stopped at code cell {self.failure.code_cell_number} (status {self.failure.result.status})"
        if self.interrupted_at is not None:
            line += f"; interrupted (Ctrl-C) at code cell {self.interrupted_at}"
        return line

    def raise_if_stopped(self) -> None:
        if self.interrupted_at is not None:
            raise NotebookInterrupted(
                f"interrupted (Ctrl-C) at code cell {self.interrupted_at} of {self.total}",
                notebook=self.nb,
                code_cell_number=self.interrupted_at,
                output_path=self.output_path,
            )
        if self.failure is not None:
            raise self.failure


def _progress_line(number: int, total: int, result: Result, expected: bool) -> str:
    line = f"[{number}/{total}] {result.status} {result.duration_s:.2f}s"
    if result.status != "ok":
        line += f" {_error_summary(result)}"
        if expected:
            line += f" (expected: {RAISES_TAG})"
    if result.session_restarted:
        line += " (the interpreter had died: this cell ran in a fresh one)"
    if result.truncated_bytes:
        line += f" ({result.truncated_bytes} output bytes dropped)"
    return line


def _finish_notebook(
    nb: Any,
    run: _NotebookRun,
    input_valid: bool,
    output_path: str | os.PathLike[str] | None,
    say: Callable[[str], None],
) -> None:
    """Makes the cells this run touched writable, records the kernel, validates and writes."""
    minor = nb.get("nbformat_minor")
    minor = min(minor, nbformat.current_nbformat_minor) if type(minor) is int and minor >= 0 else 4
    for index in sorted(run.touched):
        for note in make_writable(nb.cells[index], minor):
            say(f"note: code cell {run.code_cells.index(index) + 1}: {note}")
    _set_language_info(nb)
    if input_valid:
        nbformat.validate(nb)
    if output_path is not None:
        write_notebook(nb, output_path)


def _set_language_info(nb: Any) -> None:
    """The kernel's language_info, as nbclient records it."""
    info = nb.metadata.get("language_info") or {}
    info = dict(info)
    info.update(
        {
            "name": "python",
            "version": platform.python_version(),
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "pygments_lexer": "ipython3",
            "nbconvert_exporter": "python",
        }
    )
    nb.metadata["language_info"] = nbformat.from_dict(info)
