#!/usr/bin/env python3
"""Where a forked session's first figure goes: the pages it touches first (issue 9, diagnostic).

A model of the zygote, without the sandbox: this process loads the figure prelude of
bench/warm_start.py with the sandbox's inline backend, runs the zygote's own warm-up
(``_worker.zygote._warm_up``, font files closed), collects and freezes, then forks children
that run the figure cell. It prints

1. per child: the first figure cell's minor page faults and system/user CPU time against the
   same cell run a third time in that child (medians over the children);
2. in one child: the writable pages that went from shared with the zygote to private in the
   first cell, by what changed in them (compared word by word with the zygote's copy taken
   before the fork): nothing in the end (reference counts raised and dropped), only
   reference counts, other words (new objects in the zygote's free memory, dict and list
   updates, code objects' inline caches); and the pages new to the child.

Linux only; reads /proc/self/pagemap (the present and exclusive bits, no root needed) and
/proc/self/mem. Usage: ``.venv/bin/python bench/first_touch.py [--children N]``.
"""

from __future__ import annotations

import argparse
import builtins
import gc
import json
import os
import resource
import statistics
import struct
import sys
import types
from typing import Any

os.environ["MPLBACKEND"] = "module://sandbox_exec._worker.mpl_backend"

PRELUDE = "import numpy as np, pandas as pd, matplotlib; import matplotlib.pyplot as plt"
FIGURE_CELL = "fig, ax = plt.subplots(); ax.plot(range(1000)); plt.show()"
PAGE = 4096
PRESENT = 1 << 63
EXCLUSIVE = 1 << 56


def _writable_anon() -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split()
            name = parts[5] if len(parts) > 5 else "[anon]"
            if "w" in parts[1] and name in ("[anon]", "[heap]"):
                start, end = (int(x, 16) for x in parts[0].split("-"))
                out.append((start, end))
    return out


def _pagemap(ranges: list[tuple[int, int]]) -> dict[tuple[int, int], tuple[int, ...]]:
    fd = os.open("/proc/self/pagemap", os.O_RDONLY)
    try:
        out = {}
        for start, end in ranges:
            n = (end - start) // PAGE
            out[(start, end)] = struct.unpack(f"{n}Q", os.pread(fd, n * 8, start // PAGE * 8))
        return out
    finally:
        os.close(fd)


def _timed(code: Any, ns: dict[str, Any]) -> tuple[int, float, float]:
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    exec(code, ns)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return r1.ru_minflt - r0.ru_minflt, (r1.ru_stime - r0.ru_stime) * 1e3, (r1.ru_utime - r0.ru_utime) * 1e3


def _in_child(work: Any) -> Any:
    """work() in a forked child; its JSON result."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            os.write(w, json.dumps(work()).encode())
        finally:
            os._exit(0)
    os.close(w)
    chunks = []
    while chunk := os.read(r, 1 << 16):
        chunks.append(chunk)
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--children", type=int, default=9, help="children timed (default 9)")
    args = p.parse_args()

    from sandbox_exec._worker import zygote
    from sandbox_exec._worker.display import format_bundle

    ns: dict[str, Any] = {}
    exec(PRELUDE, ns)
    builtins.display = format_bundle  # type: ignore[attr-defined] - what plt.show() publishes with
    zygote._warm_up()
    zygote._close_font_files()
    code = compile(FIGURE_CELL, "<cell>", "exec")

    # The zygote's memory, word by word, and which words start an object (reference counts).
    gc.collect()
    objects = gc.get_objects()
    starts = {id(o) for o in objects}
    for o in objects:
        starts.update(id(r) for r in gc.get_referents(o))
    # the functions' code objects: Python 3.11 writes its inline caches and counters in them
    codes = {id(o.__code__): sys.getsizeof(o.__code__) for o in objects if isinstance(o, types.FunctionType)}
    del objects
    ranges = _writable_anon()
    copy = {}
    fd = os.open("/proc/self/mem", os.O_RDONLY)
    for start, end in ranges:
        try:
            copy[(start, end)] = os.pread(fd, end - start, start)
        except OSError:
            pass
    os.close(fd)
    gc.collect()
    gc.freeze()

    def first_and_third() -> list[tuple[int, float, float]]:
        return [_timed(code, ns) for _ in range(3)]

    runs = [_in_child(first_and_third) for _ in range(args.children)]

    def med(cell: int, field: int) -> float:
        return float(statistics.median(r[cell][field] for r in runs))

    print(f"figure cell in a forked child, medians of {len(runs)}:")
    for label, cell in (("first", 0), ("third", 2)):
        print(f"  {label}: {med(cell, 0):.0f} minor faults, system {med(cell, 1):.1f} ms, user {med(cell, 2):.1f} ms")

    def rss_anon_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))

    def classify() -> dict[str, int]:
        before = _pagemap(ranges)
        rss_before = rss_anon_kb()
        exec(code, ns)
        rss_after = rss_anon_kb()
        after = _pagemap(ranges)
        kinds = {"unchanged in the end": 0, "reference counts only": 0, "other words": 0}
        code_pages: set[int] = set()
        changed_codes = 0
        mem = os.open("/proc/self/mem", os.O_RDONLY)
        for key in ranges:
            for i, (e0, e1) in enumerate(zip(before[key], after[key])):
                if not (e0 & PRESENT and not e0 & EXCLUSIVE and e1 & EXCLUSIVE) or key not in copy:
                    continue
                address = key[0] + i * PAGE
                old = struct.unpack("512Q", copy[key][i * PAGE : (i + 1) * PAGE])
                new = struct.unpack("512Q", os.pread(mem, PAGE, address))
                changed = [j for j in range(512) if old[j] != new[j]]
                if not changed:
                    kinds["unchanged in the end"] += 1
                elif all(address + j * 8 in starts for j in changed):
                    kinds["reference counts only"] += 1
                else:
                    kinds["other words"] += 1
        copied = {
            (k[0] + i * PAGE) // PAGE
            for k in ranges
            for i, (e0, e1) in enumerate(zip(before[k], after[k]))
            if e0 & PRESENT and not e0 & EXCLUSIVE and e1 & EXCLUSIVE
        }
        for address, size in codes.items():
            key = next((k for k in copy if k[0] <= address < k[1]), None)
            if key is None:
                continue
            offset = address - key[0]
            old_code, new_code = copy[key][offset + 8 : offset + size], os.pread(mem, size - 8, address + 8)
            if old_code != new_code:  # past the reference count
                changed_codes += 1
                code_pages.update((address + 8 + j) // PAGE for j in range(len(new_code)) if old_code[j] != new_code[j])
        os.close(mem)
        kinds["code objects written (past their reference count)"] = changed_codes
        kinds["copied pages with such writes"] = len(code_pages & copied)
        kinds["anonymous pages new to the child (RssAnon growth)"] = (rss_after - rss_before) * 1024 // PAGE
        return kinds

    kinds = _in_child(classify)
    copied = sum(kinds[k] for k in ("unchanged in the end", "reference counts only", "other words"))
    print(f"writable pages of the zygote copied on write by the first figure cell: {copied}, of which")
    for kind, n in kinds.items():
        print(f"  {kind}: {n}")
        if kind == "other words":
            print("and")
    return 0


if __name__ == "__main__":
    sys.exit(main())
