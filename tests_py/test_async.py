"""Session.run_async: a running cell holds no thread. The event loop waits on the
session's doorbell and its worker's pidfd and steps the cell (the core's CellRun); these
tests count the threads an executor would have used, check where on_output runs, and that
deadlines, crashes, cancellation and concurrent callers behave as with run()."""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import threading
import time
import uuid

import pytest

import sandbox_exec
from conftest import record_loop_gaps

pytestmark = pytest.mark.b


class CountingExecutor(concurrent.futures.ThreadPoolExecutor):
    """The loop's default executor, counting the jobs in flight."""

    def __init__(self) -> None:
        super().__init__(max_workers=32)
        self.in_flight = 0
        self.most_in_flight = 0
        self._count_lock = threading.Lock()

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
        def counted():  # type: ignore[no-untyped-def]
            with self._count_lock:
                self.in_flight += 1
                self.most_in_flight = max(self.most_in_flight, self.in_flight)
            try:
                return fn(*args, **kwargs)
            finally:
                with self._count_lock:
                    self.in_flight -= 1

        return super().submit(counted)


def test_running_cells_hold_no_thread(sandbox):
    sessions = [sandbox.session(f"async-{uuid.uuid4().hex[:8]}") for _ in range(4)]
    for s in sessions:
        s.run("0")  # started: the interpreter's start is the only part run in a thread

    async def main() -> tuple[list[sandbox_exec.Result], int, int]:
        executor = CountingExecutor()
        asyncio.get_running_loop().set_default_executor(executor)
        cells = [asyncio.ensure_future(s.run_async("import time\ntime.sleep(1.0)\n'slept'")) for s in sessions]
        await asyncio.sleep(0.5)  # every cell is sleeping in its sandbox now
        during = executor.in_flight
        results = await asyncio.gather(*cells)
        return results, during, executor.most_in_flight

    try:
        results, during, most = asyncio.run(main())
    finally:
        for s in sessions:
            s.close()
    assert [r.outputs[-1]["data"]["text/plain"] for r in results] == ["'slept'"] * 4
    # An executor-based run_async would hold one thread per running cell (4 here).
    assert during == 0
    assert most <= 4  # only the short pre-cell checks, one per session at most at once


def test_outputs_arrive_live_on_the_loops_thread(session):
    async def main() -> tuple[sandbox_exec.Result, list[tuple[int, float, str]], int]:
        seen: list[tuple[int, float, str]] = []
        started = time.monotonic()

        def on_output(event: sandbox_exec.OutputEvent) -> None:
            seen.append((threading.get_ident(), time.monotonic() - started, event["output_type"]))

        r = await session.run_async(
            "import time\nprint('first', flush=True)\ntime.sleep(0.6)\nprint('second')\n'end'", on_output=on_output
        )
        return r, seen, threading.get_ident()

    r, seen, loop_thread = asyncio.run(main())
    assert r.status == "ok" and r.stdout == "first\nsecond\n"
    assert {thread for thread, _, _ in seen} == {loop_thread}
    # Live: the first line came before the cell's pause ended, not with the result.
    first_at = next(at for _, at, kind in seen if kind == "stream")
    assert first_at < r.duration_s - 0.3, (first_at, r.duration_s)


def test_a_deadline_and_a_crash_end_the_cell_as_with_run(new_session):
    s = new_session(sandbox_exec.Policy(interrupt_grace_s=0.3))

    async def main() -> tuple[sandbox_exec.Result, sandbox_exec.Result, sandbox_exec.Result]:
        stubborn = await s.run_async(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(30)", timeout=0.3
        )
        crashed = await s.run_async("import os\nos.abort()")
        after = await s.run_async("'alive again'")
        return stubborn, crashed, after

    stubborn, crashed, after = asyncio.run(main())
    assert stubborn.status == "timeout", stubborn
    assert stubborn.duration_s < 10
    assert crashed.status == "crashed" and "SIGABRT" in (crashed.reason or ""), crashed
    assert after.status == "ok" and after.session_restarted


def test_cancelling_interrupts_the_cell_and_the_session_stays_usable(session):
    async def main() -> tuple[bool, sandbox_exec.Result]:
        cell = asyncio.ensure_future(session.run_async("x = 1\nimport time\ntime.sleep(30)"))
        await asyncio.sleep(0.5)
        cell.cancel()
        cancelled = False
        try:
            await cell
        except asyncio.CancelledError:
            cancelled = True
        # The next cell waits for the interrupted one to end, then runs in the same namespace.
        nxt = await asyncio.wait_for(session.run_async("x + 1"), timeout=10)
        return cancelled, nxt

    cancelled, nxt = asyncio.run(main())
    assert cancelled
    assert nxt.status == "ok" and nxt.outputs[-1]["data"]["text/plain"] == "2"
    assert nxt.execution_count == 2


