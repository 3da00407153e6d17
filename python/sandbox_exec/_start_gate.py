"""Starts in progress, so that work done ahead for later starts stays out of their way.

The Sandbox's background refills (spare workdir images: a mkfs each; host ids held ahead:
a read of every process's /proc status, which takes each process's memory-map lock, the
one a zygote's fork holds while it copies its page tables) would otherwise run exactly when
a start has just taken what they replace, on the CPUs and locks that start needs. They
wait here until no start has been under way for a moment (at most MAX_WAIT_S: a steady
stream of starts does not starve them).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

Job = TypeVar("Job")

#: How long no start must have been under way before background work goes on.
SETTLE_S = 0.005
#: The longest background work waits for a quiet moment.
MAX_WAIT_S = 2.0

_cond = threading.Condition()
_active = 0
_last_end = 0.0


@contextlib.contextmanager
def starting() -> Iterator[None]:
    """Marks a session's start as under way for the block's duration."""
    global _active, _last_end
    with _cond:
        _active += 1
    try:
        yield
    finally:
        with _cond:
            _active -= 1
            _last_end = time.monotonic()
            _cond.notify_all()


def wait_quiet() -> None:
    """Returns once no start has been under way for SETTLE_S (or after MAX_WAIT_S)."""
    settle_s = SETTLE_S
    deadline = time.monotonic() + MAX_WAIT_S
    with _cond:
        while True:
            now = time.monotonic()
            if now >= deadline:
                return
            if _active == 0:
                left = _last_end + settle_s - now
                if left <= 0:
                    return
                _cond.wait(min(left, deadline - now))
            else:
                _cond.wait(deadline - now)


def refill(
    wake: threading.Event, next_job: Callable[[], Job | None], do: Callable[[Job], bool], closed: Callable[[], bool]
) -> None:
    """The body of a background refill thread (spare images, host ids held ahead): at a
    lower priority than the sessions' own work (a child it starts, such as mkfs, inherits
    it), woken by `wake` or every 5 s, it does `do(job)` for each `next_job()`, each once no
    start is under way; a `do` that returns False (it failed: starts then make their own)
    ends the round. Returns when `closed()` after a round."""
    with contextlib.suppress(OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    while True:
        wake.wait(5.0)
        wake.clear()
        while (job := next_job()) is not None:
            wait_quiet()  # after the start that took one, not during it
            if not do(job):
                break
        if closed():
            return
