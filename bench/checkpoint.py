#!/usr/bin/env python3
"""Checkpoint and restore benchmarks (issue 10, item 1): sizes and times as ratios to an
in-process pickle of the same objects, measured in the same run.

For each namespace (built by the same code in a sandbox_exec session and in this process):

- ``df200k``: a 200,000-row pandas DataFrame (int64, float64 and a string column);
- ``array100mb``: a 100 MB numpy float64 array (12.5 M values);
- ``objects100k``: a dict of 100,000 small dicts (many small Python objects).

And ``per_cell``: the cell ``x += 1`` (three small variables in the namespace) through a
session with ``Policy(checkpoint="after_cell")`` and one without, interleaved, 100 each.

Per round, interleaved: ``pickle.dumps(namespace, protocol=5)`` here (the reference), then
``Session.checkpoint()`` (the backend's wall clock: the call, the pickle in the worker, the
sha256, the write, fsync and rename, the report); ``pickle.loads`` here, then
``Session.restore()`` (the checks, the sha256 pass, the unpickle from the file, the update).
Then ``Session.checkpoint()`` once more without a change (pickled, found equal to the
checkpoint by its sha256, nothing written: ``unchanged``). Each round first changes one
small variable (``round_``), so that the timed checkpoint is written. Reported: medians, and the ratios of the medians (checkpoint / dumps, restore / loads,
checkpoint bytes / pickle bytes). The worker's own ``duration_s`` is shown beside the wall
clock. A first checkpoint and restore per session (loading the worker's module) is not timed.

Usage:

    .venv/bin/python bench/checkpoint.py                      # 5 rounds (~1-2 min on 2 CPUs)
    .venv/bin/python bench/checkpoint.py --quick              # 2 rounds, smaller objects
    .venv/bin/python bench/checkpoint.py --json bench/results/checkpoint-latest.json
"""

from __future__ import annotations

import argparse
import json
import pickle
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

import sandbox_exec

SHAPES: dict[str, str] = {
    "df200k": (
        "import numpy as np, pandas as pd\n"
        "rng = np.random.default_rng(0)\n"
        "df = pd.DataFrame({'i': np.arange(N), 'f': rng.random(N), 's': [f'row-{k}' for k in range(N)]})\n"
        "del rng\n"
    ),
    "array100mb": "import numpy as np\narr = np.random.default_rng(0).random(N)\n",
    "objects100k": "objs = {k: {'a': k, 'b': str(k), 'c': [k, k + 1]} for k in range(N)}\n",
}
SIZES = {"df200k": 200_000, "array100mb": 12_500_000, "objects100k": 100_000}
QUICK_SIZES = {"df200k": 20_000, "array100mb": 1_250_000, "objects100k": 10_000}