def test_concurrent_callers_on_one_session_run_one_cell_at_a_time(session):
    async def main() -> list[sandbox_exec.Result]:
        code = "import time\nt0 = time.time()\ntime.sleep(0.3)\n(t0, time.time())"
        return list(await asyncio.gather(*(session.run_async(code) for _ in range(3))))

    results = asyncio.run(main())
    assert sorted(r.execution_count for r in results) == [1, 2, 3]
    spans = sorted(eval(r.outputs[-1]["data"]["text/plain"]) for r in results)  # floats from our own cell
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, spans  # no overlap


def test_sync_run_from_the_loops_thread_while_a_cell_runs_is_refused(session):
    async def main() -> str:
        cell = asyncio.ensure_future(session.run_async("import time\ntime.sleep(0.5)"))
        await asyncio.sleep(0.2)
        try:
            session.run("1")
        except RuntimeError as e:
            message = str(e)
        else:
            message = ""
        await cell
        return message

    assert "running on this thread" in asyncio.run(main())


def test_a_flooding_cell_does_not_starve_the_event_loop(new_session):
    s = new_session(sandbox_exec.Policy(max_output_bytes=256 << 20))

    async def main() -> tuple[sandbox_exec.Result, float, int]:
        gaps: list[float] = []
        t = asyncio.ensure_future(record_loop_gaps(gaps, 0.002))
        await asyncio.sleep(0.01)
        # 50 MiB of output to a listener slower than the cell (0.5 ms per event): the ring
        # is never empty, so the loop must give way between steps (each at most 1 MiB).
        r = await s.run_async(
            "import sys\nfor _ in range(800):\n    sys.stdout.write('x' * 65536)\n",
            on_output=lambda event: time.sleep(0.0005),
        )
        await asyncio.sleep(0.02)  # the ticker records the gap that spans the cell, if any
        t.cancel()
        return r, max(gaps), len(gaps)

    r, worst_gap, ticks = asyncio.run(main())
    assert r.status == "ok" and len(r.stdout) == 800 * 65536
    # A loop held for the whole flood would tick about once, its one gap as long as the cell.
    assert ticks >= 3, (ticks, r.duration_s)
    assert worst_gap < r.duration_s / 2, (worst_gap, r.duration_s)


STUBBORN = (
    "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "for i in range(40):\n    print('OLD', i, flush=True)\n    time.sleep(0.05)\n'OLDRESULT'"
)


def test_a_cell_abandoned_with_its_event_loop_never_reaches_the_next_cell(new_session):
    s = new_session(sandbox_exec.Policy(interrupt_grace_s=0.3))
    s.run("x = 1")

    async def abandon() -> str:
        try:
            await asyncio.wait_for(s.run_async(STUBBORN), 0.3)
        except asyncio.TimeoutError:
            return "timed out"
        return "ended"

    # asyncio.run shuts its loop down with the cell still running (and ignoring SIGINT).
    assert asyncio.run(abandon()) == "timed out"
    nxt = asyncio.run(s.run_async("print('second')\n'second'"))
    assert nxt.status == "ok", nxt
    assert nxt.stdout == "second\n" and "OLD" not in repr(nxt.outputs), nxt.outputs
    assert nxt.outputs[-1]["data"]["text/plain"] == "'second'"
    # The abandoned cell ignored its interrupt, so the interpreter was ended and says why.
    assert nxt.session_restarted and "abandoned" in (nxt.restart_reason or ""), nxt.restart_reason


def test_a_cancelled_cell_that_ignores_the_interrupt_is_ended_after_the_grace(new_session):
    s = new_session(sandbox_exec.Policy(interrupt_grace_s=0.3, timeout_s=None))

    async def main() -> tuple[sandbox_exec.Result, float]:
        cell = asyncio.ensure_future(s.run_async(STUBBORN.replace("range(40)", "range(10**6)")))
        await asyncio.sleep(0.3)
        cell.cancel()
        t0 = time.monotonic()
        nxt = await asyncio.wait_for(s.run_async("'next'"), 20)
        return nxt, time.monotonic() - t0

    nxt, waited = asyncio.run(main())
    assert nxt.status == "ok" and nxt.outputs[-1]["data"]["text/plain"] == "'next'"
    assert nxt.session_restarted and "cancelled" in (nxt.restart_reason or ""), nxt.restart_reason
    assert waited < 10  # the grace, a restart; not the cell's whole (endless) run


def test_restart_does_not_wait_for_a_cell_that_ignores_interrupts(new_session):
    s = new_session(sandbox_exec.Policy(timeout_s=None))
    results: list[sandbox_exec.Result] = []
    runner = threading.Thread(target=lambda: results.append(s.run(STUBBORN.replace("range(40)", "range(10**6)"))))
    runner.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    s.restart()
    assert time.monotonic() - t0 < 10
    runner.join(10)
    assert results and results[0].status == "crashed"
    assert "restarted" in (results[0].reason or ""), results[0].reason
    assert s.run("'fresh'").outputs[-1]["data"]["text/plain"] == "'fresh'"
    # The restart's reason belongs to the cell it ended, not to a later crash.
    crashed = s.run("import os\nos.abort()")
    assert crashed.status == "crashed" and "SIGABRT" in (crashed.reason or ""), crashed.reason
