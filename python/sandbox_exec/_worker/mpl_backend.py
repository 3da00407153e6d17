"""The matplotlib backend of the sandbox (``MPLBACKEND=module://sandbox_exec._worker.mpl_backend``).

Behaves as Jupyter's inline backend (matplotlib-inline): figures render with Agg, never in
a window; ``plt.show()`` publishes every open figure as ``display_data`` and closes them;
figures still open when a cell ends are published the same way by the worker
(``flush_figures``), then closed, so the next cell starts with none. The image format and
dpi come from the session's policy (``Policy.figure_format`` / ``figure_dpi``).
"""

from __future__ import annotations

import builtins
from typing import Any

from matplotlib._pylab_helpers import Gcf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

# What matplotlib looks up in a backend module.
FigureCanvas = FigureCanvasAgg


def new_figure_manager(num: int, *args: Any, FigureClass: type = Figure, **kwargs: Any) -> Any:
    return new_figure_manager_given_figure(num, FigureClass(*args, **kwargs))


def new_figure_manager_given_figure(num: int, figure: Figure) -> Any:
    manager = FigureCanvasAgg.new_manager(figure, num)
    # GUI backends give figures a .show(); code written for them calls it.
    if not hasattr(figure, "show") or getattr(figure.show, "__self__", None) is figure:
        setattr(figure, "show", lambda *a, **k: _publish(figure))
    return manager


def _publish(figure: Figure) -> None:
    getattr(builtins, "display")(figure)  # the worker's display(), a builtin since its start


def show(close: bool | None = None, block: bool | None = None) -> None:
    """Publishes every open figure, then closes them (as the inline backend does)."""
    try:
        for manager in Gcf.get_all_fig_managers():
            _publish(manager.canvas.figure)
    finally:
        if close is not False and Gcf.get_all_fig_managers():
            import matplotlib.pyplot as plt  # imported already: there are figures

            plt.close("all")


def flush_figures() -> None:
    """Called by the worker after each cell: the figures the cell left open."""
    if Gcf.get_all_fig_managers():
        show(close=True)
