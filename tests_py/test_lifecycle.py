"""Ladder B/C: timeouts, interrupts, crashes and restarts, concurrency, streaming, and the
module-level drop-in. After each failure the backend (this test process) carries on and
the next cell answers."""

from __future__ import annotations

import asyncio
import os
import threading
import time

import pytest

import sandbox_exec
from conftest import pid_alive, wait_until

pytestmark = pytest.mark.b

CRASHES = {
    "segfault": ("import ctypes\nctypes.string_at(0)", "SIGSEGV"),
    "os._exit": ("import os\nos._exit(3)", "exited with status 3"),
    "abort": ("import os\nos.abort()", "SIGABRT"),
    "killed": ("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "SIGKILL"),
}


@pytest.mark.parametrize("kind", sorted(CRASHES))
def test_crash_is_reported_and_restart_recovers(session, kind):
    code, reason = CRASHES[kind]
    session.run("survivor = 1")
    r = session.run("print('before crash', flush=True)\n" + code)
    assert r.status == "crashed"
    assert reason in r.reason
    assert r.error is not None and r.error["ename"] == "WorkerCrashed"
    assert r.stdout == "before crash\n"  # what was published before the crash is kept
    assert not session.alive
    session.restart()
    assert session.alive
    r = session.run("'survivor' in globals()")
    assert r.outputs[0]["data"]["text/plain"] == "False"  # fresh interpreter
    assert r.execution_count == 1


def test_next_run_after_a_crash_starts_a_fresh_interpreter(session):
    session.run("import os\nos._exit(1)")
    r = session.run("40 + 2")
    assert r.status == "ok" and r.session_restarted
    assert r.outputs[0]["data"]["text/plain"] == "42"


def test_timeout_interrupts_and_keeps_state(session):
    session.run("state = 'kept'")
    t0 = time.monotonic()
    r = session.run("import time\nwhile True:\n    time.sleep(0.01)", timeout=0.5)
    assert r.status == "timeout"
    assert time.monotonic() - t0 < 5
    assert r.error["ename"] == "KeyboardInterrupt"
    assert session.alive
    assert session.run("state").outputs[0]["data"]["text/plain"] == "'kept'"


def test_timeout_kills_a_cell_that_ignores_the_interrupt(sandbox):
    s = sandbox.session("ignores-sigint", policy=sandbox_exec.Policy(interrupt_grace_s=0.5))
    try:
        pid = s.worker_pid
        r = s.run(
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.01)",
            timeout=0.3,
        )
        assert r.status == "timeout"
        assert "killed" in r.reason
        assert wait_until(lambda: not pid_alive(pid))
        r = s.run("'next cell'")
        assert r.status == "ok" and r.session_restarted
    finally:
        s.close()


def test_policy_timeout_is_the_default_and_run_timeout_overrides_it(sandbox):
    s = sandbox.session("policy-timeout", policy=sandbox_exec.Policy(timeout_s=0.3))
    try:
        assert s.run("import time\ntime.sleep(5)").status == "timeout"
        assert s.run("import time\ntime.sleep(0.5)\n'slow ok'", timeout=3).status == "ok"
    finally:
        s.close()


def test_interrupt_from_another_thread(session):
    session.run("data = [1, 2, 3]")
    timer = threading.Timer(0.3, session.interrupt)
    timer.start()
    r = session.run("import time\nfor _ in range(1000):\n    time.sleep(0.01)")
    timer.join()
    assert r.status == "interrupted"
    assert r.error["ename"] == "KeyboardInterrupt"
    assert session.run("data").outputs[0]["data"]["text/plain"] == "[1, 2, 3]"


def test_sessions_are_out_of_the_backends_session_and_process_group(session):
    # A Ctrl-C at the backend's terminal goes to its foreground process group: the launcher
    # (and everything under it) is in a session of its own, so it never gets it.
    launcher = session._runner.launcher_pid
    assert os.getsid(launcher) == launcher != os.getsid(0)
    assert os.getpgid(launcher) != os.getpgid(0)


def test_interrupt_while_idle_is_harmless(session):
    session.interrupt()
    time.sleep(0.1)
    assert session.run("'fine'").outputs[0]["data"]["text/plain"] == "'fine'"


