"""A backend that exits without closing its Sandbox: a clean exit, nothing left on the host.

Found from outside: a daemon thread blocked in ``Session.run()`` of an explicit Sandbox never
closed made the backend abort at exit (SIGABRT: CPython 3.11 ends such a thread with
``pthread_exit`` inside the core's C++ frames), and any backend that exited without
``Sandbox.close()`` left its sessions' workdir images mounted on loop devices.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from leftovers import cgroups_of, loop_devices_under, mounts_under, sandbox_processes

pytestmark = pytest.mark.c

BACKEND = textwrap.dedent(
    """
    import sys, threading
    import sandbox_exec

    box = sandbox_exec.Sandbox(root=sys.argv[1])
    started = threading.Event()

    def serve():
        box.session("x").run(
            "print('cell started', flush=True); import time; time.sleep(60)",
            on_output=lambda event: started.set(),
        )

    threading.Thread(target=serve, daemon=True).start()
    box.session("idle").run("1 + 1")  # a second session, idle, also never closed
    assert started.wait(60), "the cell did not start"
    print("exiting", flush=True)
    {how}
    """
)


@pytest.mark.parametrize(
    "how,expected_rc",
    [("pass", 0), ("raise SystemExit(3)", 3), ("raise RuntimeError('unhandled')", 1)],
    ids=["returns", "sys-exit", "uncaught-exception"],
)
def test_an_unclosed_sandbox_with_a_busy_daemon_thread_exits_cleanly(tmp_path, how, expected_rc):
    root = tmp_path / "root"
    for attempt in range(3):  # the abort was seen in 1 to 3 of 3 exits
        with subprocess.Popen(
            [sys.executable, "-c", BACKEND.format(how=how), str(root)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        ) as proc:
            out, err = proc.communicate(timeout=120)
        assert proc.returncode == expected_rc, (attempt, proc.returncode, err[-2000:])
        assert "terminate called" not in err
        assert "exiting" in out
        left = (
            [f"process {pid}" for pid in sandbox_processes(root)]
            + [f"mount {m}" for m in mounts_under(root)]
            + [f"loop {d}" for d in loop_devices_under(root)]
            + [f"cgroup {c}" for c in cgroups_of(proc.pid)]
        )
        assert left == [], (attempt, left)


def test_close_is_not_held_by_a_slow_listener_of_the_running_cell(tmp_path):
    # Found from outside: close() (and so the exit hook, and a reopen of the name) waited
    # while the running cell's thread handed every output already received, one by one, to
    # an on_output that takes 1 s each: backlog x callback time. Now close() abandons the
    # listener: the callback in progress ends, no further one is called.
    import threading
    import time

    import sandbox_exec

    box = sandbox_exec.Sandbox(root=tmp_path / "root")
    session = box.session("a")
    first = threading.Event()
    calls = []

    def slow(event):
        calls.append(event)
        first.set()
        time.sleep(1.0)

    result = {}
    thread = threading.Thread(
        target=lambda: result.update(r=session.run("while True:\n    print('x' * 100, flush=True)", on_output=slow)),
        daemon=True,
    )
    thread.start()
    assert first.wait(60)
    time.sleep(1.5)  # a backlog builds in the ring meanwhile
    t0 = time.monotonic()
    box.close()
    took = time.monotonic() - t0
    thread.join(30)
    assert not thread.is_alive()
    assert took < 8, f"close() took {took:.1f} s behind a 1 s-per-event listener"
    assert result["r"].status == "crashed", result["r"].status
    assert len(calls) <= 5, len(calls)
