#!/usr/bin/env python3
"""Session.reset() against Session.restart() (issue 10, item 5), measured in one run.

Prelude P = ``import numpy as np, pandas as pd`` (the data stack a notebook service preloads).
Before each measured operation a cell fills the namespace (a 1,000,000-element numpy array, a
100,000-row DataFrame, 1,000 small objects), then, interleaved round by round:

* ``reset``: ``Session.reset()`` (keep_prelude=True) in a warm session, and in a cold one;
  ``reset cold, first``: the first reset of a cold interpreter (right after its restart: its
  collection walks the whole heap once, then freezes it, as a zygote has frozen a warm one's);
* ``restart warm``: ``Session.restart()`` in a ``Sandbox(warm=True)`` (a fork of P's zygote)
  followed by its first cell ``1+1`` (a restart is lazy: the interpreter is ready then);
* ``restart cold``: the same in a ``Sandbox(warm=False)`` (a new interpreter runs P);
* the reference: a ``1+1`` cell in the same warm session (one round trip).

Every figure is reported with its ratio to ``restart warm``'s and to the round trip's median
of the same run (the machine is shared: absolute times are noisy). Usage:

    .venv/bin/python bench/reset.py [--rounds 15] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid

import sandbox_exec

PRELUDE = "import numpy as np\nimport pandas as pd\n"
FILL = (
    "big = np.arange(1_000_000, dtype=float)\n"
    "df = pd.DataFrame({'a': range(100_000), 'b': 1.5})\n"
    "objs = [{'i': i} for i in range(1000)]\n"
)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--json")
    args = ap.parse_args()
    times: dict[str, list[float]] = {
        k: [] for k in ("reset warm", "reset cold", "reset cold, first", "restart warm", "restart cold", "1+1")
    }
    with sandbox_exec.Sandbox(warm=True) as warm_box, sandbox_exec.Sandbox(warm=False) as cold_box:
        warm = warm_box.session(f"w-{uuid.uuid4().hex[:6]}", prelude=PRELUDE)
        warm2 = warm_box.session(f"w2-{uuid.uuid4().hex[:6]}", prelude=PRELUDE)
        cold = cold_box.session(f"c-{uuid.uuid4().hex[:6]}", prelude=PRELUDE)
        cold2 = cold_box.session(f"c2-{uuid.uuid4().hex[:6]}", prelude=PRELUDE)
        assert "warm" in warm.enforcement["start"] and "cold" in cold.enforcement["start"]
        for _ in range(args.rounds):
            for label, session, op in (
                ("reset warm", warm, lambda s: s.reset()),
                ("reset cold", cold, lambda s: s.reset()),
                ("restart warm", warm2, lambda s: (s.restart(), s.run("1+1"))),
                ("restart cold", cold2, lambda s: (s.restart(), s.run("1+1"))),
                ("reset cold, first", cold2, lambda s: s.reset()),
            ):
                assert session.run(FILL).status == "ok"
                t = time.perf_counter()
                op(session)
                times[label].append(time.perf_counter() - t)
                r = session.run("'big' in dir()")
                assert r.outputs[0]["data"]["text/plain"] == "False", label
            t = time.perf_counter()
            warm.run("1+1")
            times["1+1"].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {
        k: {
            "p50_ms": _ms(med[k]),
            "min_ms": _ms(min(v)),
            "max_ms": _ms(max(v)),
            "vs_restart_warm": round(med[k] / med["restart warm"], 4),
            "vs_roundtrip": round(med[k] / med["1+1"], 2),
        }
        for k, v in times.items()
    }
    for k, row in out.items():
        print(
            f"{k:17s} p50 {row['p50_ms']:9.2f} ms  (min {row['min_ms']:.2f}, max {row['max_ms']:.2f})  "
            f"x{row['vs_restart_warm']:.4f} of restart warm, x{row['vs_roundtrip']:.1f} of a 1+1 round trip"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "prelude": PRELUDE, "fill": FILL, "results": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
