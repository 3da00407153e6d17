"""Sessions on a Ray cluster: the ``ray`` extra (``pip install 'sandbox_exec[ray]'``).

``RaySandbox`` offers ``Sandbox``'s API (``session()``, ``run()``, ``run_async()``,
``interrupt()``, ``restart()``, ``close()``, the state calls, the same ``Result``) for
sessions that live on the nodes of a Ray cluster. Underneath (docs/scaling.md):

- **One host actor per node** (``_NodeHost``), pinned to its node, owning an ordinary local
  ``Sandbox``: every session on that node is started, contained and limited by it exactly
  as on one machine (namespaces, seccomp, Landlock, cgroups, the host-id per session, warm
  starts from the node's zygotes). Ray carries calls; it adds no isolation and takes none.
- **Placement by Ray's scheduler**: a session reserves a one-bundle placement group —
  one unit of the node's "sandbox slots" resource (``ray start --resources
  '{"sandbox_slots": N}'``: the node's configured capacity) and the policy's
  ``memory_bytes`` of Ray's ``memory`` resource — and lives on the node Ray put that
  bundle on. A bundle that no node could ever hold is refused at once; one that does not
  fit now is refused after ``placement_timeout_s``; either as ``PlacementError``.
- **Sticky sessions**: every call of a session goes to its node's host, by name.
- **Streaming**: a cell with ``on_output`` runs as a Ray streaming generator; its events
  reach the caller while the cell runs, in order, shaped as locally.
- **Node loss**: when the node (or its host process) dies, the cell that was running and
  every later ``run()`` of its sessions return status ``"lost"`` (``Result.reason`` says
  which node and why); other calls raise ``SessionLostError``. ``restart()`` places the
  session again, on any node with room; with ``Policy(restore_on_start=True)`` and a
  ``root`` on storage every node shares, it starts from the session's last checkpoint.

The trust boundary is the local Sandbox's, on each node: the cell's output is parsed there
by the same guarded readers. What crosses Ray between a host and the caller is plain data
the host built itself (dicts, lists, strings, numbers), checked again on arrival; errors
cross as a class name and a message, never as a pickled exception. A Ray cluster is one
trust domain (any node can run code on any other): every node must be as trusted as the
backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import fields
from typing import Any, TypeVar

try:
    import ray
    from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as e:  # pragma: no cover - the extra is installed in every test environment
    raise ImportError("sandbox_exec.ray needs Ray: pip install 'sandbox_exec[ray]'") from e

from . import errors
from .errors import SandboxError, SessionClosedError
from .policy import MAX_SECONDS, Policy
from .result import STATUSES, OutputEvent, Result, make_result

__all__ = ["PlacementError", "RaySandbox", "RaySession", "SessionLostError"]

_Self = TypeVar("_Self", bound="_Closing")

#: The custom resource that counts a node's sandbox slots (its capacity in sessions).
SLOT_RESOURCE = "sandbox_slots"


class PlacementError(SandboxError):
    """No node of the cluster has room for the session: what it asked for, what each node
    has free, and whether it could ever fit."""


class SessionLostError(SandboxError):
    """The session's node (or its host process) died: its interpreter and namespace are
    gone. ``RaySession.restart()`` places it again."""


# --- what crosses Ray ----------------------------------------------------------------------
_RESULT_FIELDS = tuple(f.name for f in fields(Result))
# Errors the host may name; anything else arrives as SandboxError with the name in the text.
_ERRORS: dict[str, type[Exception]] = {
    "SandboxError": SandboxError,
    "PolicyError": errors.PolicyError,
    "SessionClosedError": SessionClosedError,
    "PreludeError": errors.PreludeError,
    "CallError": errors.CallError,
    "CheckpointError": errors.CheckpointError,
    "ValueError": ValueError,
    "TypeError": TypeError,
}
_CALL_ERROR_ATTRS = ("status", "ename", "evalue", "traceback", "reason", "kind")
# Deeper than anything a node's Sandbox accepts from a worker (its JSON guard: 64 levels per
# message) plus the Result's own envelope, so every output a node took crosses; bounded, so
# a host cannot make the check recurse without end.
_MAX_DEPTH = 128


def _plain(value: Any, depth: int = 0) -> bool:
    """True when `value` is JSON-shaped data (dict with str or int keys, list, str, int,
    float, bool, None), nested at most _MAX_DEPTH deep: what a host may send."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if depth >= _MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _checked(value: Any, what: str) -> Any:
    if not _plain(value):
        raise SandboxError(f"ray: the node host sent {what} that is not plain data; refused")
    return value


def _result_to_wire(result: Result) -> dict[str, Any]:
    return {name: getattr(result, name) for name in _RESULT_FIELDS}


