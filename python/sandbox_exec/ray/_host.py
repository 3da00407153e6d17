"""The host: one Ray actor per node, owning that node's local Sandbox; and the caller's
handle on it, with the Ray errors that mean it is gone."""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import ray

from ..errors import SandboxError, SessionClosedError
from ..policy import Policy
from ._wire import _error_to_wire, _result_to_wire


class _NodeHost:
    """A node's local Sandbox, reached through Ray. Runs as a threaded actor: cells of many
    sessions at once, and interrupt()/close() while a cell runs. Every method answers
    ``{"ok": value}`` or ``{"raise": class name, "message": ...}`` with plain data only."""

    def __init__(self, policy: Policy | None, root: str | None, warm: bool, pool_size: int) -> None:
        from ..sandbox import Sandbox

        self._box = Sandbox(policy, root=root, warm=warm, pool_size=pool_size)
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _session(self, name: str) -> Any:
        with self._lock:
            s = self._sessions.get(name)
        if s is None or s.closed:
            raise SessionClosedError(f"session {name!r} is not open on this node")
        return s

    def _answer(self, fn: Callable[[], Any]) -> dict[str, Any]:
        try:
            return {"ok": fn()}  # (the caller checks what arrives: _wire._checked)
        except Exception as e:
            return _error_to_wire(e)

    def info(self) -> dict[str, Any]:
        import os
        import socket

        from ..sandbox import cgroup_support

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "hostname": socket.gethostname(),
            "pid": os.getpid(),
            "root": str(self._box.root),
            "cgroups": {k: str(v) for k, v in cgroup_support().items()},
        }

    def _describe(self, s: Any) -> dict[str, Any]:
        return {
            "workdir": str(s.workdir),
            "execution_count": s.execution_count,
            "alive": s.alive,
            "worker_pid": s.worker_pid,
            "last_checkpoint": s.last_checkpoint,
            "last_restore": s.last_restore,
        }

    def open(self, name: str, policy: Policy | None, prelude: str | None, mode: str | None) -> dict[str, Any]:
        def go() -> dict[str, Any]:
            s = self._box.session(name, policy=policy, prelude=prelude, mode=mode)  # type: ignore[arg-type]
            with self._lock:
                self._sessions[name] = s
            return self._describe(s)

        return self._answer(go)

    def state(self, name: str) -> dict[str, Any]:
        return self._answer(lambda: self._describe(self._session(name)))

    def run(self, name: str, code: str, timeout: float | None, mode: str | None, cell_id: str | None) -> dict[str, Any]:
        return self._answer(
            lambda: _result_to_wire(self._session(name).run(code, timeout=timeout, mode=mode, cell_id=cell_id))
        )

    def run_streaming(
        self, name: str, code: str, timeout: float | None, mode: str | None, cell_id: str | None
    ) -> Iterator[tuple[str, Any]]:
        """Yields ("events", [event, ...]) while the cell runs (each batch is what had
        arrived since the last one, in order), then ("result", wire) or ("raise", wire)."""
        try:
            s = self._session(name)
        except Exception as e:
            yield ("raise", _error_to_wire(e))
            return
        events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()

        def cell() -> None:
            try:
                result = s.run(
                    code, timeout=timeout, mode=mode, cell_id=cell_id, on_output=lambda ev: events.put(("event", ev))
                )
                events.put(("result", _result_to_wire(result)))
            except Exception as e:
                events.put(("raise", _error_to_wire(e)))

        threading.Thread(target=cell, name=f"sandbox_exec-ray-cell-{name}", daemon=True).start()
        while True:
            kind, value = events.get()
            if kind != "event":
                yield (kind, value)
                return
            batch = [value]
            with contextlib.suppress(queue.Empty):
                while len(batch) < 256:
                    kind, value = events.get_nowait()
                    if kind != "event":
                        yield ("events", batch)
                        yield (kind, value)
                        return
                    batch.append(value)
            yield ("events", batch)

    def interrupt(self, name: str) -> dict[str, Any]:
        return self._answer(lambda: self._session(name).interrupt())

    def cancel(self, name: str) -> dict[str, Any]:
        """The caller cancelled the cell's run_async(): as a local session does, an interrupt
        now, and the interpreter killed if the cell ignores it for interrupt_grace_s."""

        def go() -> None:
            s = self._session(name)
            s.interrupt()
            grace = s.policy.interrupt_grace_s
            deadline = time.monotonic() + grace
            while s._cell_running and time.monotonic() < deadline:
                time.sleep(0.01)
            if s._cell_running:
                s._kill_running(
                    f"the cell was cancelled and ignored the interrupt for {grace:g} s; the session was killed"
                )

        return self._answer(go)

    def restart(self, name: str) -> dict[str, Any]:
        def go() -> dict[str, Any]:
            s = self._session(name)
            s.restart()
            return self._describe(s)

        return self._answer(go)

    def close(self, name: str, remove_workdir: bool) -> dict[str, Any]:
        def go() -> None:
            with self._lock:
                s = self._sessions.pop(name, None)
            if s is not None:
                s.close(remove_workdir=remove_workdir)

        return self._answer(go)

    def method(self, name: str, method: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """checkpoint, restore, variables, reset, call, enforcement: JSON in, JSON out."""
        if method not in _FORWARDED:
            return _error_to_wire(SandboxError(f"ray: no session method {method!r}"))

        def go() -> Any:
            s = self._session(name)
            if method == "enforcement":
                return s.enforcement
            if method == "call":
                return s.call(kwargs["function"], *kwargs.get("args", ()), **kwargs.get("kwargs", {}))
            return getattr(s, method)(**kwargs)

        return self._answer(go)

    def ping(self) -> str:
        """The watcher's sign of life (RaySandbox._watch)."""
        return "pong"

    def shutdown(self) -> dict[str, Any]:
        return self._answer(self._box.close)


_HOST_ACTOR: Any = None


def _control(method: Any) -> Any:
    """An actor method called in the host's "control" concurrency group."""
    return method.options(concurrency_group="control")


def _host_actor_class() -> Any:
    """_NodeHost as a Ray actor class, made once per process (each ray.remote() of a class
    exports it to the cluster anew)."""
    global _HOST_ACTOR
    if _HOST_ACTOR is None:
        # The "control" group's threads serve calls that must never queue behind running
        # cells (interrupt, cancel, close, state, the watcher's ping).
        _HOST_ACTOR = ray.remote(concurrency_groups={"control": 16})(_NodeHost)  # type: ignore[call-overload]
    return _HOST_ACTOR


# The host's methods served by its "control" threads.
_CONTROL = frozenset({"interrupt", "cancel", "close", "state", "ping", "info", "shutdown"})
_FORWARDED = frozenset({"checkpoint", "restore", "variables", "reset", "call", "enforcement"})
# Errors of Ray's that mean "the host (and so its sessions) is gone".
_LOST_ERRORS: tuple[type[BaseException], ...] = tuple(
    cls
    for cls in (
        getattr(ray.exceptions, "RayActorError", None),
        getattr(ray.exceptions, "ActorUnavailableError", None),
        getattr(ray.exceptions, "WorkerCrashedError", None),
        getattr(ray.exceptions, "NodeDiedError", None),
        getattr(ray.exceptions, "ObjectLostError", None),
        getattr(ray.exceptions, "OwnerDiedError", None),
        getattr(ray.exceptions, "LocalRayletDiedError", None),
    )
    if isinstance(cls, type)
)


#: How long a caller waits on a node before it looks at the watcher's verdict again.
_SLICE_S = 0.25

_LOST_OR_SILENT: tuple[type[BaseException], ...] = (*_LOST_ERRORS, ray.exceptions.GetTimeoutError)


class _Host:
    """The caller's handle on one node's host actor."""

    def __init__(self, node_id: str, actor: Any, info: dict[str, Any]) -> None:
        self.node_id = node_id
        self.actor = actor
        self.info = info  # _NodeHost.info(): its pid, hostname, root, cgroup support
        self.lost: str | None = None  # why, once a call found it gone


def _died(host: _Host, e: BaseException) -> str:
    return f"node {host.node_id} (or its sandbox host process) died: {type(e).__name__}"


def _silent(host: _Host, wait_s: float | None) -> str:
    return f"node {host.node_id} did not answer within {wait_s or 0:g} s"
