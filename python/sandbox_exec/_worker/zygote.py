"""A zygote: an interpreter that has run a session prelude and forks warm sessions.

Started by the backend (sandbox_exec._zygotes) as ``python -I -m sandbox_exec._worker.zygote
<control fd> <prelude fd>``: its control socket (moved to descriptor 3) and a
pipe with the prelude (moved to 4, read to its end). It

1. sets up the worker's interpreter-wide state (the same Worker a cold session builds) and
   runs the prelude in the namespace its sessions will have, exactly as a cold session runs
   it as its first cell: imports, helpers, seeds; never a user's cell;
2. settles: collects garbage and freezes what is left (``gc.freeze()``: the collector then
   never touches, so never dirties, the pages every session shares copy-on-write); forks
   once, which makes the thread pools that import started (OpenBLAS's, joined by its own
   fork handler) stop; and checks that it is single-threaded -- a zygote with a thread
   would fork children holding that thread's locks, so it refuses to serve instead;
3. reports ``{"status": "ok"}`` (or the prelude's error, or the threads left) on the socket,
   then serves fork requests (``_zygote.serve``) until the backend closes the socket.

In a forked session, ``serve`` returns inside the sandbox, every isolation layer applied
(cpp/launcher/session_keeper.h), and the code below turns the zygote's copy into the
session's worker: its environment, fresh random state, its rings.

What forked siblings share, by construction: the address-space layout (ASLR is decided at
exec; siblings and the zygote have the same library and heap addresses, so an address
leaked by one session tells where things are in another, though no session can reach
another's memory) and str/bytes hash randomization (the zygote's hash secret: dict and set
iteration orders agree between sessions of one zygote). Random streams do not: ``random``
and numpy's global generator are reseeded from the kernel in every session.
"""

from __future__ import annotations

import fcntl
import gc
import json
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

from .. import _core, _zygote
from . import modes
from .import_patch import PatchOnImport
from .main import Worker

CONTROL_FD = 3
PRELUDE_FD = 4
FIRST_FREE_FD = _core.FIRST_FREE_FD  # the session's descriptors are 3..8, 9 the keeper's
#: The largest report the zygote sends (the backend reads at most this much).
MAX_REPORT_BYTES = 64 * 1024


def _read_prelude() -> str:
    chunks = []
    while chunk := os.read(PRELUDE_FD, 1 << 16):
        chunks.append(chunk)
    os.close(PRELUDE_FD)
    return b"".join(chunks).decode("utf-8")


def _report(message: dict[str, object]) -> None:
    data = json.dumps(message).encode()
    if len(data) > MAX_REPORT_BYTES:
        message = {"status": message.get("status", "error"), "reason": "report too large (truncated)"}
        data = json.dumps(message).encode()
    os.write(CONTROL_FD, data)


def _warm_up() -> None:
    """Loads, once and here, what a session's first outputs load lazily: the text/plain
    printer (IPython's, when importable) and, when the prelude loaded matplotlib, the figure
    path (a figure rendered through the session's own formatter and discarded). Without it
    every session's first figure paid those imports (2.3x the same cell in a long-lived
    session). Nothing of it reaches a session but loaded modules: no figure number is
    taken (no pyplot figure), no output is sent (nothing is attached)."""
    from .display import format_bundle

    try:
        format_bundle(object())
        if "matplotlib" in sys.modules:
            import matplotlib
            from matplotlib.figure import Figure

            if "sandbox_exec" in matplotlib.get_backend():
                from . import mpl_backend  # noqa: F401 - loaded for the sessions

            figure = Figure(figsize=(1, 1))
            figure.add_subplot().plot([0, 1])
            format_bundle(figure)
    except Exception:
        pass


def _reserve_session_fds() -> None:
    """Keeps 4..9 taken (by /dev/null) so nothing the zygote opens lands where a forked
    session's descriptors go: those numbers are overwritten in the session."""
    for fd in range(PRELUDE_FD, FIRST_FREE_FD):
        null = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)


