"""Command line: ``python -m sandbox_exec run NOTEBOOK.ipynb`` (or ``sandbox-exec run ...``).

Exit status: 0 when every cell ran (or errors were allowed), 1 when a cell failed, 2 for a
usage error or a notebook that cannot be read or written, 3 when the sandbox itself cannot
be provided on this host, 130 when interrupted with Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.resources
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

PROG = "sandbox-exec"
EXIT_OK, EXIT_CELL_FAILED, EXIT_USAGE, EXIT_SANDBOX, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
DEMO = ("examples", "demo.ipynb")


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}")
    return value


def _err(message: object) -> None:
    """Prints an error; its text may come from a cell (an exception's name and message, a
    traceback, an output that failed validation), so terminal controls are escaped and
    every line after the first is indented: no line of it can pose as a progress line."""
    from ._terminal import escape_controls

    text = "\n  ".join(escape_controls(message).split("\n"))
    print(f"{PROG}: {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _demo_path() -> Iterator[Path]:
    """The embedded example notebook as a real file (importlib.resources, so zipped installs work)."""
    ref = importlib.resources.files("sandbox_exec")
    for part in DEMO:
        ref = ref / part
    with importlib.resources.as_file(ref) as path:
        yield Path(path)


def default_output_path(notebook: Path | None) -> Path:
    """<stem>.executed.ipynb next to the notebook; for the embedded demo, in the current directory."""
    if notebook is None:
        return Path.cwd() / (Path(DEMO[-1]).stem + ".executed.ipynb")
    return notebook.with_name(notebook.stem + ".executed.ipynb")


def _print_progress(line: str) -> None:
    """A progress line on stderr: "[3/12] ok 0.01s" lines get a bar in front
    (|#####---------------| [3/12] ...)."""
    from ._terminal import escape_controls
    from .notebook import progress_bar

    done, _, rest = line.partition("/") if line.startswith("[") else ("", "", "")
    total = rest.split("]", 1)[0]
    if done[1:].isdigit() and total.isdigit():
        line = f"{progress_bar(int(done[1:]), int(total))} {line}"
    print(escape_controls(line, multiline=False), file=sys.stderr, flush=True)


def _cmd_run(args: argparse.Namespace) -> int:
    try:
        import nbformat

        from .notebook import CellExecutionError, NotebookInterrupted, run_notebook
    except ImportError as e:
        _err(f"the run command needs nbformat, which is not importable ({e}); hint: pip install 'nbformat>=5.9'")
        return EXIT_USAGE
    from .errors import SandboxError

    progress = None if args.quiet else _print_progress
    notebook = Path(args.notebook) if args.notebook is not None else None
    output = args.output if args.output is not None else str(default_output_path(notebook))
    with contextlib.ExitStack() as stack:
        path = notebook if notebook is not None else stack.enter_context(_demo_path())
        try:
            nb = nbformat.read(path, as_version=4)
        except (OSError, ValueError) as e:  # missing, unreadable, not JSON, unknown nbformat
            _err(f"cannot read the notebook {str(path)!r}: {e}")
            return EXIT_USAGE
        if progress is not None:
            progress(f"running {'the embedded example ' if notebook is None else ''}{path}")
        try:
            run_notebook(
                nb,
                output_path=output,
                timeout=args.timeout,
                allow_errors=args.allow_errors,
                progress=progress,
                files_dir=path.resolve().parent,
                session_name=path.stem or "notebook",
            )
        except CellExecutionError as e:
            _err(f"error: {e}")
            if output != "-":
                _err(f"the notebook as far as it ran was written to {output}")
            return EXIT_CELL_FAILED
        except NotebookInterrupted as e:
            _err(str(e))
            if output != "-":
                _err(f"the notebook as far as it ran was written to {output}")
            return EXIT_INTERRUPTED
        except nbformat.ValidationError as e:
            _err(f"error: the executed notebook does not validate, not written: {e}")
            return EXIT_USAGE
        except SandboxError as e:
            _err(f"error: the sandbox could not be provided: {e}")
            return EXIT_SANDBOX
        except OSError as e:
            _err(f"error: cannot write {output!r}: {e}")
            return EXIT_USAGE
    if progress is not None and output != "-":
        progress(f"wrote {output}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Run notebooks in sandboxed child interpreters (sandbox_exec).",
        epilog="exit status: 0 ok, 1 a cell failed, 2 usage or notebook I/O error, "
        "3 sandbox unavailable, 130 interrupted",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Each subcommand is a subparser whose `handler` default main() calls with the parsed
    # arguments.
    run = commands.add_parser(
        "run",
        help="execute a notebook's code cells in one sandboxed session",
        description="Execute the code cells of NOTEBOOK in order in one sandboxed session (one "
        "interpreter, state kept across cells), as nbclient does, and write the "
        "executed notebook. The files next to NOTEBOOK (not subdirectories, not "
        "dotfiles, 50 MB at most) are copied into the session's working directory "
        "first. Cells tagged skip-execution and empty cells are left as they are; "
        "a cell tagged raises-exception may raise. Progress goes to stderr.",
    )
    run.add_argument(
        "notebook",
        nargs="?",
        metavar="NOTEBOOK",
        help="the .ipynb file to run (default: the embedded example notebook sandbox_exec/examples/demo.ipynb)",
    )
    run.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        help="where to write the executed notebook (default: <stem>.executed.ipynb next "
        "to NOTEBOOK, or ./demo.executed.ipynb for the embedded example; "
        "'-' writes it to stdout)",
    )
    run.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="wall-clock limit per cell, overriding the policy's timeout_s (default 60)",
    )
    run.add_argument(
        "--allow-errors",
        action="store_true",
        help="record a failing cell's error in its outputs and carry on (exit status 0); "
        "without it the run stops at the first failing cell (exit status 1), and the "
        "notebook is written with what ran",
    )
    run.add_argument(
        "-q", "--quiet", action="store_true", help="no progress lines on stderr (errors are still reported)"
    )
    run.set_defaults(handler=_cmd_run)
    doctor = commands.add_parser(
        "doctor",
        help="report, for this host, each isolation layer and limit: available or not, and why",
        description="Probe each isolation layer (namespaces, seccomp, Landlock, cgroups) by starting "
        "real sandboxes one layer at a time, and print which mechanism enforces each "
        "policy field here. Exit status 0 when the default policy works.",
    )
    doctor.set_defaults(handler=_cmd_doctor)
    return parser


def _cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import main as doctor_main

    return doctor_main()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        _err("interrupted")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
