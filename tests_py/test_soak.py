"""Ladder C: the soak with faults (bench/soak.py) in short, and the bugs it found.

The short soak runs the very code of ``bench/soak.py`` (``soak()``) with CI's figures: 12
sessions, 600 cells, about 10% of them faulty, from 4 threads and an asyncio loop at once; it
asserts what the full one asserts (the backend lives, every well-behaved cell's outputs are
exact, nothing is left after close, the backend's RSS stays within its bound).
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import soak  # bench/soak.py

pytestmark = pytest.mark.c


def test_short_soak_with_faults():
    t0 = time.monotonic()
    results = soak.soak(sessions=12, cells=600, threads=4, fault_rate=0.1, seed=11, rss_bound_mib=16)
    print(soak.summary(results))
    assert results["failures"] == [], soak.summary(results)
    faults = results["faults"]
    # control: the run did what it says: every kind of fault, from the threads and the loop
    assert set(faults["faults"]) == set(soak.FAULTS), faults["faults"]
    assert sum(faults["faults"].values()) == 60
    assert faults["good_cells"] == 540 and results["idle"]["good_cells"] == 540
    assert results["config"]["asyncio_sessions"] >= 2
    assert time.monotonic() - t0 < 110


def _result(outputs, *, status="ok", count=1, restarted=False):
    return SimpleNamespace(
        status=status, outputs=outputs, execution_count=count, session_restarted=restarted, reason=None
    )


def test_the_model_catches_a_wrong_lost_or_foreign_output():
    """Control of the soak's own check: outputs that differ in any way are reported."""
    right = soak.expected_outputs("a", 1, 1, 1)
    assert soak.Model("a").check(soak.Cell("good", 1), _result(right), True) == []
    wrong = {
        "from another session": soak.expected_outputs("b", 1, 1, 1),
        "lost": right[:-1],
        "duplicated": right + right[-1:],
        "reordered": [right[1], right[0], *right[2:]],
        "a stale counter": soak.expected_outputs("a", 1, 2, 1),
    }
    for what, outputs in wrong.items():
        assert soak.Model("a").check(soak.Cell("good", 1), _result(outputs), True), what
    # a restart nobody expected (the counter would start again) and a wrong count
    assert soak.Model("a").check(soak.Cell("good", 1), _result(right, restarted=True), True)
    assert soak.Model("a").check(soak.Cell("good", 1), _result(right, count=2), True)
    # a fault with the wrong status, and a crash the interpreter survived
    assert soak.Model("a").check(soak.Cell("segfault"), _result([], status="timeout"), False)
    assert soak.Model("a").check(soak.Cell("segfault"), _result([], status="crashed"), True)


def test_a_segfault_seen_only_after_the_deadline_is_crashed(sandbox):
    """Found by the soak: under load, a cell that segfaulted long before its deadline was
    reported as a timeout, because the supervisor's first look came after the deadline (the
    interrupt was sent to a dead worker, then its end was taken for the deadline's). Here the
    event loop that steps the cell is held past the deadline while the worker dies."""
    s = sandbox.session("late-look")
    try:
        s.run("1")

        async def main():
            async def hold_the_loop():
                # Scheduled before the cell's own task: runs first, once the cell is sent,
                # and the loop steps nothing meanwhile (deadline 0.5 s, grace 2 s).
                time.sleep(1.5)

            holder = asyncio.ensure_future(hold_the_loop())
            r = await s.run_async("import ctypes\nctypes.string_at(0)", timeout=0.5)
            await holder
            return r

        r = asyncio.run(main())
        assert r.duration_s > 0.5  # control: the cell's end was seen after its deadline
        assert r.status == "crashed", (r.status, r.reason)
        assert "SIGSEGV" in r.reason, r.reason
        assert s.run("'fresh'").session_restarted
    finally:
        s.close()