def _result_from_wire(values: Any) -> Result:
    _checked(values, "a result")
    if not isinstance(values, dict) or set(values) != set(_RESULT_FIELDS):
        raise SandboxError("ray: the node host sent a result without Result's fields; refused")
    if values["status"] not in STATUSES or not isinstance(values["outputs"], list):
        raise SandboxError(f"ray: the node host sent a result with status {values['status']!r}; refused")
    return make_result(dict(values))


def _error_to_wire(e: BaseException) -> dict[str, Any]:
    wire: dict[str, Any] = {"raise": type(e).__name__, "message": str(e)}
    for cls in type(e).__mro__:  # the nearest class the caller knows
        if cls.__name__ in _ERRORS:
            wire["raise"] = cls.__name__
            break
    else:
        wire["message"] = f"{type(e).__name__}: {e}"
        wire["raise"] = "SandboxError"
    attrs = {a: getattr(e, a) for a in _CALL_ERROR_ATTRS if hasattr(e, a)}
    wire["attrs"] = {a: v for a, v in attrs.items() if _plain(v)}
    return wire


def _raise_from_wire(wire: dict[str, Any]) -> None:
    """Raises the error a host described: the class by name from _ERRORS (else
    SandboxError), CallError's fields from plain values only."""
    cls = _ERRORS.get(str(wire.get("raise")), SandboxError)
    message = str(wire.get("message", ""))
    if issubclass(cls, errors.CallError):
        given = wire.get("attrs")
        attrs: dict[str, Any] = given if isinstance(given, dict) else {}
        fields_ = {k: v for k, v in attrs.items() if k in ("status", "ename", "evalue", "traceback", "reason")}
        if issubclass(cls, errors.CheckpointError):
            raise cls(message, kind=str(attrs.get("kind", "error")), **fields_)
        raise cls(message, **fields_)
    raise cls(message)


# --- the host: one actor per node -------------------------------------------------------------
class _NodeHost:
    """A node's local Sandbox, reached through Ray. Runs as a threaded actor: cells of many
    sessions at once, and interrupt()/close() while a cell runs. Every method answers
    ``{"ok": value}`` or ``{"raise": class name, "message": ...}`` with plain data only."""

    def __init__(self, policy: Policy | None, root: str | None, warm: bool, pool_size: int) -> None:
        from .sandbox import Sandbox

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
            return {"ok": _checked(fn(), "an answer")}
        except Exception as e:
            return _error_to_wire(e)

    def info(self) -> dict[str, Any]:
        import os
        import socket

        from .sandbox import cgroup_support

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


