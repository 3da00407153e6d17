#!/usr/bin/env python3
"""Warm starts (issue 9): the figures of the warm-start table, each beside its references.

One run measures, side by side, with the data-science stack preloaded by the session prelude
``P = import numpy as np, pandas as pd, matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt``:

1. ``start``: a new session that answered its first cell ``1+1``: ``box.session(name,
   prelude=P)`` + ``run("1+1")`` in a ``Sandbox(warm=True)`` (forked from the zygote of P; the
   zygote's own first start is excluded, reported apart), p50/p90 over >= 20 sessions; against
   a cold session (``Sandbox(warm=False)``: a fresh interpreter runs P as its first cell), a
   Jupyter kernel (``start_kernel`` + ready + P + ``1+1``), a fresh ``python -c "P; print(1+1)"``
   subprocess and the floor: ``fork()`` of an interpreter that has P loaded, the child answering
   ``1+1`` through a pipe, the parent reading it and reaping the child. Interleaved rounds.
   Diagnostics: where a warm start's time goes (``box.session()`` vs the first ``run``, and
   inside ``box.session()`` the two steps the harness times by wrapping two private methods of
   Session: the workdir's disk image and the fork + containment), and the same warm start with
   ``Policy(disk_bytes=None)`` and with every isolation layer off. Target: warm p50 <= 15 ms.
2. ``figure``: the cell ``fig, ax = plt.subplots(); ax.plot(range(1000)); plt.show()`` (image/png
   through the sandbox's inline backend; prelude P without ``matplotlib.use("Agg")``) as the
   first cell of a new warm session vs the same cell in a long-lived session. Target: ratio <= 1.2.
   Diagnostics: the worker's minor page faults and on-CPU time in each timed cell (/proc), where
   the first figure's extra time goes and a figure that other load on the host barely moves.
3. ``memory``: unique memory (USS = Private_Clean + Private_Dirty of /proc/<pid>/smaps_rollup)
   of 50 idle warm sessions, each the sum over its keeper, sandbox init and worker; median and
   total; the zygote's RSS and USS; against a Jupyter kernel with P loaded (its process) and
   cold sessions with P. Target: median <= 10 MB (10^6 bytes) per session.
4. ``scale``: 220 warm sessions with P: 20 kept busy (a thread each, re-running a cell that
   spins ~3 s), then ``1+1`` on each of the 200 idle ones in turn for ~10 s; every latency and
   error. Target: every cell answers, no error (p50/p99 reported).
5. ``throughput``: cells/s of this one backend process with 1, 2, 4 sessions: N threads each
   looping ``session.run("1+1")`` on its own session for ~5 s, vs in-process ``exec()`` of
   ``1+1`` on N threads. Target: cells/s grows with the sessions up to the cores (the rate with
   as many sessions as CPUs >= 1.2x the rate with one).
6. ``roundtrip``: ``1+1`` round trip through a warm (forked) session and a cold one, with
   in-process exec() and a pipe ping-pong (bench/roundtrip.py's classes), interleaved rounds.
   Target: warm p50 <= 3 x (exec p50 + ping-pong p50).

Usage:

    .venv/bin/python bench/warm_start.py                         # full run (~4-5 min on 2 CPUs)
    .venv/bin/python bench/warm_start.py --quick                 # CI smoke (< 60 s)
    .venv/bin/python bench/warm_start.py --json bench/results/warm-start-latest.json --plot
    .venv/bin/python bench/warm_start.py --only start,memory     # some sections
    .venv/bin/python bench/warm_start.py --plot-from bench/results/warm-start-reference.json

``--plot [DIR]`` writes DIR/start.png, memory.png and throughput.png (default docs/img/warm).
Exit status 1 if a benchmark failed or a cell gave a wrong answer or an error, else 0 (a target
not met is reported, not an error).
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import datetime as _dt
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # no bench/__pycache__ from this import
import roundtrip as rt  # noqa: E402 - stats, retrying imports, Jupyter helpers, round-trip classes

REPO = rt.REPO
now_ns = time.perf_counter_ns

P = 'import numpy as np, pandas as pd, matplotlib; matplotlib.use("Agg"); import matplotlib.pyplot as plt'
# For the figure row: the sandbox's inline backend (MPLBACKEND) renders, so no use("Agg").
P_FIGURE = "import numpy as np, pandas as pd, matplotlib; import matplotlib.pyplot as plt"
FIGURE_CELL = "fig, ax = plt.subplots(); ax.plot(range(1000)); plt.show()"
CELL = "1+1"
EXPECTED = "2"
BUSY_CELL = "import time as _time\n_t0 = _time.perf_counter()\nwhile _time.perf_counter() - _t0 < {s}:\n    pass\n"
MB = 1_000_000

TARGET_START_P50_MS = 15.0
TARGET_FIGURE_RATIO = 1.2
TARGET_USS_MB = 10.0
TARGET_THROUGHPUT_GROWTH = 1.2  # cells/s with as many sessions as CPUs vs one session
TARGET_ROUNDTRIP_FACTOR = 3.0

SECTIONS = ("roundtrip", "start", "figure", "memory", "throughput", "scale")

# The fork floor: an interpreter with P loaded forks; the child answers 1+1 through a pipe; the
# parent reads the answer and reaps the child. Serves batches: a count on stdin, the ns on stdout.
FORK_HELPER = f"""
import json, os, sys, time
{P}
print("ready", flush=True)
for line in sys.stdin:
    out = []
    for _ in range(int(line)):
        r, w = os.pipe()
        t0 = time.perf_counter_ns()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            os.write(w, repr(eval("1+1")).encode())
            os._exit(0)
        os.close(w)
        answer = os.read(r, 64)
        os.waitpid(pid, 0)
        t1 = time.perf_counter_ns()
        os.close(r)
        out.append(t1 - t0 if answer == b"2" else -1)
    print(json.dumps(out), flush=True)
"""

# The throughput diagnostic: one backend process per session (no GIL shared between them).
PROCESS_HELPER = """
import sys, time
import sandbox_exec
with sandbox_exec.Sandbox() as box, box.session("tp") as s:
    for _ in range(100):
        s.run("1+1")
    print("ready", flush=True)
    window = float(sys.stdin.readline())
    n = fails = 0
    t0 = time.perf_counter()
    end = t0 + window
    while time.perf_counter() < end:
        r = s.run("1+1")
        n += 1
        fails += not (r.status == "ok" and r.outputs and r.outputs[0]["data"].get("text/plain") == "2")
    print(n, time.perf_counter() - t0, fails, flush=True)
