"""RaySession: one notebook's interpreter on a node, with Session's methods; calls go to its
node's host, and a dead node makes it lost."""

from __future__ import annotations

import asyncio
import contextlib
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import ray
from ray.util.placement_group import PlacementGroup, remove_placement_group

from ..errors import SandboxError, SessionClosedError, WorkdirInUseError
from ..policy import Policy
from ..result import OutputEvent, Result, make_result
from ._errors import SessionLostError
from ._host import _CONTROL, _LOST_ERRORS, _SLICE_S, _control, _died, _Host, _silent
from ._wire import _RESULT_FIELDS, _checked, _raise_from_wire, _result_from_wire

if TYPE_CHECKING:
    from ._sandbox import RaySandbox

_Self = TypeVar("_Self", bound="_Closing")


def _holder_pid(message: str) -> int | None:
    """The pid in a WorkdirInUseError's holder ("session 'x' of process 123")."""
    found = re.search(r"of process (\d+)", message)
    return int(found.group(1)) if found else None


def _check_connected() -> None:
    """Ray must still be connected: after ray.shutdown() the hosts are gone with the
    driver's connection, and any Ray call would connect it again (or start a new one)."""
    if not ray.is_initialized():
        raise SandboxError("ray: Ray is not connected (ray.shutdown() was called); the sessions went with it")


#: How long a new session of a name waits at least for the previous one's host to let go of
#: the workdir lock: Ray ends a worker that does not answer (a stopped or hung host) with
#: SIGKILL only after its own grace, about 5 s.
_OLD_HOLDER_S = 15.0


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
        self._replacing = False  # restart() is placing it again after a loss

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
    def _place(self, *, old_holder: int | None = None) -> None:
        """Reserves a bundle on some node and opens the session in that node's host.
        `old_holder`: the pid of the host that held this name's session before it was lost;
        Ray may not have ended that process yet (a hung host is killed only after Ray's own
        grace), so a WorkdirInUseError naming it is retried for up to max(`answer_s`, 15 s).
        One naming anyone else (another live RaySandbox or backend) is raised at once."""
        pg, node_id = self._box._reserve(self.name, self.policy)
        deadline = time.monotonic() + max(self._box.answer_s, _OLD_HOLDER_S)
        try:
            host = self._box._host_on(node_id)
            while True:
                try:
                    ref = host.actor.open.remote(self.name, self.policy, self.prelude, self.mode)
                    answer = self._host_call(host, ref)
                    break
                except WorkdirInUseError as e:
                    if old_holder is None or _holder_pid(str(e)) != old_holder or time.monotonic() >= deadline:
                        raise
                    time.sleep(0.1)
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

    def _unwrap(self, answer: Any, host: _Host, *, check: bool = True) -> Any:
        """The value of a host's answer, or the error it names raised. `check=False`: the
        caller checks the value itself (_result_from_wire), once."""
        if not isinstance(answer, dict):
            raise SandboxError("ray: the node host sent an answer that is not a dict; refused")
        if "ok" in answer:
            return _checked(answer["ok"], "an answer") if check else answer["ok"]
        _raise_from_wire(_checked(answer, "an error"))
        raise AssertionError("unreachable")

    def _usable(self) -> _Host:
        if self._closed:
            raise SessionClosedError(f"session {self.name!r} is closed")
        _check_connected()
        if self.lost is not None:
            raise SessionLostError(
                f"session {self.name!r} was lost with its node: {self._lost}; restart() places it again"
            )
        assert self._host is not None
        return self._host

    def _ask(self, what: str, *args: Any) -> Any:
        host = self._usable()
        method = getattr(host.actor, what)
        wait_s: float | None
        if what in _CONTROL:  # served at once, whatever runs
            method, wait_s = _control(method), self._box.answer_s
        else:
            # A restart, or a call that runs in the interpreter after a running cell (as
            # locally): however long that cell may take, the host is alive as long as it
            # answers the watcher's pings; the watcher's verdict ends the wait, no deadline.
            wait_s = None
        try:
            return self._host_call(host, method.remote(self.name, *args), wait_s)
        except SessionLostError:
            self._mark_lost(host.lost or "lost")
            raise

    def _wait_s(self, timeout: float | None) -> float | None:
        """How long a cell's answer may take before its node is taken as silent."""
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
        from ..sandbox import _check_run_args

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
                    answer = self._host_get(host, ref, self._wait_s(timeout))
                    result = _result_from_wire(self._unwrap(answer, host, check=False))
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
        from ..sandbox import _check_run_args

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
                return _result_from_wire(self._unwrap(answer, host, check=False))
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
        if self._closed or not ray.is_initialized() or self.lost is not None:
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
        old = self._host.info.get("pid") if self._host is not None else None
        with self._box._lock:  # session(name) meanwhile waits for this placement (_replacing)
            if self._closed:
                raise SessionClosedError(f"session {self.name!r} is closed")
            self._replacing = True
            self._placed.clear()
            self._place_error = None
        try:
            with self._lock:
                self._place(old_holder=old if isinstance(old, int) else None)
        except BaseException as e:
            self._place_error = e
            raise
        finally:
            self._replacing = False
            self._placed.set()

    def close(self, *, remove_workdir: bool = False) -> None:
        """Ends the interpreter on its node and frees its placement. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not ray.is_initialized():  # Ray was shut down first: its calls would connect it again
            self._pg = None
            self._box._forget(self)
            return
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
