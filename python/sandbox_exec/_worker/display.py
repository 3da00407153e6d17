"""IPython's display protocol, without IPython: mime bundles, display(), display ids.

``format_bundle(obj)`` builds the ``(data, metadata)`` pair a Jupyter kernel would: from
``_repr_mimebundle_`` and the ``_repr_*_`` methods, binary images base64-encoded, and
``text/plain`` always present (IPython's pretty printer when IPython is importable, repr()
otherwise). ``Publisher`` sends display_data / update_display_data / clear_output messages.
"""

from __future__ import annotations

import base64
import json
import sys
import uuid
from collections.abc import Callable
from typing import Any

# (method, mime type) in IPython's DisplayFormatter order.
REPR_METHODS: tuple[tuple[str, str], ...] = (
    ("_repr_html_", "text/html"),
    ("_repr_markdown_", "text/markdown"),
    ("_repr_svg_", "image/svg+xml"),
    ("_repr_png_", "image/png"),
    ("_repr_pdf_", "application/pdf"),
    ("_repr_jpeg_", "image/jpeg"),
    ("_repr_latex_", "text/latex"),
    ("_repr_json_", "application/json"),
    ("_repr_javascript_", "application/javascript"),
)
BINARY_MIMES = {"image/png", "image/jpeg", "application/pdf"}
_SIMPLE_TYPES = (int, float, complex, bool, str, bytes, type(None))

_pretty: Callable[[Any], str] | None = None


def plain_text(obj: Any) -> str:
    """text/plain as a Jupyter kernel shows it."""
    global _pretty
    if type(obj) in _SIMPLE_TYPES:
        return repr(obj)  # IPython's pretty printer gives repr() for these
    if _pretty is None:
        try:
            from IPython.lib.pretty import pretty as ipython_pretty

            _pretty = ipython_pretty
        except Exception:
            _pretty = repr
    return _pretty(obj)


def _warn(message: str) -> None:
    print(message, file=sys.stderr)


def _encode(mime: str, value: Any) -> Any:
    if mime in BINARY_MIMES and isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("utf-8", "replace")
    if mime == "application/json" or mime.endswith("+json"):
        if isinstance(value, str):
            return json.loads(value)
        return value
    return value if isinstance(value, str) else str(value)