def build_here(code: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(code, namespace)
    return {k: v for k, v in namespace.items() if not k.startswith("__") and not isinstance(v, types.ModuleType)}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def bench_shape(box: sandbox_exec.Sandbox, shape: str, n: int, rounds: int) -> dict[str, Any]:
    code = f"N = {n}\n" + SHAPES[shape]
    here = build_here(code)
    here.pop("N", None)
    s = box.session(f"bench-{shape}")
    try:
        r = s.run(code + "del N")
        assert r.status == "ok", r.error
        s.checkpoint()  # warm-up: the worker's module, the state directory
        s.restore()
        samples: dict[str, list[float]] = {
            k: [] for k in ("dumps", "loads", "checkpoint", "restore", "ck_worker", "rs_worker", "unchanged")
        }
        size_ref = size_ck = 0
        for i in range(rounds):
            # A changed namespace each round (else the checkpoint finds it unchanged: no write).
            assert s.run(f"round_ = {i}").status == "ok"
            here["round_"] = i
            t = time.perf_counter()
            data = pickle.dumps(here, protocol=5)
            samples["dumps"].append(time.perf_counter() - t)
            size_ref = len(data)
            t = time.perf_counter()
            report = s.checkpoint()
            samples["checkpoint"].append(time.perf_counter() - t)
            samples["ck_worker"].append(report["duration_s"])
            size_ck = report["bytes"]
            assert not report["unchanged"], report
            t = time.perf_counter()
            report = s.checkpoint()  # the same namespace again: pickled, compared, not written
            samples["unchanged"].append(time.perf_counter() - t)
            assert report["unchanged"], report
            assert sorted(report["saved"]) == sorted(here), report
            t = time.perf_counter()
            pickle.loads(data)
            samples["loads"].append(time.perf_counter() - t)
            del data
            t = time.perf_counter()
            restored = s.restore()
            samples["restore"].append(time.perf_counter() - t)
            samples["rs_worker"].append(restored["duration_s"])
    finally:
        s.close(remove_workdir=True)
    med = {k: median(v) for k, v in samples.items()}
    return {
        "shape": shape,
        "n": n,
        "rounds": rounds,
        "pickle_bytes": size_ref,
        "checkpoint_bytes": size_ck,
        "median_s": med,
        "samples_s": samples,
        "ratio_checkpoint_to_dumps": med["checkpoint"] / med["dumps"],
        "ratio_restore_to_loads": med["restore"] / med["loads"],
        "ratio_bytes": size_ck / size_ref,
    }


def bench_per_cell(root: str, cells: int) -> dict[str, Any]:
    """The cost of Policy(checkpoint="after_cell") on a cell: ``x += 1`` in a namespace of a
    few small variables, through a session without and one with it, interleaved."""
    setup = "x = 0\nconfig = {'a': 1, 'b': [1, 2, 3]}\nnames = [str(k) for k in range(100)]\n"
    times: dict[str, list[float]] = {"off": [], "after_cell": []}
    with sandbox_exec.Sandbox(root=root) as box:
        sessions = {
            mode: box.session(f"per-cell-{mode}", policy=sandbox_exec.Policy(checkpoint=mode)) for mode in times
        }
        for s in sessions.values():
            s.run(setup)
            s.run("x += 1")
        for _ in range(cells):
            for mode, s in sessions.items():
                t = time.perf_counter()
                r = s.run("x += 1")
                times[mode].append(time.perf_counter() - t)
                assert r.status == "ok"
        assert sessions["after_cell"].last_checkpoint is not None
        assert sessions["after_cell"].last_checkpoint["saved"] == ["x", "config", "names"]
        for s in sessions.values():
            s.close(remove_workdir=True)
    med = {k: median(v) for k, v in times.items()}
    return {
        "shape": "per_cell",
        "cells": cells,
        "median_s": med,
        "ratio_after_cell_to_off": med["after_cell"] / med["off"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="2 rounds, a tenth of the sizes")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--only", help="comma-separated shapes")
    args = parser.parse_args()
    rounds = 2 if args.quick else args.rounds
    sizes = QUICK_SIZES if args.quick else SIZES
    shapes = [x for x in args.only.split(",") if x in SHAPES] if args.only else list(SHAPES)
    policy = sandbox_exec.Policy(disk_bytes=2 << 30, memory_bytes=6 << 30, timeout_s=300)
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-checkpoint-") as root,
        sandbox_exec.Sandbox(policy, root=root) as box,
    ):
        for shape in shapes:
            res = bench_shape(box, shape, sizes[shape], rounds)
            results.append(res)
            m = res["median_s"]
            print(
                f"{shape:12s} pickle {res['pickle_bytes'] / 1e6:8.1f} MB  checkpoint {res['checkpoint_bytes'] / 1e6:8.1f} MB "
                f"(x{res['ratio_bytes']:.4f})\n"
                f"{'':12s} dumps {m['dumps'] * 1e3:8.1f} ms  checkpoint {m['checkpoint'] * 1e3:8.1f} ms "
                f"(worker {m['ck_worker'] * 1e3:8.1f} ms)  x{res['ratio_checkpoint_to_dumps']:.2f}  "
                f"unchanged {m['unchanged'] * 1e3:8.1f} ms  x{m['unchanged'] / m['dumps']:.2f}\n"
                f"{'':12s} loads {m['loads'] * 1e3:8.1f} ms  restore    {m['restore'] * 1e3:8.1f} ms "
                f"(worker {m['rs_worker'] * 1e3:8.1f} ms)  x{res['ratio_restore_to_loads']:.2f}",
                flush=True,
            )
        if not args.only or "per_cell" in args.only:
            res = bench_per_cell(str(Path(root) / "per-cell"), 20 if args.quick else 100)
            results.append(res)
            m = res["median_s"]
            print(
                f"{'per_cell':12s} x += 1: off {m['off'] * 1e3:6.2f} ms  after_cell {m['after_cell'] * 1e3:6.2f} ms  "
                f"x{res['ratio_after_cell_to_off']:.2f}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"python": sys.version, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
