"""Normalisation of nbformat v4 outputs before two runs of a cell are compared.

The same rules are applied to both sides (sandbox_exec's ``Result.outputs`` and outputs a
real Jupyter kernel produced), so that what is compared is what a notebook reader sees, not
how a particular kernel happened to chunk, colour or address it:

1. **Streams.** Consecutive ``stream`` outputs with the same ``name`` are merged (a kernel
   may flush one print in several messages; Jupyter front ends store them merged). Then, as
   nbconvert's ``coalesce_streams`` does, every ``\\r`` that is followed by a character
   other than ``\\n`` overwrites the line it is on: ``re.sub(r".*\\r(?=[^\\n])", "", text)``
   (``"10%\\r20%\\n"`` -> ``"20%\\n"``). ANSI escape codes are removed and memory addresses
   masked (below). A stream left empty is dropped.
2. **Errors** are compared by ``ename`` and ``evalue`` only. Tracebacks differ by design:
   ipykernel colours them with ANSI codes and shows IPython's frame layout and the cell's
   temporary file name (``/tmp/ipykernel_1234/5678.py`` or ``Cell In[3]``), sandbox_exec
   writes plain Python tracebacks. For ``SyntaxError`` and its subclasses the file name
   inside ``evalue`` (``"invalid syntax (1850221797.py, line 1)"`` vs ``"... (Cell In[3],
   line 1)"``) is replaced by ``<cell>``; the message and line number are kept.
3. **Images.** Binary images (``image/png``, ``image/jpeg``, ``image/gif``, ...) are
   compared by mime type and decoded size class, never by bytes: the base64 must decode
   and the decoded length goes into a power-of-two bucket (equal within one bucket). For
   PNG the data must also be a PNG (signature and IHDR chunk): its width and height are
   read from the header and compared within ``IMAGE_TOLERANCE`` (10 %, at least 4 px),
   since the same figure rendered by two processes may differ by a few pixels.
4. **SVG** (``image/svg+xml``) is compared after canonicalisation (XML C14N 2.0, which
   sorts attributes; whitespace-only text dropped). The nbclient corpus stores its SVG
   with attributes in sorted order while IPython keeps source order, so byte comparison
   would be wrong. Text that is not well-formed XML is compared by the presence of
   ``<svg``.
5. **Text.** In every textual mime value and stream: ANSI escape codes stripped, memory
   addresses (``0x[0-9a-f]+`` standing as a word of its own) masked as ``0x…``
   (``<__main__.C at 0x…>``). Matplotlib's ``<Figure size 640x480 with 1 Axes>`` text is
   kept as is (its ``0x480`` is part of a word, not an address): it is compared exactly.
   Multi-line values stored as lists of lines are joined.
6. **JSON** values (``application/json`` and ``*+json``) become canonical JSON text with
   sorted keys.
7. **Metadata.** Output metadata is kept (compared) except keys that only say which kernel
   or run produced it (``KERNEL_SPECIFIC_METADATA``: execution timing and the like);
   cell metadata is not compared at all (``execution`` timestamps, ids, tags).
   ``transient`` (live display ids) is never part of a stored output and is dropped.
8. ``execute_result`` keeps its ``execution_count``: which count a result carries is part
   of the conformance (the ``_N``/``Out`` rules).

``normalize_outputs(outputs)`` returns plain lists/dicts; compare two of them with ``==``
(images compare with their tolerance through ``ImageInfo.__eq__``) and use ``render()``
for a readable diff.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import struct
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from typing import Any

__all__ = [
    "ADDRESS_RE",
    "ANSI_RE",
    "CR_RE",
    "IMAGE_TOLERANCE",
    "KERNEL_SPECIFIC_METADATA",
    "ImageInfo",
    "apply_carriage_returns",
    "mask_addresses",
    "merge_streams",
    "normalize_output",
    "normalize_outputs",
    "png_size",
    "render",
    "strip_ansi",
    "svg_canonical",
]

#: CSI sequences (colours, cursor movement) and the few other ESC sequences kernels emit.
ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
#: Memory addresses in reprs: ``<object at 0x7f3e8585e290>``. Not inside a word, so that
#: ``<Figure size 640x480 with 1 Axes>`` (whose "0x480" is not an address) stays as it is.
ADDRESS_RE = re.compile(r"(?<![0-9A-Za-z_])0x[0-9a-fA-F]+")
ADDRESS_MASK = "0x…"
#: nbconvert's coalesce_streams rule: a ``\r`` not followed by ``\n`` overwrites its line.
CR_RE = re.compile(r".*\r(?=[^\n])")
#: SyntaxError's str(): ``msg (filename, line N)``.
SYNTAX_ERROR_FILE_RE = re.compile(r" \((?:[^()]|\([^()]*\))+, line (\d+)\)$")
SYNTAX_ERRORS = {"SyntaxError", "IndentationError", "TabError"}

#: Relative tolerance on image width/height (and at least IMAGE_TOLERANCE_PX pixels).
IMAGE_TOLERANCE = 0.10
IMAGE_TOLERANCE_PX = 4

#: Output-metadata keys that describe the producing kernel or run, not the output.
KERNEL_SPECIFIC_METADATA = frozenset(
    {
        "execution",
        "ExecuteTime",
        "execution_time",
        "timing",
        "collapsed",
        "scrolled",
        "jupyter",
        "papermill",
    }
)

TEXT_BINARY_IMAGES = {"image/svg+xml"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


def mask_addresses(text: str) -> str:
    return ADDRESS_RE.sub(ADDRESS_MASK, text)


def apply_carriage_returns(text: str) -> str:
    """nbconvert's rule: drop everything on a line up to its last ``\\r`` that is followed by
    another character (``\\r\\n`` and a trailing ``\\r`` are left alone)."""
    return CR_RE.sub("", text) if "\r" in text else text


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(x) for x in value)
    return value if isinstance(value, str) else str(value)


def _clean_text(value: Any) -> str:
    return mask_addresses(strip_ansi(_text(value)))


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError when ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG (bad signature or no IHDR chunk first)")
    width, height = struct.unpack(">II", data[16:24])
    if width == 0 or height == 0:
        raise ValueError(f"PNG with an empty size {width}x{height}")
    return width, height


def _size_class(n: int) -> int:
    return max(0, math.floor(math.log2(n))) if n > 0 else -1


class ImageInfo:
    """A binary image reduced to what is compared: mime type, decoded size class (a
    power-of-two bucket of the decoded length; equal within one bucket) and, for PNG,
    width and height (equal within IMAGE_TOLERANCE / IMAGE_TOLERANCE_PX)."""

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, mime: str, value: Any) -> None:
        self.mime = mime
        self.error: str | None = None
        self.size_class = -1
        self.size: tuple[int, int] | None = None
        try:
            raw = base64.b64decode(_text(value).replace("\n", ""), validate=True)
        except (binascii.Error, ValueError) as e:
            self.error = f"base64 does not decode: {e}"
            return
        self.size_class = _size_class(len(raw))
        if mime == "image/png":
            try:
                self.size = png_size(raw)
            except ValueError as e:
                self.error = str(e)

    @staticmethod
    def _close(a: int, b: int) -> bool:
        return abs(a - b) <= max(IMAGE_TOLERANCE_PX, IMAGE_TOLERANCE * max(a, b))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ImageInfo):
            return NotImplemented
        if self.error or other.error or self.mime != other.mime:
            return False
        if abs(self.size_class - other.size_class) > 1:
            return False
        if self.size is not None or other.size is not None:
            if self.size is None or other.size is None:
                return False
            return self._close(self.size[0], other.size[0]) and self._close(self.size[1], other.size[1])
        return True

    def __repr__(self) -> str:
        if self.error:
            return f"<{self.mime} INVALID: {self.error}>"
        dims = f" {self.size[0]}x{self.size[1]}" if self.size else ""
        return f"<{self.mime}{dims} ~2^{self.size_class} bytes>"


def svg_canonical(text: Any) -> str:
    """C14N 2.0 form (attributes sorted, whitespace-only text dropped), or ``"<svg …>"`` for
    text that does not parse but contains ``<svg``."""
    source = _text(text).strip()
    try:
        return ET.canonicalize(source, strip_text=True)
    except ET.ParseError:
        return "<svg …> (not well-formed)" if "<svg" in source else mask_addresses(strip_ansi(source))


def _json_text(value: Any) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _is_json_mime(mime: str) -> bool:
    return mime == "application/json" or mime.endswith("+json")


def _is_binary_image(mime: str) -> bool:
    return mime.startswith("image/") and mime not in TEXT_BINARY_IMAGES


def normalize_data(data: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for mime in sorted(data):
        value = data[mime]
        if _is_json_mime(mime):
            out[mime] = _json_text(value)
        elif mime == "image/svg+xml":
            out[mime] = svg_canonical(value)
        elif _is_binary_image(mime) or mime == "application/pdf":
            out[mime] = ImageInfo(mime, value)
        else:
            out[mime] = _clean_text(value)
    return out


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


def normalize_metadata(metadata: dict[str, Any] | None) -> dict[str, Any]:
    return _sorted({k: v for k, v in (metadata or {}).items() if k not in KERNEL_SPECIFIC_METADATA})


def _syntax_evalue(evalue: str) -> str:
    return SYNTAX_ERROR_FILE_RE.sub(r" (<cell>, line \1)", evalue)


def merge_streams(outputs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consecutive stream outputs of the same name become one (copies; inputs untouched)."""
    merged: list[dict[str, Any]] = []
    for output in outputs:
        output = dict(output)
        if output.get("output_type") == "stream":
            output["text"] = _text(output.get("text", ""))
            last = merged[-1] if merged else None
            if last is not None and last.get("output_type") == "stream" and last.get("name") == output.get("name"):
                last["text"] += output["text"]
                continue
        merged.append(output)
    return merged


