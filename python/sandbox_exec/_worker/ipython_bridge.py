"""Routes IPython's display functions into the sandbox's publisher.

Outside a running IPython shell, ``IPython.display.display(obj)`` only prints ``repr(obj)``
and ``clear_output()`` writes terminal escape codes. Cells written for Jupyter expect them
to publish. When a cell imports IPython's display module, this import hook replaces
``display``, ``update_display``, ``clear_output`` and ``publish_display_data`` in it (before
``IPython.display`` copies the names) with the worker's own, so ``display(HTML(...))``,
display handles and ``clear_output(wait=True)`` behave as in Jupyter. IPython is not
imported until a cell does: the worker's start stays fast.
"""

from __future__ import annotations

import sys
from typing import Any

from .display import Publisher
from .import_patch import PatchOnImport

_TARGETS = ("IPython.core.display_functions", "IPython.core.display")


class _Hook(PatchOnImport):
    def __init__(self, publisher: Publisher) -> None:
        super().__init__(_TARGETS, self._patch)
        self._publisher = publisher

    def _patch(self, module: Any) -> None:
        pub = self._publisher

        def display(
            *objs: Any,
            include: Any = None,
            exclude: Any = None,
            metadata: Any = None,
            transient: Any = None,
            display_id: Any = None,
            raw: bool = False,
            clear: bool = False,
            **kwargs: Any,
        ) -> Any:
            return pub.display(
                *objs,
                include=include,
                exclude=exclude,
                metadata=metadata,
                transient=transient,
                display_id=display_id,
                raw=raw,
                clear=clear,
            )

        def update_display(obj: Any, *, display_id: Any, **kwargs: Any) -> None:
            pub.update_display(obj, display_id=display_id, **kwargs)

        def clear_output(wait: bool = False) -> None:
            pub.clear_output(wait=wait)

        def publish_display_data(
            data: dict[str, Any], metadata: Any = None, source: Any = None, *, transient: Any = None, **kwargs: Any
        ) -> None:
            message: dict[str, Any] = {
                "output_type": "display_data",
                "data": dict(data),
                "metadata": dict(metadata or {}),
            }
            if transient:
                message["transient"] = dict(transient)
            pub.send_raw(message)

        for name, function in (
            ("display", display),
            ("update_display", update_display),
            ("clear_output", clear_output),
            ("publish_display_data", publish_display_data),
        ):
            if hasattr(module, name):
                setattr(module, name, function)


def install(publisher: Publisher) -> None:
    sys.meta_path.insert(0, _Hook(publisher))