"""

START_LABELS = {
    "fork": "fork() of a P-loaded interpreter (floor)",
    "pool": "sandbox_exec warm from the pool (pool_size=2): session(P) + 1+1",
    "warm": "sandbox_exec warm: session(P) + 1+1",
    "warm_nodisk": "  diagnostic: warm, Policy(disk_bytes=None)",
    "warm_off": "  diagnostic: warm, isolation layers OFF",
    "python_c": "python -c 'P; print(1+1)' subprocess",
    "cold": "sandbox_exec cold (warm=False): session(P) + 1+1",
    "jupyter": "Jupyter: start_kernel + ready + P + 1+1",
}


START_SHORT = {
    "fork": "fork() of a\nP-loaded\ninterpreter\n(floor)",
    "pool": "sandbox_exec\nwarm, from\nthe pool",
    "warm": "sandbox_exec\nwarm",
    "warm_nodisk": "warm,\ndisk_bytes=None\n(diagnostic)",
    "warm_off": "warm,\nlayers OFF\n(diagnostic)",
    "python_c": "python -c P\nsubprocess",
    "cold": "sandbox_exec\ncold",
    "jupyter": "Jupyter\nkernel + P",
}


# ----------------------------------------------------------------------------- helpers
def ms(ns: float) -> float:
    return round(ns / 1e6, 3)


def summary_ms(samples_ns: list[int]) -> dict[str, Any]:
    return rt.summarize(samples_ns, "ms")


def proc_memory(pid: int) -> dict[str, int]:
    """rss, pss and uss (Private_Clean + Private_Dirty) of a process, in bytes."""
    fields: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
                fields[parts[0][:-1]] = int(parts[1]) * 1024
    return {
        "rss": fields.get("Rss", 0),
        "pss": fields.get("Pss", 0),
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def parent_pid(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[1])


def session_pids(s: Any) -> dict[str, int]:
    """A session's processes: the keeper (launcher), the sandbox init, the worker."""
    worker = s.worker_pid
    runner = s._runner
    return {"keeper": runner.launcher_pid, "init": parent_pid(worker), "worker": worker}


def session_memory(s: Any) -> dict[str, Any]:
    pids = session_pids(s)
    per = {role: proc_memory(pid) for role, pid in pids.items()}
    return {
        "pids": pids,
        "uss": sum(m["uss"] for m in per.values()),
        "rss": sum(m["rss"] for m in per.values()),
        "pss": sum(m["pss"] for m in per.values()),
        "uss_by_process": {role: m["uss"] for role, m in per.items()},
    }


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def answered(r: Any) -> bool:
    out = r.outputs
    return (
        r.status == "ok"
        and len(out) == 1
        and out[0]["output_type"] == "execute_result"
        and out[0]["data"].get("text/plain") == EXPECTED
    )


def one_png(r: Any) -> int:
    pngs = [o["data"]["image/png"] for o in r.outputs if "image/png" in o.get("data", {})]
    return len(pngs[0]) if r.status == "ok" and len(pngs) == 1 else -1


def sandbox_exec_module() -> Any:
    return rt.import_with_retry("sandbox_exec")


def new_box(warm: bool, pool_size: int = 0) -> Any:
    se = sandbox_exec_module()
    return rt.retry(
        f"sandbox_exec.Sandbox(warm={warm}, pool_size={pool_size})",
        lambda: se.Sandbox(warm=warm, pool_size=pool_size),
    )


def _pool_start(box: Any) -> dict[str, Any]:
    """A new notebook's session when the pool has one ready: the pool is refilled between
    samples (untimed), as a backend's pool is between notebooks opened a moment apart."""
    deadline = time.monotonic() + 60
    while box.pool_idle() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    return _sandbox_start(box, P, "warm")


def zygote_pid(box: Any) -> int | None:
    live = box._table.zygotes.live() if box._table.zygotes is not None else []
    return live[0].pid if live else None


def jupyter_cell(kc: Any, code: str, timeout: float = 60.0) -> tuple[str, str | None]:
    """execute; the iopub execute_result until status idle; the shell reply's status."""
    msg_id = kc.execute(code)
    value = None
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "execute_result":
            value = msg["content"]["data"].get("text/plain")
        elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]["status"], value


def jupyter_kernel_pid(km: Any) -> int:
    prov = getattr(km, "provisioner", None)
    pid = getattr(prov, "pid", None) if prov is not None else None
    if pid is None:
        pid = km.kernel.pid
    return int(pid)


class _Names:
    def __init__(self) -> None:
        self.i = 0

    def __call__(self, prefix: str) -> str:
        self.i += 1
        return f"{prefix}-{self.i}"


new_name = _Names()


@contextlib.contextmanager
def phase_timers() -> Iterator[dict[str, list[int]]]:
    """Diagnostic only: wraps Session._prepare_disk (the workdir's disk image) and
    Session._start_warm (zygote fork + the containment steps, or the decision to start cold)
    with timers. Yields {phase: [ns of the last call]}; restores the methods on exit."""
    se = sandbox_exec_module()
    cls = se.Session
    last: dict[str, list[int]] = {}
    saved = {}
    for attr, phase in (("_prepare_disk", "disk_image"), ("_start_warm", "fork_and_contain")):
        orig = getattr(cls, attr, None)
        if orig is None:
            continue
        saved[attr] = orig

        def wrapped(self: Any, *a: Any, _orig: Callable[..., Any] = orig, _phase: str = phase, **k: Any) -> Any:
            t0 = now_ns()
            try:
                return _orig(self, *a, **k)
            finally:
                last[_phase] = [now_ns() - t0]

        setattr(cls, attr, wrapped)
    try:
        yield last
    finally:
        for attr, orig in saved.items():
            setattr(cls, attr, orig)


# ------------------------------------------------------------------------- 1. roundtrip
class SandboxPrelude(rt.SandboxSession):
    """A session with prelude P in a Sandbox(warm=...): forked from the zygote, or cold."""

    def __init__(self, name: str, warm: bool) -> None:
        super().__init__(name)
        self.warm = warm

    def setup(self) -> None:
        se = sandbox_exec_module()

        def start() -> None:
            box = se.Sandbox(warm=self.warm)
            try:
                self.session = box.session(f"rt-{self.name}", prelude=P)
                self.enforcement = dict(self.session.enforcement)
                if not answered(self.session.run(CELL)):
                    raise RuntimeError("1+1 did not answer 2")
                want = "warm" if self.warm else "cold"
                if not self.enforcement.get("start", "").startswith(want):
                    raise RuntimeError(f"expected a {want} start, got {self.enforcement.get('start')!r}")
            except BaseException:
                box.close()
                raise
            self.box = box

        rt.retry("sandbox_exec session start", start)


def bench_roundtrip(cfg: dict[str, Any]) -> dict[str, Any]:
    # the pipe first: it forks, best before the harness has threads
    # The floor as roundtrip.py takes it: the C ping-pong, the cheaper of unpinned and both
    # ends on one CPU (unpinned, the echo often wakes on the other CPU: a cross-CPU wake-up,
    # not the floor).
    exe = rt.compile_pingpong()
    cpu = sorted(os.sched_getaffinity(0))[0]

    def pingpong(name: str, pinned: tuple[int, int] | None) -> Any:
        return rt.CPingPong(exe, name, pinned) if exe is not None else rt.PipePingPong(name, pinned)

    objs = [
        pingpong("pipe", None),
        pingpong("pipe_same", (cpu, cpu)),
        rt.InProcessExec(),
        SandboxPrelude("warm", True),
        SandboxPrelude("cold", False),
    ]
    n = cfg["rt_n"]
    m = rt.measure_interleaved(
        objs, {o.name: n for o in objs}, {o.name: cfg["rt_warmup"] for o in objs}, cfg["rt_rounds"], "roundtrip"
    )
    labels = {
        "pipe": "pipe ping-pong in C (floor)",
        "pipe_same": "pipe ping-pong in C, both ends on one CPU",
        "exec": "in-process exec()",
        "warm": "sandbox_exec warm (forked) session.run",
        "cold": "sandbox_exec cold session.run",
    }
    rows = rt._interleaved_results(m, labels, False)
    errors = rows.pop("_errors", {})
    out: dict[str, Any] = {"rows": rows, "errors": errors}
    if all(k in rows for k in ("warm", "exec", "pipe")):
        floor = min(rows[k]["p50"] for k in ("pipe", "pipe_same") if k in rows)
        out["floor_us"] = floor
        budget = TARGET_ROUNDTRIP_FACTOR * (rows["exec"]["p50"] + floor)
        out["target"] = {
            "text": f"warm p50 <= {TARGET_ROUNDTRIP_FACTOR:g} x (exec p50 + ping-pong p50)",
            "limit_us": round(budget, 2),
            "measured_us": rows["warm"]["p50"],
            "met": rows["warm"]["p50"] <= budget,
        }
    return out


