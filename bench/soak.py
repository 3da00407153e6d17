#!/usr/bin/env python3
"""Soak with faults (issue 11): many sessions, thousands of cells, about a tenth of them
misbehaving, driven from many threads and an asyncio loop at once.

One run has three phases, each in its own Sandbox, closed before the next starts:

- ``warm-up``: a few well-behaved cells per session (imports, allocator, zygote); the
  backend's RSS after its close is the reference of the memory bound;
- ``idle``:    the same cells as ``faults`` with the faulty ones left out (the latency
  reference, same script, same minutes);
- ``faults``:  every session runs its cells in a random order, about ``--fault-rate`` of
  them faulty: a segfault, ``os.abort()``, an endless loop past a short timeout, a loop that
  ignores the interrupt, a memory bomb past ``Policy.memory_bytes``, an output flood past
  ``Policy.max_output_bytes``, a fork bomb against ``Policy.max_processes``, random bytes
  written into the session's shared-memory event ring, the worst JSON shapes sent raw on the
  channel (deep nesting, huge numbers, a lone surrogate, duplicate keys, a giant string).

Each session is driven by one driver: a thread (``--threads`` of them) or the asyncio loop
(``run_async``, all its sessions at once); the drivers run together. Each session keeps a
counter only it has (``n``, with its own name beside it): every well-behaved cell prints it,
writes to stderr, displays it and returns it, and its outputs must be exactly the ones the
model expects (nothing lost, duplicated, reordered, or from another session). A faulty cell
must end with its kind's status; where it ends the interpreter (a crash, a kill) the model's
counter starts again, and the next cell must say the session was restarted.

Asserted at the end: the backend never died (this process ran every phase and every driver
returned), every well-behaved cell's outputs were exact, nothing is left after each close
(tests_py/leftovers.py: processes, zombies, descriptors, memfds, cgroups, mounts, loop
devices, temporary directories, /dev/shm), and the backend's RSS after the faults phase is
within ``--rss-bound-mib`` of its RSS after the warm-up. Exit status 1 when any check fails.

    .venv/bin/python bench/soak.py [--sessions 100 --cells 10000 --threads 8 --fault-rate 0.1
                                    --seed 1 --json bench/results/soak-latest.json]

tests_py/test_soak.py runs the same code (``soak()``) with smaller figures.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import dataclasses
import gc
import json
import os
import platform
import random
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests_py"))

from hostile import FIND_CHANNEL, SHAPES  # noqa: E402  (the worker's channel, the worst shapes)

import leftovers  # noqa: E402  (tests_py/leftovers.py: the host checks after close)
import sandbox_exec  # noqa: E402

MiB = 1 << 20

#: The sessions' policy: limits small enough that the faults meet them fast.
MEMORY_BYTES = 256 * MiB
MAX_PROCESSES = 64
MAX_OUTPUT_BYTES = 2 * MiB
#: The deadline of the two looping faults (the well-behaved cells keep the policy's 60 s).
LOOP_TIMEOUT_S = 0.5


def policy() -> sandbox_exec.Policy:
    return sandbox_exec.Policy(
        memory_bytes=MEMORY_BYTES, max_processes=MAX_PROCESSES, max_output_bytes=MAX_OUTPUT_BYTES, timeout_s=60
    )


# ---- the cells ------------------------------------------------------------------------------


def good_cell(name: str, variant: int) -> str:
    """A well-behaved cell: bumps the session's own counter (starting it when the
    interpreter is new) and shows it in the outputs of `variant`'s shape."""
    head = f"try:\n    n\nexcept NameError:\n    n, owner = 0, {name!r}\nn += 1\n"
    if variant == 0:  # stdout and a value
        return head + "print(owner, n)\nn * 7"
    if variant == 1:  # stdout, stderr, a display, a value
        return head + (
            "import sys\nprint('out', owner, n)\nprint('err', n, file=sys.stderr)\n"
            "display({'text/plain': f'shown {owner} {n}', 'application/json': {'owner': owner, 'n': n}}, raw=True)\n"
            "(owner, n)"
        )
    # two displays around a print, no value (a trailing semicolon)
    return head + (
        "display({'text/plain': f'first {n}'}, raw=True)\nprint(owner, n, 'between')\n"
        "display({'text/plain': f'second {owner}'}, raw=True)\nn;"
    )


