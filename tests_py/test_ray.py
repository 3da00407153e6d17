"""sandbox_exec.ray on a real Ray cluster started here: a head (no sandbox slots) and two
worker nodes, each a raylet of its own (ray.cluster_utils.Cluster). Placement across nodes
and by capacity, stickiness, streaming order and shapes, isolation of remote sessions,
a node killed mid-cell, and a shutdown that leaves nothing (docs/scaling.md)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import placement_group_table

import sandbox_exec
from leftovers import Baseline, _entries, leftovers
from sandbox_exec.ray import PlacementError, RaySandbox, SessionLostError

SLOTS = 2  # per worker node
# How fast the head notices a dead node: 0.5 s health checks, dead after 3 missed. (Ray's
# defaults take tens of seconds; docs/scaling.md says what a production cluster should use.)
FAST_DEATH = {"health_check_period_ms": 500, "health_check_failure_threshold": 3, "health_check_initial_delay_ms": 0}
LOST_BOUND_S = 30  # a cell on a killed node reports "lost" within this (no hang)


class Nodes:
    """The running cluster and its two sandbox nodes."""

    def __init__(self, cluster: Cluster, workers: list, temp_dir: str) -> None:
        self.cluster = cluster
        self.workers = workers
        self.temp_dir = temp_dir
        self.ids = {w.node_id for w in workers}
        self.gcs = cluster.address  # "host:port" of the head's GCS

    def raylet_pid(self, node_id: str) -> int:
        for node in [self.cluster.head_node, *self.cluster.worker_nodes]:
            if node.node_id == node_id:
                return int(node.all_processes["raylet"][0].process.pid)
        raise KeyError(node_id)


@pytest.fixture(scope="module")
def nodes():
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths live under it
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 0, "temp_dir": temp_dir, "_system_config": FAST_DEATH},
    )
    workers = [cluster.add_node(num_cpus=1, resources={"sandbox_slots": SLOTS}) for _ in range(2)]
    ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
    cluster.wait_for_nodes()
    try:
        yield Nodes(cluster, workers, temp_dir)
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture
def root(tmp_path):
    """A Sandbox root every node shares (they are on this machine)."""
    return tmp_path / "root"


@pytest.fixture
def box(nodes, root):
    with RaySandbox(sandbox_exec.Policy(timeout_s=60), root=str(root), placement_timeout_s=3) as b:
        yield b


def ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            break
        pid = int(fields[1])
        chain.append(pid)
    return chain


@pytest.mark.b
def test_sessions_spread_over_nodes_within_capacity_and_stick_to_theirs(nodes, box):
    sessions = [box.session(f"nb-{i}") for i in range(2 * SLOTS)]
    where = [s.node_id for s in sessions]
    # Every sandbox node holds exactly its SLOTS sessions; none went to the head (no slots).
    assert sorted(where.count(n) for n in nodes.ids) == [SLOTS, SLOTS], where
    assert set(where) == nodes.ids
    per_node = {n["node_id"]: n["sessions"] for n in box.nodes()}
    assert all(per_node[n] == SLOTS for n in nodes.ids)
    for s in sessions:
        pid = s.worker_pid
        # The interpreter runs below the raylet of the node the session says it lives on.
        assert nodes.raylet_pid(s.node_id) in ancestors(pid)
        s.run("x = 0")
        for _ in range(10):
            r = s.run("x += 1\nx")
        assert r.outputs[0]["data"]["text/plain"] == "10"
        assert s.worker_pid == pid  # the same interpreter every time
        assert r.execution_count == 11 == s.execution_count
    # Getting a session by name again is the same session on the same node.
    assert box.session("nb-0") is sessions[0]
    assert box.session("nb-0").node_id == where[0]


@pytest.mark.b
def test_full_and_impossible_placements_are_clear_errors(nodes, box):
    held = [box.session(f"full-{i}") for i in range(2 * SLOTS)]
    t0 = time.monotonic()
    with pytest.raises(PlacementError, match=r"no node has room for session 'one-more' within 3 s.*sandbox_slots=1"):
        box.session("one-more")
    assert time.monotonic() - t0 < 3 + 10  # the placement timeout, not a hang
    assert "one-more" not in {s.name for s in box.sessions()}
    # Past every node's total: refused at once, naming the fix.
    huge = sandbox_exec.Policy(memory_bytes=1 << 50)
    t0 = time.monotonic()
    with pytest.raises(PlacementError, match=r"can ever hold session 'huge'.*memory=1073741824 MiB"):
        box.session("huge", policy=huge)
    assert time.monotonic() - t0 < 3
    # A CPU share (Policy.cpus) is reserved too: more than a node has is refused at once.
    with pytest.raises(PlacementError, match=r"can ever hold session 'cpu'.*CPU=2"):
        box.session("cpu", policy=sandbox_exec.Policy(cpus=2))
    with RaySandbox(slot_resource="gpu_sandbox_slots", placement_timeout_s=1) as other:
        with pytest.raises(PlacementError, match=r"ray start --resources '\{\"gpu_sandbox_slots\": N\}'"):
            other.session("x")
    # A slot freed is a slot to place in.
    held[0].close()
    assert box.session("one-more").run("1 + 1").status == "ok"


@pytest.mark.b
def test_outputs_stream_in_order_with_the_local_shapes(nodes, box, tmp_path):
    cell = (
        "import time, sys\n"
        "print('first', flush=True)\n"
        "time.sleep(1.5)\n"
        "for i in range(200):\n"
        "    print(i, flush=True)\n"
        "print('err', file=sys.stderr, flush=True)\n"
        "h = display({'text/plain': 'a'}, raw=True, display_id='d1')\n"
        "h.update({'text/plain': 'b'}, raw=True)\n"
        "from IPython.display import clear_output\n"
        "clear_output(wait=True)\n"
        "display({'text/html': '<b>x</b>', 'text/plain': 'x'}, raw=True)\n"
        "41 + 1\n"
    )
    s = box.session("stream")
    arrived: list[tuple[float, dict]] = []
    r = s.run(cell, on_output=lambda ev: arrived.append((time.monotonic(), ev)))
    done = time.monotonic()
    assert r.status == "ok", r
    # The first print reached the caller while the cell still ran (it sleeps 1.5 s after).
    assert done - arrived[0][0] > 1.0
    remote_events = [ev for _, ev in arrived]
    texts = "".join(ev["text"] for ev in remote_events if ev.get("name") == "stdout")
    assert texts == "first\n" + "".join(f"{i}\n" for i in range(200))
    with sandbox_exec.Sandbox(root=tmp_path / "local") as local:
        local_events: list[dict] = []
        lr = local.session("stream").run(cell, on_output=local_events.append)
    # The same events, in the same order and shapes, as a local session's; the same Result.
    assert remote_events == local_events
    assert (r.outputs, r.display_ids, r.display_updates, r.stdout, r.stderr) == (
        lr.outputs,
        lr.display_ids,
        lr.display_updates,
        lr.stdout,
        lr.stderr,
    )


@pytest.mark.b
def test_run_async_streams_on_the_loop(nodes, box):
    import asyncio

    s = box.session("async")

    async def main():
        seen: list[tuple[int, str]] = []
        loop_thread = threading.get_ident()

        def on_output(ev):
            seen.append((threading.get_ident(), ev["text"]))

        ticks = 0

        async def tick():
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        r = await s.run_async(
            "import time\nfor i in range(5):\n    print(i, flush=True)\n    time.sleep(0.2)", on_output=on_output
        )
        ticker.cancel()
        return r, seen, loop_thread, ticks

    r, seen, loop_thread, ticks = asyncio.run(main())
    assert r.status == "ok"
    assert [t for _, t in seen] == [f"{i}\n" for i in range(5)]
    assert {tid for tid, _ in seen} == {loop_thread}  # on the loop's thread
    assert ticks >= 5  # the loop kept running during the remote cell (~1 s)


@pytest.mark.b
def test_interrupt_restart_and_state_calls_cross_to_the_node(nodes, box):
    s = box.session("ctl")
    s.run("kept = 7")
    started = threading.Event()
    out = {}

    def go():
        out["r"] = s.run("import time\nprint('go', flush=True)\ntime.sleep(60)", on_output=lambda ev: started.set())

    t = threading.Thread(target=go)
    t.start()
    assert started.wait(30)
    s.interrupt()
    t.join(30)
    assert out["r"].status == "interrupted"
    assert s.run("kept").outputs[0]["data"]["text/plain"] == "7"  # the namespace is kept
    names = {v["name"] for v in s.variables()}
    assert "kept" in names
    # An error of the node's Sandbox arrives as the same class, with its fields.
    with pytest.raises(sandbox_exec.CheckpointError) as e:
        s.restore()
    assert e.value.kind == "missing"
    assert s.checkpoint()["saved"] == ["kept"]
    node = s.node_id
    s.restart()
    assert s.node_id == node  # a restart stays on the node
    assert s.run("kept").status == "error"  # a fresh interpreter
    assert s.restore()["restored"] == ["kept"]
    assert s.run("kept").outputs[0]["data"]["text/plain"] == "7"
    with pytest.raises(ValueError, match="timeout must be"):
        s.run("1", timeout=-1)
    s.close()
    with pytest.raises(sandbox_exec.SessionClosedError):
        s.variables()


PROBE = r"""
import os, socket
verdicts = {}
host, port = GCS.rsplit(":", 1)
try:
    socket.create_connection((host, int(port)), timeout=3).close()
    verdicts["ray_gcs"] = "reachable"
