"""Patching a module as it is imported: a meta-path finder that hands the import to the real
finders, wraps the loader they return and calls ``patch(module)`` once the module has run.

Used by ipython_bridge (IPython's display functions routed to the publisher) and by the
zygote (numpy.random.seed watched while the prelude runs).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from importlib.abc import Loader as _LoaderBase
else:
    _LoaderBase = object


# Plain classes implementing the import protocol (importlib.abc itself costs 8 ms to import).
class _PatchingLoader(_LoaderBase):
    def __init__(self, real: Any, patch: Callable[[Any], None]) -> None:
        self._real = real
        self._patch = patch

    def create_module(self, spec: Any) -> Any:
        return self._real.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._real.exec_module(module)
        self._patch(module)


class PatchOnImport:
    """Put in ``sys.meta_path``: modules named in `targets` are patched as they load."""

    def __init__(self, targets: tuple[str, ...], patch: Callable[[Any], None]) -> None:
        self._targets = targets
        self._patch_module = patch

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name not in self._targets:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _PatchingLoader(spec.loader, self._patch_module)
                return spec
        return None