# ----------------------------------------------------------------------------- 2. start
def _sandbox_start(box: Any, prelude: str, want: str, policy: Any = None) -> dict[str, Any]:
    t0 = now_ns()
    s = box.session(new_name("start"), prelude=prelude, policy=policy)
    t1 = now_ns()
    try:
        r = s.run(CELL)
        t2 = now_ns()
        note = s.enforcement.get("start", "")
    finally:
        s.close(remove_workdir=True)
    t3 = now_ns()
    return {
        "total": t2 - t0,
        "session": t1 - t0,
        "first_run": t2 - t1,
        "close": t3 - t2,
        "ok": answered(r) and note.startswith(want),
        "note": note,
    }


def _python_c() -> tuple[int, bool]:
    t0 = now_ns()
    p = subprocess.run([sys.executable, "-c", P + "; print(1+1)"], capture_output=True, text=True, timeout=120)
    t1 = now_ns()
    return t1 - t0, p.returncode == 0 and p.stdout.strip() == EXPECTED


def _jupyter_start() -> tuple[int, int, bool]:
    t0 = now_ns()
    km, kc = rt.start_jupyter()
    try:
        status_p, _ = jupyter_cell(kc, P)
        status, value = jupyter_cell(kc, CELL)
        t1 = now_ns()
    finally:
        rt.stop_jupyter(km, kc)
    t2 = now_ns()
    return t1 - t0, t2 - t1, status_p == "ok" and status == "ok" and value == EXPECTED


