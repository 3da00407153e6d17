"""Stream capture in the worker: Python-level (sys.stdout/sys.stderr) and descriptor-level.

Python-level writes go straight into the event ring, in order with display outputs. Writes
to descriptors 1 and 2 (C extensions, os.system, subprocesses) land in two pipes that a
reader thread forwards; at the end of a cell the worker waits until both pipes are empty
and forwarded, so a cell's descriptor-level output is never attributed to the next cell.
"""

from __future__ import annotations

import fcntl
import io
import os
import select
import struct
import termios
import threading
import time
from typing import Callable

Send = Callable[[str, str], None]


class CellStream(io.TextIOBase):
    """sys.stdout / sys.stderr inside the sandbox."""

    def __init__(self, name: str, send: Send, fd: int) -> None:
        super().__init__()
        self._name = name
        self._send = send
        self._fd = fd

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"<{self._name}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def write(self, text: str) -> int:  # type: ignore[override]
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self._send(self._name, text)
        return len(text)

    def flush(self) -> None:
        pass


def _pending(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class FdCapture:
    """Points descriptors 1 and 2 at pipes and forwards what arrives there."""

    def __init__(self, send: Send) -> None:
        self._send = send
        self._busy = threading.Lock()
        self._pipes: dict[int, str] = {}
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._pipes[read_end] = name
        self._thread = threading.Thread(target=self._forward, name="sandbox-fd-capture", daemon=True)
        self._thread.start()

    def _forward(self) -> None:
        import codecs

        decoders = {fd: codecs.getincrementaldecoder("utf-8")("replace") for fd in self._pipes}
        while True:
            ready, _, _ = select.select(list(self._pipes), [], [])
            with self._busy:
                for fd in ready:
                    try:
                        data = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    text = decoders[fd].decode(data)
                    if text:
                        self._send(self._pipes[fd], text)

    def sync(self, timeout: float = 1.0) -> None:
        """Returns once everything written to fds 1 and 2 so far has been forwarded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_pending(fd) == 0 for fd in self._pipes):
                with self._busy:  # a chunk being forwarded right now finishes first
                    if all(_pending(fd) == 0 for fd in self._pipes):
                        return
            time.sleep(0.0005)
