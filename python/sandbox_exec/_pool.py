"""The pool: sessions started ahead of time, so a new notebook gets a live interpreter at once.

``Sandbox(pool_size=N)``: once a session of some shape (prelude, policy and mode) has been asked
for, the Sandbox keeps up to N more of that shape started and idle, refilled by one
background thread. A new session of that shape whose name has no workdir yet (a new
notebook) is served from the pool: it is already started (forked from its zygote, every
isolation layer applied, prelude loaded), so ``Sandbox.session()`` returns at once.

A pooled session is started before its name is known, so it works in a slot directory of
its own (``<root>/.pool-<id>``, which ``Session.workdir`` names while it lives: inside the
sandbox the workdir is at its host path, as for every session). When it closes, its files
move to the directory its name would have had (``<root>/<name>``), so a later session of
that name finds them. Names that have a workdir already start the usual way.

Never more than N idle sessions of a shape; shapes are kept in the order first asked, at
most ``MAX_SHAPES`` (past that the oldest is dropped and its idle sessions closed).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._modes import Mode
from .policy import Policy

if TYPE_CHECKING:
    from .sandbox import Session

#: At most this many shapes are pooled at once.
MAX_SHAPES = 8
#: The slot directories' prefix (a session name never maps to a name with a leading dot).
SLOT_PREFIX = ".pool-"


@dataclass
class _Shape:
    prelude: str | None
    policy: Policy
    mode: Mode
    ready: list[Session] = field(default_factory=list)
    last_error: str = ""


class SessionPool:
    """The idle sessions of each shape, and the thread that refills them."""

    def __init__(self, size: int, start_slot: Callable[[str, str | None, Policy, Mode], Session]) -> None:
        self.size = size
        self._start_slot = start_slot  # starts a session in a new slot directory
        self._lock = threading.Lock()
        self._shapes: list[_Shape] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._fill, name="sandbox_exec-pool", daemon=True)
        self._thread.start()

    def want(self, prelude: str | None, policy: Policy, mode: Mode = "ipython") -> None:
        """Marks this shape as one to keep ready (a session of it was just asked for)."""
        with self._lock:
            if self._closed:
                return
            known = self._find(prelude, policy, mode)
            if known is not None:
                known.last_error = ""  # asked again: try again
            else:
                self._shapes.append(_Shape(prelude, policy, mode))
            dropped = [s for shape in self._shapes[:-MAX_SHAPES] for s in shape.ready]
            del self._shapes[:-MAX_SHAPES]
        for s in dropped:  # the oldest shape's idle sessions: nobody will take them now
            self._close_later(s)
        self._wake.set()

    @staticmethod
    def _close_later(session: Session) -> None:
        # In a thread: closing takes the session table's lock, which a caller may hold.
        threading.Thread(target=session.close, kwargs={"remove_workdir": True}, daemon=True).start()

    def take(self, prelude: str | None, policy: Policy, mode: Mode = "ipython") -> Session | None:
        """An idle started session of this shape, or None."""
        with self._lock:
            shape = self._find(prelude, policy, mode)
            if shape is None:
                return None
            while shape.ready:
                s = shape.ready.pop(0)
                if s.alive:
                    self._wake.set()
                    return s
                self._close_later(s)  # its interpreter died while idle
        self._wake.set()
        return None

    def put_back(self, session: Session) -> None:
        """Returns an idle session take() gave out and that was not used (its name could not
        be locked); closed instead when the shape is gone or full."""
        with self._lock:
            shape = self._find(session.prelude, session.policy, session.mode)
            keep = shape is not None and not self._closed and len(shape.ready) < self.size
            if keep and shape is not None:
                shape.ready.append(session)
        if not keep:
            self._close_later(session)

    def idle_total(self) -> int:
        with self._lock:
            return sum(len(s.ready) for s in self._shapes)

    def close(self) -> list[Session]:
        """Stops refilling; returns the idle sessions for the caller to close."""
        with self._lock:
            self._closed = True
            idle = [s for shape in self._shapes for s in shape.ready]
            self._shapes.clear()
        self._wake.set()
        return idle

    def join(self, timeout: float) -> None:
        """Waits for the refill thread to end (after close(): a start it had begun is closed)."""
        self._thread.join(timeout)

    def _find(self, prelude: str | None, policy: Policy, mode: Mode) -> _Shape | None:
        for shape in self._shapes:
            if shape.prelude == prelude and shape.policy == policy and shape.mode == mode:
                return shape
        return None

    def _next_deficit(self) -> _Shape | None:
        with self._lock:
            if self._closed:
                return None
            return next((s for s in self._shapes if len(s.ready) < self.size and not s.last_error), None)

    def _fill(self) -> None:
        while True:
            self._wake.wait(1.0)
            self._wake.clear()
            while (shape := self._next_deficit()) is not None:
                slot = SLOT_PREFIX + uuid.uuid4().hex[:12]
                try:
                    s = self._start_slot(slot, shape.prelude, shape.policy, shape.mode)
                except Exception as e:  # the shape stops refilling until it is asked for again
                    with self._lock:
                        shape.last_error = f"{type(e).__name__}: {e}"
                    continue
                with self._lock:
                    kept = not self._closed and len(shape.ready) < self.size and shape in self._shapes
                    if kept:
                        shape.ready.append(s)
                if not kept:  # closed, full or dropped meanwhile: never over the cap
                    s.close(remove_workdir=True)
            with self._lock:
                if self._closed:
                    return