class ForkFloor:
    def __init__(self) -> None:
        t0 = now_ns()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FORK_HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            raise RuntimeError("the fork helper did not start")
        self.start_ns = now_ns() - t0

    def batch(self, k: int) -> list[int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(f"{k}\n")
        self.proc.stdin.flush()
        return [int(x) for x in json.loads(self.proc.stdout.readline())]

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(10)


def bench_start(cfg: dict[str, Any]) -> dict[str, Any]:
    se = sandbox_exec_module()
    rt._jupyter_client()  # imported before any clock runs
    policies = {
        "warm_nodisk": se.Policy(disk_bytes=None),
        "warm_off": se.Policy(**rt.POLICY_OFF_ARGS),
    }
    samples: dict[str, list[int]] = {k: [] for k in START_LABELS}
    failures: dict[str, int] = {k: 0 for k in START_LABELS}
    phases: dict[str, list[int]] = {
        "session": [],
        "first_run": [],
        "close": [],
        "disk_image": [],
        "fork_and_contain": [],
    }
    notes: dict[str, str] = {}
    errors: dict[str, str] = {}
    out: dict[str, Any] = {}
    with (
        new_box(True) as warm_box,
        new_box(False) as cold_box,
        new_box(True, pool_size=2) as pool_box,
        phase_timers() as last_phase,
    ):
        _sandbox_start(pool_box, P, "warm")  # the shape is now pooled; its zygote started
        # the zygote's own first start (excluded from the warm samples, reported apart)
        first = _sandbox_start(warm_box, P, "warm")
        zpid = zygote_pid(warm_box)
        out["zygote_first_start"] = {
            "total_ms": ms(first["total"]),
            "session_ms": ms(first["session"]),
            "first_run_ms": ms(first["first_run"]),
            "ok": first["ok"],
            "zygote_pid": zpid,
            "note": first["note"],
        }
        failures["warm"] += not first["ok"]
        for name, pol in policies.items():  # their first start may need a zygote of their own
            w = _sandbox_start(warm_box, P, "warm", pol)
            notes[name] = w["note"]
        # untimed warm-ups of the other methods (font caches, page cache, imports)
        _sandbox_start(warm_box, P, "warm")
        fork = ForkFloor()
        fork.batch(5)
        out["fork_helper_start_ms"] = ms(fork.start_ns)
        if cfg["start_warmup"]:
            _python_c()
        try:
            for rnd in range(cfg["start_rounds"]):
                for _ in range(cfg["start_warm_per_round"]):
                    last_phase.clear()
                    w = _sandbox_start(warm_box, P, "warm")
                    samples["warm"].append(w["total"])
                    failures["warm"] += not w["ok"]
                    notes.setdefault("warm", w["note"])
                    for k in ("session", "first_run", "close"):
                        phases[k].append(w[k])
                    for k, v in last_phase.items():
                        phases[k].extend(v)
                for _ in range(cfg["start_warm_per_round"]):
                    pooled = _pool_start(pool_box)
                    samples["pool"].append(pooled["total"])
                    failures["pool"] += not (pooled["ok"] and "served from the pool" in pooled["note"])
                    notes.setdefault("pool", pooled["note"])
                for name, pol in policies.items():
                    for _ in range(cfg["start_diag_per_round"]):
                        w = _sandbox_start(warm_box, P, "warm", pol)
                        samples[name].append(w["total"])
                        failures[name] += not w["ok"]
                for _ in range(cfg["start_cold_per_round"]):
                    c = _sandbox_start(cold_box, P, "cold")
                    samples["cold"].append(c["total"])
                    failures["cold"] += not c["ok"]
                    notes.setdefault("cold", c["note"])
                ns, ok = _python_c()
                samples["python_c"].append(ns)
                failures["python_c"] += not ok
                if rnd < cfg["start_jupyter"]:
                    try:
                        ns, _, ok = _jupyter_start()
                        samples["jupyter"].append(ns)
                        failures["jupyter"] += not ok
                    except Exception as exc:
                        errors["start.jupyter"] = f"{type(exc).__name__}: {exc}"
                got = fork.batch(cfg["start_fork_per_round"])
                samples["fork"].extend(x for x in got if x >= 0)
                failures["fork"] += sum(x < 0 for x in got)
                print(f"  round {rnd + 1}/{cfg['start_rounds']} done", flush=True)
        finally:
            fork.close()
    rows = {}
    for k, v in samples.items():
        if v:
            rows[k] = {**summary_ms(v), "failures": failures[k], "label": START_LABELS[k]}
    out["rows"] = rows
    out["phases_ms"] = {k: summary_ms(v) for k, v in phases.items() if v}
    out["notes"] = notes
    out["errors"] = errors
    if "warm" in rows:
        w = rows["warm"]
        out["ratios"] = {
            f"{k}/warm": round(rows[k]["p50"] / w["p50"], 3)
            for k in ("cold", "jupyter", "python_c", "fork")
            if k in rows
        }
        out["target"] = {
            "text": f"warm p50 <= {TARGET_START_P50_MS:g} ms (a fork on demand, no pool)",
            "limit_ms": TARGET_START_P50_MS,
            "measured_ms": w["p50"],
            "met": w["p50"] <= TARGET_START_P50_MS,
        }
    if "pool" in rows:
        out["target_pool"] = {
            "text": f"from the pool p50 <= {TARGET_START_P50_MS:g} ms",
            "limit_ms": TARGET_START_P50_MS,
            "measured_ms": rows["pool"]["p50"],
            "met": rows["pool"]["p50"] <= TARGET_START_P50_MS,
        }
    return out


# ---------------------------------------------------------------------------- 3. figure
def worker_counters(pid: int | None) -> tuple[int, int] | None:
    """(minor page faults, ns on a CPU) of a session's worker so far, or None where /proc
    does not show them (another user's process, or gone). Diagnostic: where a first
    figure's extra time goes, and the on-CPU time, which other load on the host barely moves."""
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            minflt = int(f.read().rsplit(")", 1)[1].split()[7])
        with open(f"/proc/{pid}/schedstat") as f:
            cpu_ns = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return minflt, cpu_ns


def _counted_run(session: Any, code: str, into: dict[str, list[int]]) -> Any:
    """session.run(code), adding the worker's faults and on-CPU ns during it to `into`."""
    before = worker_counters(session.worker_pid)
    r = session.run(code)
    after = worker_counters(session.worker_pid)
    if before and after:
        into["faults"].append(after[0] - before[0])
        into["cpu_ns"].append(after[1] - before[1])
    return r


def _counters_summary(c: dict[str, list[int]]) -> dict[str, Any]:
    if not c["faults"]:
        return {"n": 0}
    return {
        "n": len(c["faults"]),
        "minor_faults_p50": statistics.median(c["faults"]),
        "cpu_ms_p50": round(statistics.median(c["cpu_ns"]) / 1e6, 2),
    }


def bench_figure(cfg: dict[str, Any]) -> dict[str, Any]:
    new_ns: list[int] = []
    new_start_ns: list[int] = []
    long_ns: list[int] = []
    counters: dict[str, dict[str, list[int]]] = {k: {"faults": [], "cpu_ns": []} for k in ("new", "long")}
    failures = {"new": 0, "long": 0}
    png = 0
    with new_box(True) as box, box.session("figure-long", prelude=P_FIGURE) as long_s:
        note = long_s.enforcement.get("start", "")
        long_warmup_ms = []
        for _ in range(cfg["fig_warmup"]):
            t0 = now_ns()
            long_s.run(FIGURE_CELL)
            long_warmup_ms.append(ms(now_ns() - t0))
        # warm-up of the new-session path; and what the first figure cell imports (diagnostic)
        with box.session(new_name("figure-new"), prelude=P_FIGURE) as s:
            s.run("import sys as _sys\n_m0 = set(_sys.modules)")
            s.run(FIGURE_CELL)
            r = s.run("_new = set(_sys.modules) - _m0\nprint(len(_new), *sorted({m.split('.')[0] for m in _new}))")
            imported = r.stdout.split()
        per_new = max(1, cfg["fig_long"] // cfg["fig_new"])
        for _ in range(cfg["fig_new"]):
            t0 = now_ns()
            with box.session(new_name("figure-new"), prelude=P_FIGURE) as s:
                t1 = now_ns()
                r = _counted_run(s, FIGURE_CELL, counters["new"])
                t2 = now_ns()
                ok = one_png(r) > 0 and s.enforcement.get("start", "").startswith("warm")
            new_start_ns.append(t1 - t0)
            new_ns.append(t2 - t1)
            failures["new"] += not ok
            for _ in range(per_new):
                t0 = now_ns()
                r = _counted_run(long_s, FIGURE_CELL, counters["long"])
                long_ns.append(now_ns() - t0)
                png = one_png(r)
                failures["long"] += png <= 0
    rows = {
        "new": {**summary_ms(new_ns), "failures": failures["new"], "label": "first figure cell of a new warm session"},
        "long": {**summary_ms(long_ns), "failures": failures["long"], "label": "the same cell, long-lived session"},
    }
    ratio = round(rows["new"]["p50"] / rows["long"]["p50"], 3)
    return {
        "cell": FIGURE_CELL,
        "prelude": P_FIGURE,
        "rows": rows,
        "new_session_start_ms": summary_ms(new_start_ns),
        "long_lived_warmup_cells_ms": long_warmup_ms,
        "first_cell_imports": {"modules": int(imported[0]) if imported else None, "packages": imported[1:]},
        "png_base64_chars": png,
        "note": note,
        "ratio_new_long_p50": ratio,
        # the worker's own side of each cell (the timed run includes them): page faults, on-CPU time
        "worker": {k: _counters_summary(v) for k, v in counters.items()},
        "target": {
            "text": f"p50 new / p50 long-lived <= {TARGET_FIGURE_RATIO:g}",
            "limit": TARGET_FIGURE_RATIO,
            "measured": ratio,
            "met": ratio <= TARGET_FIGURE_RATIO,
        },
    }


# ---------------------------------------------------------------------------- 4. memory
def _idle_sessions(box: Any, n: int, prefix: str, want: str) -> tuple[list[Any], int]:
    sessions = []
    failures = 0
    for _ in range(n):
        s = box.session(new_name(prefix), prelude=P)
        sessions.append(s)
        failures += not (answered(s.run(CELL)) and s.enforcement.get("start", "").startswith(want))
    return sessions, failures


def bench_memory(cfg: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"unit": "MB (10^6 bytes)"}
    errors: dict[str, str] = {}

    def mb(x: float) -> float:
        return round(x / MB, 2)

    def describe(per: list[dict[str, Any]]) -> dict[str, Any]:
        uss = [m["uss"] for m in per]
        return {
            "n": len(per),
            "uss_median": mb(statistics.median(uss)),
            "uss_min": mb(min(uss)),
            "uss_max": mb(max(uss)),
            "uss_total": mb(sum(uss)),
            "rss_median": mb(statistics.median(m["rss"] for m in per)),
            "pss_median": mb(statistics.median(m["pss"] for m in per)),
            "uss_median_by_process": {
                role: mb(statistics.median(m["uss_by_process"][role] for m in per))
                for role in ("keeper", "init", "worker")
            },
        }

    with new_box(True) as box:
        sessions: list[Any] = []
        try:
            sessions, failures = _idle_sessions(box, cfg["mem_warm"], "mem-warm", "warm")
            time.sleep(cfg["mem_settle_s"])
            per = [session_memory(s) for s in sessions]
            out["warm"] = {**describe(per), "failures": failures}
            zpid = zygote_pid(box)
            if zpid:
                z = proc_memory(zpid)
                out["zygote"] = {"pid": zpid, "rss": mb(z["rss"]), "uss": mb(z["uss"]), "pss": mb(z["pss"])}
        finally:
            for s in sessions:
                s.close(remove_workdir=True)
    with new_box(False) as box:
        sessions = []
        try:
            sessions, failures = _idle_sessions(box, cfg["mem_cold"], "mem-cold", "cold")
            time.sleep(cfg["mem_settle_s"])
            out["cold"] = {**describe([session_memory(s) for s in sessions]), "failures": failures}
        finally:
            for s in sessions:
                s.close(remove_workdir=True)
    try:
        km, kc = rt.start_jupyter()
        try:
            status_p, _ = jupyter_cell(kc, P)
            status, value = jupyter_cell(kc, CELL)
            time.sleep(cfg["mem_settle_s"])
            k = proc_memory(jupyter_kernel_pid(km))
            out["jupyter"] = {
                "n": 1,
                "uss": mb(k["uss"]),
                "rss": mb(k["rss"]),
                "pss": mb(k["pss"]),
                "failures": int(not (status_p == "ok" and status == "ok" and value == EXPECTED)),
            }
        finally:
            rt.stop_jupyter(km, kc)
    except Exception as exc:
        errors["memory.jupyter"] = f"{type(exc).__name__}: {exc}"
    out["errors"] = errors
    if "warm" in out:
        med = out["warm"]["uss_median"]
        out["target"] = {
            "text": f"median USS per idle warm session <= {TARGET_USS_MB:g} MB",
            "limit_mb": TARGET_USS_MB,
            "measured_mb": med,
            "met": med <= TARGET_USS_MB,
        }
        out["ratios"] = {}
        if "cold" in out:
            out["ratios"]["cold/warm"] = round(out["cold"]["uss_median"] / med, 2)
        if "jupyter" in out:
            out["ratios"]["jupyter/warm"] = round(out["jupyter"]["uss"] / med, 2)
    return out


# ----------------------------------------------------------------------------- 5. scale
def bench_scale(cfg: dict[str, Any]) -> dict[str, Any]:
    n_idle, n_busy = cfg["scale_idle"], cfg["scale_busy"]
    busy_code = BUSY_CELL.format(s=cfg["scale_busy_s"])
    start_ns: list[int] = []
    start_errors: list[str] = []
    latencies: list[int] = []
    probe_errors: list[str] = []
    busy_done = [0] * n_busy
    busy_errors: list[str] = []
    avail0 = mem_available()
    out: dict[str, Any] = {"prelude": "P", "idle": n_idle, "busy": n_busy}
    with new_box(True) as box:
        sessions: list[Any] = []
        stop = threading.Event()
        threads: list[threading.Thread] = []
        try:
            t_all = now_ns()
            for i in range(n_idle + n_busy):
                t0 = now_ns()
                try:
                    s = box.session(f"scale-{i}", prelude=P)
                    r = s.run(CELL)
                    sessions.append(s)
                    if not answered(r):
                        start_errors.append(f"scale-{i}: first 1+1 ended {r.status}")
                except Exception as exc:
                    start_errors.append(f"scale-{i}: {type(exc).__name__}: {exc}")
                    continue
                start_ns.append(now_ns() - t0)
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1} sessions started", flush=True)
            out["start_all_s"] = round((now_ns() - t_all) / 1e9, 2)
            out["mem_available_drop_mb"] = round((avail0 - mem_available()) / MB, 1)
            out["starts_warm"] = sum(s.enforcement.get("start", "").startswith("warm") for s in sessions)
            busy, idle = sessions[:n_busy], sessions[n_busy:]

            def spin(j: int, s: Any) -> None:
                while not stop.is_set():
                    try:
                        r = s.run(busy_code)
                    except Exception as exc:
                        busy_errors.append(f"busy {j}: {type(exc).__name__}: {exc}")
                        return
                    if stop.is_set():
                        return  # ended by the interrupt at the end: not an error
                    if r.status != "ok":
                        busy_errors.append(f"busy {j}: {r.status}: {r.reason or r.error}")
                    busy_done[j] += 1

            threads = [threading.Thread(target=spin, args=(j, s), daemon=True) for j, s in enumerate(busy)]
            for t in threads:
                t.start()
            time.sleep(0.5)  # the busy cells are running
            load_during = os.getloadavg()
            t_end = time.perf_counter() + cfg["scale_window_s"]
            passes = 0
            while time.perf_counter() < t_end and idle:
                for s in idle:
                    t0 = now_ns()
                    try:
                        r = s.run(CELL)
                        latencies.append(now_ns() - t0)
                        if not answered(r):
                            probe_errors.append(f"{s.name}: {r.status}: {r.reason or r.error}")
                    except Exception as exc:
                        probe_errors.append(f"{s.name}: {type(exc).__name__}: {exc}")
                    if time.perf_counter() >= t_end:
                        break
                else:
                    passes += 1
            out["load_during"] = [round(x, 2) for x in load_during]
            out["idle_passes_complete"] = passes
        finally:
            stop.set()
            for s in sessions[:n_busy]:
                with contextlib.suppress(Exception):
                    s.interrupt()
            for t in threads:
                t.join(30)
            t0 = now_ns()
            for s in sessions:
                s.close(remove_workdir=True)
            out["close_all_s"] = round((now_ns() - t0) / 1e9, 2)
    out["starts"] = {**summary_ms(start_ns), "errors": start_errors}
    out["latency"] = {
        **summary_ms(latencies),
        "errors": len(probe_errors),
        "error_list": probe_errors,
        "samples_us": [round(x / 1e3, 1) for x in latencies],
    }
    out["busy_cells_completed"] = sum(busy_done)
    out["busy_errors"] = busy_errors[:10]
    all_ok = not start_errors and not probe_errors and not busy_errors and bool(latencies)
    out["target"] = {
        "text": "every 1+1 answers, no error",
        "measured": f"{len(latencies)} cells, {len(probe_errors)} errors, {len(start_errors)} start errors, "
        f"{len(busy_errors)} busy errors",
        "met": all_ok,
    }
    return out


# ------------------------------------------------------------------------ 6. throughput
def _exec_cell(ns: dict[str, Any]) -> bool:
    """rt.InProcessExec's work without redirect_stdout (process-global: not for threads)."""
    tree = ast.parse(CELL, "<cell>", "exec")
    last = ast.Expression(tree.body.pop().value) if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if tree.body:
        exec(compile(tree, "<cell>", "exec"), ns)
    value = eval(compile(last, "<cell>", "eval"), ns) if last is not None else None
    result = {"output_type": "execute_result", "data": {"text/plain": repr(value)}, "metadata": {}}
    return result["data"]["text/plain"] == EXPECTED


def _threads_rate(workers: list[Callable[[], bool]], window_s: float) -> tuple[float, int, int]:
    """Each worker in a thread of its own, looping for window_s: (cells/s, cells, failures)."""
    counts = [0] * len(workers)
    fails = [0] * len(workers)
    barrier = threading.Barrier(len(workers) + 1)
    deadline = [0.0]

    def loop(i: int, one: Callable[[], bool]) -> None:
        barrier.wait()
        end = deadline[0]
        c = f = 0
        while time.perf_counter() < end:
            try:
                ok = one()
            except Exception:
                ok = False
            c += 1
            f += not ok
        counts[i], fails[i] = c, f

    threads = [threading.Thread(target=loop, args=(i, w)) for i, w in enumerate(workers)]
    for t in threads:
        t.start()
    gc.collect()
    deadline[0] = time.perf_counter() + window_s
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    return sum(counts) / elapsed, sum(counts), sum(fails)


def _processes_rate(n: int, window_s: float) -> tuple[float, int, int]:
    """n backend processes, one session each, looping 1+1 for window_s together."""
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_HELPER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for _ in range(n)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError("a throughput helper process did not start")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{window_s}\n")
            p.stdin.flush()
        rate = 0.0
        cells = fails = 0
        for p in procs:
            assert p.stdout is not None
            count, elapsed, failed = p.stdout.readline().split()
            rate += int(count) / float(elapsed)
            cells += int(count)
            fails += int(failed)
        return rate, cells, fails
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def bench_throughput(cfg: dict[str, Any]) -> dict[str, Any]:
    ns_list = cfg["tp_sessions"]
    cores = len(os.sched_getaffinity(0))
    rows: dict[str, dict[str, Any]] = {"sandbox": {}, "exec": {}, "processes": {}}
    with new_box(True) as box:
        sessions = [box.session(f"tp-{i}", prelude=P) for i in range(max(ns_list))]
        try:
            for s in sessions:
                for _ in range(50):
                    s.run(CELL)
            for n in ns_list:
                sb = [lambda s=s: answered(s.run(CELL)) for s in sessions[:n]]
                namespaces = [{"__name__": "__main__", "__builtins__": builtins} for _ in range(n)]
                ex = [lambda g=g: _exec_cell(g) for g in namespaces]
                rate, cells, fails = _threads_rate(sb, cfg["tp_window_s"])
                rows["sandbox"][str(n)] = {"cells_per_s": round(rate, 1), "cells": cells, "failures": fails}
                rate, cells, fails = _threads_rate(ex, cfg["tp_window_s"])
                rows["exec"][str(n)] = {"cells_per_s": round(rate, 1), "cells": cells, "failures": fails}
                if cfg["tp_processes"]:
                    rate, cells, fails = _processes_rate(n, cfg["tp_window_s"])
                    rows["processes"][str(n)] = {"cells_per_s": round(rate, 1), "cells": cells, "failures": fails}
                print(
                    f"  {n} session(s): sandbox {rows['sandbox'][str(n)]['cells_per_s']:.0f} cells/s, "
                    f"exec {rows['exec'][str(n)]['cells_per_s']:.0f} cells/s"
                    + (
                        f", {n} process(es) {rows['processes'][str(n)]['cells_per_s']:.0f} cells/s"
                        if str(n) in rows["processes"]
                        else ""
                    ),
                    flush=True,
                )
        finally:
            for s in sessions:
                s.close(remove_workdir=True)
    sb_rates = {int(k): v["cells_per_s"] for k, v in rows["sandbox"].items()}
    at = max(k for k in sb_rates if k <= max(cores, 1)) if any(k <= cores for k in sb_rates) else min(sb_rates)
    growth = round(sb_rates[at] / sb_rates[1], 3) if 1 in sb_rates else None
    out: dict[str, Any] = {
        "window_s": cfg["tp_window_s"],
        "cores": cores,
        "rows": rows,
        "growth": {f"{n}/1": round(sb_rates[n] / sb_rates[1], 3) for n in sb_rates if 1 in sb_rates},
        "exec_growth": {
            f"{n}/1": round(rows["exec"][str(n)]["cells_per_s"] / rows["exec"]["1"]["cells_per_s"], 3)
            for n in sb_rates
            if "1" in rows["exec"]
        },
    }
    if growth is not None and at > 1:
        out["target"] = {
            "text": f"cells/s with {at} sessions (= the CPUs) >= {TARGET_THROUGHPUT_GROWTH:g} x with 1",
            "limit": TARGET_THROUGHPUT_GROWTH,
            "measured": growth,
            "met": growth >= TARGET_THROUGHPUT_GROWTH,
        }
    return out


# --------------------------------------------------------------------------- the report
def fmt_ms(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:.2f} s"
    return f"{v:.{0 if v >= 100 else 1 if v >= 10 else 2}f} ms"


def fmt_us(v: float) -> str:
    return f"{v:.{0 if v >= 100 else 1}f} µs"


def met_text(t: dict[str, Any] | None) -> str:
    if not t:
        return "NOT MEASURED"
    return "MET" if t["met"] else "NOT MET"


def summary_rows(res: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per figure of the table: what, measured, references (with ratios), target, met."""
    rows: list[dict[str, Any]] = []
    st = res.get("start")
    if st and "warm" in st.get("rows", {}):
        r = st["rows"]
        w = r["warm"]
        refs = []
        for k, name in (
            ("cold", "sandbox_exec cold"),
            ("jupyter", "Jupyter"),
            ("python_c", "python -c P"),
            ("fork", "fork() floor"),
        ):
            if k in r:
                refs.append(f"{name} p50 {fmt_ms(r[k]['p50'])} ({r[k]['p50'] / w['p50']:.3g}x warm)")
        z = st["zygote_first_start"]
        ph = st.get("phases_ms", {})
        phase_text = ", ".join(f"{k} {fmt_ms(v['p50'])}" for k, v in ph.items())
        rows.append(
            {
                "figure": f"new session, first cell 1+1 answered, prelude P (warm, n={w['n']})",
                "measured": f"p50 {fmt_ms(w['p50'])}, p90 {fmt_ms(w['p90'])}; the zygote's own first start "
                f"{fmt_ms(z['total_ms'])} (excluded)",
                "references": refs,
                "extra": [
                    f"phases p50: {phase_text}",
                    *(
                        f"{START_LABELS[k].strip()}: p50 {fmt_ms(r[k]['p50'])}, p90 {fmt_ms(r[k]['p90'])}"
                        for k in ("warm_nodisk", "warm_off")
                        if k in r
                    ),
                ],
                "target": st.get("target"),
            }
        )
        if "pool" in r:
            pl = r["pool"]
            rows.append(
                {
                    "figure": f"new notebook's session served from the pool (pool_size=2), 1+1 answered (n={pl['n']})",
                    "measured": f"p50 {fmt_ms(pl['p50'])}, p90 {fmt_ms(pl['p90'])}",
                    "references": [
                        f"warm fork on demand p50 {fmt_ms(w['p50'])} ({w['p50'] / pl['p50']:.3g}x pool)",
                        *refs,
                    ],
                    "extra": ["the pool refilled between samples (untimed), as between notebooks opened apart"],
                    "target": st.get("target_pool"),
                }
            )
    fg = res.get("figure")
    if fg:
        r = fg["rows"]
        rows.append(
            {
                "figure": "first matplotlib figure cell (image/png) in a new warm session",
                "measured": f"p50 {fmt_ms(r['new']['p50'])}, p90 {fmt_ms(r['new']['p90'])} (n={r['new']['n']})",
                "references": [
                    f"long-lived session p50 {fmt_ms(r['long']['p50'])}, p90 {fmt_ms(r['long']['p90'])} "
                    f"(n={r['long']['n']}); ratio new/long {fg['ratio_new_long_p50']:g}"
                ],
                "extra": [
                    "the long-lived session's own first figure cells (warm-up): "
                    + ", ".join(fmt_ms(x) for x in fg["long_lived_warmup_cells_ms"]),
                    f"a new session's first figure cell imports {fg['first_cell_imports']['modules']} modules: "
                    + " ".join(fg["first_cell_imports"]["packages"]),
                    *_figure_worker_lines(fg.get("worker", {})),
                ],
                "target": fg.get("target"),
            }
        )
    mm = res.get("memory")
    if mm and "warm" in mm:
        w = mm["warm"]
        refs = []
        if "jupyter" in mm:
            refs.append(
                f"Jupyter kernel with P: USS {mm['jupyter']['uss']:.1f} MB ({mm['jupyter']['uss'] / w['uss_median']:.3g}x)"
            )
        if "cold" in mm:
            refs.append(
                f"cold session with P (n={mm['cold']['n']}): USS median {mm['cold']['uss_median']:.1f} MB "
                f"({mm['cold']['uss_median'] / w['uss_median']:.3g}x)"
            )
        z = mm.get("zygote", {})
        bp = w["uss_median_by_process"]
        rows.append(
            {
                "figure": f"unique memory (USS) per idle warm session with P, {w['n']} sessions",
                "measured": f"median {w['uss_median']:.2f} MB (keeper {bp['keeper']:.2f} + init {bp['init']:.2f} + "
                f"worker {bp['worker']:.2f}), total {w['uss_total']:.1f} MB; zygote RSS {z.get('rss', 0):.1f} MB, "
                f"USS {z.get('uss', 0):.1f} MB",
                "references": refs,
                "extra": [],
                "target": mm.get("target"),
            }
        )
    sc = res.get("scale")
    if sc and "latency" in sc:
        lat = sc["latency"]
        rows.append(
            {
                "figure": f"{sc['idle']} idle + {sc['busy']} busy warm sessions (prelude P), 1+1 on each idle one in turn",
                "measured": f"{lat['n']} cells: p50 {fmt_ms(lat['p50'])}, p99 {fmt_ms(lat['p99'])}, max "
                f"{fmt_ms(lat['max'])}; {lat['errors']} errors; starts p50 {fmt_ms(sc['starts']['p50'])}",
                "references": [],
                "extra": [
                    f"{sc.get('starts_warm', 0)} warm starts, all started in {sc.get('start_all_s', 0):g} s, "
                    f"MemAvailable -{sc.get('mem_available_drop_mb', 0):g} MB, load during {sc.get('load_during')}, "
                    f"busy cells completed {sc['busy_cells_completed']}"
                ],
                "target": sc.get("target"),
            }
        )
    tp = res.get("throughput")
    if tp:
        sb, ex = tp["rows"]["sandbox"], tp["rows"]["exec"]
        rows.append(
            {
                "figure": f"cells/s of one backend with 1 -> {max(int(k) for k in sb)} sessions ({tp['cores']} CPUs)",
                "measured": ", ".join(f"{k}: {v['cells_per_s']:.0f}/s" for k, v in sb.items())
                + " ("
                + ", ".join(f"{k} {v:g}x" for k, v in tp["growth"].items() if k != "1/1")
                + ")",
                "references": [
                    "in-process exec(): "
                    + ", ".join(f"{k}: {v['cells_per_s']:.0f}/s" for k, v in ex.items())
                    + " ("
                    + ", ".join(f"{k} {v:g}x" for k, v in tp["exec_growth"].items() if k != "1/1")
                    + ")"
                ],
                "extra": [
                    f"diagnostic: {k} backend process(es), one session each: {v['cells_per_s']:.0f}/s in all"
                    for k, v in tp["rows"].get("processes", {}).items()
                ],
                "target": tp.get("target"),
            }
        )
    rtr = res.get("roundtrip")
    if rtr and "warm" in rtr.get("rows", {}):
        r = rtr["rows"]
        refs = [
            f"{k} p50 {fmt_us(r[k]['p50'])} ({r['warm']['p50'] / r[k]['p50']:.3g}x)"
            for k in ("cold", "exec", "pipe", "pipe_same")
            if k in r
        ]
        rows.append(
            {
                "figure": "1+1 round trip p50 through a warm (forked) session",
                "measured": f"p50 {fmt_us(r['warm']['p50'])}, p99 {fmt_us(r['warm']['p99'])} (n={r['warm']['n']})",
                "references": [*refs, "ratios: warm / reference"],
                "extra": [],
                "target": rtr.get("target"),
            }
        )
    for row in rows:
        row["met"] = met_text(row["target"])
    return rows


def _figure_worker_lines(worker: dict[str, Any]) -> list[str]:
    new, long = worker.get("new", {}), worker.get("long", {})
    if not new.get("n") or not long.get("n"):
        return []
    return [
        f"the worker, p50: minor page faults {new['minor_faults_p50']:g} (new) vs {long['minor_faults_p50']:g} "
        f"(long-lived); on-CPU {new['cpu_ms_p50']:g} ms vs {long['cpu_ms_p50']:g} ms "
        f"({new['cpu_ms_p50'] / long['cpu_ms_p50']:.3g}x)"
    ]


def print_summary(rows: list[dict[str, Any]]) -> None:
    print("\n" + "=" * 100)
    print("Warm-start table (issue 9)")
    print("=" * 100)
    for i, row in enumerate(rows, 1):
        print(f"[{i}] {row['figure']}")
        print(f"    measured    {row['measured']}")
        for j, ref in enumerate(row["references"]):
            print(f"    {'references' if j == 0 else '':11s} {ref}")
        for e in row["extra"]:
            print(f"    {'':11s} {e}")
        t = row["target"]
        print(f"    target      {t['text'] if t else '-'} -> {row['met']}")
    print("=" * 100)


# ---------------------------------------------------------------------------- the plots
def plot(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    sub = f"{doc['machine'].get('cpus')} CPUs, load {doc['machine'].get('loadavg_start')} -> {doc.get('loadavg_end')}, {doc['date'][:10]}"
    res = doc["results"]

    st = res.get("start")
    if st and st.get("rows"):
        order = [k for k in START_LABELS if k in st["rows"]]
        fig, ax = plt.subplots(figsize=(10, 5))
        for j, stat in enumerate(("p50", "p90")):
            xs = [i + (j - 0.5) * 0.38 for i in range(len(order))]
            vals = [st["rows"][k][stat] for k in order]
            colors = [
                "#f58518" if k.startswith("warm") or k == "pool" else "#9e9e9e" if k == "fork" else "#4c78a8"
                for k in order
            ]
            rects = ax.bar(
                xs, vals, 0.38, color=colors, alpha=1 if j == 0 else 0.5, hatch=None if j == 0 else "//", edgecolor="k"
            )
            for rect, v in zip(rects, vals):
                ax.annotate(
                    fmt_ms(v),
                    (rect.get_x() + rect.get_width() / 2, v),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                    rotation=90,
                )
        ax.axhline(
            TARGET_START_P50_MS,
            color="#d62728",
            linestyle="--",
            linewidth=1,
            label=f"target: warm p50 <= {TARGET_START_P50_MS:g} ms",
        )
        ax.legend(loc="upper left", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylim(top=3 * max(st["rows"][k]["p90"] for k in order))
        ax.set_ylabel("ms (log)")
        ax.set_xticks(range(len(order)))
        ax.set_xticklabels([START_SHORT[k] for k in order], fontsize=8)
        ax.set_title(f"New session answering 1+1, stack preloaded (p50 solid, p90 hatched)\n{sub}", fontsize=10)
        fig.tight_layout()
        path = out_dir / "start.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    mm = res.get("memory")
    if mm and "warm" in mm:
        names, vals, colors = [], [], []
        for key, label, color in (
            ("warm", "warm session\n(keeper+init+worker)", "#f58518"),
            ("cold", "cold session\n(keeper+init+worker)", "#4c78a8"),
            ("jupyter", "Jupyter kernel\nprocess", "#54a24b"),
        ):
            if key in mm:
                names.append(label)
                vals.append(mm[key].get("uss_median", mm[key].get("uss")))
                colors.append(color)
        if "zygote" in mm:
            names += ["zygote USS\n(once per prelude)", "zygote RSS"]
            vals += [mm["zygote"]["uss"], mm["zygote"]["rss"]]
            colors += ["#ffbf79", "#ffe0bd"]
        fig, ax = plt.subplots(figsize=(9, 4.5))
        rects = ax.bar(range(len(names)), vals, 0.6, color=colors, edgecolor="k")
        for rect, v in zip(rects, vals):
            ax.annotate(f"{v:.1f} MB", (rect.get_x() + rect.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
        ax.axhline(TARGET_USS_MB, color="#d62728", linestyle="--", linewidth=1)
        ax.text(
            len(names) - 0.5,
            TARGET_USS_MB * 1.05,
            f"target {TARGET_USS_MB:g} MB / session",
            color="#d62728",
            ha="right",
            fontsize=8,
        )
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylabel("MB (10^6 B)")
        ax.set_title(
            f"Unique memory (USS) per idle session with P: median of {mm['warm']['n']} warm, total {mm['warm']['uss_total']:.0f} MB\n{sub}",
            fontsize=10,
        )
        fig.tight_layout()
        path = out_dir / "memory.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)

    tp = res.get("throughput")
    if tp:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for key, label, color, style in (
            ("sandbox", "sandbox_exec session.run, N threads, 1 process", "#f58518", "-"),
            ("processes", "sandbox_exec, N processes of 1 session (diagnostic)", "#e45756", "--"),
            ("exec", "in-process exec(), N threads", "#4c78a8", "-"),
        ):
            pts = sorted((int(k), v["cells_per_s"]) for k, v in tp["rows"].get(key, {}).items())
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", linestyle=style, color=color, label=label)
            for x, y in pts:
                ax.annotate(f"{y:.0f}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.axvline(tp["cores"], color="#888888", linestyle=":", linewidth=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sorted(int(k) for k in tp["rows"]["sandbox"]))
        ax.set_xticklabels(sorted(int(k) for k in tp["rows"]["sandbox"]))
        ax.set_xlabel("sessions = threads (dotted: CPUs)")
        ax.set_ylabel("cells/s of 1+1 (log)")
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15))
        ax.set_title(f"Throughput of one backend process\n{sub}", fontsize=10)
        fig.tight_layout()
        path = out_dir / "throughput.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


# -------------------------------------------------------------------------------- main
def config(quick: bool) -> dict[str, Any]:
    if quick:
        return {
            "rt_n": 200,
            "rt_warmup": 20,
            "rt_rounds": 2,
            "start_rounds": 1,
            "start_warm_per_round": 5,
            "start_diag_per_round": 2,
            "start_cold_per_round": 1,
            "start_jupyter": 1,
            "start_fork_per_round": 20,
            "start_warmup": False,
            "fig_warmup": 2,
            "fig_new": 2,
            "fig_long": 4,
            "mem_warm": 5,
            "mem_cold": 1,
            "mem_settle_s": 0.3,
            "scale_idle": 20,
            "scale_busy": 2,
            "scale_busy_s": 1.0,
            "scale_window_s": 2.0,
            "tp_sessions": [1, 2],
            "tp_window_s": 1.0,
            "tp_processes": False,
        }
    return {
        "rt_n": 2000,
        "rt_warmup": 200,
        "rt_rounds": 5,
        "start_rounds": 5,
        "start_warm_per_round": 5,  # 25 warm starts
        "start_diag_per_round": 2,  # 10 of each diagnostic variant
        "start_cold_per_round": 1,  # 5
        "start_jupyter": 3,  # in the first 3 rounds
        "start_fork_per_round": 10,  # 50
        "start_warmup": True,
        "fig_warmup": 3,
        "fig_new": 10,
        "fig_long": 20,
        "mem_warm": 50,
        "mem_cold": 3,
        "mem_settle_s": 1.0,
        "scale_idle": 200,
        "scale_busy": 20,
        "scale_busy_s": 3.0,
        "scale_window_s": 10.0,
        "tp_sessions": [1, 2, 4],
        "tp_window_s": 5.0,
        "tp_processes": True,
    }


RUNNERS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "roundtrip": bench_roundtrip,
    "start": bench_start,
    "figure": bench_figure,
    "memory": bench_memory,
    "throughput": bench_throughput,
    "scale": bench_scale,
}


def failures_in(name: str, r: dict[str, Any]) -> int:
    n = 0
    for row in (r.get("rows") or {}).values():
        if isinstance(row, dict):
            n += int(row.get("failures", 0))
            n += sum(int(v.get("failures", 0)) for v in row.values() if isinstance(v, dict))
    for key in ("warm", "cold", "jupyter"):
        if name == "memory" and isinstance(r.get(key), dict):
            n += int(r[key].get("failures", 0))
    if name == "scale":
        n += 0 if r.get("target", {}).get("met") else 1
    if name == "start":
        n += 0 if r.get("zygote_first_start", {}).get("ok", True) else 1
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small N everywhere (CI smoke, < 60 s)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument(
        "--only", action="append", default=[], metavar="SECTION", help=f"run only these sections: {', '.join(SECTIONS)}"
    )
    p.add_argument(
        "--plot",
        nargs="?",
        const=str(REPO / "docs/img/warm"),
        metavar="DIR",
        help="write the plots (default docs/img/warm)",
    )
    p.add_argument(
        "--plot-from", metavar="JSON", help="only plot a JSON written by --json (to --plot DIR or docs/img/warm)"
    )
    args = p.parse_args(argv)

    if args.plot_from:
        doc = json.loads(Path(args.plot_from).read_text())
        for path in plot(doc, Path(args.plot or REPO / "docs/img/warm")):
            print(f"wrote {path}")
        return 0

    chosen = [t.strip() for spec in args.only for t in spec.split(",") if t.strip()] or list(SECTIONS)
    bad = [t for t in chosen if t not in SECTIONS]
    if bad:
        p.error(f"--only: unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")
    cfg = config(args.quick)
    info = rt.machine_info()
    print(f"sandbox_exec warm-start benchmark  {_dt.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"  {info['cpus']} x {info['cpu_model']}, Linux {info['kernel']}, Python {info['versions']['python']}, "
        f"git {info['git']}, load {info['loadavg_start']}"
    )
    print(f"  prelude P = {P}")
    t_begin = time.perf_counter()
    results: dict[str, Any] = {}
    errors: dict[str, str] = {}
    elapsed: dict[str, float] = {}
    for name in SECTIONS:
        if name not in chosen:
            continue
        print(f"\n[{name}]", flush=True)
        t0 = time.perf_counter()
        try:
            r = RUNNERS[name](cfg)
            errors.update(r.pop("errors", {}) or {})
            results[name] = r
        except Exception as exc:
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
        elapsed[name] = round(time.perf_counter() - t0, 1)
        print(f"  ({elapsed[name]:.1f} s)", flush=True)
    total = time.perf_counter() - t_begin
    loadavg_end = [round(x, 2) for x in os.getloadavg()]
    rows = summary_rows(results)
    print_summary(rows)
    print(f"total {total:.1f} s; load average at the start {info['loadavg_start']}, at the end {loadavg_end}")
    for where, msg in errors.items():
        print(f"ERROR in {where}: {msg}", file=sys.stderr)
    failed = {name: n for name, r in results.items() if (n := failures_in(name, r))}
    for name, n in failed.items():
        print(f"FAILURES in {name}: {n} (wrong answers, errors or failed starts)", file=sys.stderr)

    doc = {
        "schema": 1,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "prelude": P,
        "machine": info,
        "loadavg_start": info["loadavg_start"],
        "loadavg_end": loadavg_end,
        "config": {**cfg, "quick": args.quick, "only": chosen, "argv": sys.argv[1:]},
        "elapsed_s": round(total, 1),
        "section_elapsed_s": elapsed,
        "results": results,
        "summary": [{k: v for k, v in row.items()} for row in rows],
        "errors": errors,
        "failures": failed,
    }
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path}")
    if args.plot:
        for path in plot(doc, Path(args.plot)):
            print(f"wrote {path}")
    return 1 if errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
