#!/usr/bin/env python3
"""Output benchmarks: stdout floods, a matplotlib figure cell and the backend's memory under a flood.

One run measures, side by side:

1. ``flood``: a cell writing ~100 MB to stdout, in two shapes,
   - ``write64k``: 1600 x ``sys.stdout.write`` of a 64 KiB string (104,857,600 bytes);
   - ``print100``: 1,000,000 x ``print()`` of a 99-character line (100 bytes with the newline),
   through
   - ``sandbox``: a warm ``sandbox_exec`` session with ``Policy(max_output_bytes=1<<30)`` and
                  ``on_output=None``; a sample is the whole ``session.run()`` call (the result's
                  ``stdout`` and its stream output in hand); ``Result.duration_s`` (the C++
                  core's own clock around the cell) is reported beside it;
   - ``exec``:    in-process ``exec()`` under ``contextlib.redirect_stdout(io.StringIO())``,
                  *including* ``buf.getvalue()`` (compile + exec + getvalue);
   - ``jupyter``: an ipykernel through jupyter_client: from ``execute()`` to the iopub
                  ``status: idle``, collecting every iopub ``stream`` message on the way. A
                  smaller flood (20 MB: 320 writes / 200,000 prints): ipykernel is much slower.
   Reported as MB/s (1 MB = 10^6 bytes) at the median time, and the ratios to in-process.
   Target: >= 1 GB/s through sandbox_exec, or >= 50 % of the in-process rate.
2. ``figure``: the cell ``fig, ax = plt.subplots(); ax.plot(range(1000)); `` left open at the
   end of the cell, so that it is published as ``image/png`` (display_data):
   - ``sandbox``: a warm session, matplotlib.pyplot imported by the session's prelude;
   - ``exec``:    the same figure rendered in-process as an inline backend does it:
                  ``plt.subplots`` + ``plot`` + ``fig.canvas.print_figure`` to a BytesIO as png
                  with ``bbox_inches="tight"`` + base64 + ``plt.close``;
   - ``jupyter``: an ipykernel with ``%matplotlib inline`` and pyplot imported, from
                  ``execute()`` to ``status: idle`` (the display_data with the png on the way).
   Warm-up, then interleaved rounds as in roundtrip.py. Target: sandbox p50 within 10 % of exec.
3. ``rss``: the backend's memory under a 1 GB flood with the default 16 MiB output cap:
   a fresh Python subprocess (so that nothing else is in its high-water mark) starts a session,
   runs a small warm-up flood, reads ``getrusage(RUSAGE_SELF).ru_maxrss``, runs the 1 GB flood
   (16,384 x 64 KiB writes, or 10,000,000 x 100-byte prints), reads ru_maxrss again.
   Target: the growth stays below the cap + RSS_SLACK_BYTES (8 MiB).

Usage:

    .venv/bin/python bench/output.py                                   # full run (~30-35 s on 2 CPUs)
    .venv/bin/python bench/output.py --quick                           # CI smoke (~6-10 s)
    .venv/bin/python bench/output.py --json bench/results/output-latest.json
    .venv/bin/python bench/output.py --only flood --shapes write64k     # a section, a shape
    .venv/bin/python bench/output.py --only figure.sandbox,figure.exec  # ids, methods, sections

``--only`` takes sections (``flood``, ``figure``, ``rss``), methods (``sandbox``, ``exec``,
``jupyter``: in flood and figure) or ids (``flood.jupyter``, ``rss.print100``...).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as _dt
import gc
import io
import json
import os
import resource
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.dont_write_bytecode = True  # no bench/__pycache__ from this import
import roundtrip as rt  # noqa: E402 - the shared helpers: stats, retrying imports, Jupyter, machine info

REPO = rt.REPO
MiB = 1 << 20
now_ns = time.perf_counter_ns

# ------------------------------------------------------------------------- the cells
# {count} is filled in; the cell's own names start with _ so they do not look like user data.
SHAPES: dict[str, dict[str, Any]] = {
    "write64k": {
        "label": "sys.stdout.write of 64 KiB",
        "unit_bytes": 65536,
        "per_mb": 16,
        "code": "import sys\n_b = 'x' * 65535 + '\\n'\nfor _ in range({count}):\n    sys.stdout.write(_b)\n",
    },
    "print100": {
        "label": "print() of 100-byte lines",
        "unit_bytes": 100,
        "per_mb": 10_000,
        "code": "_l = 'x' * 99\nfor _ in range({count}):\n    print(_l)\n",
    },
}
FLOOD_METHODS = ("sandbox", "exec", "jupyter")
FIGURE_METHODS = ("sandbox", "exec", "jupyter")
SECTIONS = ("flood", "figure", "rss")
ALL_IDS = [f"flood.{m}" for m in FLOOD_METHODS] + [f"figure.{m}" for m in FIGURE_METHODS] + [f"rss.{s}" for s in SHAPES]

FIGURE_CELL = "fig, ax = plt.subplots(); ax.plot(range(1000)); "
FIGURE_PRELUDE = "import matplotlib\nimport matplotlib.pyplot as plt\n"

TARGET_FLOOD_MB_S = 1000.0  # >= 1 GB/s through sandbox_exec ...
TARGET_FLOOD_FRACTION = 0.5  # ... or >= 50 % of the in-process rate
TARGET_FIGURE_RATIO = 1.10  # sandbox p50 within 10 % of in-process
RSS_CAP_BYTES = 16 * MiB  # the default Policy.max_output_bytes
RSS_SLACK_BYTES = 8 * MiB  # the "small constant" of the target: growth < cap + this
RSS_FLOOD_COUNTS = {"write64k": 16384, "print100": 10_000_000}  # 1 GiB / 1 GB

LABELS = {
    "flood.sandbox": "sandbox_exec session.run",
    "flood.exec": "in-process exec() + StringIO",
    "flood.jupyter": "Jupyter kernel (ipykernel)",
    "figure.sandbox": "sandbox_exec session.run",
    "figure.exec": "in-process render (print_figure + base64)",
    "figure.jupyter": "Jupyter kernel, %matplotlib inline",
}


def flood_code(shape: str, count: int) -> str:
    return SHAPES[shape]["code"].format(count=count)


def flood_bytes(shape: str, count: int) -> int:
    return SHAPES[shape]["unit_bytes"] * count


def mb_s(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1) if seconds > 0 else float("nan")


# --------------------------------------------------------------------- flood methods
class SandboxFlood:
    name = "sandbox"

    def __init__(self) -> None:
        self.box = None

    def setup(self) -> None:
        sandbox_exec = rt.import_with_retry("sandbox_exec")

        def start() -> None:
            box = sandbox_exec.Sandbox(sandbox_exec.Policy(max_output_bytes=1 << 30))
            try:
                self.session = box.session("bench-flood")
                r = self.session.run("1+1")
                if r.status != "ok":
                    raise RuntimeError(f"sandbox_exec: '1+1' ended {r.status}: {r.reason or r.error}")
            except BaseException:
                box.close()
                raise
            self.box = box

        rt.retry("sandbox_exec session start", start)

    def flood(self, code: str, expected: int) -> tuple[int, float | None, bool, str]:
        t0 = now_ns()
        r = self.session.run(code, on_output=None)
        t1 = now_ns()
        streams = [o for o in r.outputs if o["output_type"] == "stream"]
        ok = (
            r.status == "ok"
            and len(r.stdout) == expected
            and r.truncated_bytes == 0
            and len(streams) == 1
            and len(streams[0]["text"]) == expected
        )
        why = (
            ""
            if ok
            else (
                f"status {r.status}, stdout {len(r.stdout)} of {expected} chars, truncated "
                f"{r.truncated_bytes}, {len(streams)} stream outputs"
            )
        )
        return t1 - t0, r.duration_s, ok, why

    def teardown(self) -> None:
        if self.box is not None:
            self.box.close()
            self.box = None


class ExecFlood:
    name = "exec"

    def setup(self) -> None:
        pass

    def flood(self, code: str, expected: int) -> tuple[int, float | None, bool, str]:
        ns: dict[str, Any] = {"__name__": "__main__"}
        t0 = now_ns()
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            exec(compile(code, "<cell>", "exec"), ns)
        text = buf.getvalue()
        t1 = now_ns()
        ok = len(text) == expected
        return t1 - t0, None, ok, "" if ok else f"{len(text)} of {expected} chars"

    def teardown(self) -> None:
        pass


def jupyter_run(kc: Any, code: str, timeout: float = 120.0) -> tuple[int, list[str], list[dict[str, Any]], str | None]:
    """execute() until iopub status idle: (ns, stream texts, display_data contents, error name).
    The shell execute_reply is collected after the clock stops."""
    t0 = now_ns()
    msg_id = kc.execute(code)
    texts: list[str] = []
    displays: list[dict[str, Any]] = []
    error = None
    while True:
        msg = kc.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind = msg["msg_type"]
        if kind == "stream":
            texts.append(msg["content"]["text"])
        elif kind == "display_data":
            displays.append(msg["content"])
        elif kind == "error":
            error = msg["content"]["ename"]
        elif kind == "status" and msg["content"]["execution_state"] == "idle":
            break
    t1 = now_ns()
    while kc.get_shell_msg(timeout=timeout)["parent_header"].get("msg_id") != msg_id:
        pass
    return t1 - t0, texts, displays, error


class JupyterFlood:
    name = "jupyter"

    def __init__(self) -> None:
        self.km = self.kc = None

    def setup(self) -> None:
        self.km, self.kc = rt.start_jupyter()
        if rt.jupyter_execute(self.kc, "1+1") != "2":
            raise RuntimeError("jupyter: 1+1 did not return 2")

    def flood(self, code: str, expected: int) -> tuple[int, float | None, bool, str]:
        ns, texts, _, error = jupyter_run(self.kc, code)
        got = sum(len(t) for t in texts)
        ok = error is None and got == expected
        return ns, None, ok, "" if ok else f"error {error}, {got} of {expected} chars in {len(texts)} messages"

    def teardown(self) -> None:
        rt.stop_jupyter(self.km, self.kc)
        self.km = self.kc = None


def bench_flood(
    methods: list[str], shapes: list[str], mb: int, mb_jupyter: int, reps: int, warmup: int
) -> dict[str, Any]:
    makers = {"sandbox": SandboxFlood, "exec": ExecFlood, "jupyter": JupyterFlood}
    objs = []
    errors: dict[str, str] = {}
    for m in FLOOD_METHODS:
        if m not in methods:
            continue
        o = makers[m]()
        try:
            o.setup()
        except Exception as exc:  # one broken method must not sink the others
            print(f"  {m:8s} FAILED to start: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            errors[f"flood.{m}"] = f"{type(exc).__name__}: {exc}"
            continue
        objs.append(o)
    plan = {}
    for shape in shapes:
        for o in objs:
            size = mb_jupyter if o.name == "jupyter" else mb
            count = size * SHAPES[shape]["per_mb"]
            plan[(shape, o.name)] = (flood_code(shape, count), flood_bytes(shape, count), count)
    times: dict[tuple[str, str], list[int]] = {k: [] for k in plan}
    core: dict[tuple[str, str], list[float]] = {k: [] for k in plan}
    failures: dict[tuple[str, str], int] = {k: 0 for k in plan}
    try:
        for rep in range(warmup + reps):
            # interleaved: every repetition runs every (shape, method) once
            for shape in shapes:
                for o in objs:
                    code, expected, _ = plan[(shape, o.name)]
                    gc.collect()
                    ns, core_s, ok, why = o.flood(code, expected)
                    gc.collect()
                    if not ok:
                        print(f"  [{o.name} {shape}: wrong output: {why}]", file=sys.stderr, flush=True)
                    if rep >= warmup:
                        times[(shape, o.name)].append(ns)
                        if core_s is not None:
                            core[(shape, o.name)].append(core_s)
                        failures[(shape, o.name)] += not ok
            print(f"  repetition {rep + 1}/{warmup + reps}{' (warm-up)' if rep < warmup else ''} done", flush=True)
    finally:
        for o in objs:
            try:
                o.teardown()
            except Exception as exc:
                print(f"  [teardown of {o.name} failed: {exc}]", file=sys.stderr)
    out: dict[str, Any] = {}
    for shape in shapes:
        rows: dict[str, Any] = {}
        for o in objs:
            _, nbytes, count = plan[(shape, o.name)]
            t = sorted(times[(shape, o.name)])
            if not t:
                continue
            p50_s = rt.percentile(t, 50) / 1e9
            row = {
                "label": LABELS[f"flood.{o.name}"],
                "count": count,
                "bytes": nbytes,
                "n": len(t),
                "failures": failures[(shape, o.name)],
                "time_s": {"p50": round(p50_s, 4), "min": round(t[0] / 1e9, 4), "max": round(t[-1] / 1e9, 4)},
                "mb_s": mb_s(nbytes, p50_s),
                "mb_s_best": mb_s(nbytes, t[0] / 1e9),
                "mb_s_each": [mb_s(nbytes, x / 1e9) for x in times[(shape, o.name)]],
            }
            c = sorted(core[(shape, o.name)])
            if c:
                core_p50 = rt.percentile(c, 50)  # type: ignore[arg-type]
                row["core_time_s_p50"] = round(core_p50, 4)
                row["core_mb_s"] = mb_s(nbytes, core_p50)
            rows[o.name] = row
        ratios = {}
        if "sandbox" in rows and "exec" in rows:
            ratios["sandbox/exec"] = round(rows["sandbox"]["mb_s"] / rows["exec"]["mb_s"], 3)
        if "jupyter" in rows and "exec" in rows:
            ratios["jupyter/exec"] = round(rows["jupyter"]["mb_s"] / rows["exec"]["mb_s"], 3)
        if "sandbox" in rows and "jupyter" in rows:
            ratios["sandbox/jupyter"] = round(rows["sandbox"]["mb_s"] / rows["jupyter"]["mb_s"], 2)
        target = None
        if "sandbox" in rows:
            fast = rows["sandbox"]["mb_s"] >= TARGET_FLOOD_MB_S
            frac = ratios.get("sandbox/exec")
            target = {
                "mb_s_min": TARGET_FLOOD_MB_S,
                "fraction_of_exec_min": TARGET_FLOOD_FRACTION,
                "measured_mb_s": rows["sandbox"]["mb_s"],
                "measured_fraction_of_exec": frac,
                "met": bool(fast or (frac is not None and frac >= TARGET_FLOOD_FRACTION)),
            }
        out[shape] = {"label": SHAPES[shape]["label"], "methods": rows, "ratios": ratios, "target": target}
    if errors:
        out["_errors"] = errors
    return out


# -------------------------------------------------------------------- figure methods
def _one_png(outputs: list[dict[str, Any]]) -> int:
    """The base64 length of the one image/png among display_data outputs, else -1."""
    pngs = [
        o["data"]["image/png"]
        for o in outputs
        if o.get("output_type", "display_data") == "display_data" and "image/png" in o.get("data", {})
    ]
    return len(pngs[0]) if len(pngs) == 1 else -1


class SandboxFigure:
    name = "sandbox"

    def __init__(self) -> None:
        self.box = None
        self.png_len = 0
        self.core_ns: list[int] = []

    def setup(self) -> None:
        sandbox_exec = rt.import_with_retry("sandbox_exec")

        def start() -> None:
            box = sandbox_exec.Sandbox()
            try:
                self.session = box.session("bench-figure", prelude=FIGURE_PRELUDE)
            except BaseException:
                box.close()
                raise
            self.box = box

        rt.retry("sandbox_exec session start", start)

    def one(self) -> bool:
        r = self.session.run(FIGURE_CELL)
        self.core_ns.append(int(r.duration_s * 1e9))
        self.png_len = _one_png(r.outputs)
        return r.status == "ok" and len(r.outputs) == 1 and self.png_len > 0

    def teardown(self) -> None:
        if self.box is not None:
            self.box.close()
            self.box = None


class ExecFigure:
    """The figure rendered in this process as an inline backend does (IPython's print_figure)."""

    name = "exec"

    def setup(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        self.plt = plt
        self.png_len = 0

    def one(self) -> bool:
        plt = self.plt
        fig, ax = plt.subplots()
        ax.plot(range(1000))
        buf = io.BytesIO()
        fig.canvas.print_figure(
            buf, format="png", bbox_inches="tight", facecolor=fig.get_facecolor(), edgecolor=fig.get_edgecolor()
        )
        bundle = {"image/png": base64.b64encode(buf.getvalue()).decode("ascii"), "text/plain": repr(fig)}
        plt.close(fig)
        self.png_len = len(bundle["image/png"])
        return self.png_len > 0

    def teardown(self) -> None:
        self.plt.close("all")


class JupyterFigure:
    name = "jupyter"

    def __init__(self) -> None:
        self.km = self.kc = None
        self.png_len = 0

    def setup(self) -> None:
        self.km, self.kc = rt.start_jupyter()
        _, _, _, error = jupyter_run(self.kc, "%matplotlib inline\n" + FIGURE_PRELUDE)
        if error:
            raise RuntimeError(f"jupyter: the prelude raised {error}")

    def one(self) -> bool:
        _, _, displays, error = jupyter_run(self.kc, FIGURE_CELL)
        self.png_len = _one_png(displays)
        return error is None and self.png_len > 0

    def teardown(self) -> None:
        rt.stop_jupyter(self.km, self.kc)
        self.km = self.kc = None


def bench_figure(methods: list[str], n: int, rounds: int, warmup: int) -> dict[str, Any]:
    makers = {"sandbox": SandboxFigure, "exec": ExecFigure, "jupyter": JupyterFigure}
    objs = [makers[m]() for m in FIGURE_METHODS if m in methods]
    m = rt.measure_interleaved(objs, {o.name: n for o in objs}, {o.name: warmup for o in objs}, rounds, "figure")
    out: dict[str, Any] = {"cell": FIGURE_CELL, "methods": {}}
    for o in m["objs"]:
        r = rt.summarize(m["samples"][o.name], "ms")
        r.update(
            failures=m["failures"][o.name],
            label=LABELS[f"figure.{o.name}"],
            round_p50_ms=[round(x / 1e3, 2) for x in m["round_p50"][o.name]],  # (round_p50 is in µs)
            png_base64_chars=o.png_len,
        )
        if isinstance(o, SandboxFigure) and o.core_ns:
            r["core_run_cell"] = rt.summarize(o.core_ns[-len(m["samples"][o.name]) :], "ms")
        out["methods"][o.name] = r
    rows = out["methods"]
    ratios = {}
    for a, b in (("sandbox", "exec"), ("jupyter", "exec"), ("jupyter", "sandbox")):
        if a in rows and b in rows:
            ratios[f"{a}/{b}"] = {k: rt.ratio(rows[a], rows[b], k) for k in ("p50", "p90", "mean")}
    out["ratios"] = ratios
    if "sandbox" in rows and "exec" in rows:
        rr = ratios["sandbox/exec"]["p50"]
        out["target"] = {
            "ratio_max": TARGET_FIGURE_RATIO,
            "measured_ratio": rr,
            "met": rr is not None and rr <= TARGET_FIGURE_RATIO,
        }
    if m["errors"]:
        out["_errors"] = m["errors"]
    return out


# ------------------------------------------------------------------------------ rss
def _rss_now() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return -1


def _maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _vmhwm() -> int:
    """The peak RSS of this process image (/proc/self/status VmHWM), a cross-check of ru_maxrss."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return -1


def rss_child(shape: str, count: int, cap: int) -> int:
    """In a fresh interpreter: the backend's ru_maxrss before and after one flood. Prints JSON."""
    at_start = _maxrss()
    sandbox_exec = rt.import_with_retry("sandbox_exec")
    box = rt.retry("sandbox_exec.Sandbox()", lambda: sandbox_exec.Sandbox(sandbox_exec.Policy(max_output_bytes=cap)))
    try:
        s = rt.retry("session start", lambda: box.session("bench-rss"))
        warm = s.run(flood_code("write64k", 16))  # 1 MiB: the output path once, well under the cap
        assert warm.status == "ok", warm
        del warm
        gc.collect()
        before, hwm_before, rss_before = _maxrss(), _vmhwm(), _rss_now()
        t0 = time.perf_counter()
        r = s.run(flood_code(shape, count))
        elapsed = time.perf_counter() - t0
        after, hwm_after, rss_after = _maxrss(), _vmhwm(), _rss_now()
        doc = {
            "shape": shape,
            "count": count,
            "bytes_written": flood_bytes(shape, count),
            "cap_bytes": cap,
            "maxrss_at_start": at_start,
            "maxrss_before": before,
            "maxrss_after": after,
            "growth_bytes": after - before,
            "vmhwm_before": hwm_before,
            "vmhwm_after": hwm_after,
            "rss_before": rss_before,
            "rss_after_with_result": rss_after,
            "status": r.status,
            "stdout_chars": len(r.stdout),
            "truncated_bytes": r.truncated_bytes,
            "elapsed_s": round(elapsed, 3),
            "duration_s": round(r.duration_s, 3),
            "worker_peak_memory_bytes": r.peak_memory_bytes,
            "marker": next(
                (o["text"].strip() for o in r.outputs if o["output_type"] == "stream" and o["name"] == "stderr"), None
            ),
        }
    finally:
        box.close()
    print(json.dumps(doc))
    return 0


def bench_rss(shapes: list[str], cap: int, counts: dict[str, int]) -> dict[str, Any]:
    out: dict[str, Any] = {"cap_bytes": cap, "slack_bytes": RSS_SLACK_BYTES, "shapes": {}}
    errors: dict[str, str] = {}
    for shape in shapes:
        # Through /bin/sh, which forks the interpreter: Linux carries ru_maxrss across execve()
        # (and a vfork()ed child's is its parent's peak), so a child spawned straight from this
        # harness would start with the harness's ~100 MB as its high-water mark and hide any
        # growth below it. The "; exit $?" keeps sh from exec()ing the command in its place.
        cmd = [
            "/bin/sh",
            "-c",
            '"$@"; exit $?',
            "sh",
            sys.executable,
            str(Path(__file__).resolve()),
            "--rss-child",
            shape,
            str(counts[shape]),
            str(cap),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"exit {proc.returncode}: {proc.stderr.strip()[-2000:]}")
            doc = json.loads(proc.stdout.strip().splitlines()[-1])
        except Exception as exc:
            print(f"  rss {shape} FAILED: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            errors[f"rss.{shape}"] = f"{type(exc).__name__}: {exc}"
            continue
        if doc["maxrss_at_start"] > 64 * MiB:
            print(
                f"  [rss {shape}: the child started with ru_maxrss {doc['maxrss_at_start'] / MiB:.0f} MiB: "
                "inherited, the figure is not clean]",
                file=sys.stderr,
            )
        doc["limit_bytes"] = cap + RSS_SLACK_BYTES
        doc["met"] = doc["growth_bytes"] < doc["limit_bytes"] and doc["status"] == "ok"
        out["shapes"][shape] = doc
        print(
            f"  {shape}: {doc['bytes_written'] / 1e9:.2f} GB in {doc['elapsed_s']:.2f} s, "
            f"ru_maxrss +{doc['growth_bytes'] / MiB:.1f} MiB",
            flush=True,
        )
    if out["shapes"]:
        out["met"] = all(d["met"] for d in out["shapes"].values())
    if errors:
        out["_errors"] = errors
    return out


# --------------------------------------------------------------------------- report
def print_report(flood: dict[str, Any], figure: dict[str, Any], rss: dict[str, Any]) -> None:
    for shape, f in flood.items():
        rows = f["methods"]
        if not rows:
            continue
        print(f"\nFlood: {shape} ({f['label']}); MB = 10^6 bytes; times are medians of n")
        head = f"{'method':38s} {'bytes':>11s} {'n':>3s} {'time p50':>10s} {'MB/s p50':>9s} {'MB/s best':>9s}  fail"
        print(head + "\n" + "-" * len(head))
        for name, r in rows.items():
            print(
                f"{name + ' ' + r['label']:38.38s} {r['bytes']:11d} {r['n']:3d} {r['time_s']['p50'] * 1e3:8.1f} ms "
                f"{r['mb_s']:9.0f} {r['mb_s_best']:9.0f}  {r['failures']:4d}"
            )
            if "core_mb_s" in r:
                print(
                    f"{'  (core clock, Result.duration_s)':38s} {'':11s} {'':3s} {r['core_time_s_p50'] * 1e3:8.1f} ms "
                    f"{r['core_mb_s']:9.0f}"
                )
        if f["ratios"]:
            print("  throughput ratios: " + ", ".join(f"{k} {v:g}x" for k, v in f["ratios"].items()))
        t = f.get("target")
        if t:
            frac = t["measured_fraction_of_exec"]
            print(
                f"  Target >= {t['mb_s_min']:g} MB/s or >= {t['fraction_of_exec_min']:.0%} of in-process: "
                f"{t['measured_mb_s']:.0f} MB/s, "
                + (f"{frac:.0%} of in-process" if frac is not None else "in-process not measured")
                + f" -> {'MET' if t['met'] else 'NOT MET'}"
            )
    rows = (figure or {}).get("methods") or {}
    if rows:
        print(f"\nFigure cell {FIGURE_CELL!r} (published as image/png)")
        head = (
            f"{'method':48s} {'n':>4s} {'p50 ms':>8s} {'p90 ms':>8s} {'p99 ms':>8s} {'mean ms':>8s} {'min ms':>8s}"
            f" {'png b64':>8s}  fail"
        )
        print(head + "\n" + "-" * len(head))
        for name, r in rows.items():
            print(
                f"{name + ' ' + r['label']:48.48s} {r['n']:4d} "
                + " ".join(f"{r[k]:8.2f}" for k in ("p50", "p90", "p99", "mean", "min"))
                + f" {r['png_base64_chars']:8d}  {r['failures']:4d}"
            )
        if "sandbox" in rows and "core_run_cell" in rows["sandbox"]:
            print(
                f"  (sandbox: the core's run_cell clock, Result.duration_s: p50 {rows['sandbox']['core_run_cell']['p50']:.2f} ms)"
            )
        print(
            "  p50 of each interleaved round (ms): "
            + "; ".join(f"{name} " + " ".join(f"{x:.1f}" for x in r["round_p50_ms"]) for name, r in rows.items())
        )
        for k, v in figure["ratios"].items():
            print(f"  {k}: p50 {v['p50']:g}x, p90 {v['p90']:g}x, mean {v['mean']:g}x")
        t = figure.get("target")
        if t:
            print(
                f"  Target: sandbox p50 within {TARGET_FIGURE_RATIO - 1:.0%} of in-process: ratio {t['measured_ratio']:g} "
                f"-> {'MET' if t['met'] else 'NOT MET'}"
            )
    shapes = (rss or {}).get("shapes") or {}
    if shapes:
        print(f"\nBackend memory under a flood, cap {rss['cap_bytes'] / MiB:g} MiB (fresh subprocess each; ru_maxrss)")
        head = f"{'shape':10s} {'written':>9s} {'maxrss before':>14s} {'after':>10s} {'growth':>10s} {'limit':>10s} {'time':>7s}  status"
        print(head + "\n" + "-" * len(head))
        for shape, d in shapes.items():
            print(
                f"{shape:10s} {d['bytes_written'] / 1e9:7.2f}GB {d['maxrss_before'] / MiB:10.1f} MiB "
                f"{d['maxrss_after'] / MiB:6.1f} MiB {d['growth_bytes'] / MiB:6.1f} MiB {d['limit_bytes'] / MiB:6.1f} MiB "
                f"{d['elapsed_s']:6.2f}s  {d['status']}, {'MET' if d['met'] else 'NOT MET'}"
            )
        print(
            f"  Target: ru_maxrss growth < cap + {RSS_SLACK_BYTES / MiB:g} MiB -> {'MET' if rss.get('met') else 'NOT MET'}"
        )


def machine_info() -> dict[str, Any]:
    info = rt.machine_info()
    from importlib import metadata

    for dist in ("matplotlib", "matplotlib-inline", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info["versions"][dist] = metadata.version(dist)
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--rss-child"]:
        return rss_child(argv[1], int(argv[2]), int(argv[3]))
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="small sizes and N (a CI smoke run)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    p.add_argument(
        "--only",
        metavar="NAME",
        action="append",
        default=[],
        help="sections (flood, figure, rss), methods (sandbox, exec, jupyter) or ids (flood.jupyter, "
        "rss.print100); comma-separated or repeated",
    )
    p.add_argument("--shapes", default=",".join(SHAPES), help="flood shapes for flood and rss (default: all)")
    p.add_argument("--flood-mb", type=int, help="nominal MB per flood for sandbox/exec (default 100; --quick 10)")
    p.add_argument("--flood-mb-jupyter", type=int, help="nominal MB per flood for jupyter (default 20; --quick 2)")
    p.add_argument("--flood-reps", type=int, help="measured floods per shape and method (default 5; --quick 2)")
    p.add_argument("--n-figure", type=int, help="figure cells per method (default 100; --quick 10)")
    p.add_argument("--rounds", type=int, help="interleaved rounds of the figure methods (default 5; --quick 2)")
    args = p.parse_args(argv)

    q = args.quick
    mb = args.flood_mb or (10 if q else 100)
    mb_jupyter = args.flood_mb_jupyter or (2 if q else 20)
    reps = args.flood_reps or (2 if q else 5)
    flood_warmup = 0 if q else 1
    n_figure = args.n_figure or (10 if q else 100)
    rounds = max(1, args.rounds or (2 if q else 5))
    fig_warmup = 2 if q else 5
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    if any(s not in SHAPES for s in shapes):
        p.error(f"--shapes: choose from {', '.join(SHAPES)}")
    rss_shapes = [s for s in shapes if s == "write64k"] if q else shapes  # quick: the fast shape only

    tokens = [t.strip() for spec in args.only for t in spec.split(",") if t.strip()]
    known = set(ALL_IDS) | set(SECTIONS) | set(FLOOD_METHODS) | set(SHAPES)
    bad = [t for t in tokens if t not in known]
    if bad:
        p.error(f"--only: unknown name(s) {', '.join(bad)}; choose from {', '.join(sorted(known))}")
    selected = [i for i in ALL_IDS if not tokens or any(t in (i, *i.split(".")) for t in tokens)]
    flood_methods = [i.split(".")[1] for i in selected if i.startswith("flood.")]
    figure_methods = [i.split(".")[1] for i in selected if i.startswith("figure.")]
    rss_shapes = [s for s in rss_shapes if f"rss.{s}" in selected]

    info = machine_info()
    print(f"sandbox_exec output benchmark  {_dt.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"  {info['cpus']} x {info['cpu_model']}, {info['os']}, Linux {info['kernel']}, "
        f"Python {info['versions']['python']}, load {info['loadavg_start']}, git {info['git']}"
    )
    print(
        f"  flood {mb} MB (jupyter {mb_jupyter} MB) x {reps} (+{flood_warmup} warm-up) per shape and method; "
        f"figure n={n_figure} in {rounds} rounds after {fig_warmup} warm-ups; rss 1 GB, cap {RSS_CAP_BYTES // MiB} MiB"
    )

    t_begin = time.perf_counter()
    errors: dict[str, str] = {}
    flood: dict[str, Any] = {}
    figure: dict[str, Any] = {}
    rss: dict[str, Any] = {}
    if flood_methods and shapes:
        print("\n[flood]", flush=True)
        try:
            flood = bench_flood(flood_methods, shapes, mb, mb_jupyter, reps, flood_warmup)
            errors.update(flood.pop("_errors", {}))
        except Exception as exc:
            traceback.print_exc()
            errors["flood"] = f"{type(exc).__name__}: {exc}"
    if figure_methods:
        print("\n[figure]", flush=True)
        try:
            figure = bench_figure(figure_methods, n_figure, rounds, fig_warmup)
            errors.update(figure.pop("_errors", {}))
        except Exception as exc:
            traceback.print_exc()
            errors["figure"] = f"{type(exc).__name__}: {exc}"
    if rss_shapes:
        print("\n[rss]", flush=True)
        try:
            rss = bench_rss(rss_shapes, RSS_CAP_BYTES, RSS_FLOOD_COUNTS)
            errors.update(rss.pop("_errors", {}))
        except Exception as exc:
            traceback.print_exc()
            errors["rss"] = f"{type(exc).__name__}: {exc}"
    elapsed = time.perf_counter() - t_begin
    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]

    print_report(flood, figure, rss)
    targets = {
        "flood": {s: f["target"] for s, f in flood.items() if f.get("target")},
        "figure": figure.get("target"),
        "rss": {
            "met": rss["met"],
            "cap_bytes": rss["cap_bytes"],
            "slack_bytes": rss["slack_bytes"],
            "growth_bytes": {s: d["growth_bytes"] for s, d in rss["shapes"].items()},
        }
        if "met" in rss
        else None,
    }
    if q:
        print(
            "\n(--quick: a smoke run. 10 MB floods without warm-up and 10 figure cells are too small for "
            "the targets' verdicts above to mean anything; use a full run.)"
        )
    print(f"\ntotal {elapsed:.1f} s; load average at the end {info['loadavg_end']}")
    for where, msg in errors.items():
        print(f"ERROR in {where}: {msg}", file=sys.stderr)

    if args.json:
        doc = {
            "schema": 1,
            "kind": "output",
            "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": info,
            "config": {
                "quick": q,
                "flood_mb": mb,
                "flood_mb_jupyter": mb_jupyter,
                "flood_reps": reps,
                "flood_warmup": flood_warmup,
                "shapes": shapes,
                "n_figure": n_figure,
                "rounds": rounds,
                "figure_warmup": fig_warmup,
                "rss_shapes": rss_shapes,
                "rss_counts": RSS_FLOOD_COUNTS,
                "only": tokens,
                "argv": argv,
            },
            "elapsed_s": round(elapsed, 1),
            "flood": flood,
            "figure": figure,
            "rss": rss,
            "targets": targets,
            "errors": errors,
        }
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"wrote {path}")
    failed = any(r.get("failures") for f in flood.values() for r in f["methods"].values())
    failed |= any(r.get("failures") for r in (figure.get("methods") or {}).values())
    failed |= any(d["status"] != "ok" for d in (rss.get("shapes") or {}).values())
    return 1 if errors or failed else 0


if __name__ == "__main__":
    sys.exit(main())
