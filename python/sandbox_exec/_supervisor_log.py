"""The supervisor's log (C++, spdlog) delivered into Python's ``logging``.

The C++ supervisor logs (cpp/supervisor/logging.h) under the level SANDBOX_EXEC_LOG sets
(default warn). Once this module is imported (sandbox.py does, so: always), its records no
longer go to stderr but wait in a bounded queue in the core, and :func:`drain` logs them on
the logger ``sandbox_exec.supervisor`` with their original time, level and thread id (the
attribute ``supervisor_thread``). When the queue was full the count of dropped records is
logged too.

Why a queue drained from Python, not a sink that calls into Python: the supervisor logs from
threads that hold no GIL (a cell's steps, ``terminate()`` from a destructor) and from places
where taking the GIL could deadlock (the thread holding the GIL may be waiting for a lock
the logging thread holds; the interpreter may be finalizing). The core's sink takes only its
own mutex for a push, and drain() the same mutex for a swap; nothing waits under it. So
nothing here can deadlock, and handlers run in ordinary Python, on the draining thread.

Drained: after every cell and call, when a session closes, every round of the Sandbox's
watchdog thread (at most 5 s apart while a Sandbox is open) and at interpreter exit. A
drain with nothing queued costs one atomic load in the core.

Messages may quote what a worker sent (a protocol violation's detail): they are decoded with
replacement and terminal controls escaped, so a record is one safe line.
"""

from __future__ import annotations

import atexit
import logging
import threading

from . import _core
from ._terminal import escape_controls

__all__ = ["LOGGER_NAME", "drain", "logger"]

LOGGER_NAME = "sandbox_exec.supervisor"
logger = logging.getLogger(LOGGER_NAME)

# spdlog's levels (trace, debug, info, warn, err, critical, off) as logging's.
_LEVELS = (5, logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
# One drain at a time: the records of one drain are logged in order before the next's.
_lock = threading.Lock()


def drain() -> int:
    """Logs the records queued since the last drain; returns how many there were."""
    with _lock:
        records, dropped = _core.drain_log()
        for level, when, thread, text in records:
            py_level = _LEVELS[level] if 0 <= level < len(_LEVELS) else logging.CRITICAL
            if not logger.isEnabledFor(py_level):
                continue
            message = escape_controls(bytes(text).decode("utf-8", "replace"), multiline=False)
            record = logger.makeRecord(LOGGER_NAME, py_level, "(supervisor)", 0, message, (), None)
            # The time it was logged, not drained (relativeCreated: since logging's start).
            record.relativeCreated += (when - record.created) * 1000
            record.created = when
            record.msecs = (when - int(when)) * 1000
            record.supervisor_thread = thread
            logger.handle(record)
        if dropped:
            logger.warning("%d supervisor log records were dropped (the queue between drains was full)", dropped)
        return len(records)


_core.log_to_queue(True)
atexit.register(drain)