def normalize_output(output: dict[str, Any]) -> dict[str, Any] | None:
    """One output in comparable form (None: nothing left to compare, e.g. an empty stream).
    Streams must already be merged (normalize_outputs does it)."""
    kind = output.get("output_type")
    if kind == "stream":
        text = mask_addresses(apply_carriage_returns(strip_ansi(_text(output.get("text", "")))))
        if not text:
            return None
        return {"output_type": "stream", "name": output.get("name"), "text": text}
    if kind == "error":
        ename = str(output.get("ename", ""))
        evalue = _clean_text(output.get("evalue", ""))
        if ename in SYNTAX_ERRORS:
            evalue = _syntax_evalue(evalue)
        return {"output_type": "error", "ename": ename, "evalue": evalue}
    if kind in ("display_data", "execute_result"):
        out: dict[str, Any] = {
            "output_type": kind,
            "data": normalize_data(dict(output.get("data") or {})),
            "metadata": normalize_metadata(output.get("metadata")),
        }
        if kind == "execute_result":
            out["execution_count"] = output.get("execution_count")
        return out
    # Anything else (an unknown output type) is compared as it is, minus live-only keys.
    return _sorted({k: v for k, v in output.items() if k != "transient"})


def normalize_outputs(outputs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The comparable form of one cell's outputs (see the module docstring)."""
    plain = json.loads(json.dumps(list(outputs)))  # NotebookNode -> plain, and a deep copy
    # Empty streams go first, so that they do not keep two same-name streams apart.
    plain = [o for o in plain if not (o.get("output_type") == "stream" and not _text(o.get("text", "")))]
    result = []
    for output in merge_streams(plain):
        normal = normalize_output(output)
        if normal is not None:
            result.append(normal)
    return result


def render(outputs: list[dict[str, Any]]) -> str:
    """Readable text of normalised outputs, for assertion messages and diffs."""
    return json.dumps(outputs, indent=1, sort_keys=True, ensure_ascii=False, default=repr)