def test_on_output_streams_before_run_returns(session):
    events = []
    returned = []

    def on_output(event):
        events.append((time.monotonic(), event))

    t0 = time.monotonic()
    r = session.run("import time\nprint('early', flush=True)\ntime.sleep(0.5)\nprint('late')\n7", on_output=on_output)
    returned.append(time.monotonic())
    kinds = [e["output_type"] for _, e in events]
    assert kinds == ["stream", "stream", "execute_result"]
    assert events[0][1] == {"output_type": "stream", "name": "stdout", "text": "early\n"}
    # the first output arrived while the cell was still sleeping
    assert events[0][0] - t0 < 0.4
    assert events[-1][0] <= returned[0]
    assert r.outputs[-1]["data"]["text/plain"] == "7"


def test_on_output_sees_live_event_shapes(session):
    events = []
    session.run("h = display('a', display_id='x')\nh.update('b')", on_output=events.append)
    assert events[0] == {
        "output_type": "display_data",
        "data": {"text/plain": "'a'"},
        "metadata": {},
        "transient": {"display_id": "x"},
    }
    assert events[1] == {
        "output_type": "update_display_data",
        "data": {"text/plain": "'b'"},
        "metadata": {},
        "transient": {"display_id": "x"},
    }


def test_on_output_exception_is_raised_after_the_cell(session):
    def broken(event):
        raise RuntimeError("callback bug")

    with pytest.raises(RuntimeError, match="callback bug"):
        session.run("print('x')\ny = 5", on_output=broken)
    assert session.run("y").outputs[0]["data"]["text/plain"] == "5"  # the cell did run


def test_two_sessions_in_two_threads_keep_separate_state(sandbox):
    results: dict[str, list] = {}
    errors: list[BaseException] = []

    def notebook(name: str, value: int) -> None:
        try:
            s = sandbox.session(name)
            out = []
            s.run(f"v = {value}")
            for _ in range(30):
                out.append(s.run("v = v + 1\nv").outputs[0]["data"]["text/plain"])
            results[name] = out
            s.close()
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=notebook, args=(f"thread-{i}", i * 1000)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results["thread-0"] == [str(i) for i in range(1, 31)]
    assert results["thread-1"] == [str(1000 + i) for i in range(1, 31)]


def test_sessions_are_separate_processes_and_namespaces(sandbox):
    a, b = sandbox.session("sep-a"), sandbox.session("sep-b")
    try:
        a.run("secret = 'only in a'")
        r = b.run("'secret' in globals()")
        assert r.outputs[0]["data"]["text/plain"] == "False"
        assert a.worker_pid != b.worker_pid
        a.run("import os\nos._exit(9)")
        assert b.run("1 + 1").outputs[0]["data"]["text/plain"] == "2"
    finally:
        a.close()
        b.close()


def test_session_is_get_or_create(sandbox):
    s1 = sandbox.session("same-name")
    s2 = sandbox.session("same-name")
    try:
        assert s1 is s2
        with pytest.raises(ValueError):
            sandbox.session("same-name", prelude="x = 1")
    finally:
        s1.close()


def test_prelude_runs_once_at_start(sandbox):
    s = sandbox.session("with-prelude", prelude="import math\nseed = 42")
    try:
        assert s.run("math.floor(2.5), seed").outputs[0]["data"]["text/plain"] == "(2, 42)"
        assert s.execution_count == 1  # the prelude does not count as a cell
        s.restart()
        assert s.run("seed").outputs[0]["data"]["text/plain"] == "42"  # and runs again
    finally:
        s.close()


def test_failing_prelude_raises(sandbox):
    with pytest.raises(sandbox_exec.PreludeError, match="ZeroDivisionError"):
        sandbox.session("bad-prelude", prelude="1/0")
    assert all(s.name != "bad-prelude" for s in sandbox.sessions())


def test_closed_session_and_sandbox_raise(tmp_path):
    box = sandbox_exec.Sandbox(root=tmp_path)
    s = box.session("x")
    pid = s.worker_pid
    s.close()
    assert wait_until(lambda: not pid_alive(pid))
    with pytest.raises(sandbox_exec.SessionClosedError):
        s.run("1")
    box.close()
    with pytest.raises(sandbox_exec.SessionClosedError):
        box.session("y")