def expected_outputs(name: str, variant: int, n: int, count: int) -> list[dict[str, Any]]:
    """The exact outputs of good_cell(name, variant) with the counter at `n` and the cell's
    execution count `count`."""

    def result(text: str) -> dict[str, Any]:
        return {"output_type": "execute_result", "execution_count": count, "data": {"text/plain": text}, "metadata": {}}

    def shown(data: dict[str, Any]) -> dict[str, Any]:
        return {"output_type": "display_data", "data": data, "metadata": {}}

    if variant == 0:
        return [{"output_type": "stream", "name": "stdout", "text": f"{name} {n}\n"}, result(str(n * 7))]
    if variant == 1:
        return [
            {"output_type": "stream", "name": "stdout", "text": f"out {name} {n}\n"},
            {"output_type": "stream", "name": "stderr", "text": f"err {n}\n"},
            shown({"text/plain": f"shown {name} {n}", "application/json": {"owner": name, "n": n}}),
            result(repr((name, n))),
        ]
    return [
        shown({"text/plain": f"first {n}"}),
        {"output_type": "stream", "name": "stdout", "text": f"{name} {n} between\n"},
        shown({"text/plain": f"second {name}"}),
    ]


def _send_all(*payloads: str) -> str:
    return FIND_CHANNEL + "".join(f"channel.send(19, {p})\n" for p in payloads) + "'after'"


def _display(inner: str) -> str:
    """A display_data message (bytes literal code) whose data is the JSON text `inner`."""
    return 'b\'{"output_type":"display_data","metadata":{},"data":\' + ' + inner + " + b'}'"


# The random bytes land on the event ring's control words and its first frames (the layout
# tests_py/test_hostile_worker.py documents: the ring mapping is a memfd named
# sandbox_exec-ring, the event ring's control at +512, its data at +4096+1 MiB, its bell on
# descriptor 7); then the bell rings, and the supervisor reads garbage.
RING_GARBAGE = """
import ctypes, os, random, time
base = next(int(line.split("-")[0], 16) for line in open("/proc/self/maps") if "sandbox_exec-ring" in line)
junk = random.Random({seed}).randbytes(4096)
ctypes.memmove(base + 4096 + (1 << 20), junk, 4096)
ctypes.memmove(base + 512 + 64, junk, 8)
os.write(7, b"!")
time.sleep(5)
"""

FAULTS: dict[str, str] = {
    "segfault": "import ctypes\nctypes.string_at(0)",
    "abort": "import os\nos.abort()",
    "loop": "while True:\n    pass",
    "ignore-interrupt": ("import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    pass"),
    "memory-bomb": "chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))",
    "flood": "chunk = 'x' * 65535 + '\\n'\nfor _ in range(64):\n    print(chunk, end='')",  # 4 MiB
    "fork-bomb": """
import os, signal, time
kids = []
try:
    for _ in range(10000):
        pid = os.fork()
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        kids.append(pid)
except OSError:
    pass
for pid in kids:
    os.kill(pid, signal.SIGKILL)
for pid in kids:
    os.waitpid(pid, 0)
0 < len(kids) < MAX_PROCESSES
""".replace("MAX_PROCESSES", str(MAX_PROCESSES)),
    "ring-garbage": RING_GARBAGE,
    "json-shapes": _send_all(
        SHAPES["deep arrays"],
        _display("b'{\"application/json\": {\"v\": 1e999, \"w\": ' + b'9' * 5000 + b'}}'"),  # huge numbers
        _display('b\'{"text/plain": "\\\\ud800"}\''),  # a lone surrogate
        _display('b\'{"text/plain": "a", "text/plain": "b"}\''),  # duplicate keys
        _display("b'{\"text/plain\": \"' + b'z' * (1 << 20) + b'\"}'"),  # a 1 MiB string
    ),
}
#: What each fault may end as (a tuple: any of them).
FAULT_STATUS: dict[str, tuple[str, ...]] = {
    "segfault": ("crashed",),
    "abort": ("crashed",),
    "loop": ("timeout",),
    "ignore-interrupt": ("timeout",),
    "memory-bomb": ("memory",),
    "flood": ("ok",),
    "fork-bomb": ("ok",),
    "ring-garbage": ("crashed",),
    "json-shapes": ("ok",),
}
#: Faults that always end the interpreter; the others keep it unless their Result says it
#: was killed (a memory cgroup's OOM kill; a loop that did not see its interrupt in time).
ENDS_INTERPRETER = {"segfault", "abort", "ignore-interrupt", "ring-garbage"}
FAULT_TIMEOUT = {"loop": LOOP_TIMEOUT_S, "ignore-interrupt": LOOP_TIMEOUT_S}


