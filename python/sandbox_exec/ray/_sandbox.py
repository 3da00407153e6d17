"""RaySandbox: Sandbox's API over a Ray cluster; its hosts, its sessions, and the watcher
that finds lost nodes."""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import threading
import time
import uuid
import weakref
from typing import Any

import ray
from ray.util.placement_group import PlacementGroup
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from ..errors import SandboxError, SessionClosedError
from ..policy import MAX_SECONDS, Policy
from ..result import Result
from ._errors import SessionLostError
from ._host import _LOST_ERRORS, _LOST_OR_SILENT, _control, _died, _Host, _host_actor_class, _silent
from ._placement import SLOT_RESOURCE, alive_nodes, available_by_node, reserve
from ._session import RaySession, _check_connected, _Closing


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
        # The thread holds the RaySandbox weakly: one dropped without close() is collected,
        # and its watcher ends.
        self._watcher = threading.Thread(
            target=_watch,
            args=(weakref.ref(self), self._stop_watch, self.watch_s),
            name="sandbox_exec-ray-watch",
            daemon=True,
        )
        self._watcher.start()
        weakref.finalize(self, self._stop_watch.set)  # collected: the watcher ends at once
        _close_at_exit(self)

    @property
    def closed(self) -> bool:
        return self._closed

    # --- the watcher (see _watch) ------------------------------------------------------------------
    def _watch_once(self, pings: dict[str, tuple[Any, float]]) -> None:
        with self._lock:
            hosts = list(self._hosts.values())
        if not hosts:
            return
        alive = {n["NodeID"] for n in alive_nodes()}
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
            from .._modes import check_mode

            check_mode(mode)
        _check_connected()
        old_holder: int | None = None
        with self._lock:
            if self._closed:
                raise SessionClosedError("the RaySandbox is closed")
            s = self._sessions.get(name)
            if s is None or s.closed or (s.lost is not None and not s._replacing):
                if s is not None:
                    # The lost one's handle is retired: its restart() must not place a second
                    # session of this name beside the new one. Its old host may still hold
                    # the workdir's lock a moment (RaySession._place).
                    s._closed = True
                    pid = s._host.info.get("pid") if s._host is not None else None
                    old_holder = pid if isinstance(pid, int) else None
                s = RaySession(
                    self, name, policy or self.policy, prelude if prelude is not None else self.prelude, mode
                )
                self._sessions[name] = s
                mine = True
            else:
                mine = False
        if not mine:  # open, or being placed (or placed again by restart()) by another thread
            s._placed.wait()
            if s._place_error is not None:
                raise SandboxError(f"session {name!r} could not be placed: {s._place_error}")
            if s.closed or s.lost is not None:  # gone meanwhile: a new one
                return self.session(name, policy=policy, prelude=prelude, mode=mode)
            return s
        try:
            s._place(old_holder=old_holder)
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
        _check_connected()
        count: dict[str, int] = {}
        for s in self.sessions():
            if s.node_id is not None and s.lost is None:
                count[s.node_id] = count.get(s.node_id, 0) + 1
        free = available_by_node()
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
            for n in alive_nodes()
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
        return reserve(
            name, self._bundle(policy), self.placement_timeout_s, self.slot_resource, f"sandbox_exec-{self._id}"
        )

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
                # A start (a Ray worker process, the package, a Sandbox): bounded as a
                # session's start is, not by answer_s (a silence bound, seconds when small).
                info = ray.get(_control(actor.info).remote(), timeout=self.policy.start_timeout_s + self.answer_s)
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
        if not ray.is_initialized():
            # Ray was shut down first (its hosts went with the driver's connection): nothing
            # to call, and any call would connect Ray again.
            for s in sessions:
                s._closed, s._pg = True, None
            with self._lock:
                self._hosts.clear()
            return
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


def _watch(ref: weakref.ref[RaySandbox], stop: threading.Event, every: float) -> None:
    """The watcher, every `every` seconds: a host whose node the cluster says is dead, or
    that died, or that has not answered a ping within `answer_s`, is lost; its sessions are
    marked lost and their placement groups removed at once (a dead node's bundles would
    otherwise be placed again elsewhere and hold slots that no session uses), and a caller
    waiting on one of them gets status "lost" within a slice of a second."""
    pings: dict[str, tuple[Any, float]] = {}
    while not stop.wait(every):
        box = ref()
        if box is None:
            return
        try:
            if ray.is_initialized():  # (never connect Ray again after its shutdown)
                box._watch_once(pings)
        except Exception:  # the cluster's state API failed this time: look again next tick
            logging.getLogger("sandbox_exec.ray").debug("watch failed", exc_info=True)
        del box


_open_boxes: weakref.WeakSet[RaySandbox] = weakref.WeakSet()
_exit_hook = False


def _close_at_exit(box: RaySandbox) -> None:
    """Closes the RaySandboxes still open at interpreter exit, before Ray's own exit hook
    (registered earlier, so run later) disconnects: the hosts then close their sessions and
    unmount their workdirs, instead of dying with the driver's connection."""
    global _exit_hook
    _open_boxes.add(box)
    if not _exit_hook:
        _exit_hook = True
        atexit.register(_close_open_boxes)


def _close_open_boxes() -> None:
    # A RaySandbox that started Ray shuts it down at its close: those go last, so that the
    # others' hosts are still reachable when they close.
    for box in sorted(_open_boxes, key=lambda b: b._started_ray):
        if not box.closed:
            try:
                box.close()
            except Exception:  # the others are still closed
                logging.getLogger("sandbox_exec.ray").exception("closing a RaySandbox at exit failed")


def _seconds(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value <= MAX_SECONDS


def _amount_ok(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def _check_prelude(prelude: object) -> None:
    if prelude is not None and not isinstance(prelude, str):
        raise TypeError(f"prelude must be str or None, not {type(prelude).__name__}")