def _open_fds() -> list[str]:
    """Descriptors at or above FIRST_FREE_FD, as "fd -> target": a session closes them all
    (only its own reach it), so a Python object the prelude kept on one would later close
    or use whatever the session opens at that number."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= FIRST_FREE_FD:
            try:
                out.append(f"{fd} -> {os.readlink(f'/proc/self/fd/{fd}')}")
            except OSError:
                pass  # the listing's own descriptor, closed by now
    return out


def _close_font_files() -> None:
    """matplotlib keeps the font files it rendered with open (an LRU cache of FT2Font
    objects): closed here, as a session would find their descriptors closed under them.
    A session reopens a font on its first text (a fraction of a millisecond each). Keeping
    them (from memory, with no descriptor) would not carry them into a session either:
    matplotlib clears that cache in every forked child itself (an at-fork hook), and with the
    cache kept the first figure was no faster (docs/benchmarks.md, "Warm starts")."""
    font_manager = sys.modules.get("matplotlib.font_manager")
    get_font = getattr(font_manager, "_get_font", None)
    cache_clear = getattr(get_font, "cache_clear", None)
    if callable(cache_clear):
        cache_clear()


def _settle() -> int:
    """Stops the thread pools import started; returns the threads left (1 when settled)."""
    _close_font_files()
    gc.collect()
    gc.freeze()
    pid = os.fork()  # runs the libraries' fork handlers; the child has nothing to do
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return _zygote.thread_count()


def _thread_names() -> list[str]:
    names = []
    for tid in sorted(os.listdir("/proc/self/task")):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    return names


class PreludeEffects:
    """What the prelude did that a session must see as a cold session would: the variables
    it set in os.environ, and whether it seeded random or numpy's global generator itself."""

    def __init__(self) -> None:
        self.env_set: dict[str, str] = {}
        self.env_removed: set[str] = set()
        self.seeded: set[str] = set()
        self.tmpdir = os.environ.get("TMPDIR")  # the zygote's own, never a session's
        self.random_state: object = None  # random's state after a prelude that seeded it

    def watch(self, run: Callable[[], object]) -> object:
        """Runs the prelude (`run`) watching seed calls and environment changes."""
        import random

        before = dict(os.environ)
        original_seed = random.seed
        numpy_seed = _NumpySeedWatch(self.seeded)

        def seed(*args: Any, **kwargs: Any) -> None:
            self.seeded.add("random")
            original_seed(*args, **kwargs)

        random.seed = seed
        sys.meta_path.insert(0, numpy_seed.finder)
        if "numpy.random" in sys.modules:
            numpy_seed.wrap(sys.modules["numpy.random"])
        try:
            return run()
        finally:
            random.seed = original_seed
            sys.meta_path.remove(numpy_seed.finder)
            numpy_seed.unwrap()
            if "random" in self.seeded:
                self.random_state = random.getstate()
            after = dict(os.environ)
            self.env_set = {k: v for k, v in after.items() if before.get(k) != v}
            self.env_removed = set(before) - set(after)


class _NumpySeedWatch:
    """Wraps numpy.random.seed while the prelude runs, whether numpy.random is loaded
    already or the prelude imports it (numpy loads it lazily)."""

    def __init__(self, seeded: set[str]) -> None:
        self._seeded = seeded
        self._wrapped: tuple[Any, Any] | None = None
        self.finder = PatchOnImport(("numpy.random",), self.wrap)

    def wrap(self, module: Any) -> None:
        original = getattr(module, "seed", None)
        if original is None or self._wrapped is not None:
            return

        def seed(*args: Any, **kwargs: Any) -> Any:
            self._seeded.add("numpy")
            return original(*args, **kwargs)

        module.seed = seed
        self._wrapped = (module, original)

    def unwrap(self) -> None:
        if self._wrapped is not None:
            module, original = self._wrapped
            module.seed = original


