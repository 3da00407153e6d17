"""The worker's main loop: attach, report ready, run each requested cell, report it done."""

from __future__ import annotations

import builtins
import os
import signal
import sys
from typing import Any

from .. import _core
from . import calls, ipython_bridge, modes, shell
from .channel import FRAME, Channel
from .display import Publisher
from .execute import Executor, UserCodeGuard, error_content
from .streams import CellStream, FdCapture


def _no_input(prompt: object = "") -> str:
    raise RuntimeError(
        "input() is not available: sandbox_exec cells run without standard input "
        "(as a notebook executed by nbclient with stdin disabled)"
    )


class Worker:
    channel: Channel
    streams: _core.WorkerChannel
    fd_capture: FdCapture

    def __init__(self, *, attach: bool = True) -> None:
        """`attach=False`: the interpreter-wide setup only, without the channel (a zygote
        sets up, runs its prelude, and attaches in each forked session: attach())."""
        self._attached = False
        self.in_call = False  # a call (calls.py) is running, not a cell
        self.user_code = UserCodeGuard()
        self.publisher = Publisher(self._send_message)
        # The session's mode (modes.py): its prelude's, and whether the namespace starts
        # with IPython's history names. Each run names its own.
        self.session_mode = modes.take_from_env()
        self.executor = Executor(self._send_message, history=self.session_mode == modes.IPYTHON)
        self.modes = modes.ModeSwitch(self.executor._displayhook)
        builtins.input = _no_input
        # What a Jupyter kernel's cells find as builtins.
        setattr(builtins, "display", self.publisher.display)
        setattr(builtins, "get_ipython", shell.get_ipython)
        ipython_bridge.install(self.publisher)
        signal.signal(signal.SIGINT, self._on_sigint)
        self.modes.enter(self.session_mode)
        if attach:
            self.attach()

    def attach(self) -> None:
        """Attaches to the session's rings (descriptors 5..8) and routes stdout/stderr there."""
        self.channel = Channel()
        sys.stdin = open(os.devnull)  # noqa: SIM115 - lives as long as the worker
        self.streams = self.channel.raw  # the C++ stream buffer
        self.fd_capture = FdCapture(self.channel.send_stream, self.streams)
        sys.stdout = CellStream("stdout", FRAME.STDOUT, self.streams, 1, self._forward_fd_output)
        sys.stderr = CellStream("stderr", FRAME.STDERR, self.streams, 2, self._forward_fd_output)
        self._attached = True

    def _forward_fd_output(self) -> None:
        self.streams.flush()
        self.fd_capture.sync()

    def _send_message(self, message: dict[str, Any]) -> None:
        if not self._attached or self.in_call:
            # A zygote's prelude: its outputs go nowhere, as a cold one's. A call (calls.py)
            # has no outputs: what its code displays is dropped here, before it is sent.
            return
        # Output a subprocess or C code wrote to fds 1/2 before this display goes out first,
        # as does pending Python-level text (the C++ send does that).
        if self.streams.fd_output_pending():
            self._forward_fd_output()
        self.channel.send_message(message)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        # KeyboardInterrupt only inside the user's code: outside it, an interrupt that
        # arrives late must not break the worker's own bookkeeping.
        if self.user_code.active:
            raise KeyboardInterrupt

    def execute(self, request: dict[str, Any]) -> None:
        if "call" in request:  # a call, not a cell (calls.py)
            calls.handle(self, request)
            return
        code = request.get("code")
        count = request.get("execution_count")
        mode = request.get("mode", modes.IPYTHON)
        if not isinstance(code, str) or not isinstance(count, int) or mode not in modes.MODES:
            self.channel.send_json(
                FRAME.CELL_DONE,
                {
                    "status": "error",
                    "execution_count": count,
                    "error": {"ename": "ProtocolError", "evalue": "bad request", "traceback": []},
                },
            )
            return
        self.modes.enter(mode)
        error = self.executor.run_cell(code, count, self.user_code, mode)
        self.flush_streams()
        if error is not None:
            self.channel.send_message({"output_type": "error", **error})
        self._flush_figures()
        # dropped_output_bytes: output not sent because the supervisor closed it (cap)
        self.channel.send_cell_done(count, error, self.channel.raw.take_dropped())

    def flush_streams(self) -> None:
        """Sends what the cell wrote and is still buffered (Python's and descriptor-level)."""
        if type(sys.stdout) is not CellStream or type(sys.stderr) is not CellStream:
            # (Ours flush the channel's one buffer, which fd_capture.sync() and the flush
            # below do: flushed here only when the cell replaced them.)
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except Exception:  # the cell may have replaced them with anything
                pass
        self.fd_capture.sync()
        self.streams.flush()

    def _flush_figures(self) -> None:
        """Figures the cell left open appear after its other outputs, as with Jupyter's
        inline backend (its post-execute hook)."""
        backend = sys.modules.get("sandbox_exec._worker.mpl_backend")
        if backend is None or "matplotlib.pyplot" not in sys.modules:
            return
        import matplotlib

        if "sandbox_exec" not in matplotlib.get_backend():
            return  # the cell switched backends: its figures are its own business
        try:
            backend.flush_figures()
        except Exception as exc:  # a figure that fails to render is reported, not fatal
            self.channel.send_message({"output_type": "error", **error_content(exc)})
        self.streams.flush()

    def serve(self) -> None:
        self.channel.send_json(
            FRAME.READY, {"protocol": _core.PROTOCOL_VERSION, "pid": os.getpid(), "python": sys.version.split()[0]}
        )
        while True:
            try:
                request = self.channel.receive()
            except KeyboardInterrupt:
                continue
            if request is None:
                continue
            frame_type, body = request
            if frame_type == FRAME.EXECUTE:
                self.execute(body)
            elif frame_type == FRAME.SHUTDOWN:
                return


def main() -> None:
    try:
        worker = Worker()
    except BaseException as exc:  # nothing to report to yet: the launcher sees the exit
        print(f"sandbox_exec worker failed to start: {error_content(exc)}", file=sys.__stderr__)
        os._exit(70)
    worker.serve()
    os._exit(0)