def _figure_bundle(fig: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """A matplotlib figure as IPython's inline backend shows it (pylabtools.print_figure)."""
    import io
    import os

    data: dict[str, Any] = {"text/plain": plain_text(fig)}
    metadata: dict[str, Any] = {}
    if not fig.axes and not fig.lines:
        return data, metadata  # an empty figure shows as text only
    fmt = os.environ.get("SANDBOX_EXEC_FIGURE_FORMAT", "png")
    dpi_env = os.environ.get("SANDBOX_EXEC_FIGURE_DPI")
    dpi = float(dpi_env) if dpi_env else fig.dpi
    if fmt == "retina":
        dpi *= 2
    buffer = io.BytesIO()
    fig.canvas.print_figure(
        buffer,
        format="png" if fmt == "retina" else fmt,
        dpi=dpi,
        facecolor=fig.get_facecolor(),
        edgecolor=fig.get_edgecolor(),
        bbox_inches="tight",
    )
    raw = buffer.getvalue()
    if fmt == "svg":
        data["image/svg+xml"] = raw.decode("utf-8")
    elif fmt == "jpeg":
        data["image/jpeg"] = base64.b64encode(raw).decode("ascii")
    else:
        data["image/png"] = base64.b64encode(raw).decode("ascii")
        if fmt == "retina" and raw[12:16] == b"IHDR":
            width, height = int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
            metadata["image/png"] = {"width": width // 2, "height": height // 2}
    return data, metadata


def _is_figure(obj: Any) -> bool:
    module = sys.modules.get("matplotlib.figure")
    return module is not None and isinstance(obj, module.Figure)


def format_bundle(obj: Any, include: Any = None, exclude: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
    if type(obj) in _SIMPLE_TYPES and include is None and exclude is None:
        return {"text/plain": repr(obj)}, {}  # no _repr_*_ methods on these
    if _is_figure(obj):
        return _figure_bundle(obj)
    data: dict[str, Any] = {}
    metadata: dict[str, Any] = {}

    def wanted(mime: str) -> bool:
        return (include is None or mime in include) and (exclude is None or mime not in exclude)

    method = getattr(type(obj), "_repr_mimebundle_", None)
    if method is not None and not isinstance(obj, type):
        try:
            bundle = obj._repr_mimebundle_(include=include, exclude=exclude)
        except Exception as e:  # IPython shows a FormatterWarning and carries on
            _warn(f"FormatterWarning: {type(obj).__name__}._repr_mimebundle_ raised {e!r}")
            bundle = None
        if isinstance(bundle, tuple) and len(bundle) == 2:
            bundle, md = bundle
            if isinstance(md, dict):
                metadata.update(md)
        if isinstance(bundle, dict):
            for mime, value in bundle.items():
                if wanted(mime):
                    data[mime] = _encode(mime, value)

    if not isinstance(obj, type):
        for name, mime in REPR_METHODS:
            if mime in data or not wanted(mime):
                continue
            method = getattr(obj, name, None)
            if method is None or not callable(method):
                continue
            try:
                value = method()
            except NotImplementedError:
                continue
            except Exception as e:
                _warn(f"FormatterWarning: {type(obj).__name__}.{name} raised {e!r}")
                continue
            if value is None:
                continue
            if isinstance(value, tuple) and len(value) == 2:
                value, md = value
                if isinstance(md, dict) and md:
                    metadata[mime] = md
            data[mime] = _encode(mime, value)

    if "text/plain" not in data and wanted("text/plain"):
        data["text/plain"] = plain_text(obj)
    return data, metadata


class DisplayHandle:
    """What display(obj, display_id=...) returns, as IPython's DisplayHandle."""

    def __init__(self, publisher: Publisher, display_id: str | None = None) -> None:
        self._publisher = publisher
        self.display_id = display_id or uuid.uuid4().hex

    def __repr__(self) -> str:
        return f"<DisplayHandle display_id={self.display_id}>"

    def display(self, obj: Any, **kwargs: Any) -> None:
        self._publisher.display(obj, display_id=self.display_id, **kwargs)

    def update(self, obj: Any, **kwargs: Any) -> None:
        self._publisher.display(obj, display_id=self.display_id, update=True, **kwargs)


class Publisher:
    """Turns display calls into output messages on the channel."""

    def __init__(self, send_message: Callable[[dict[str, Any]], None]) -> None:
        self._send = send_message

    def display(
        self,
        *objs: Any,
        include: Any = None,
        exclude: Any = None,
        metadata: Any = None,
        transient: Any = None,
        display_id: Any = None,
        raw: bool = False,
        clear: bool = False,
        update: bool = False,
    ) -> DisplayHandle | None:
        if display_id is True:
            display_id = uuid.uuid4().hex
        if update and not display_id:
            raise TypeError("display_id required for update_display")
        if clear:
            self.clear_output(wait=True)
        for obj in objs:
            md: dict[str, Any]
            if raw:
                data, md = dict(obj), {}
            else:
                hook = getattr(obj, "_ipython_display_", None)
                if callable(hook) and not isinstance(obj, type):
                    hook()
                    continue
                try:
                    data, md = format_bundle(obj, include, exclude)
                except Exception as exc:
                    # As IPython's formatters (catch_format_error): the error is shown as
                    # an error output, the object is not, and the cell goes on (ipykernel's
                    # reply stays "ok"). A cell ending in display(obj) whose __repr__ raises
                    # succeeds, as under exec() with a display() that never formats.
                    from .execute import error_content  # execute imports this module

                    self._send({"output_type": "error", **error_content(exc)})
                    continue
            if metadata:
                md = {**md, **metadata}
            message: dict[str, Any] = {
                "output_type": "update_display_data" if update else "display_data",
                "data": data,
                "metadata": md,
            }
            trans = dict(transient or {})
            if display_id:
                trans["display_id"] = str(display_id)
            if trans:
                message["transient"] = trans
            self._send(message)
        if display_id and not update:
            return DisplayHandle(self, str(display_id))
        return None

    def send_raw(self, message: dict[str, Any]) -> None:
        """A ready-made message (IPython's publish_display_data)."""
        self._send(message)

    def update_display(self, obj: Any, *, display_id: str, **kwargs: Any) -> None:
        kwargs.pop("update", None)
        self.display(obj, display_id=display_id, update=True, **kwargs)

    def clear_output(self, wait: bool = False) -> None:
        self._send({"output_type": "clear_output", "wait": bool(wait)})
