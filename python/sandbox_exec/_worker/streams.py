"""Stream capture in the worker: Python-level (sys.stdout/sys.stderr) and descriptor-level.

Python-level writes go straight into the event ring, in order with display outputs. Writes
to descriptors 1 and 2 (C extensions, os.system, subprocesses) land in two pipes that a
reader thread forwards; at the end of a cell the worker waits until both pipes are empty
and forwarded, so a cell's descriptor-level output is never attributed to the next cell.
"""

from __future__ import annotations

import io
import os
import select
import threading
import time
from collections.abc import Callable

from .. import _core

Send = Callable[[str, str], None]


class CellStream(io.TextIOBase):
    """sys.stdout / sys.stderr inside the sandbox: text goes to the channel's C++ stream
    buffer (see cpp/python/py_worker_channel.h), one frame per 64 KiB or 20 ms."""

    def __init__(
        self, name: str, frame_type: int, channel: _core.WorkerChannel, fd: int, forward_fd_output: Callable[[], None]
    ) -> None:
        super().__init__()
        self._name = name
        self._flush = channel.flush
        self._fd = fd
        # print() looks write up on the instance first: this C++ callable replaces the
        # method below and saves a Python frame per call (the flood path).
        setattr(self, "write", channel.make_writer(frame_type, forward_fd_output))

    @property
    def name(self) -> str:
        return f"<{self._name}>"

    encoding = "utf-8"
    errors = "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd

    def flush(self) -> None:
        self._flush()


class FdCapture:
    """Points descriptors 1 and 2 at pipes and forwards what arrives there."""

    def __init__(self, send: Send, channel: _core.WorkerChannel) -> None:
        self._send = send
        # The channel's stream buffer (Python-level output): flushed before fd output, so
        # order is kept, and when it has waited 20 ms; only then does this thread tick.
        self._buffer = channel
        self._busy = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._pipes: dict[int, str] = {}
        for fd, name in ((1, "stdout"), (2, "stderr")):
            read_end, write_end = os.pipe()
            os.dup2(write_end, fd)
            os.close(write_end)
            os.set_blocking(read_end, False)
            self._pipes[read_end] = name
        stdout_pipe, stderr_pipe = self._pipes
        channel.watch(stdout_pipe, stderr_pipe, self._wake_write)
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

    def sync(self, timeout: float = 1.0) -> None:
        """Returns once everything written to fds 1 and 2 so far has been forwarded."""
        deadline = None
        while True:
            with self._busy:  # a chunk being forwarded right now finishes first
                if not self._buffer.fd_output_pending():
                    return
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            elif now >= deadline:
                return
            time.sleep(0.0005)