except OSError as e:
    verdicts["ray_gcs"] = "blocked"
verdicts["ray_temp_dir"] = "visible" if os.path.exists(RAY_TEMP) else "hidden"
verdicts["seccomp"] = [l.split()[1] for l in open("/proc/self/status") if l.startswith("Seccomp:")][0]
try:
    open("/etc/passwd", "a")
    verdicts["etc"] = "writable"
except OSError:
    verdicts["etc"] = "read-only"
verdicts
"""


@pytest.mark.c
def test_remote_sessions_are_isolated_as_local_ones(nodes, box, tmp_path):
    setup = f"GCS = {nodes.gcs!r}\nRAY_TEMP = {nodes.temp_dir!r}\n"
    s = box.session("iso")
    s.run(setup)
    remote = s.run(PROBE)
    assert remote.status == "ok", remote
    with sandbox_exec.Sandbox(root=tmp_path / "local") as local:
        ls = local.session("iso")
        ls.run(setup)
        here = ls.run(PROBE)
        local_enforcement = ls.enforcement
    assert remote.outputs == here.outputs
    verdicts = remote.outputs[0]["data"]["text/plain"]
    # The cell cannot reach the cluster's control plane, see Ray's files, or write the host's.
    for fact in ("'ray_gcs': 'blocked'", "'ray_temp_dir': 'hidden'", "'seccomp': '2'", "'etc': 'read-only'"):
        assert fact in verdicts
    # Every policy field enforced by the same mechanism as locally; the session's own host id
    # and its zygote are its node's.
    remote_enforcement = s.enforcement
    assert remote_enforcement.keys() == local_enforcement.keys()
    for field, how in local_enforcement.items():
        if field not in ("host_uid", "start"):
            assert remote_enforcement[field] == how, field
    assert remote_enforcement["host_uid"].startswith("per-session host uid") or os.geteuid() != 0
    assert remote_enforcement["start"].startswith("warm: forked from zygote")
    # As root, the interpreter runs as an unprivileged host id of its own.
    pid = s.worker_pid
    uid = int(
        next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("Uid:")).split()[
            1
        ]
    )
    if os.geteuid() == 0:
        assert uid != 0


@pytest.mark.b
def test_shutdown_leaves_nothing(nodes, root):
    shm_before = _entries("/dev/shm")
    box = RaySandbox(sandbox_exec.Policy(timeout_s=60), root=str(root))
    sessions = [box.session(f"s{i}") for i in range(3)]
    for s in sessions:
        assert s.run("import numpy\n1").status == "ok"
    pids = [s.worker_pid for s in sessions]
    hosts = [n["host"] for n in box.nodes() if n["host"]]
    assert len(hosts) == 2
    groups = [s._pg.id.hex() for s in sessions]
    actors = list(box._hosts.values())
    box.close()
    # Every interpreter, every host actor and every placement is gone; nothing on the host.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids + [h["pid"] for h in hosts]):
        time.sleep(0.1)
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
    assert not [h["pid"] for h in hosts if Path(f"/proc/{h['pid']}").exists()]
    for a in actors:
        with pytest.raises(ray.exceptions.RayActorError):
            ray.get(a.actor.info.remote(), timeout=30)
    table = placement_group_table()
    assert all(table[g]["state"] == "REMOVED" for g in groups)
    for h in hosts:
        baseline = Baseline(pid=h["pid"], fds={}, shm=shm_before)
        assert leftovers(baseline, root, backend_alive=False) == []
    with pytest.raises(sandbox_exec.SessionClosedError):
        box.session("late")


@pytest.mark.c
def test_a_node_killed_mid_cell_loses_its_sessions_only(nodes, root):
    """Two more nodes, only for this test (resource "lossy"); the session lives on one, it is
    killed mid-cell, the session is placed again on the other with its last checkpoint."""
    doomed = [nodes.cluster.add_node(num_cpus=1, resources={"sandbox_slots": SLOTS, "lossy": 1}) for _ in range(2)]
    nodes.cluster.wait_for_nodes()
    by_id = {n.node_id: n for n in doomed}
    policy = sandbox_exec.Policy(timeout_s=300, checkpoint="after_cell", restore_on_start=True)
    bystanders = RaySandbox(sandbox_exec.Policy(timeout_s=60), root=str(root / "other"))
    box = RaySandbox(policy, root=str(root), session_resources={"lossy": 0.5})
    try:
        other = bystanders.session("bystander")
        other.run("y = 'still here'")
        s = box.session("victim")
        assert s.node_id in by_id
        assert s.run("x = 42").status == "ok"  # checkpointed after the cell (shared root)
        pid = s.worker_pid
        started = threading.Event()
        out = {}

        def long_cell():
            out["r"] = s.run(
                "import time\nprint('running', flush=True)\ntime.sleep(200)", on_output=lambda ev: started.set()
            )

        t = threading.Thread(target=long_cell)
        t.start()
        assert started.wait(60)
        killed_at = time.monotonic()
        nodes.cluster.remove_node(by_id[s.node_id], allow_graceful=False)
        t.join(LOST_BOUND_S)
        assert not t.is_alive(), "run() still waiting on a dead node"
        assert time.monotonic() - killed_at < LOST_BOUND_S
        r = out["r"]
        assert r.status == "lost", r
        assert "lost with its node" in r.reason and "restart()" in r.reason
        # Later calls do not hang either: run() says "lost" at once, the rest raise.
        t0 = time.monotonic()
        assert s.run("x").status == "lost"
        assert time.monotonic() - t0 < 1
        with pytest.raises(SessionLostError):
            s.variables()
        # The interpreter died with its node.
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not Path(f"/proc/{pid}").exists()
        # The rest of the cluster is unaffected.
        assert other.run("y").outputs[0]["data"]["text/plain"] == "'still here'"
        # Placed again elsewhere, from its last checkpoint.
        old = s.node_id
        s.restart()
        assert s.node_id != old and s.node_id in by_id
        r = s.run("x")
        assert r.status == "ok" and r.outputs[0]["data"]["text/plain"] == "42"
        # A new session of the same name in another RaySandbox would also do: by name.
        assert box.session("victim") is s
    finally:
        box.close()
        bystanders.close()
        for n in doomed:
            if n in nodes.cluster.worker_nodes:
                nodes.cluster.remove_node(n)
    assert leftovers(Baseline(pid=-1, fds={}, shm=_entries("/dev/shm")), root, backend_alive=False) == []


@pytest.mark.a
def test_the_package_works_without_ray(tmp_path):
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if not installed\n"
        "import sandbox_exec\n"
        f"with sandbox_exec.Sandbox(root={str(tmp_path / 'r')!r}) as box:\n"
        "    assert box.session('a').run('1 + 1').outputs[0]['data']['text/plain'] == '2'\n"
        "try:\n"
        "    import sandbox_exec.ray\n"
        "except ImportError as e:\n"
        "    print('refused:', e)\n"
    )
    cp = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert "refused: sandbox_exec.ray needs Ray: pip install 'sandbox_exec[ray]'" in cp.stdout


@pytest.mark.a
def test_what_crosses_from_a_node_is_plain_data_or_refused():
    from sandbox_exec.ray import _wire as sray

    ok = sandbox_exec.Result(
        "ok", outputs=[{"output_type": "stream", "name": "stdout", "text": "hi"}], display_ids={0: "d"}
    )
    assert sray._result_from_wire(sray._result_to_wire(ok)) == ok

    class Evil:
        pass

    for bad in (
        {**sray._result_to_wire(ok), "outputs": [Evil()]},  # an object inside
        {**sray._result_to_wire(ok), "status": "pwned"},
        {k: v for k, v in sray._result_to_wire(ok).items() if k != "stdout"},
        [1, 2],
        {**sray._result_to_wire(ok), "outputs": [(1, 2)]},  # a tuple is not JSON's
    ):
        with pytest.raises(sandbox_exec.SandboxError, match="refused"):
            sray._result_from_wire(bad)
    deep: list = []
    for _ in range(sray._MAX_DEPTH + 1):
        deep = [deep]
    assert not sray._plain(deep)  # past the bound: refused, no recursion without end
    # Errors cross as a known class by name, else as SandboxError; never an object.
    for name, cls in (
        ("CheckpointError", sandbox_exec.CheckpointError),
        ("PolicyError", sandbox_exec.PolicyError),
        ("SystemExit", sandbox_exec.SandboxError),
        ("Evil", sandbox_exec.SandboxError),
    ):
        with pytest.raises(cls) as e:
            sray._raise_from_wire({"raise": name, "message": "m", "attrs": {"kind": "corrupt", "status": "error"}})
        assert type(e.value) is cls
    wire = sray._error_to_wire(sandbox_exec.CheckpointError("bad", kind="corrupt", status="error", ename="E"))
    with pytest.raises(sandbox_exec.CheckpointError) as e:
        sray._raise_from_wire(wire)
    assert (e.value.kind, e.value.ename, str(e.value)) == ("corrupt", "E", "bad")
    assert sray._error_to_wire(KeyError("k"))["raise"] == "SandboxError"


@pytest.mark.b
def test_the_cluster_benchmark_runs(tmp_path):
    """bench/ray_cluster.py --quick (its own clusters, in a process of its own): every method
    answers 2 (the harness raises otherwise) and the ratios are computed."""
    out = tmp_path / "ray.json"
    cp = subprocess.run(
        [sys.executable, "bench/ray_cluster.py", "--quick", "--no-jupyter", "--seconds", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    import json

    results = json.loads(out.read_text())
    assert set(results["roundtrip"]) == {"exec", "local", "ray_ping", "ray", "ray_stream"}
    assert {"ray_1", "ray_2", "ray_3"} <= set(results["throughput"])
    assert [results["throughput"][f"ray_{n}"]["nodes_used"] for n in (1, 2, 3)] == [1, 2, 3]
    assert results["ratios"]["roundtrip_ray_over_local"] > 0


@pytest.mark.b
def test_deep_outputs_concurrent_opens_and_cancelled_cells(nodes, box, tmp_path):
    import asyncio

    # Whatever a node's Sandbox accepted crosses: JSON output nested as deep as its guard allows
    # (61 levels in the output: 64 with the message around it).
    cell = (
        "d = x = {}\nfor _ in range(61):\n    x['k'] = {}\n    x = x['k']\ndisplay({'application/json': d}, raw=True)"
    )
    with sandbox_exec.Sandbox(root=tmp_path / "local") as local:
        here = local.session("deep").run(cell)
    remote = box.session("deep").run(cell)
    assert here.status == "ok" and remote.status == "ok", remote
    assert remote.outputs == here.outputs
    # Many threads asking for one new name get one session, placed once, usable by all.
    got: list = []
    threads = [threading.Thread(target=lambda: got.append(box.session("shared"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 6 and all(s is got[0] for s in got)
    assert got[0].run("1 + 1").outputs[0]["data"]["text/plain"] == "2"
    assert sum(1 for s in box.sessions() if s.name == "shared") == 1
    # A cancelled run_async interrupts the cell on its node, as locally; the namespace stays.
    s = box.session("cancel")
    s.run("kept = 'yes'")

    async def cancel_it():
        started = asyncio.Event()
        task = asyncio.create_task(
            s.run_async("import time\nprint('in', flush=True)\ntime.sleep(120)", on_output=lambda ev: started.set())
        )
        await asyncio.wait_for(started.wait(), 30)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(cancel_it())
    t0 = time.monotonic()
    r = s.run("kept")
    assert time.monotonic() - t0 < 30  # the cell ended (interrupted), it did not sleep on
    assert r.outputs[0]["data"]["text/plain"] == "'yes'"


@pytest.mark.a
def test_the_cluster_api_is_the_local_one():
    """Every public name of Session and Sandbox is on RaySession and RaySandbox, but those
    named in docs/scaling.md as left out (fetch) or local by nature."""
    from sandbox_exec.ray import RaySession
    from sandbox_exec.sandbox import Sandbox, Session

    def public(cls):
        return {n for n in dir(cls) if not n.startswith("_")}

    local_only = {"fetch", "start", "watch_disk"}  # fetch: docs/scaling.md; start/watch_disk: the Sandbox's own
    assert public(Session) - public(RaySession) == local_only
    assert public(Sandbox) - public(RaySandbox) == {"owned_here", "pool_idle"}  # a local process's facts
    assert {"node_id", "lost"} <= public(RaySession)
    assert "lost" in sandbox_exec.STATUSES


@pytest.mark.c
def test_a_lost_node_frees_its_placements_without_any_call(nodes, root):
    """Nobody touches the lost session: the watcher finds its node dead, marks it lost and
    removes its placement group, which Ray would otherwise place again on the next node
    with room, holding a slot no session uses."""
    first = nodes.cluster.add_node(num_cpus=1, resources={"sandbox_slots": 1, "single": 1})
    nodes.cluster.wait_for_nodes()
    box = RaySandbox(
        sandbox_exec.Policy(timeout_s=60), root=str(root), session_resources={"single": 1}, placement_timeout_s=20
    )
    added = [first]
    try:
        s = box.session("only")
        assert s.node_id == first.node_id and s.run("1").status == "ok"
        group = s._pg.id.hex()
        nodes.cluster.remove_node(first, allow_graceful=False)
        deadline = time.monotonic() + LOST_BOUND_S
        while s._lost is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert s._lost is not None and "dead" in s._lost  # found by the watcher, not by a call
        assert placement_group_table()[group]["state"] == "REMOVED"
        second = nodes.cluster.add_node(num_cpus=1, resources={"sandbox_slots": 1, "single": 1})
        added.append(second)
        fresh = box.session("next")  # the new node's one slot is free for it
        assert fresh.node_id == second.node_id
        assert fresh.run("2").outputs[0]["data"]["text/plain"] == "2"
    finally:
        box.close()
        for n in added:
            if n in nodes.cluster.worker_nodes:
                nodes.cluster.remove_node(n)


@pytest.mark.c
def test_restart_right_after_a_host_dies_and_an_old_handle_after_a_new_session(nodes, root):
    import signal

    # watch_s: long, so that restart() itself meets the dead host (no watcher first).
    box = RaySandbox(sandbox_exec.Policy(timeout_s=60), root=str(root), watch_s=3600)
    try:
        s = box.session("nb")
        s.run("open('f', 'w').write('kept')")
        host_pid = next(n["host"]["pid"] for n in box.nodes() if n["node_id"] == s.node_id)
        os.kill(host_pid, signal.SIGKILL)
        while Path(f"/proc/{host_pid}").exists():
            time.sleep(0.05)
        s.restart()  # finds the host dead and places the session again, in one call
        assert s.lost is None
        assert s.run("open('f').read()").outputs[0]["data"]["text/plain"] == "'kept'"
        # Lost again; a new session of the name replaces it: the old handle is retired.
        host_pid = next(n["host"]["pid"] for n in box.nodes() if n["node_id"] == s.node_id)
        os.kill(host_pid, signal.SIGKILL)
        assert s.run("1").status == "lost"
        new = box.session("nb")
        assert new is not s and new.run("1").status == "ok"
        with pytest.raises(sandbox_exec.SessionClosedError):
            s.restart()
        with pytest.raises(sandbox_exec.SessionClosedError):
            s.run("1")
        assert [x.name for x in box.sessions()] == ["nb"]
    finally:
        box.close()


@pytest.mark.b
def test_bad_arguments_are_clear_errors(nodes):
    for kwargs, error in (
        ({"placement_timeout_s": float("inf")}, ValueError),
        ({"answer_s": 0}, ValueError),
        ({"watch_s": -1}, ValueError),
        ({"session_resources": {"CPU": float("nan")}}, ValueError),
        ({"session_resources": "CPU"}, TypeError),
        ({"slot_resource": ""}, ValueError),
        ({"max_cells_per_node": 0}, ValueError),
        ({"pool_size": -1}, ValueError),
        ({"warm": "yes"}, TypeError),
        ({"prelude": 123}, TypeError),
        ({"policy": {"timeout_s": 1}}, TypeError),
    ):
        with pytest.raises(error):
            RaySandbox(**kwargs)
    with RaySandbox() as box:
        for args, error in (
            ({"name": ""}, ValueError),
            ({"name": "x", "prelude": 1}, TypeError),
            ({"name": "x", "mode": "bash"}, ValueError),
        ):
            with pytest.raises(error):
                box.session(**args)


@pytest.mark.c
def test_calls_behind_a_long_cell_wait_for_it_and_a_hung_host_is_replaced(nodes, root):
    import signal

    # answer_s far below the cell: a call that runs in the interpreter waits behind the cell
    # (as locally), and the node is not taken for lost meanwhile.
    # The cell's own timeout (30 s) is past the policy's (2 s): the call waits all the same.
    box = RaySandbox(sandbox_exec.Policy(timeout_s=2), root=str(root), answer_s=2)
    try:
        busy, other = box.session("busy"), box.session("other")
        busy.run("x = 1")
        out = {}
        t = threading.Thread(
            target=lambda: out.setdefault("r", busy.run("import time\ntime.sleep(8)\n'slept'", timeout=30))
        )
        t.start()
        time.sleep(1)
        t0 = time.monotonic()
        names = {v["name"] for v in busy.variables()}
        t.join(30)
        assert "x" in names and time.monotonic() - t0 > 5  # it waited for the cell
        assert out["r"].status == "ok" and busy.lost is None
        assert other.run("1").status == "ok"
        # A host that stops answering (SIGSTOP) is taken as lost after answer_s; restart()
        # places the session again once Ray has ended the old host (its workdir lock).
        host_pid = next(n["host"]["pid"] for n in box.nodes() if n["node_id"] == busy.node_id)
        os.kill(host_pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + LOST_BOUND_S
            while busy._lost is None and time.monotonic() < deadline:
                time.sleep(0.1)
            assert busy._lost is not None and "did not answer" in busy._lost
            busy.restart()
            assert busy.run("1 + 1").outputs[0]["data"]["text/plain"] == "2"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(host_pid, signal.SIGCONT)
    finally:
        box.close()


RAY_GONE_FIRST = """
import gc, sys, threading, time, ray
import sandbox_exec
from sandbox_exec.ray import RaySandbox
ray.init(address="local", num_cpus=1, resources={"sandbox_slots": 2}, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
dropped = RaySandbox(root=sys.argv[1] + "/a")
del dropped
gc.collect()
time.sleep(0.5)
watchers = [t for t in threading.enumerate() if t.name == "sandbox_exec-ray-watch"]
box = RaySandbox(root=sys.argv[1] + "/b")
assert box.session("s").run("1").status == "ok"
s = box.session("s")
ray.shutdown()  # before box.close(): the hosts go with the driver's connection
refused = []
for call in (lambda: s.run("1"), lambda: s.variables(), lambda: box.session("t"), lambda: box.nodes()):
    try:
        call()
    except sandbox_exec.SandboxError as e:
        refused.append("not connected" in str(e))
s.interrupt()  # nothing to interrupt: no error
box.close()  # nothing to call, and Ray is not connected again
print(refused == [True] * 4, len(watchers), ray.is_initialized(), box.closed, flush=True)
"""

EXIT_WITHOUT_CLOSE = """
import sys
from sandbox_exec.ray import RaySandbox
# The first starts Ray (and shuts it down at its close); the second uses it. Neither is
# closed: the exit hook closes both, the one that started Ray last, before Ray's own hook.
owner = RaySandbox(root=sys.argv[1] + "/owner", address="local", slot_resource=None)
user = RaySandbox(root=sys.argv[1] + "/user", slot_resource=None)
for box in (user, owner):
    assert box.session("s").run("1").status == "ok"
    print(box.session("s").workdir, flush=True)
"""


@pytest.mark.b
def test_exit_without_close_ray_shutdown_first_and_a_dropped_box(tmp_path):
    from leftovers import mounts_under

    cp = subprocess.run(
        [sys.executable, "-c", EXIT_WITHOUT_CLOSE, str(tmp_path / "c")], capture_output=True, text=True, timeout=300
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert all(Path(w).is_dir() for w in cp.stdout.split()[-2:])
    assert mounts_under(tmp_path / "c") == []  # both closed: unmounted
    cp = subprocess.run(
        [sys.executable, "-c", RAY_GONE_FIRST, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert cp.returncode == 0, cp.stderr[-3000:]
    assert cp.stdout.split()[-4:] == ["True", "0", "False", "True"]
    # Ray ended that host without a close (and its reaper with it: Ray kills a worker's
    # children): the next Sandbox on the root unmounts what it left (docs/scaling.md).
    with sandbox_exec.Sandbox(root=tmp_path / "b"):
        pass
    assert mounts_under(tmp_path / "b") == []


@pytest.mark.c
def test_restart_and_session_racing_on_a_lost_name_and_a_name_held_elsewhere(nodes, root):
    import signal

    box = RaySandbox(sandbox_exec.Policy(timeout_s=60), root=str(root), watch_s=3600)
    other = RaySandbox(sandbox_exec.Policy(timeout_s=60), root=str(root))
    try:
        for round_ in range(3):
            s = box.session("race")
            assert s.run("1").status == "ok"
            host_pid = next(n["host"]["pid"] for n in box.nodes() if n["node_id"] == s.node_id)
            os.kill(host_pid, signal.SIGKILL)
            assert s.run("1").status == "lost"
            got: dict = {}

            def restart(s=s, got=got):
                try:
                    s.restart()
                    got["restart"] = s
                except sandbox_exec.SessionClosedError:
                    got["restart"] = "retired"

            def reopen(got=got):
                got["session"] = box.session("race")

            threads = [threading.Thread(target=restart), threading.Thread(target=reopen)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            # One live session of the name, whichever won; it runs.
            live = [x for x in box.sessions() if x.name == "race"]
            assert len(live) == 1, (round_, got)
            assert got["session"] is live[0]
            assert live[0].run("2").outputs[0]["data"]["text/plain"] == "2"
            if got["restart"] is not live[0]:
                assert s.closed
        groups = {x._pg.id.hex() for x in box.sessions() if x._pg is not None}
        # A name another live RaySandbox holds: a clear error at once, not after a retry.
        live[0].close()
        assert other.session("race").run("1").status == "ok"
        t0 = time.monotonic()
        with pytest.raises(sandbox_exec.WorkdirInUseError):
            box.session("race")
        assert time.monotonic() - t0 < 10
    finally:
        box.close()
        other.close()
    table = placement_group_table()
    assert all(table[g]["state"] == "REMOVED" for g in groups)
    assert all(v["state"] == "REMOVED" for v in table.values() if v["name"].startswith("sandbox_exec-"))
