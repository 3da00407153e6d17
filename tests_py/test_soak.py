"""Ladder C: the soak with faults (bench/soak.py) in short, and the bugs it found.

The short soak runs the very code of ``bench/soak.py`` (``soak()``) with CI's figures: 12
sessions, 600 cells, about 10% of them faulty, from 4 threads and an asyncio loop at once; it
asserts what the full one asserts (the backend lives, every well-behaved cell's outputs are
exact, nothing is left after close, the backend's RSS stays within its bound).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import sandbox_exec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import soak  # bench/soak.py

SOAK = Path(soak.__file__)

pytestmark = pytest.mark.c


def test_short_soak_with_faults(tmp_path):
    # In a process of its own, as a backend is: the RSS bound is about the soak's backend, not
    # about a pytest process that ran hundreds of tests before (measured there: +40 MiB of
    # allocator growth that is not the soak's).
    out = tmp_path / "soak.json"
    argv = ["--sessions", "12", "--cells", "600", "--threads", "4", "--fault-rate", "0.1", "--seed", "11"]
    proc = subprocess.run(
        [sys.executable, str(SOAK), *argv, "--rss-bound-mib", "16", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,  # a hang fails here; the soak bounds each call itself
    )
    print(proc.stdout[-4000:], proc.stderr[-4000:])
    results = json.loads(out.read_text())
    assert results["failures"] == [] and proc.returncode == 0, soak.summary(results)
    faults = results["faults"]
    # control: the run did what it says: every kind of fault, from the threads and the loop
    assert set(faults["faults"]) == set(soak.FAULTS), faults["faults"]
    assert sum(faults["faults"].values()) == 60
    assert faults["good_cells"] == 540 and results["idle"]["good_cells"] == 540
    assert results["config"]["asyncio_sessions"] >= 2


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


def test_a_segfault_seen_only_after_the_deadline_is_crashed(tmp_path):
    """Found by the soak: under load, a cell that segfaulted long before its deadline was
    reported as a timeout, because the supervisor's first look came after the deadline (the
    interrupt was sent to a dead worker, then its end was taken for the deadline's). Here the
    event loop that steps the cell is held past the deadline while the worker dies."""
    # A Sandbox of its own, closed here: the soak's after-close checks in this module see
    # every process below this one, whichever test ran first.
    with sandbox_exec.Sandbox(root=tmp_path / "root") as box:
        s = box.session("late-look")
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


def test_sandbox_close_waits_until_the_kernel_lets_go_of_the_workdir_images(tmp_path):
    """Found by the soak: right after Sandbox.close() of 100 sessions, every session's loop
    device was still attached (to an image close had unmounted and deleted). A lazily
    unmounted filesystem lives on until its last reference goes, which the kernel drops
    asynchronously once the sandbox's processes and mount namespace are gone; close() must
    wait for that. Here a descriptor opened from the host is that last reference, closed
    half a second after close() unmounted the workdir."""
    from conftest import wait_until
    from leftovers import Baseline, leftovers, loop_devices_under, mounts_under
    from sandbox_exec._workdir_image import support

    if not support()[0]:
        pytest.skip(f"no workdir images here: {support()[1]}")
    baseline = Baseline.take()
    root = tmp_path / "root"
    box = sandbox_exec.Sandbox(root=root)
    s = box.session("held")
    assert s.run("open('f', 'w').write('x')").status == "ok"
    assert loop_devices_under(root)  # control: the workdir is an image on a loop device
    fd = os.open(s.workdir / "f", os.O_RDONLY)

    def let_go_later() -> None:
        try:
            wait_until(lambda: not mounts_under(root), timeout=60)  # close() unmounted it
            time.sleep(0.5)
        finally:
            os.close(fd)

    holder = threading.Thread(target=let_go_later)
    holder.start()
    try:
        box.close()
        attached_at_return = loop_devices_under(root)
    finally:
        holder.join()
    assert attached_at_return == []
    assert leftovers(baseline, root) == []  # (no other Sandbox of this module is open now)
