#!/usr/bin/env python3
"""sandbox_exec.ray on a local Ray cluster: what Ray adds, next to local sessions in the same run.

One run starts a Ray cluster on this machine (a head without sandbox slots and up to three
worker nodes, each a raylet of its own with ``num_cpus=1`` and ``sandbox_slots``) and measures:

1. ``roundtrip``: the cell ``1+1`` with its execute_result back in the caller, through
   - ``exec``:        in-process compile + exec/eval (what a backend does today);
   - ``local``:       a warm session of a local ``sandbox_exec.Sandbox`` in this process;
   - ``ray_ping``:    a bare Ray actor method call that returns its argument (Ray's own floor
                      for one call to an actor on another raylet);
   - ``ray``:         a ``RaySandbox`` session (``run()`` without on_output: one actor call);
   - ``ray_stream``:  the same with ``on_output`` (a streaming generator);
   - ``jupyter``:     an ipykernel through jupyter_client (bench/roundtrip.py's client).
   Interleaved rounds, as in bench/roundtrip.py. Ratios: ray/local, ray/exec, ray/jupyter and
   ``ray - local`` (what Ray adds per cell).
2. ``start``: from nothing to a session that answered ``1+1``: ``local`` (``box.session`` in a
   warm Sandbox), ``ray`` (``RaySandbox.session``: a placement group, then the node's host, which
   already runs), ``ray_first`` (the first session on a node: the host actor starts as well),
   ``jupyter`` (a kernel start).
3. ``throughput``: cells/s of ``1+1`` from 8 caller threads over 8 sessions (each thread its own
   session, cells back to back) for ``--seconds``: the local Sandbox, then RaySandbox with 1, 2
   and 3 worker nodes. On a machine with fewer cores than nodes the nodes share the cores:
   the figure says what the machine allows, not what Ray scales to (docs/scaling.md).

Usage:

    .venv/bin/python bench/ray_cluster.py --json bench/results/ray-latest.json --plot
    .venv/bin/python bench/ray_cluster.py --quick          # a smoke run (~1 min)
    .venv/bin/python bench/ray_cluster.py --plot-from bench/results/ray-reference.json
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import roundtrip as rt  # noqa: E402  (its percentile/summary, Jupyter client and machine facts)

CELL = "1+1"
SLOTS = 16  # per worker node (the throughput section places 8 sessions on up to 3 nodes)


def run_exec() -> Any:
    import contextlib
    import io

    g: dict[str, Any] = {}

    def one() -> str:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            code = compile(CELL, "<cell>", "eval")
            value = eval(code, g)
        return repr(value)

    return one


def start_cluster(nodes: int, temp_dir: str) -> Any:
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "temp_dir": temp_dir})
    for _ in range(nodes):
        cluster.add_node(num_cpus=1, resources={"sandbox_slots": SLOTS})
    ray.init(address=cluster.address, logging_level=logging.ERROR, log_to_driver=False)
    cluster.wait_for_nodes()
    return cluster


def stop_cluster(cluster: Any) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


def interleaved(methods: dict[str, Any], n: int, rounds: int, warmup: int) -> dict[str, list[int]]:
    samples: dict[str, list[int]] = {name: [] for name in methods}
    for one in methods.values():
        for _ in range(warmup):
            one()
    per_round = max(1, n // rounds)
    for _ in range(rounds):
        for name, one in methods.items():
            k = per_round if name != "jupyter" else max(1, per_round // 4)
            for _ in range(k):
                t0 = time.perf_counter_ns()
                value = one()
                samples[name].append(time.perf_counter_ns() - t0)
                if value not in ("2", 2):
                    raise RuntimeError(f"{name}: the cell answered {value!r}")
    return samples


def bench_roundtrip(box: Any, rbox: Any, n: int, rounds: int, warmup: int, jupyter: bool) -> dict[str, Any]:
    import ray

    @ray.remote(num_cpus=0, resources={"sandbox_slots": 0.001})
    class Echo:
        def echo(self, x: Any) -> Any:
            return x

    echo = Echo.remote()
    ray.get(echo.echo.remote(0))
    local = box.session("rt")
    remote = rbox.session("rt")
    streamed: list[Any] = []

    def text(r: Any) -> str:
        return str(r.outputs[0]["data"]["text/plain"])

    methods: dict[str, Any] = {
        "exec": run_exec(),
        "local": lambda: text(local.run(CELL)),
        "ray_ping": lambda: "2" if ray.get(echo.echo.remote(2)) == 2 else "?",
        "ray": lambda: text(remote.run(CELL)),
        "ray_stream": lambda: text(remote.run(CELL, on_output=streamed.append)),
    }
    km = kc = None
    if jupyter:
        km, kc = rt.start_jupyter()
        methods["jupyter"] = lambda: rt.jupyter_execute(kc, CELL)
    try:
        samples = interleaved(methods, n, rounds, warmup)
    finally:
        if jupyter:
            rt.stop_jupyter(km, kc)
        ray.kill(echo)
    return {name: rt.summarize(s, "us") for name, s in samples.items()}


def process_memory_mb(pid: int) -> dict[str, float]:
    """RSS and USS (private pages) of a process, from /proc/PID/smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, _, rest = line.partition(":")
        if rest.strip().endswith("kB"):
            fields[name] = int(rest.split()[0])
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return {"rss_mb": round(fields.get("Rss", 0) / 1024, 1), "uss_mb": round(uss / 1024, 1)}


