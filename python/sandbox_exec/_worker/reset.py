"""The ``reset`` op (Session.reset()): a clean namespace in the same interpreter.

What Jupyter's ``%reset -f`` does, plus what a notebook service resetting a notebook expects:

* the namespace goes back to the prelude's (the names the prelude bound, to the objects it
  bound them to: a mutable object the prelude made keeps what cells did to it), or with
  ``keep_prelude=False`` to a fresh module's (``__name__``, ``__builtins__``...); in an
  IPython-mode session the history names come back fresh (``In == [""]``, ``Out == {}``,
  ``_ is None``), in an exec-mode session there are none;
* what kept the old values alive goes: ``builtins._`` (the last result), ``sys.last_*``
  (the last traceback's frames); then a garbage collection, so their memory is freed now,
  and what survives it is frozen (``gc.freeze()``, as the zygote does after the prelude);
* open matplotlib figures are closed (none would ever be shown);
* ``sys.modules["__main__"]`` is the session's namespace again (a cell may have replaced it);
* the random state as asked: ``seed=None`` keeps ``random``'s and numpy's global streams
  going, an int reseeds both (numpy's when it is imported, if it is not yet), ``"fresh"``
  reseeds both from the kernel (os.urandom).

Kept, as by ``%reset``: imported modules and their state (pandas options, matplotlib's
rcParams, a module's caches), sys.path, os.environ, the working directory and its files,
the execution count (counting on), the mode, and threads a cell started (Python cannot stop
them; they keep references to what they use). A cell's code could have changed anything in
the interpreter (a patched builtin, this module): reset is housekeeping, not a boundary;
``Session.restart()`` is the way back to a new interpreter.
"""

from __future__ import annotations

import builtins
import gc
import random
import re
import sys
from typing import TYPE_CHECKING, Any

from .import_patch import PatchOnImport

if TYPE_CHECKING:
    from .main import Worker

#: IPython's history names: In, Out, _, __, ___, _i, _ii, _iii, _<n>, _i<n>.
_HISTORY_NAME = re.compile(r"In|Out|_{1,3}|_i{1,3}|_i?\d+")

# numpy.random seeded when it is imported, for a reset(seed=n) before numpy was loaded.
_pending_numpy_seed: PatchOnImport | None = None


def op_reset(worker: Worker, args: dict[str, Any]) -> dict[str, Any]:
    keep_prelude = args.get("keep_prelude", True)
    seed = args.get("seed")
    if not isinstance(keep_prelude, bool):
        raise TypeError("reset: keep_prelude must be true or false")
    if not (seed is None or seed == "fresh" or (isinstance(seed, int) and not isinstance(seed, bool))):
        raise TypeError("reset: seed must be null, an integer or 'fresh'")
    executor = worker.executor
    namespace = executor.namespace
    before = len(namespace)
    base = executor.prelude_namespace if keep_prelude else executor.initial_namespace
    namespace.clear()
    namespace.update({k: v for k, v in base.items() if not _HISTORY_NAME.fullmatch(k)})
    namespace["__builtins__"] = builtins
    executor.history_in_namespace = False
    if worker.session_mode == "ipython":
        executor.start_history()
    sys.modules["__main__"] = executor.module
    if hasattr(builtins, "_"):
        delattr(builtins, "_")
    for name in ("last_type", "last_value", "last_traceback", "last_exc"):
        if hasattr(sys, name):
            delattr(sys, name)
    figures = _close_figures()
    _reseed(seed)
    # The old values' cycles collected now; what survives (modules, the prelude's objects)
    # is frozen, as a zygote freezes what its prelude made: later collections, and the next
    # reset's, do not walk it again (a full collection over a loaded data stack costs tens
    # of milliseconds each time). Frozen objects are freed by reference counting only.
    gc.collect()
    gc.freeze()
    return {"names_before": before, "names_after": len(namespace), "figures_closed": figures}


def _close_figures() -> int:
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return 0
    count = len(pyplot.get_fignums())
    pyplot.close("all")
    return count


def _reseed(seed: Any) -> None:
    global _pending_numpy_seed
    if seed is None:
        return
    if _pending_numpy_seed is not None:  # an earlier reset's seed, superseded
        if _pending_numpy_seed in sys.meta_path:
            sys.meta_path.remove(_pending_numpy_seed)
        _pending_numpy_seed = None
    numpy_random = sys.modules.get("numpy.random")
    if seed == "fresh":
        random.seed()  # from os.urandom
        if numpy_random is not None:
            numpy_random.seed()
        return  # a numpy imported later seeds itself from the kernel
    random.seed(seed)
    if numpy_random is not None:
        numpy_random.seed(seed)
    else:

        def seed_numpy(module: Any) -> None:
            global _pending_numpy_seed
            module.seed(seed)
            if _pending_numpy_seed is not None and _pending_numpy_seed in sys.meta_path:
                sys.meta_path.remove(_pending_numpy_seed)
            _pending_numpy_seed = None

        _pending_numpy_seed = PatchOnImport(("numpy.random",), seed_numpy)
        sys.meta_path.insert(0, _pending_numpy_seed)
