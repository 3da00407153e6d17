"""The worker's end of the rings: sending events, JSON-encoded, and receiving requests."""

from __future__ import annotations

import json
import math
from typing import Any

from .. import _core
from .._json import WORKER_ENCODER, loads

FRAME = _core.frame


def _finite(value: Any, depth: int = 0) -> Any:
    """The value with every non-finite float replaced by None."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if depth > 200:
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v, depth + 1) for v in value]
    return value


_encode_text: Any = json.encoder.encode_basestring  # WORKER_ENCODER's string encoder (ensure_ascii=False)
_RESULT_KEYS = ("output_type", "execution_count", "data", "metadata")


def plain_result_json(message: dict[str, Any]) -> str | None:
    """The JSON of the most common message, an execute_result of text/plain only and no
    metadata (``1+1``, any object without rich reprs), as WORKER_ENCODER writes it, without
    its per-call work; None for any other message (it goes through WORKER_ENCODER)."""
    if message.get("output_type") != "execute_result" or tuple(message) != _RESULT_KEYS:
        return None
    count, data, metadata = message["execution_count"], message["data"], message["metadata"]
    # Exact types only: a subclass may write itself otherwise (bool is an int subclass).
    if type(count) is not int or type(data) is not dict or len(data) != 1 or type(metadata) is not dict or metadata:
        return None
    text = data.get("text/plain")
    if type(text) is not str:
        return None
    return f'{{"output_type":"execute_result","execution_count":{count},"data":{{"text/plain":{_encode_text(text)}}},"metadata":{{}}}}'


def ok_report(count: int, dropped_output_bytes: int) -> str:
    """The end-of-cell report of a cell without an error, as WORKER_ENCODER writes it."""
    return f'{{"status":"ok","execution_count":{count},"error":null,"dropped_output_bytes":{dropped_output_bytes}}}'


class Channel:
    def __init__(self) -> None:
        self._chan = _core.WorkerChannel(_core.WORKER_FDS)

    @property
    def raw(self) -> _core.WorkerChannel:
        """The C++ channel (its stream buffer is used directly by sys.stdout/sys.stderr)."""
        return self._chan

    def send_json(self, frame_type: int, message: dict[str, Any]) -> None:
        # Strict JSON only: the supervisor rejects NaN and Infinity (a stored notebook with
        # them is not JSON), so they travel as null, as most JSON encoders write them; a lone
        # surrogate becomes "?" in the UTF-8 encoding.
        try:
            text = WORKER_ENCODER.encode(message)
        except ValueError:
            text = WORKER_ENCODER.encode(_finite(message))
        self._chan.send(frame_type, text.encode("utf-8", "replace"))

    def send_cell_done(self, count: int, error: dict[str, Any] | None, dropped_output_bytes: int) -> None:
        """The end-of-cell report. A cell without an error (most of them) has a report of two
        integers, written here as WORKER_ENCODER writes it, without its per-call work."""
        if error is None and type(count) is int and type(dropped_output_bytes) is int:
            self._chan.send(FRAME.CELL_DONE, ok_report(count, dropped_output_bytes).encode("ascii"))
            return
        report = {
            "status": "error" if error else "ok",
            "execution_count": count,
            "error": error,
            "dropped_output_bytes": dropped_output_bytes,
        }
        self.send_json(FRAME.CELL_DONE, report)

    def send_stream(self, name: str, text: str) -> None:
        """Descriptor-level output (already whole chunks): one frame, after buffered text."""
        self._chan.send(FRAME.STDOUT if name == "stdout" else FRAME.STDERR, text.encode("utf-8", "replace"))

    def send_message(self, message: dict[str, Any]) -> None:
        text = plain_result_json(message)
        if text is None:
            self.send_json(FRAME.MESSAGE, message)
        else:  # as send_json() would send it (a lone surrogate becomes "?")
            self._chan.send(FRAME.MESSAGE, text.encode("utf-8", "replace"))

    def receive(self) -> tuple[int, dict[str, Any]] | None:
        """The next whole request, or None when a signal interrupted the wait."""
        frame = self._chan.receive(-1)
        if frame is None:
            return None
        frame_type, flags, payload = frame
        if not flags & 1:  # the usual request: one frame
            return frame_type, (loads(payload) if payload else {})
        parts = [payload]
        while True:
            frame = self._chan.receive(-1)
            if frame is None:
                continue  # never abandon half a message
            frame_type, flags, payload = frame
            parts.append(payload)
            if not flags & 1:
                body = b"".join(parts)
                return frame_type, (loads(body) if body else {})