@dataclasses.dataclass
class Cell:
    kind: str  # "good" or a key of FAULTS
    variant: int = 0


@dataclasses.dataclass
class SessionPlan:
    name: str
    cells: list[Cell]
    driver: str  # "thread-<i>" or "asyncio"


def plan(sessions: int, cells: int, threads: int, fault_rate: float, seed: int) -> list[SessionPlan]:
    """Which cells each session runs, in order, and who drives it. Faults come in random
    order and kinds; every kind appears at least once when there are enough faulty cells."""
    rng = random.Random(seed)
    per = [cells // sessions + (1 if i < cells % sessions else 0) for i in range(sessions)]
    slots = [(i, j) for i in range(sessions) for j in range(per[i])]
    faulty = set(rng.sample(slots, round(fault_rate * len(slots))))
    kinds = sorted(FAULTS)
    order = kinds * (len(faulty) // len(kinds)) + rng.sample(kinds, len(faulty) % len(kinds))
    rng.shuffle(order)
    fault_of = dict(zip(sorted(faulty), order, strict=True))
    drivers = [f"thread-{t}" for t in range(threads)] + ["asyncio"]
    return [
        SessionPlan(
            name=f"soak-{i:03d}-{rng.randrange(1 << 32):08x}",
            cells=[
                Cell(fault_of[(i, j)]) if (i, j) in fault_of else Cell("good", rng.randrange(3)) for j in range(per[i])
            ],
            driver=drivers[i % len(drivers)],
        )
        for i in range(sessions)
    ]


# ---- the model and the checks ---------------------------------------------------------------


class Model:
    """What one session must show: its counter and execution count, whether the next cell
    starts a fresh interpreter."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.n = 0
        self.count = 0
        self.restart_due = False

    def check(self, cell: Cell, r: Any, alive_after: bool) -> list[str]:
        """The differences between the Result `r` of `cell` and the model; updates the model."""
        problems: list[str] = []
        where = f"{self.name} cell {self.count + 1} ({cell.kind})"
        if r.session_restarted != self.restart_due:
            problems.append(f"{where}: session_restarted {r.session_restarted}, expected {self.restart_due}")
        if self.restart_due or r.session_restarted:
            self.count, self.n = 0, 0
        self.restart_due = False
        self.count += 1
        if r.execution_count != self.count:
            problems.append(f"{where}: execution_count {r.execution_count}, expected {self.count}")
            self.count = r.execution_count or self.count
        if cell.kind == "good":
            self.n += 1
            want = expected_outputs(self.name, cell.variant, self.n, self.count)
            if r.status != "ok" or r.outputs != want:
                problems.append(
                    f"{where}: status {r.status} ({r.reason}), outputs {r.outputs!r:.600}, expected {want!r}"
                )
            if not alive_after:
                problems.append(f"{where}: the interpreter died after a well-behaved cell")
            return problems
        if r.status not in FAULT_STATUS[cell.kind]:
            problems.append(f"{where}: status {r.status} ({r.reason}), expected one of {FAULT_STATUS[cell.kind]}")
        problems.extend(self._fault_detail(where, cell.kind, r))
        if cell.kind in ENDS_INTERPRETER and alive_after:
            problems.append(f"{where}: the interpreter survived a {cell.kind}")
        if not alive_after:
            self.restart_due = True
        return problems

    @staticmethod
    def _fault_detail(where: str, kind: str, r: Any) -> list[str]:
        def last_value() -> str | None:
            results = [o for o in r.outputs if o["output_type"] == "execute_result"]
            return results[-1]["data"]["text/plain"] if results else None

        reason = r.reason or ""
        if kind == "segfault" and "SIGSEGV" not in reason:
            return [f"{where}: reason {reason!r} does not name SIGSEGV"]
        if kind == "abort" and "SIGABRT" not in reason:
            return [f"{where}: reason {reason!r} does not name SIGABRT"]
        if kind == "ring-garbage" and "protocol violation" not in reason:
            return [f"{where}: reason {reason!r} is not a protocol violation"]
        if kind == "flood" and not (r.truncated_bytes > 0 and set(r.stdout) <= {"x", "\n"} and len(r.stdout) > MiB):
            # past the cap the rest of the cell's output (its value too) is dropped
            return [f"{where}: truncated {r.truncated_bytes}, stdout of {len(r.stdout)} characters"]
        if kind == "fork-bomb" and last_value() != "True":
            return [f"{where}: fork bomb's own check {last_value()!r}"]
        if kind == "json-shapes" and last_value() != "'after'":
            return [f"{where}: last value {last_value()!r}, stderr {r.stderr!r:.300}"]
        return []


@dataclasses.dataclass
class Tally:
    """What the drivers of one phase saw (appended from many threads: list appends are atomic)."""

    latencies: list[float] = dataclasses.field(default_factory=list)  # well-behaved cells, seconds
    problems: list[str] = dataclasses.field(default_factory=list)
    faults: dict[str, int] = dataclasses.field(default_factory=dict)
    statuses: dict[str, int] = dataclasses.field(default_factory=dict)
    cells: int = 0
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    def record(self, cell: Cell, r: Any, seconds: float, problems: list[str]) -> None:
        with self.lock:
            self.cells += 1
            key = f"{cell.kind}:{r.status}"
            self.statuses[key] = self.statuses.get(key, 0) + 1
            if cell.kind == "good":
                self.latencies.append(seconds)
            else:
                self.faults[cell.kind] = self.faults.get(cell.kind, 0) + 1
            self.problems.extend(problems)


def _code(cell: Cell, name: str, rng: random.Random) -> tuple[str, float | None]:
    if cell.kind == "good":
        return good_cell(name, cell.variant), None
    code = FAULTS[cell.kind]
    if cell.kind == "ring-garbage":
        code = code.replace("{seed}", str(rng.randrange(1 << 30)))
    return code, FAULT_TIMEOUT.get(cell.kind)


def _drive_thread(box: Any, plans: list[SessionPlan], tally: Tally, seed: int) -> None:
    """Runs its sessions' cells, picking the next session at random each time."""
    rng = random.Random(seed)
    sessions = {p.name: box.session(p.name) for p in plans}
    models = {p.name: Model(p.name) for p in plans}
    left = {p.name: list(p.cells) for p in plans}
    while left:
        name = rng.choice(sorted(left))
        cell = left[name].pop(0)
        if not left[name]:
            del left[name]
        code, timeout = _code(cell, name, rng)
        t0 = time.perf_counter()
        r = sessions[name].run(code, timeout=timeout)
        seconds = time.perf_counter() - t0
        tally.record(cell, r, seconds, models[name].check(cell, r, sessions[name].alive))


async def _drive_async_session(box: Any, p: SessionPlan, tally: Tally, rng: random.Random) -> None:
    s = await asyncio.to_thread(box.session, p.name)
    model = Model(p.name)
    for cell in p.cells:
        await asyncio.sleep(rng.random() * 0.002)  # the sessions' cells interleave at random
        code, timeout = _code(cell, p.name, rng)
        t0 = time.perf_counter()
        r = await s.run_async(code, timeout=timeout)
        seconds = time.perf_counter() - t0
        tally.record(cell, r, seconds, model.check(cell, r, s.alive))


def _drive_asyncio(box: Any, plans: list[SessionPlan], tally: Tally, seed: int) -> None:
    rng = random.Random(seed)

    async def main() -> None:
        await asyncio.gather(*(_drive_async_session(box, p, tally, random.Random(rng.random())) for p in plans))

    asyncio.run(main())


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def settled_rss() -> tuple[int, int]:
    """The backend's RSS as it is, and after a collection and glibc's malloc_trim(0): the
    second leaves out free memory the allocator keeps for reuse (each driver thread's arena
    keeps some of the largest outputs it held), which comes and goes from run to run; memory
    still in use, a leak, stays in it."""
    gc.collect()
    raw = rss_bytes()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: the raw figure is all there is
        pass
    return raw, rss_bytes()


def percentile(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def run_phase(plans: list[SessionPlan], *, faults: bool, seed: int) -> dict[str, Any]:
    """One phase in a Sandbox of its own: every driver at once; then close and the checks."""
    if not faults:
        plans = [dataclasses.replace(p, cells=[c for c in p.cells if c.kind == "good"]) for p in plans]
    baseline = leftovers.Baseline.take(tempdir=tempfile.gettempdir())
    tally = Tally()
    errors: list[str] = []
    box = sandbox_exec.Sandbox(policy=policy())
    root = box.root
    t0 = time.perf_counter()
    try:
        by_driver: dict[str, list[SessionPlan]] = {}
        for p in plans:
            by_driver.setdefault(p.driver, []).append(p)

        def guarded(driver: str, group: list[SessionPlan], i: int) -> None:
            try:
                drive = _drive_asyncio if driver == "asyncio" else _drive_thread
                drive(box, group, tally, seed * 1000 + i)
            except BaseException as e:  # a driver that raised: reported, not lost with its thread
                errors.append(f"{driver}: {type(e).__name__}: {e}")

        threads = [
            threading.Thread(target=guarded, args=(driver, group, i), name=f"soak-{driver}")
            for i, (driver, group) in enumerate(sorted(by_driver.items()))
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    finally:
        box.close()
    gc.collect()
    left = leftovers.leftovers(baseline, root)
    want_cells = sum(len(p.cells) for p in plans)
    if tally.cells != want_cells:
        errors.append(f"{tally.cells} cells ran, {want_cells} planned")
    lat = tally.latencies
    return {
        "cells": tally.cells,
        "good_cells": len(lat),
        "faults": dict(sorted(tally.faults.items())),
        "statuses": dict(sorted(tally.statuses.items())),
        "wall_s": wall,
        "cells_per_s": tally.cells / wall,
        "good_p50_ms": percentile(lat, 0.5) * 1e3,
        "good_p99_ms": percentile(lat, 0.99) * 1e3,
        "good_max_ms": max(lat, default=float("nan")) * 1e3,
        "problems": tally.problems,
        "driver_errors": errors,
        "leftovers": left,
    }


def soak(
    *, sessions: int, cells: int, threads: int, fault_rate: float, seed: int, rss_bound_mib: float
) -> dict[str, Any]:
    """The whole soak: warm-up, idle, faults. Returns the results, with ``failures`` (empty
    when every check passed)."""
    plans = plan(sessions, cells, threads, fault_rate, seed)
    # The temporary directories a Sandbox makes go to a private directory, so the check after
    # close sees this run's alone (other processes on the host make their own).
    private_tmp = tempfile.mkdtemp(prefix="soak-tmp-")
    saved_tempdir, tempfile.tempdir = tempfile.tempdir, private_tmp
    try:
        results: dict[str, Any] = {
            "kind": "soak",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "machine": platform.node(),
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "config": {
                "sessions": sessions,
                "cells": cells,
                "threads": threads,
                "asyncio_sessions": sum(p.driver == "asyncio" for p in plans),
                "fault_rate": fault_rate,
                "seed": seed,
                "rss_bound_mib": rss_bound_mib,
            },
        }
        warm_plans = [dataclasses.replace(p, cells=[Cell("good", v) for v in range(3)]) for p in plans]
        results["warm-up"] = run_phase(warm_plans, faults=False, seed=seed)
        raw_warm, rss_warm = settled_rss()
        results["idle"] = run_phase(plans, faults=False, seed=seed)
        results["faults"] = run_phase(plans, faults=True, seed=seed)
        raw_after, rss_after = settled_rss()
    finally:
        tempfile.tempdir = saved_tempdir
        if not os.listdir(private_tmp):  # else reported by leftovers(), and kept to look at
            os.rmdir(private_tmp)
    results["rss_after_warmup_mib"] = rss_warm / MiB
    results["rss_after_run_mib"] = rss_after / MiB
    results["rss_growth_mib"] = (rss_after - rss_warm) / MiB
    results["rss_untrimmed_mib"] = {"after_warmup": raw_warm / MiB, "after_run": raw_after / MiB}
    failures: list[str] = []
    for phase in ("warm-up", "idle", "faults"):
        r = results[phase]
        failures += [f"{phase}: {p}" for p in r["problems"] + r["driver_errors"]]
        failures += [f"{phase}: left after close: {x}" for x in r["leftovers"]]
    if results["rss_growth_mib"] > rss_bound_mib:
        failures.append(f"RSS grew {results['rss_growth_mib']:.1f} MiB after the warm-up, bound {rss_bound_mib} MiB")
    results["failures"] = failures
    return results


def summary(results: dict[str, Any]) -> str:
    c = results["config"]
    lines = [
        f"soak: {c['sessions']} sessions, {c['cells']} cells, {c['threads']} threads + asyncio "
        f"({c['asyncio_sessions']} sessions), fault rate {c['fault_rate']}, seed {c['seed']}",
        f"{'phase':8} {'cells':>6} {'good':>6} {'wall s':>7} {'cells/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>9}",
    ]
    for phase in ("warm-up", "idle", "faults"):
        r = results[phase]
        lines.append(
            f"{phase:8} {r['cells']:6d} {r['good_cells']:6d} {r['wall_s']:7.1f} {r['cells_per_s']:8.1f} "
            f"{r['good_p50_ms']:8.1f} {r['good_p99_ms']:8.1f} {r['good_max_ms']:9.1f}"
        )
    idle, faults = results["idle"], results["faults"]
    lines.append(
        f"faults/idle: cells/s {faults['cells_per_s'] / idle['cells_per_s']:.2f}x, "
        f"p50 {faults['good_p50_ms'] / idle['good_p50_ms']:.2f}x, p99 {faults['good_p99_ms'] / idle['good_p99_ms']:.2f}x"
    )
    lines.append("faulty cells: " + ", ".join(f"{k} {v}" for k, v in faults["faults"].items()))
    lines.append("statuses: " + ", ".join(f"{k} {v}" for k, v in faults["statuses"].items()))
    lines.append(
        f"backend RSS: {results['rss_after_warmup_mib']:.1f} MiB after the warm-up, "
        f"{results['rss_after_run_mib']:.1f} MiB after the run ({results['rss_growth_mib']:+.1f} MiB, "
        f"bound {c['rss_bound_mib']} MiB; after malloc_trim); untrimmed "
        f"{results['rss_untrimmed_mib']['after_warmup']:.1f} -> {results['rss_untrimmed_mib']['after_run']:.1f} MiB"
    )
    failures = results["failures"]
    lines.append("PASS" if not failures else f"FAIL ({len(failures)}):\n  " + "\n  ".join(failures[:50]))
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--cells", type=int, default=10_000, help="cells of the faults phase, all sessions together")
    parser.add_argument("--threads", type=int, default=8, help="driver threads (the asyncio loop comes on top)")
    parser.add_argument("--fault-rate", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rss-bound-mib", type=float, default=16.0, help="allowed RSS growth after the warm-up")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    results = soak(
        sessions=args.sessions,
        cells=args.cells,
        threads=args.threads,
        fault_rate=args.fault_rate,
        seed=args.seed,
        rss_bound_mib=args.rss_bound_mib,
    )
    print(summary(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