def _become_session(worker: Worker, env: list[str], prelude: PreludeEffects) -> None:
    """In a forked session's worker: its own environment (with what the prelude set in it)
    and random state, then its rings."""
    os.environ.clear()
    for item in env:
        key, sep, value = item.partition("=")
        if sep:
            os.environ[key] = value
    os.environ.update(prelude.env_set)
    for key in prelude.env_removed:
        os.environ.pop(key, None)
    os.environ.pop(modes.ENV_VAR, None)  # the zygote's mode (its shape's): not the cells' business
    if "tempfile" in sys.modules:
        import tempfile

        if tempfile.tempdir is not None and tempfile.tempdir == prelude.tmpdir:
            tempfile.tempdir = None  # the zygote's scratch directory: the session's is /tmp
    # Fresh streams unless the prelude seeded them itself (then every session starts from
    # that seed, as every cold session of that prelude does).
    import random

    if "random" in prelude.seeded:
        # CPython's at-fork hook reseeded it in the keeper: back to where the prelude left it.
        random.setstate(prelude.random_state)  # type: ignore[arg-type]
    else:
        random.seed()
    # numpy's legacy global generator (np.random.rand() and friends), if the prelude loaded
    # it: numpy.random is imported lazily, and one imported later seeds itself afresh.
    numpy_random = sys.modules.get("numpy.random")
    if numpy_random is not None and "numpy" not in prelude.seeded:
        numpy_random.seed()
    worker.attach()


def _place_fds(control: int, prelude: int) -> None:
    """The control socket at CONTROL_FD and the prelude pipe at PRELUDE_FD, whatever numbers
    they came at (moved above both first, so neither overwrites the other)."""
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 100) for fd in (control, prelude)]
    for fd in {control, prelude}:
        os.close(fd)
    os.dup2(moved[0], CONTROL_FD, inheritable=False)
    os.dup2(moved[1], PRELUDE_FD, inheritable=False)
    for fd in moved:
        os.close(fd)


def _default_signals() -> None:
    """An empty signal mask and no inherited ignored signals, whatever the thread that
    started this zygote had: subprocess keeps both across exec, and the sessions forked from
    here would keep them too (a Ray worker blocks SIGINT in its threads: Session.interrupt()
    would never reach a cell). The cold path gets the same from the launcher's posix_spawn
    attributes. SIGPIPE and SIGXFSZ stay as the interpreter set them at start."""
    import signal

    signal.pthread_sigmask(signal.SIG_SETMASK, ())
    kept = {signal.SIGPIPE, signal.SIGXFSZ, signal.SIGKILL, signal.SIGSTOP}
    for sig in signal.valid_signals():
        if sig in kept or not 0 < sig < signal.SIGRTMIN:
            continue
        try:
            if signal.getsignal(sig) == signal.SIG_IGN:
                signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass


def main() -> None:
    # No death signal: it fires when the *thread* that started us exits, and a backend may
    # start zygotes from any thread. The backend's death closes the control socket, and
    # serve() returns on that EOF.
    control, prelude_fd = (int(a) for a in sys.argv[1:3])
    _default_signals()
    _place_fds(control, prelude_fd)
    prelude = _read_prelude()
    _reserve_session_fds()
    try:
        worker = Worker(attach=False)
    except BaseException as exc:
        _report({"status": "error", "reason": f"the worker could not be set up: {exc!r}"})
        os._exit(70)
    effects = PreludeEffects()
    if prelude:
        # In the session's mode (the shape's: SANDBOX_EXEC_MODE is part of its environment).
        mode = worker.session_mode
        error = effects.watch(lambda: worker.executor.run_cell(prelude, 0, worker.user_code, mode))
        if error is not None:
            _report({"status": "error", "error": error})  # the executor's error content
            os._exit(0)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")  # a figure the prelude opened is not every session's output
    _warm_up()
    try:
        _zygote.prepare_seccomp()  # every session loads the same program: built once, here
    except RuntimeError:
        pass  # each session's keeper builds it then, as a cold launcher does
    threads = _settle()
    left_open = _open_fds()
    if left_open:
        _report(
            {
                "status": "unsafe",
                "reason": "the prelude left descriptors open, which every session would close under it: "
                + ", ".join(left_open),
            }
        )
        os._exit(0)
    if threads != 1:
        _report(
            {
                "status": "unsafe",
                "reason": f"the prelude left {threads} threads running ({', '.join(_thread_names())}); "
                "forking would copy their locks held",
            }
        )
        os._exit(0)
    _report({"status": "ok", "pid": os.getpid()})
    try:
        env = _zygote.serve(CONTROL_FD)
    except BaseException:
        traceback.print_exc()
        os._exit(71)
    if env is None:
        os._exit(0)  # the backend closed the zygote
    _become_session(worker, env, effects)
    worker.serve()
    os._exit(0)


if __name__ == "__main__":
    main()
