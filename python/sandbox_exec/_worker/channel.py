"""The worker's end of the rings: sending events, JSON-encoded, and receiving requests."""

from __future__ import annotations

import json
import math
from typing import Any

from .. import _core

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
            text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=repr, allow_nan=False)
        except ValueError:
            text = json.dumps(
                _finite(message), ensure_ascii=False, separators=(",", ":"), default=repr, allow_nan=False
            )
        self._chan.send(frame_type, text.encode("utf-8", "replace"))

    def send_stream(self, name: str, text: str) -> None:
        """Descriptor-level output (already whole chunks): one frame, after buffered text."""
        self._chan.send(FRAME.STDOUT if name == "stdout" else FRAME.STDERR, text.encode("utf-8", "replace"))

    def send_message(self, message: dict[str, Any]) -> None:
        self.send_json(FRAME.MESSAGE, message)

    def receive(self) -> tuple[int, dict[str, Any]] | None:
        """The next whole request, or None when a signal interrupted the wait."""
        parts: list[bytes] = []
        while True:
            frame = self._chan.receive(-1)
            if frame is None:
                if not parts:
                    return None
                continue  # never abandon half a message
            frame_type, flags, payload = frame
            parts.append(payload)
            if not flags & 1:
                body = b"".join(parts)
                return frame_type, (json.loads(body) if body else {})