class _Closing:
    """``with`` and ``async with`` end in ``close()`` (off the event loop's thread)."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self: _Self) -> _Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self: _Self) -> _Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self.close)


def _died(host: _Host, e: BaseException) -> str:
    return f"node {host.node_id} (or its sandbox host process) died: {type(e).__name__}"


def _silent(host: _Host, wait_s: float | None) -> str:
    return f"node {host.node_id} did not answer within {wait_s or 0:g} s"


class RaySession(_Closing):
    """One notebook's interpreter on a node of the cluster. Create through
    ``RaySandbox.session()``. Its methods are ``Session``'s; ``node_id`` says where it lives."""

    def __init__(self, box: RaySandbox, name: str, policy: Policy, prelude: str | None, mode: str | None) -> None:
        self._box = box
        self.name = name
        self.policy = policy
        self.prelude = prelude
        self.mode = mode
        # One cell at a time, as locally. A plain Lock: run_async() takes it on the event
        # loop's thread without blocking the loop (polling), cancel-safe.
        self._lock = threading.Lock()
        self._host: _Host | None = None
        self._pg: PlacementGroup | None = None
        self._closed = False
        self._lost: str | None = None
        self._state: dict[str, Any] = {}
        # Set when the first placement is done (or failed: _place_error): a second
        # session(name) meanwhile waits for it instead of using a session with no node.
        self._placed = threading.Event()
        self._place_error: BaseException | None = None

    # --- what it is --------------------------------------------------------------------
    @property
    def node_id(self) -> str | None:
        """The Ray node id (hex) of the node this session lives on; None once closed."""
        host = self._host
        return host.node_id if host is not None else None

    @property
    def workdir(self) -> str:
        """The workdir's path on its node."""
        return str(self._state.get("workdir", ""))

    @property
    def execution_count(self) -> int:
        return int(self._state.get("execution_count", 0))

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def lost(self) -> str | None:
        """Why the session was lost with its node, or None."""
        if self._lost is None and self._host is not None and self._host.lost is not None:
            self._mark_lost(self._host.lost)
        return self._lost

    @property
    def alive(self) -> bool:
        if self._closed or self.lost is not None:
            return False
        return bool(self._ask("state")["alive"])

    @property
    def worker_pid(self) -> int | None:
        """The interpreter's pid, on its node (in the node's host pid namespace)."""
        pid = self._ask("state")["worker_pid"]
        return int(pid) if isinstance(pid, int) else None

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        """As ``Session.last_checkpoint``: the latest checkpoint's report, read from the node."""
        report = self._ask("state")["last_checkpoint"]
        return report if isinstance(report, dict) else None

    @property
    def last_restore(self) -> dict[str, Any] | None:
        """As ``Session.last_restore``."""
        report = self._ask("state")["last_restore"]
        return report if isinstance(report, dict) else None

    def __repr__(self) -> str:
        where = f"node {self.node_id[:12]}" if self.node_id else "no node"
        state = "closed" if self._closed else ("lost" if self._lost else "open")
        return f"<RaySession {self.name!r} on {where} {state}>"

    # --- placement -----------------------------------------------------------------------
    def _place(self) -> None:
        """Reserves a bundle on some node and opens the session in that node's host."""
        pg, node_id = self._box._reserve(self.name, self.policy)
        try:
            host = self._box._host_on(node_id)
            answer = self._host_call(host, host.actor.open.remote(self.name, self.policy, self.prelude, self.mode))
        except BaseException:
            remove_placement_group(pg)
            raise
        self._pg, self._host, self._lost = pg, host, None
        self._state = answer

    def _release(self) -> None:
        pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(Exception):
                remove_placement_group(pg)

    def _mark_lost(self, why: str) -> None:
        if self._lost is None:
            self._lost = why
            self._release()  # a dead node's bundle would otherwise be placed again elsewhere
            self._box._forget_host_if_lost(self._host)

    # --- calls -----------------------------------------------------------------------------
    def _host_call(self, host: _Host, ref: Any, wait_s: float | None = None) -> Any:
        return self._unwrap(self._host_get(host, ref, wait_s), host)

    def _host_get(self, host: _Host, ref: Any, wait_s: float | None = None) -> Any:
        """ray.get, with the host's death (or silence past `wait_s`) as SessionLostError.
        Waits in slices, so that the RaySandbox's watcher finding the node dead (the
        cluster's health checks) ends the wait too, whatever Ray's call is still waiting for."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        try:
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                ready, _ = ray.wait([ref], timeout=_SLICE_S if left is None else min(_SLICE_S, left))
                if ready:
                    return ray.get(ref)
                if host.lost is not None:
                    raise SessionLostError(f"session {self.name!r} was lost with its node: {host.lost}")
                if left is not None and left <= 0:
                    raise ray.exceptions.GetTimeoutError()
        except _LOST_ERRORS as e:
            host.lost = _died(host, e)
            raise SessionLostError(f"session {self.name!r} was lost with its node: {host.lost}") from None
        except ray.exceptions.GetTimeoutError:
            host.lost = _silent(host, wait_s)
            raise SessionLostError(f"session {self.name!r} was lost with its node: {host.lost}") from None

    def _unwrap(self, answer: Any, host: _Host) -> Any:
        if not isinstance(answer, dict):
            raise SandboxError("ray: the node host sent an answer that is not a dict; refused")
        if "ok" in answer:
            return _checked(answer["ok"], "an answer")
        _raise_from_wire(_checked(answer, "an error"))
        raise AssertionError("unreachable")

    def _usable(self) -> _Host:
        if self._closed:
            raise SessionClosedError(f"session {self.name!r} is closed")
        if self.lost is not None:
            raise SessionLostError(
                f"session {self.name!r} was lost with its node: {self._lost}; restart() places it again"
            )
        assert self._host is not None
        return self._host

    def _ask(self, what: str, *args: Any) -> Any:
        host = self._usable()
        method = getattr(host.actor, what)
        if what in _CONTROL:
            method = _control(method)
        try:
            return self._host_call(host, method.remote(self.name, *args), self._box.answer_s)
        except SessionLostError:
            self._mark_lost(host.lost or "lost")
            raise

    def _wait_s(self, timeout: float | None) -> float | None:
        cell = timeout if timeout is not None else self.policy.timeout_s
        return None if cell is None else cell + self._box.answer_s

    def _lost_result(self, started: float) -> Result:
        return make_result(
            {
                **{name: getattr(Result("ok"), name) for name in _RESULT_FIELDS},
                "status": "lost",
                "duration_s": time.monotonic() - started,
                "reason": f"the session was lost with its node: {self._lost}; restart() places it again",
            }
        )

    def run(
        self,
        code: str,
        *,
        timeout: float | None = None,
        on_output: Callable[[OutputEvent], None] | None = None,
        mode: str | None = None,
        cell_id: str | None = None,
    ) -> Result:
        """Runs one cell on the session's node; ``Session.run``'s contract. Status "lost":
        the node died before or while it ran."""
        from .sandbox import _check_run_args

        _check_run_args(code, timeout)
        started = time.monotonic()
        with self._lock:
            try:
                host = self._usable()
            except SessionLostError:
                return self._lost_result(started)
            try:
                if on_output is None:
                    ref = host.actor.run.remote(self.name, code, timeout, mode, cell_id)
                    result = _result_from_wire(self._host_call(host, ref, self._wait_s(timeout)))
                else:
                    result = self._run_streaming(host, code, timeout, mode, cell_id, on_output)
            except SessionLostError:
                self._mark_lost(host.lost or "lost")
                return self._lost_result(started)
            self._state["execution_count"] = result.execution_count or self.execution_count
            return result

    def _run_streaming(
        self,
        host: _Host,
        code: str,
        timeout: float | None,
        mode: str | None,
        cell_id: str | None,
        on_output: Callable[[OutputEvent], None],
    ) -> Result:
        gen = host.actor.run_streaming.options(num_returns="streaming").remote(self.name, code, timeout, mode, cell_id)
        listener = _Listener(on_output)
        wait_s = self._wait_s(timeout)
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                ref = gen._next_sync(timeout_s=_SLICE_S if left is None else min(_SLICE_S, left))
            except StopIteration:
                raise SandboxError("ray: the node host ended the cell's stream without a result") from None
            except _LOST_ERRORS as e:
                host.lost = _died(host, e)
                raise SessionLostError(host.lost) from None
            if ref.is_nil():  # nothing within the slice
                if host.lost is not None:  # the watcher found the node dead
                    raise SessionLostError(host.lost)
                if deadline is not None and time.monotonic() >= deadline:
                    host.lost = _silent(host, wait_s)
                    raise SessionLostError(host.lost)
                continue
            done = self._stream_item(host, self._host_get(host, ref), listener)
            if done is not None:
                listener.reraise()
                return done

    def _stream_item(self, host: _Host, item: Any, listener: _Listener) -> Result | None:
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise SandboxError("ray: the node host sent a stream item of the wrong shape; refused")
        kind, value = item
        if kind == "events" and isinstance(value, list):
            for event in _checked(value, "an output event"):
                if not isinstance(event, dict):
                    raise SandboxError("ray: the node host sent an output event that is not a dict; refused")
                listener(event)  # type: ignore[arg-type]
            return None
        if kind == "result":
            return _result_from_wire(value)
        if kind == "raise" and isinstance(value, dict):
            _raise_from_wire(_checked(value, "an error"))
        raise SandboxError(f"ray: the node host sent a stream item {kind!r}; refused")

    async def run_async(
        self,
        code: str,
        *,
        timeout: float | None = None,
        on_output: Callable[[OutputEvent], None] | None = None,
        mode: str | None = None,
        cell_id: str | None = None,
    ) -> Result:
        """``run`` without blocking the event loop: the remote call is awaited, and
        ``on_output`` is called on the loop's thread, in order, while the cell runs."""
        from .sandbox import _check_run_args

        _check_run_args(code, timeout)
        started = time.monotonic()
        while not self._lock.acquire(blocking=False):
            await asyncio.sleep(0.002)
        try:
            try:
                host = self._usable()
            except SessionLostError:
                return self._lost_result(started)
            wait_s = self._wait_s(timeout)
            deadline = None if wait_s is None else time.monotonic() + wait_s
            task = asyncio.ensure_future(self._drive_async(host, code, timeout, mode, cell_id, on_output))
            try:
                # In slices, as run() does: the watcher's verdict on the node ends the wait.
                while not task.done():
                    await asyncio.wait({task}, timeout=_SLICE_S)
                    if task.done():
                        break
                    if host.lost is None and deadline is not None and time.monotonic() >= deadline:
                        host.lost = _silent(host, wait_s)
                    if host.lost is not None:
                        task.cancel()
                        raise SessionLostError(host.lost)
                result = task.result()
            except asyncio.CancelledError:
                task.cancel()
                _control(host.actor.cancel).remote(self.name)  # not awaited: the caller is leaving
                raise
            except SessionLostError:
                self._mark_lost(host.lost or "lost")
                return self._lost_result(started)
            self._state["execution_count"] = result.execution_count or self.execution_count
            return result
        finally:
            self._lock.release()

    async def _drive_async(
        self,
        host: _Host,
        code: str,
        timeout: float | None,
        mode: str | None,
        cell_id: str | None,
        on_output: Callable[[OutputEvent], None] | None,
    ) -> Result:
        try:
            if on_output is None:
                answer = await host.actor.run.remote(self.name, code, timeout, mode, cell_id)
                return _result_from_wire(self._unwrap(answer, host))
            listener = _Listener(on_output)
            gen: AsyncIterator[Any] = host.actor.run_streaming.options(num_returns="streaming").remote(
                self.name, code, timeout, mode, cell_id
            )
            async for ref in gen:
                done = self._stream_item(host, await ref, listener)
                if done is not None:
                    listener.reraise()
                    return done
            raise SandboxError("ray: the node host ended the cell's stream without a result")
        except _LOST_ERRORS as e:
            host.lost = _died(host, e)
            raise SessionLostError(host.lost) from None

    def interrupt(self) -> None:
        """KeyboardInterrupt in the running cell; the namespace is kept. Nothing when lost."""
        if self._closed or self.lost is not None:
            return
        with contextlib.suppress(SessionLostError):
            self._ask("interrupt")

    def restart(self) -> None:
        """A fresh interpreter, same name and workdir. A lost session is placed again, on
        any node with room (with ``restore_on_start`` and a shared root, from its last
        checkpoint); ``node_id`` then names the new node."""
        if self._closed:
            raise SessionClosedError(f"session {self.name!r} is closed")
        if self.lost is None:
            try:
                self._state = self._ask("restart")
                return
            except SessionLostError:
                pass  # found lost just now: placed again below
        with self._lock:
            if self._closed:
                raise SessionClosedError(f"session {self.name!r} is closed")
            self._place()

    def close(self, *, remove_workdir: bool = False) -> None:
        """Ends the interpreter on its node and frees its placement. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._host is not None and self.lost is None:
                with contextlib.suppress(SessionLostError, SessionClosedError):
                    self._host_call(
                        self._host,
                        _control(self._host.actor.close).remote(self.name, remove_workdir),
                        self._box.answer_s,
                    )
        finally:
            self._release()
            self._box._forget(self)

    def _forward(self, method: str, **kwargs: Any) -> Any:
        return self._ask("method", method, kwargs)

    def checkpoint(self, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._forward("checkpoint", **kwargs)
        return result

    def restore(self, **kwargs: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._forward("restore", **kwargs)
        return result

    def variables(self, **kwargs: Any) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._forward("variables", **kwargs)
        return result

    def reset(self, **kwargs: Any) -> dict[str, int]:
        result: dict[str, int] = self._forward("reset", **kwargs)
        return result

    def call(self, function: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return self._forward("call", function=function, args=list(args), kwargs={"timeout": timeout, **kwargs})

    @property
    def enforcement(self) -> dict[str, str]:
        result: dict[str, str] = self._forward("enforcement")
        return result


class _Listener:
    """Calls the caller's on_output; as locally, a listener that raises gets no more events
    and its exception is raised when the cell has ended."""

    def __init__(self, on_output: Callable[[OutputEvent], None]) -> None:
        self.on_output = on_output
        self.error: BaseException | None = None

    def __call__(self, event: OutputEvent) -> None:
        if self.error is not None:
            return
        try:
            self.on_output(event)
        except BaseException as e:
            self.error = e

    def reraise(self) -> None:
        if self.error is not None:
            raise self.error


class RaySandbox(_Closing):
    """Sandbox's API over a Ray cluster: sessions placed on nodes with room, each node's
    sessions contained by a local Sandbox there. Thread-safe; a context manager.

    ``RaySandbox(policy=None, *, prelude=None, root=None, address=None, ...)``:

    - `policy`, `prelude`: the default of every session (``session()`` may override).
    - `root`: the Sandbox root on every node (default: a temporary directory per node). On
      storage every node shares, a lost session's workdir and checkpoint follow it.
    - `address`: passed to ``ray.init`` when Ray is not initialized yet (then ``close()``
      shuts Ray down again); default: the running Ray, or ``ray.init()``'s own choice.
    - `slot_resource`: the custom resource a session takes one unit of (default
      "sandbox_slots"; None: none, placement by memory and CPU only).
    - `session_resources`: more of each session's bundle (e.g. ``{"CPU": 0.5}``).
    - `reserve_memory`: reserve the policy's ``memory_bytes`` of Ray's ``memory`` resource.
    - `placement_timeout_s`: how long a placement may wait for room before PlacementError.
    - `answer_s`: how long past a cell's timeout (or for a call) the node may take to answer
      before its session is taken as lost.
    - `warm`, `pool_size`: each node's Sandbox's (see ``Sandbox``).
    - `max_cells_per_node`: cells running at once on one node (the host actor's threads).
    - `watch_s`: how often a background thread checks every node with sessions (alive in
      the cluster, its host answering): a lost node's sessions are marked lost and their
      placements removed without waiting for a call.
    """

    def __init__(
        self,
        policy: Policy | None = None,
        *,
        prelude: str | None = None,
        root: str | None = None,
        address: str | None = None,
        slot_resource: str | None = SLOT_RESOURCE,
        session_resources: dict[str, float] | None = None,
        reserve_memory: bool = True,
        placement_timeout_s: float = 10.0,
        answer_s: float = 60.0,
        warm: bool = True,
        pool_size: int = 0,
        max_cells_per_node: int = 512,
        watch_s: float = 1.0,
    ) -> None:
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError("policy must be a sandbox_exec.Policy")
        _check_prelude(prelude)
        for name, value in (("placement_timeout_s", placement_timeout_s), ("answer_s", answer_s), ("watch_s", watch_s)):
            if not _seconds(value):
                raise ValueError(f"{name} must be a positive number of seconds up to {MAX_SECONDS:g}, got {value!r}")
        if session_resources is not None and not isinstance(session_resources, dict):
            raise TypeError("session_resources must be a dict of resource names to amounts")
        for key, amount in (session_resources or {}).items():
            if not (isinstance(key, str) and key and _amount_ok(amount)):
                raise ValueError(f"session_resources must map names to finite amounts >= 0, got {key!r}: {amount!r}")
        if slot_resource is not None and not (isinstance(slot_resource, str) and slot_resource):
            raise ValueError(f"slot_resource must be a resource name or None, got {slot_resource!r}")
        if not isinstance(warm, bool) or not isinstance(reserve_memory, bool):
            raise TypeError("warm and reserve_memory must be True or False")
        for name, value, least in (("pool_size", pool_size, 0), ("max_cells_per_node", max_cells_per_node, 1)):
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        self.policy = policy or Policy()
        self.prelude = prelude
        self.root = root
        self.slot_resource = slot_resource
        self.session_resources = dict(session_resources or {})
        self.reserve_memory = reserve_memory
        self.placement_timeout_s = float(placement_timeout_s)
        self.answer_s = float(answer_s)
        self._warm = warm
        self._pool_size = pool_size
        self._max_cells = max_cells_per_node
        self._id = uuid.uuid4().hex[:12]
        self._started_ray = False
        if not ray.is_initialized():
            ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
            self._started_ray = True
        self._lock = threading.Lock()
        self._hosts: dict[str, _Host] = {}
        self._host_locks: dict[str, threading.Lock] = {}
        self._sessions: dict[str, RaySession] = {}
        self._closed = False
        self.watch_s = float(watch_s)
        self._stop_watch = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="sandbox_exec-ray-watch", daemon=True)
        self._watcher.start()

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the watcher -----------------------------------------------------------------------------
    def _watch(self) -> None:
        """Every `watch_s`: a host whose node the cluster says is dead, or that died, or
        that has not answered a ping within `answer_s`, is lost; its sessions are marked
        lost and their placement groups removed at once (a dead node's bundles would
        otherwise be placed again elsewhere and hold slots that no session uses), and a
        caller waiting on one of them gets status "lost" within a slice of a second."""
        pings: dict[str, tuple[Any, float]] = {}
        while not self._stop_watch.wait(self.watch_s):
            try:
                self._watch_once(pings)
            except Exception:  # the cluster's state API failed this time: look again next tick
                logging.getLogger("sandbox_exec.ray").debug("watch failed", exc_info=True)

    def _watch_once(self, pings: dict[str, tuple[Any, float]]) -> None:
        with self._lock:
            hosts = list(self._hosts.values())
        if not hosts:
            return
        alive = {n["NodeID"] for n in _alive_nodes()}
        now = time.monotonic()
        for host in hosts:
            if host.lost is None and host.node_id not in alive:
                host.lost = f"node {host.node_id} is dead (the cluster's health checks)"
            if host.lost is None:
                ref, since = pings.get(host.node_id, (None, now))
                if ref is None:
                    pings[host.node_id] = (_control(host.actor.ping).remote(), now)
                elif ray.wait([ref], timeout=0)[0]:
                    del pings[host.node_id]
                    try:
                        ray.get(ref)
                    except _LOST_ERRORS as e:
                        host.lost = _died(host, e)
                elif now - since > self.answer_s:
                    host.lost = _silent(host, self.answer_s)
            if host.lost is not None:
                pings.pop(host.node_id, None)
                with self._lock:
                    theirs = [s for s in self._sessions.values() if s._host is host]
                for s in theirs:
                    s._mark_lost(host.lost)
                self._forget_host_if_lost(host)

    # --- sessions ----------------------------------------------------------------------------
    def session(
        self, name: str, *, policy: Policy | None = None, prelude: str | None = None, mode: str | None = None
    ) -> RaySession:
        """Gets the named session (open, on its node), or places and starts it. A lost or
        closed one's name gets a new session, placed anew."""
        if not isinstance(name, str) or not name:
            raise ValueError("a session name must be a non-empty string")
        if policy is not None and not isinstance(policy, Policy):
            raise TypeError("policy must be a sandbox_exec.Policy")
        _check_prelude(prelude)
        if mode is not None:
            from ._modes import check_mode

            check_mode(mode)
        with self._lock:
            if self._closed:
                raise SessionClosedError("the RaySandbox is closed")
            s = self._sessions.get(name)
            if s is None or s.closed or s.lost is not None:
                if s is not None:
                    # The lost one's handle is retired: its restart() must not place a second
                    # session of this name beside the new one.
                    s._closed = True
                s = RaySession(
                    self, name, policy or self.policy, prelude if prelude is not None else self.prelude, mode
                )
                self._sessions[name] = s
                mine = True
            else:
                mine = False
        if not mine:  # open, or being placed by another thread: wait for that
            s._placed.wait()
            if s._place_error is not None:
                raise SandboxError(f"session {name!r} could not be placed: {s._place_error}")
            return s
        try:
            s._place()
        except BaseException as e:
            s._place_error = e
            with self._lock:
                if self._sessions.get(name) is s:
                    del self._sessions[name]
            raise
        finally:
            s._placed.set()
        return s

    def sessions(self) -> list[RaySession]:
        with self._lock:
            return [s for s in self._sessions.values() if not s.closed]

    def run_once(self, code: str, *, timeout: float | None = None, policy: Policy | None = None) -> Result:
        """A fresh session for this one cell, wherever there is room; gone after it."""
        s = self.session(f".once-{uuid.uuid4().hex}", policy=policy)
        try:
            return s.run(code, timeout=timeout)
        finally:
            s.close(remove_workdir=True)

    def _forget(self, session: RaySession) -> None:
        with self._lock:
            if self._sessions.get(session.name) is session:
                del self._sessions[session.name]

    # --- nodes -----------------------------------------------------------------------------------
    def nodes(self) -> list[dict[str, Any]]:
        """Every alive node of the cluster: its id, its resources (total and free) and how
        many of this RaySandbox's sessions live there."""
        count: dict[str, int] = {}
        for s in self.sessions():
            if s.node_id is not None and s.lost is None:
                count[s.node_id] = count.get(s.node_id, 0) + 1
        free = _available_by_node()
        with self._lock:
            hosts = {node: host.info for node, host in self._hosts.items() if host.lost is None}
        return [
            {
                "node_id": n["NodeID"],
                "resources": dict(n.get("Resources", {})),
                # (without the placement groups' own per-group resource names)
                "available": {k: v for k, v in free.get(n["NodeID"], {}).items() if "_group_" not in k},
                "sessions": count.get(n["NodeID"], 0),
                "host": hosts.get(n["NodeID"]),  # this RaySandbox's host actor there, if any
            }
            for n in _alive_nodes()
        ]

    def _bundle(self, policy: Policy) -> dict[str, float]:
        bundle: dict[str, float] = {}
        if self.slot_resource:
            bundle[self.slot_resource] = 1
        if self.reserve_memory and policy.memory_bytes:
            bundle["memory"] = float(policy.memory_bytes)
        if policy.cpus:  # a session capped at a CPU share reserves that share of Ray's CPUs
            bundle["CPU"] = float(policy.cpus)
        bundle.update(self.session_resources)
        return {k: v for k, v in bundle.items() if v > 0} or {"memory": 1.0}

    def _reserve(self, name: str, policy: Policy) -> tuple[PlacementGroup, str]:
        """A one-bundle placement group for the session, ready, and the node it is on."""
        bundle = self._bundle(policy)
        alive = _alive_nodes()
        if not any(all(n.get("Resources", {}).get(k, 0) >= v for k, v in bundle.items()) for n in alive):
            have = "; ".join(f"{n['NodeID'][:12]}: {_describe(n.get('Resources', {}), bundle)}" for n in alive)
            hint = (
                f" (start nodes with: ray start --resources '{{\"{self.slot_resource}\": N}}')"
                if self.slot_resource
                else ""
            )
            raise PlacementError(
                f"no node of the cluster can ever hold session {name!r}: it needs {_fmt(bundle)}, and the "
                f"nodes have {have or 'nothing (no alive node)'}{hint}"
            )
        pg = placement_group([bundle], strategy="STRICT_PACK", name=f"sandbox_exec-{self._id}-{uuid.uuid4().hex[:8]}")
        try:
            ray.get(pg.ready(), timeout=self.placement_timeout_s)
        except ray.exceptions.GetTimeoutError:
            remove_placement_group(pg)
            free = _available_by_node()
            have = "; ".join(f"{node[:12]}: {_describe(res, bundle)} free" for node, res in sorted(free.items()))
            raise PlacementError(
                f"no node has room for session {name!r} within {self.placement_timeout_s:g} s: it needs "
                f"{_fmt(bundle)}; {have or 'no node has anything free'} (close sessions, or add nodes)"
            ) from None
        except BaseException:
            remove_placement_group(pg)
            raise
        node_id = placement_group_table(pg)["bundles_to_node_id"][0]
        return pg, str(node_id)

    def _host_on(self, node_id: str) -> _Host:
        """The node's host actor, started on first use (one per node per RaySandbox)."""
        with self._lock:
            if self._closed:
                raise SessionClosedError("the RaySandbox is closed")
            lock = self._host_locks.setdefault(node_id, threading.Lock())
        with lock:
            with self._lock:
                host = self._hosts.get(node_id)
            if host is not None and host.lost is None:
                return host
            actor = (
                _host_actor_class()
                .options(
                    num_cpus=0,
                    max_concurrency=self._max_cells,
                    max_restarts=0,
                    scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
                    name=f"sandbox_exec-{self._id}-{node_id[:16]}",
                )
                .remote(self.policy, self.root, self._warm, self._pool_size)
            )
            try:
                info = ray.get(_control(actor.info).remote(), timeout=self.answer_s)
            except _LOST_OR_SILENT as e:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
                raise SessionLostError(
                    f"ray: the sandbox host on node {node_id} did not start: {type(e).__name__}: {e}"
                ) from None
            except ray.exceptions.RayTaskError as e:
                with contextlib.suppress(Exception):
                    ray.kill(actor)
                raise SandboxError(f"ray: the sandbox host on node {node_id} failed to start: {e}") from None
            if not isinstance(info, dict) or info.get("node_id") != node_id:
                ray.kill(actor)
                raise SandboxError(f"ray: the sandbox host meant for node {node_id} runs elsewhere; refused")
            host = _Host(node_id, actor, info)
            with self._lock:
                self._hosts[node_id] = host
            return host

    def _forget_host_if_lost(self, host: _Host | None) -> None:
        if host is None or host.lost is None:
            return
        with self._lock:
            if self._hosts.get(host.node_id) is host:
                del self._hosts[host.node_id]
        with contextlib.suppress(Exception):
            ray.kill(host.actor)

    def close(self) -> None:
        """Closes every session, ends every node's host (and so every interpreter it
        started), frees every placement. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            sessions = list(self._sessions.values())
            hosts = list(self._hosts.values())
        self._stop_watch.set()
        for s in sessions:
            with contextlib.suppress(Exception):
                s.close()
        for host in hosts:
            if host.lost is None:
                with contextlib.suppress(Exception):
                    ray.get(_control(host.actor.shutdown).remote(), timeout=self.answer_s)
            with contextlib.suppress(Exception):
                ray.kill(host.actor)
        with self._lock:
            self._hosts.clear()
        if self._started_ray:
            ray.shutdown()


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_SECONDS


def _amount_ok(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_prelude(prelude: object) -> None:
    if prelude is not None and not isinstance(prelude, str):
        raise TypeError(f"prelude must be str or None, not {type(prelude).__name__}")


def _alive_nodes() -> list[dict[str, Any]]:
    """The cluster's alive nodes, as ray.nodes() describes them."""
    return [n for n in ray.nodes() if n.get("Alive")]  # type: ignore[no-untyped-call]


def _available_by_node() -> dict[str, dict[str, float]]:
    """What each alive node has free now (Ray's state API)."""
    from ray._private.state import available_resources_per_node

    try:
        free: dict[str, dict[str, float]] = dict(available_resources_per_node())  # type: ignore[no-untyped-call]
    except Exception:
        return {}
    return free


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{k}={_amount(k, v)}" for k, v in sorted(resources.items()))


def _amount(key: str, value: float) -> str:
    if key in ("memory", "object_store_memory"):
        return f"{value / 2**20:.0f} MiB"
    return f"{value:g}"


def _describe(resources: dict[str, float], bundle: dict[str, float]) -> str:
    return ", ".join(f"{k}={_amount(k, resources.get(k, 0))}" for k in sorted(bundle))
