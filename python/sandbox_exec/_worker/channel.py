"""The worker's end of the rings: sending events, JSON-encoded, and receiving requests."""

from __future__ import annotations

import json
from typing import Any

from .. import _core

FRAME = _core.frame


class Channel:
    def __init__(self) -> None:
        self._chan = _core.WorkerChannel(tuple(_core.WORKER_FDS))

    @property
    def raw(self) -> Any:
        """The C++ channel (its stream buffer is used directly by sys.stdout/sys.stderr)."""
        return self._chan

    def send_json(self, frame_type: int, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"), default=repr)
        self._chan.send(frame_type, text.encode("utf-8", "replace"))

    def send_stream(self, name: str, text: str) -> None:
        """Descriptor-level output (already whole chunks): one frame, after buffered text."""
        self._chan.send(FRAME.STDOUT if name == "stdout" else FRAME.STDERR,
                        text.encode("utf-8", "replace"))

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