def host_memory(rbox: Any) -> dict[str, Any]:
    """What a node's host actor (a Ray worker process with a local Sandbox in it) takes."""
    hosts = [n["host"] for n in rbox.nodes() if n.get("host")]
    return {"host_actor": process_memory_mb(int(hosts[0]["pid"]))} if hosts else {}


def bench_start(box: Any, rbox_factory: Any, n: int, jupyter: bool) -> dict[str, Any]:
    out: dict[str, list[int]] = {"local": [], "ray": [], "ray_first": []}
    for i in range(n):
        t0 = time.perf_counter_ns()
        s = box.session(f"start-{i}")
        assert s.run(CELL).outputs[0]["data"]["text/plain"] == "2"
        out["local"].append(time.perf_counter_ns() - t0)
        s.close()
    # ray_first: a new RaySandbox each time, so its first session starts the node's host.
    for i in range(max(3, n // 4)):
        rbox = rbox_factory()
        try:
            t0 = time.perf_counter_ns()
            s = rbox.session(f"first-{i}")
            assert s.run(CELL).outputs[0]["data"]["text/plain"] == "2"
            out["ray_first"].append(time.perf_counter_ns() - t0)
            for j in range(n - len(out["ray"])):
                t0 = time.perf_counter_ns()
                s2 = rbox.session(f"start-{i}-{j}")
                assert s2.run(CELL).outputs[0]["data"]["text/plain"] == "2"
                elapsed = time.perf_counter_ns() - t0
                if s2.node_id == s.node_id:  # the host was already there
                    out["ray"].append(elapsed)
                s2.close()
        finally:
            rbox.close()
        if len(out["ray"]) >= n and len(out["ray_first"]) >= 3:
            break
    result = {name: rt.summarize(s, "ms") for name, s in out.items() if s}
    if jupyter:
        samples = []
        for _ in range(max(2, n // 5)):
            t0 = time.perf_counter_ns()
            km, kc = rt.start_jupyter()
            assert rt.jupyter_execute(kc, CELL) == "2"
            samples.append(time.perf_counter_ns() - t0)
            rt.stop_jupyter(km, kc)
        result["jupyter"] = rt.summarize(samples, "ms")
    return result


def cells_per_second(make_session: Any, sessions: int, seconds: float) -> dict[str, Any]:
    made = [make_session(f"tp-{i}") for i in range(sessions)]
    for s in made:
        s.run(CELL)
    counts = [0] * sessions
    stop = time.monotonic() + seconds
    errors: list[str] = []

    def loop(i: int) -> None:
        s = made[i]
        while time.monotonic() < stop:
            r = s.run(CELL)
            if r.status != "ok":
                errors.append(f"{r.status}: {r.reason}")
                return
            counts[i] += 1

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(sessions)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - t0
    nodes = sorted({str(getattr(s, "node_id", "local"))[:12] for s in made})
    for s in made:
        s.close()
    if errors:
        raise RuntimeError(f"throughput: {errors[0]}")
    return {
        "cells": sum(counts),
        "seconds": round(elapsed, 3),
        "cells_per_s": round(sum(counts) / elapsed, 1),
        "nodes_used": len(nodes),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small N (a smoke run)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--plot", action="store_true", help="plots -> docs/img/ray/")
    p.add_argument("--plot-from", metavar="PATH", help="only plot a stored run")
    p.add_argument("--no-jupyter", action="store_true", help="leave the Jupyter kernel out")
    p.add_argument("--seconds", type=float, help="throughput: seconds per configuration (default 10; --quick 2)")
    args = p.parse_args(argv)
    if args.plot_from:
        plot(json.loads(Path(args.plot_from).read_text()))
        return 0
    import sandbox_exec
    from sandbox_exec.ray import RaySandbox

    n = 60 if args.quick else 600
    rounds = 2 if args.quick else 6
    warmup = 20 if args.quick else 100
    n_start = 4 if args.quick else 20
    seconds = args.seconds or (2.0 if args.quick else 10.0)
    jupyter = not args.no_jupyter
    sessions = 8
    results: dict[str, Any] = {"machine": rt.machine_info(), "cell": CELL, "slots_per_node": SLOTS}
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    root = Path(tempfile.mkdtemp(prefix="sandbox_exec-raybench-"))
    # 1 GiB per session: Ray reserves it per session on a node (every node here reports the
    # whole machine's memory, ~22 GiB: 4 GiB, the default, would fit 5 sessions per node).
    policy = sandbox_exec.Policy(timeout_s=60, memory_bytes=1 << 30)
    try:
        box = sandbox_exec.Sandbox(policy, root=root / "local")
        try:
            cluster = start_cluster(1, temp_dir)
            try:
                rbox = RaySandbox(policy, root=str(root / "ray"))
                try:
                    print("== roundtrip (1+1)", file=sys.stderr)
                    results["roundtrip"] = bench_roundtrip(box, rbox, n, rounds, warmup, jupyter)
                    results["memory"] = host_memory(rbox)
                finally:
                    rbox.close()
                print("== start", file=sys.stderr)
                results["start"] = bench_start(
                    box, lambda: RaySandbox(policy, root=str(root / "ray")), n_start, jupyter
                )
            finally:
                stop_cluster(cluster)
            print("== throughput", file=sys.stderr)
            tp: dict[str, Any] = {"sessions": sessions, "local": cells_per_second(box.session, sessions, seconds)}
            for nodes in (1, 2, 3):
                cluster = start_cluster(nodes, temp_dir)
                try:
                    rbox = RaySandbox(policy, root=str(root / f"ray{nodes}"), placement_timeout_s=30)
                    try:
                        # Spread the sessions: one bundle per node first (placement groups land
                        # on the least loaded node), then the rest.
                        tp[f"ray_{nodes}"] = cells_per_second(rbox.session, sessions, seconds)
                    finally:
                        rbox.close()
                finally:
                    stop_cluster(cluster)
            results["throughput"] = tp
        finally:
            box.close()
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    results["ratios"] = ratios(results)
    report(results)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot(results)
    return 0


def ratios(results: dict[str, Any]) -> dict[str, Any]:
    r = results["roundtrip"]
    s = results["start"]
    tp = results["throughput"]
    out: dict[str, Any] = {
        "roundtrip_ray_over_local": round(r["ray"]["p50"] / r["local"]["p50"], 2),
        "roundtrip_ray_over_exec": round(r["ray"]["p50"] / r["exec"]["p50"], 1),
        "roundtrip_ray_stream_over_local": round(r["ray_stream"]["p50"] / r["local"]["p50"], 2),
        "roundtrip_ray_added_us": round(r["ray"]["p50"] - r["local"]["p50"], 1),
        "roundtrip_ray_over_ray_ping": round(r["ray"]["p50"] / r["ray_ping"]["p50"], 2),
        "start_ray_over_local": round(s["ray"]["p50"] / s["local"]["p50"], 2),
        "start_ray_added_ms": round(s["ray"]["p50"] - s["local"]["p50"], 1),
        "start_ray_first_over_local": round(s["ray_first"]["p50"] / s["local"]["p50"], 1),
        "throughput_over_local": {
            k: round(v["cells_per_s"] / tp["local"]["cells_per_s"], 2) for k, v in tp.items() if k.startswith("ray_")
        },
    }
    if "jupyter" in r:
        out["roundtrip_ray_over_jupyter"] = round(r["ray"]["p50"] / r["jupyter"]["p50"], 2)
    if "jupyter" in s:
        out["start_ray_over_jupyter"] = round(s["ray"]["p50"] / s["jupyter"]["p50"], 2)
    return out


def report(results: dict[str, Any]) -> None:
    print("\nround trip of 1+1 (µs)        p50        p90        p99")
    for name, v in results["roundtrip"].items():
        print(f"  {name:<22}{v['p50']:>10.1f} {v['p90']:>10.1f} {v['p99']:>10.1f}")
    print("\nsession start to 1+1 (ms)     p50        p90")
    for name, v in results["start"].items():
        print(f"  {name:<22}{v['p50']:>10.1f} {v['p90']:>10.1f}")
    tp = results["throughput"]
    print(f"\ncells/s, {tp['sessions']} sessions from as many threads")
    for name, v in tp.items():
        if isinstance(v, dict):
            print(f"  {name:<22}{v['cells_per_s']:>10.1f}  (nodes used: {v['nodes_used']})")
    for name, v in results.get("memory", {}).items():
        print(f"\n{name}: RSS {v['rss_mb']} MB, USS {v['uss_mb']} MB")
    print("\nratios")
    for k, v in results["ratios"].items():
        print(f"  {k:<36}{v}")


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = BENCH.parent / "docs" / "img" / "ray"
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, (section, unit, title, color) in zip(
        axes,
        (
            ("roundtrip", "µs", "round trip of 1+1", "tab:blue"),
            ("start", "ms", "new session answering 1+1", "tab:orange"),
        ),
    ):
        figures = results[section]
        ax.bar(list(figures), [v["p50"] for v in figures.values()], color=color)
        ax.set_yscale("log")
        ax.set_ylabel(f"{unit} (p50, log scale)")
        ax.set_title(title)
        ax.tick_params(axis="x", rotation=30)
    tp = results["throughput"]
    keys = [k for k in tp if isinstance(tp[k], dict)]
    axes[2].bar(keys, [tp[k]["cells_per_s"] for k in keys], color="tab:green")
    axes[2].set_ylabel("cells/s")
    axes[2].set_title(f"1+1 from {tp['sessions']} threads, {tp['sessions']} sessions")
    machine = results["machine"]
    fig.suptitle(f"sandbox_exec.ray on a local Ray cluster — {machine.get('cpus', '?')} CPUs, {machine.get('git', '')}")
    fig.tight_layout()
    fig.savefig(out / "ray_cluster.png", dpi=110)
    print(f"plot: {out / 'ray_cluster.png'}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