def _host_pids_with(marker: str) -> list[int]:
    """Host pids whose command line contains `marker` (sandbox pids are namespaced)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    if marker.encode() in f.read() and pid_alive(int(entry)):
                        found.append(int(entry))
            except OSError:
                pass
    return found


def test_close_ends_every_process_of_the_session_including_orphans(sandbox):
    import uuid

    marker = f"orphan-{uuid.uuid4().hex}"
    s = sandbox.session("orphans")
    r = s.run(
        "import os, time, subprocess\n"
        f"cmd = ['/bin/sh', '-c', 'sleep 300; echo {marker}']\n"
        "child = subprocess.Popen(cmd)\n"
        "if os.fork() == 0:\n"  # a double-forked, setsid orphan
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        os.execv(cmd[0], cmd)\n"
        "    os._exit(0)\n"
        "time.sleep(0.3)\n"
    )
    assert r.status == "ok", r.error
    assert wait_until(lambda: len(_host_pids_with(marker)) == 2), _host_pids_with(marker)
    worker = s.worker_pid
    s.close()
    assert wait_until(lambda: not _host_pids_with(marker) and not pid_alive(worker)), _host_pids_with(marker)


def test_module_level_run_with_and_without_session():
    r = sandbox_exec.run("z = 5\nz * 2", session="module-level")
    assert r.outputs[0]["data"]["text/plain"] == "10"
    assert sandbox_exec.run("z", session="module-level").outputs[0]["data"]["text/plain"] == "5"
    r = sandbox_exec.run("'z' in globals()")  # session=None: a fresh interpreter
    assert r.outputs[0]["data"]["text/plain"] == "False"
    r = sandbox_exec.run("import time\ntime.sleep(3)", session="module-level", timeout=0.3)
    assert r.status == "timeout"


def test_run_async_does_not_block_the_event_loop(session):
    async def main():
        ticks = 0
        events = []

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        r = await session.run_async("import time\ntime.sleep(0.3)\nprint('done')\n3", on_output=events.append)
        t.cancel()
        return r, ticks, events

    r, ticks, events = asyncio.run(main())
    assert r.status == "ok" and r.outputs[-1]["data"]["text/plain"] == "3"
    assert ticks >= 10
    assert [e["output_type"] for e in events] == ["stream", "execute_result"]


FORKING_BACKEND = r"""
import json, os, sys
import sandbox_exec
from sandbox_exec import SandboxError

box = sandbox_exec.Sandbox(root=sys.argv[1])
s = box.session("nb")
s.run("x = 1")
default = sandbox_exec.run("y = 1", session="nb-default")
pid = os.fork()
if pid == 0:
    # The child: the inherited objects are refused, its own default Sandbox works, and its
    # normal exit (atexit, collection of everything it inherited) ends none of the parent's.
    out = {}
    try:
        s.run("1")
    except SandboxError as e:
        out["inherited"] = str(e)
    try:
        box.session("other")
    except SandboxError as e:
        out["inherited_box"] = str(e)
    out["own_default"] = sandbox_exec.run("'child'", session="c").outputs[-1]["data"]["text/plain"]
    print(json.dumps(out), flush=True)
    sys.exit(0)
os.waitpid(pid, 0)
after = s.run("x += 1\nx")
after_default = sandbox_exec.run("y", session="nb-default")
try:
    sandbox_exec.Sandbox(root=sys.argv[1]).session("nb")
    second = "opened"
except SandboxError as e:
    second = str(e)
print(json.dumps({
    "x": after.outputs[-1]["data"]["text/plain"], "restarted": after.session_restarted,
    "y": after_default.outputs[-1]["data"]["text/plain"] if after_default.outputs else after_default.status,
    "second": second,
}), flush=True)
box.close()
"""


def test_a_forked_backend_neither_uses_nor_ends_the_parents_sessions(tmp_path):
    import json
    import subprocess
    import sys

    cp = subprocess.run(
        [sys.executable, "-c", FORKING_BACKEND, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert cp.returncode == 0, cp.stderr
    child, parent = (json.loads(line) for line in cp.stdout.splitlines())
    assert "belongs to process" in child["inherited"] and "belongs to process" in child["inherited_box"]
    assert child["own_default"] == "'child'"
    # The parent's sessions lived on through the child's exit, state and lock included.
    assert parent["x"] == "2" and parent["restarted"] is False
    assert parent["y"] == "1"
    assert "in use by another live session" in parent["second"]
    # Nothing closed twice at exit (the workdir lock's descriptor).
    assert "Exception ignored" not in cp.stderr, cp.stderr
