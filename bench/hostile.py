#!/usr/bin/env python3
"""A bystander's latency while a hostile session attacks the backend's side.

One Sandbox, two sessions. The bystander runs ``1+1`` in a loop; its round trip (p50, p90,
p99, max) is measured

- ``idle``:   while the hostile session sits idle (the reference of this run);
- ``shapes``: while the hostile session sends, as fast as it can, the worst message shapes it
              has (millions of empty nested lists, 5000-deep arrays, floods of floats and of
              short strings, one-character non-Latin-1 strings, records, small lists of floats:
              each up to ~4.5 MB,
              inside a 64 MiB output cap) straight onto its channel;
- ``bell``:   while the hostile session rings its event doorbell without sending frames.

It also prints the hostile messages' fate (how many were rejected as markers) and the backend
process's CPU seconds per wall second during each phase, and each phase's p99 as a ratio to
the idle p99. Before the boundary was closed, a bystander's ``6*7`` waited 11-27 s behind one
nested-list message and doorbell spam cost the backend ~0.99 CPU-s/s.

    .venv/bin/python bench/hostile.py [--seconds 8] [--json bench/results/hostile-latest.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import threading
import time

import sandbox_exec

FIND_CHANNEL = (
    "import gc\n"
    "channel = next(o for o in gc.get_objects() if type(o).__name__ == 'Channel' and hasattr(o, '_chan'))._chan\n"
)


def _display(inner: str) -> str:
    return 'b\'{"output_type":"display_data","metadata":{},"data":{"application/json":\' + ' + inner + " + b'}}'"


SHAPES = {
    "nested empty lists": _display("b'[' + b'[],' * 1_500_000 + b'[]]'"),
    "deep arrays": _display("b'[' * 5000 + b']' * 5000"),
    "floats": _display("b'[' + b'0.5,' * 1_000_000 + b'0]'"),
    "short strings": _display("b'[' + b'\"ab\",' * 800_000 + b'\"\"]'"),
    "small lists of floats": _display("b'[' + b'[0.5,0.25,0.125],' * 250_000 + b'[]]'"),
    "one-character non-Latin-1 strings": _display("b'[' + '\"\u0100\",'.encode() * 900_000 + b'0]'"),
    "records": _display("b'[' + b'{\"a\":1.5,\"b\":\"xy\"},' * 220_000 + b'{}]'"),
}

HOSTILE_SHAPES = (
    FIND_CHANNEL
    + "msgs = ["
    + ", ".join(SHAPES.values())
    + "]\n"
    + (
        "import time\nend = time.monotonic() + {seconds}\nsent = 0\n"
        "while time.monotonic() < end:\n"
        "    for m in msgs:\n"
        "        channel.send(19, m)\n"
        "        sent += 1\n"
        "sent"
    )
)

HOSTILE_BELL = (
    "import os, time\nend = time.monotonic() + {seconds}\nrung = 0\n"
    "while time.monotonic() < end:\n"
    "    try:\n        os.write(7, b'!')\n        rung += 1\n"
    "    except BlockingIOError:\n        pass\n"
    "rung"
)


def percentiles(samples: list[float]) -> dict[str, float]:
    s = sorted(samples)

    def q(p: float) -> float:
        return s[min(len(s) - 1, int(p * len(s)))]

    return {
        "n": len(s),
        "p50_us": q(0.5) * 1e6,
        "p90_us": q(0.9) * 1e6,
        "p99_us": q(0.99) * 1e6,
        "max_us": s[-1] * 1e6,
        "mean_us": statistics.fmean(s) * 1e6,
    }


def cpu_seconds() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def measure(
    bystander: sandbox_exec.Session | None, hostile: sandbox_exec.Session, code: str | None, seconds: float
) -> dict:
    samples: list[float] = []
    outcome: dict = {}

    def attack() -> None:
        if code is None:
            time.sleep(seconds)
            return
        r = hostile.run(code.replace("{seconds}", repr(seconds)), timeout=seconds + 120)
        outcome["status"] = r.status
        results_ = [o for o in r.outputs if o["output_type"] == "execute_result"]
        outcome["sent"] = int(results_[-1]["data"]["text/plain"]) if results_ else None
        outcome["rejected_markers"] = r.stderr.count("an output was rejected")
        outcome["displays_kept"] = sum(o["output_type"] == "display_data" for o in r.outputs)
        outcome["truncated_bytes"] = r.truncated_bytes

    cpu0, wall0 = cpu_seconds(), time.monotonic()
    thread = threading.Thread(target=attack)
    thread.start()
    time.sleep(0.2)
    while bystander is not None and thread.is_alive():
        t0 = time.perf_counter()
        r = bystander.run("1+1")
        samples.append(time.perf_counter() - t0)
        assert r.outputs[0]["data"]["text/plain"] == "2", r.outputs
    thread.join()
    wall = time.monotonic() - wall0
    result = percentiles(samples) if samples else {}
    result["backend_cpu_per_s"] = (cpu_seconds() - cpu0) / wall
    result.update(outcome)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each phase")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    policy = sandbox_exec.Policy(max_output_bytes=64 << 20, timeout_s=600)
    results: dict = {
        "kind": "hostile",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "machine": platform.node(),
        "python": sys.version.split()[0],
        "seconds": args.seconds,
    }
    with sandbox_exec.Sandbox() as box:
        bystander = box.session("bystander")
        hostile = box.session("hostile", policy=policy)
        for _ in range(200):
            bystander.run("1+1")
        for phase, code in (("idle", None), ("shapes", HOSTILE_SHAPES), ("bell", HOSTILE_BELL)):
            results[phase] = measure(bystander, hostile, code, args.seconds)
            # The backend's own CPU for the attack alone (no bystander loop in the figure).
            results[phase]["backend_cpu_per_s_attack_alone"] = measure(None, hostile, code, args.seconds)[
                "backend_cpu_per_s"
            ]
    idle = results["idle"]["p99_us"]
    print(f"bystander 1+1 round trip while another session attacks ({args.seconds:g} s per phase)")
    print(
        f"{'phase':8} {'n':>7} {'p50 us':>9} {'p99 us':>10} {'max us':>11} {'p99/idle':>9} "
        f"{'backend CPU/s':>14} {'(attack alone)':>15}"
    )
    for phase in ("idle", "shapes", "bell"):
        r = results[phase]
        r["p99_ratio_to_idle"] = r["p99_us"] / idle
        print(
            f"{phase:8} {r['n']:7d} {r['p50_us']:9.0f} {r['p99_us']:10.0f} {r['max_us']:11.0f} "
            f"{r['p99_ratio_to_idle']:9.1f} {r['backend_cpu_per_s']:14.2f} "
            f"{r['backend_cpu_per_s_attack_alone']:15.2f}"
        )
    s = results["shapes"]
    sent = s.get("sent") if s.get("sent") is not None else "? (the count itself was past the cap)"
    print(
        f"hostile messages: {sent} sent, {s.get('rejected_markers')} rejected as markers, "
        f"{s.get('displays_kept')} kept, {s.get('truncated_bytes')} bytes past the cap dropped"
    )
    print(f"doorbell: rung {results['bell'].get('sent')} times")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
