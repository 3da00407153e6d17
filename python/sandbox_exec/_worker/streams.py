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

    def __init__(self, name: str, send: Send, fd: int, flush: Callable[[], None]) -> None:
        super().__init__()
        self._name = name
        self._send = send
        self._fd = fd
        self._flush = flush

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
        self._flush()


class StreamBuffer:
    """Coalesces Python-level writes before they go out, as ipykernel's stream buffers do.

    Text is sent when 64 KiB are pending, when anything else is published (a display, an
    error, descriptor-level output: order is kept), at the end of the cell, and at the
    latest ``max_age`` seconds after the first pending write (the fd-capture thread wakes
    for that). A flood of print() calls thus costs one frame per 64 KiB, and a line printed
    before a long computation still reaches ``on_output`` within 20 ms.
    """

    def __init__(self, send: Send, max_age: float = 0.02, max_bytes: int = 1 << 16) -> None:
        self._send = send
        self.on_pending: Callable[[], None] = lambda: None  # text started waiting
        self._lock = threading.Lock()
        self._name: str | None = None
        self._parts: list[str] = []
        self._size = 0
        self._since = 0.0
        self._max_age = max_age
        self._max_bytes = max_bytes

    def _flush_locked(self) -> None:
        if self._parts:
            name, text = self._name, "".join(self._parts)
            self._parts, self._size, self._name = [], 0, None
            self._send(name, text)  # type: ignore[arg-type]

    def write(self, name: str, text: str) -> None:
        with self._lock:
            if self._name != name:
                self._flush_locked()
                self._name = name
            if not self._parts:
                self._since = time.monotonic()
                self._parts.append(text)
                self._size = len(text)
                self.on_pending()
            else:
                self._parts.append(text)
                self._size += len(text)
            if self._size >= self._max_bytes:
                self._flush_locked()

    @property
    def pending(self) -> bool:
        return bool(self._parts)

    def flush(self) -> None:
        if self._parts:
            with self._lock:
                self._flush_locked()

    def flush_if_stale(self) -> None:
        if self._parts and time.monotonic() - self._since >= self._max_age:
            self.flush()

    def seconds_to_stale(self) -> float | None:
        """How long the forwarding thread may sleep before this buffer must go out."""
        if not self._parts:
            return None
        return max(0.0, self._max_age - (time.monotonic() - self._since))


def _pending(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class FdCapture:
    """Points descriptors 1 and 2 at pipes and forwards what arrives there."""

    def __init__(self, send: Send, buffer: StreamBuffer) -> None:
        self._send = send
        self._buffer = buffer  # Python-level output: flushed before fd output (order), and
        # a partial line in it is flushed after 50 ms; only then does this thread tick.
        self._busy = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        buffer.on_pending = self.wake
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
        watched = [*self._pipes, self._wake_read]
        while True:
            # Sleep without a timeout unless Python-level text is waiting: a thread that woke
            # periodically would take the GIL from the cell for nothing.
            ready, _, _ = select.select(watched, [], [], self._buffer.seconds_to_stale())
            if self._wake_read in ready:
                try:
                    os.read(self._wake_read, 512)
                except BlockingIOError:
                    pass
                ready.remove(self._wake_read)
            self._buffer.flush_if_stale()
            if not ready:
                continue
            self._buffer.flush()
            with self._busy:
                for fd in ready:
                    try:
                        data = os.read(fd, 1 << 16)
                    except BlockingIOError:
                        continue
                    text = decoders[fd].decode(data)
                    if text:
                        self._send(self._pipes[fd], text)

    def wake(self) -> None:
        try:
            os.write(self._wake_write, b"!")
        except BlockingIOError:
            pass  # already awake

    def has_pending(self) -> bool:
        return any(_pending(fd) for fd in self._pipes)

    def sync(self, timeout: float = 1.0) -> None:
        """Returns once everything written to fds 1 and 2 so far has been forwarded."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_pending(fd) == 0 for fd in self._pipes):
                with self._busy:  # a chunk being forwarded right now finishes first
                    if all(_pending(fd) == 0 for fd in self._pipes):
                        return
            time.sleep(0.0005)
