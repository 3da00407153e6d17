"""Ladder C: fault injection at every step of a session's life, and the death of the backend.

Each test injects one fault (a process of the session killed at a given moment, the backend's
own thread interrupted, close() racing run() and restart(), the root's filesystem or
/dev/shm full, the backend out of descriptors, the backend killed outright) and asserts four
things: the exact status or exception and a clear message; that it ended within a bound (the
faulty action runs in a thread joined with a timeout, or in a subprocess with one, so a hang
fails the test instead of hanging CI); that nothing is left on the host (tests_py/leftovers.py
reads procfs, sysfs and the mount table, never the package's bookkeeping); and that the
registry tells the truth afterwards (Session.alive, Session.closed, Sandbox.sessions(), the
next run). docs/reliability.md ("Fault injection and backend death") has the table.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import gc
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import sandbox_exec
from conftest import pid_alive, wait_until
from leftovers import Baseline, descendants, leftovers
from sandbox_exec import CheckpointError, Policy, SandboxError, SessionClosedError

pytestmark = pytest.mark.c

# Bounds: how long each faulty action may take before the test calls it a hang. Generous for
# a loaded 2-core CI machine; the actions themselves take well under a second here.
BOUND_S = 20.0
CLEAN_S = 10.0  # for the host to be clean after close (processes reaped, cgroups removed)


def bounded(action: Callable[[], Any], bound: float = BOUND_S) -> tuple[Any, float]:
    """Runs `action` in a thread: (its return value, seconds taken). Re-raises what it
    raised; fails the test when it is still running after `bound` seconds (a hang)."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = action()
        except BaseException as e:  # re-raised on the test's thread
            out["error"] = e

    t0 = time.monotonic()
    thread = threading.Thread(target=target, daemon=True, name="fault-action")
    thread.start()
    thread.join(bound)
    elapsed = time.monotonic() - t0
    if thread.is_alive():
        pytest.fail(f"hang: the action was still running after {bound:g} s")
    if "error" in out:
        raise out["error"]
    return out.get("value"), elapsed


def assert_clean(baseline: Baseline, root: Path, *, backend_alive: bool = True) -> None:
    found: list[str] = []

    def clean() -> bool:
        # What garbage cycles hold (a kept exception's traceback and the frames in it) is
        # freed first: a leak is what survives a collection.
        gc.collect()
        found[:] = leftovers(baseline, root, backend_alive=backend_alive)
        return not found

    assert wait_until(clean, timeout=CLEAN_S), found


@pytest.fixture
def box(tmp_path: Path) -> Iterator[sandbox_exec.Sandbox]:
    """A Sandbox of the test's own (warm, the default), closed at the end; then nothing may
    be left of it on the host."""
    baseline = Baseline.take()
    root = tmp_path / "root"
    sandbox = sandbox_exec.Sandbox(root=root)
    try:
        yield sandbox
    finally:
        sandbox.close()
    assert_clean(baseline, root)


def _ppid(pid: int) -> int | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(text[text.rindex(")") + 2 :].split()[1])


def _argv(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def assert_recovers(s: sandbox_exec.Session, reason_part: str) -> None:
    """The registry tells the truth after the session's interpreter died: not alive, not
    closed, listed; the next run starts a fresh interpreter and says why."""
    assert wait_until(lambda: not s.alive), "the session still claims a live interpreter"
    assert not s.closed
    r, _ = bounded(lambda: s.run("'fresh' if 'kept' not in globals() else 'stale'"))
    assert r.status == "ok", (r.status, r.reason)
    assert r.session_restarted and r.restart_reason is not None and reason_part in r.restart_reason, r.restart_reason
    assert r.outputs[-1]["data"]["text/plain"] == "'fresh'"
    assert s.alive


# --- the worker killed ------------------------------------------------------------------------


class _KillOnSight:
    """Kills the first new process that is `depth` generations below this backend and runs
    the interpreter (argv[0] is this Python): the worker of a cold start, right after its
    execve and before it can report ready (it has its interpreter still to load)."""

    def __init__(self) -> None:
        self.me = os.getpid()
        self.known = {int(p) for p in os.listdir("/proc") if p.isdigit()}
        self.parent: dict[int, int] = {}
        self.killed: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> _KillOnSight:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        python = sys.executable.encode()
        while not self._stop.is_set() and not self.killed:
            for entry in os.listdir("/proc"):
                if not entry.isdigit() or int(entry) in self.known:
                    continue
                pid = int(entry)
                if pid not in self.parent:
                    ppid = _ppid(pid)
                    if ppid is None:
                        continue
                    self.parent[pid] = ppid
                chain, up = 0, pid
                while up in self.parent:
                    up, chain = self.parent[up], chain + 1
                # backend -> launcher -> sandbox init -> worker
                if up == self.me and chain >= 3 and _argv(pid)[:1] == [python]:
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                    return


def test_worker_killed_before_ready_fails_the_start_clearly(tmp_path):
    baseline = Baseline.take()
    root = tmp_path / "root"
    box = sandbox_exec.Sandbox(root=root, warm=False)  # a cold start: the worker execs Python
    try:
        box.session("warm-up").close()  # the host probes (cgroups, images) are done before
        with _KillOnSight() as killer:
            with pytest.raises(SandboxError) as caught:
                bounded(lambda: box.session("doomed"))
        assert killer.killed, "the worker was not seen before the start ended"
        message = str(caught.value)
        # Killed after its execve: the worker's death before ready; killed between the
        # launcher's last step and that report: the launcher found no worker any more.
        assert "killed by signal 9 (SIGKILL) before it was ready" in message or "find the worker" in message, message
        assert type(caught.value) is SandboxError
        assert all(s.name != "doomed" for s in box.sessions())  # not registered
        s, _ = bounded(lambda: box.session("doomed"))  # the name is free, nothing half-held
        assert s.run("1 + 1").outputs[-1]["data"]["text/plain"] == "2"
    finally:
        box.close()
    assert_clean(baseline, root)


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm"])
def test_prelude_that_kills_its_interpreter_fails_the_start(tmp_path, warm):
    # Warm: the prelude runs in the zygote first (which dies of it), then the session falls
    # back to a cold start, whose prelude kills the worker: PreludeError either way.
    baseline = Baseline.take()
    root = tmp_path / "root"
    box = sandbox_exec.Sandbox(root=root, warm=warm)
    try:
        with pytest.raises(sandbox_exec.PreludeError, match="crashed") as caught:
            bounded(lambda: box.session("p", prelude="import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"))
        assert "SIGKILL" in str(caught.value)
        assert box.sessions() == []
        assert box.session("p").run("'fine'").outputs[-1]["data"]["text/plain"] == "'fine'"
    finally:
        box.close()
    assert_clean(baseline, root)


def test_worker_killed_mid_output(box):
    s = box.session("flood")
    s.run("kept = 1")
    worker = s.worker_pid
    assert worker is not None
    first = threading.Event()
    killer = threading.Thread(target=lambda: (first.wait(BOUND_S), os.kill(worker, signal.SIGKILL)))
    killer.start()
    r, took = bounded(
        lambda: s.run(
            "import sys\nwhile True:\n    sys.stdout.write('x' * 1000 + '\\n')", on_output=lambda e: first.set()
        )
    )
    killer.join()
    assert took < 5
    assert r.status == "crashed"
    assert r.reason == "the worker killed by signal 9 (SIGKILL)"
    assert r.error is not None and r.error["ename"] == "WorkerCrashed"
    assert r.stdout.startswith("x" * 1000)  # what arrived before the kill is kept
    assert not pid_alive(worker)
    assert_recovers(s, "SIGKILL")


# Writes frames into the cell's own event ring by hand (tests_py/test_hostile_worker.py has
# the layout: RingControl of the event ring at 512, its tail at +64, the event data after the
# 1 MiB request data, 4 MiB of it), then kills its own process.
PARTIAL_FRAME = """
import ctypes, os, signal, struct
base = next(int(line.split("-")[0], 16) for line in open("/proc/self/maps") if "sandbox_exec-ring" in line)
tail = ctypes.c_uint64.from_address(base + 512 + 64)
DATA, CAP = base + 4096 + (1 << 20), 4 << 20
def put(frame_type, flags, payload, publish):
    t = tail.value
    frame = struct.pack("<IHH", len(payload), frame_type, flags) + payload
    ctypes.memmove(DATA + t % CAP, frame, len(frame))
    if publish:
        tail.value = t + ((len(frame) + 7) & ~7)
        os.write(7, b"!")  # the event doorbell
"""

MID_FRAME = {
    # a frame written but never published (the tail not advanced)
    "unpublished": "put(17, 0, b'never published', False)",
    # the first frame of a message continued in frames that never come
    "continued message": 'put(19, 1, b\'{"output_type": "display_data", "da\', True)',
}


@pytest.mark.parametrize("how", sorted(MID_FRAME))
def test_worker_killed_mid_frame(box, how):
    s = box.session("mid-frame")
    code = (
        "print('before', flush=True)\nimport time\ntime.sleep(0.1)\n"
        + PARTIAL_FRAME
        + MID_FRAME[how]
        + "\nos.kill(os.getpid(), signal.SIGKILL)"
    )
    r, took = bounded(lambda: s.run(code, timeout=BOUND_S))
    assert r.status == "crashed"
    assert r.reason == "the worker killed by signal 9 (SIGKILL)"  # a death, not a protocol violation
    assert took < 5
    assert r.stdout == "before\n"
    # the half message is dropped, never shown: only the stream and the crash's error
    assert [o["output_type"] for o in r.outputs] == ["stream", "error"]
    assert_recovers(s, "SIGKILL")


def test_worker_killed_after_done(box):
    s = box.session("after-done")
    assert s.run("kept = 1").status == "ok"
    worker = s.worker_pid
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    assert_recovers(s, "SIGKILL")
    # and restart() after a death works too
    s.run("kept = 2")
    worker = s.worker_pid
    assert worker is not None and worker > 0
    os.kill(worker, signal.SIGKILL)
    assert wait_until(lambda: not s.alive)
    bounded(s.restart)
    assert s.alive and s.run("'kept' in globals()").outputs[-1]["data"]["text/plain"] == "False"


# --- the launcher killed -----------------------------------------------------------------------


def _launcher_targets(s: sandbox_exec.Session) -> dict[str, int]:
    """The session's keeper (the launcher, the backend's child) and the sandbox's init (the
    pid namespace's first process, the worker's parent)."""
    runner = s._runner
    assert runner is not None
    keeper = runner.launcher_pid
    init = _ppid(runner.worker_pid)
    assert init is not None and init != keeper and _ppid(init) == keeper
    return {"keeper": keeper, "init": init}


@pytest.mark.parametrize("target", ["keeper", "init"])
@pytest.mark.parametrize("when", ["idle", "mid-cell"])
def test_launcher_killed(box, target, when):
    s = box.session("launcher")
    s.run("kept = 1")
    victim = _launcher_targets(s)[target]
    worker = s.worker_pid
    assert worker is not None and worker > 0 and victim > 0
    if when == "idle":
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(worker))
    else:
        timer = threading.Timer(0.3, os.kill, (victim, signal.SIGKILL))
        timer.start()
        r, took = bounded(lambda: s.run("import time\ntime.sleep(60)"))
        timer.join()
        assert r.status == "crashed"
        # (the init's death ends the keeper too: it reports no exit status for the worker)
        assert r.reason == "the worker ended without an exit status (its launcher was killed)", r.reason
        assert took < 10
    assert not pid_alive(worker)
    assert_recovers(s, "the worker")


# --- the backend's thread interrupted ----------------------------------------------------------


def _ctrl_c_main_thread_when(event: threading.Event, delay: float) -> threading.Thread:
    main = threading.main_thread().ident
    assert main is not None and threading.current_thread() is threading.main_thread()

    def fire() -> None:
        if event.wait(BOUND_S):
            time.sleep(delay)
            signal.pthread_kill(main, signal.SIGINT)

    t = threading.Thread(target=fire, daemon=True)
    t.start()
    return t


CTRL_C_CELLS = {
    # the cell waits: the Ctrl-C reaches the backend while it waits in the core
    "sleeping cell": ("print('go', flush=True)\nimport time\ntime.sleep(60)", False),
    # the cell floods on_output, whose callback is slow: the Ctrl-C lands in the backend's
    # Python code (the output collector, the callback) while a batch is delivered
    "flooding cell": ("import sys\nwhile True:\n    sys.stdout.write('y' * 100 + '\\n')", True),
}


@pytest.mark.parametrize("cell", sorted(CTRL_C_CELLS))
def test_ctrl_c_in_the_backend_interrupts_the_cell(box, cell):
    # run() blocks in the main thread (as in a backend's request handler or a REPL); a
    # SIGINT to the backend raises KeyboardInterrupt there once the cell has been interrupted,
    # and leaves the session usable with its state (no wedged lock, no cell left running).
    code, slow_callback = CTRL_C_CELLS[cell]
    s = box.session("ctrl-c")
    s.run("kept = 'yes'")
    started = threading.Event()

    def on_output(event: dict[str, Any]) -> None:
        started.set()
        if slow_callback:
            time.sleep(0.005)

    sender = _ctrl_c_main_thread_when(started, 0.2)
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        s.run(code, on_output=on_output, timeout=30)
    took = time.monotonic() - t0
    sender.join()
    assert took < 5, f"the Ctrl-C took {took:.1f} s to end run()"
    assert s.alive and not s.closed
    # The next cell runs at once: the interrupted cell is over, not still holding the worker.
    r, took = bounded(lambda: s.run("kept", timeout=5))
    assert r.status == "ok", (r.status, r.reason)
    assert r.outputs[-1]["data"]["text/plain"] == "'yes'"
    assert took < 3


def test_cancelled_run_async_interrupts_the_cell(box):
    s = box.session("cancel")
    s.run("kept = 'yes'")

    async def main() -> tuple[Any, float]:
        started = asyncio.Event()
        task = asyncio.ensure_future(
            s.run_async("print('go', flush=True)\nimport time\ntime.sleep(60)", on_output=lambda e: started.set())
        )
        await asyncio.wait_for(started.wait(), BOUND_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        t0 = time.monotonic()
        r = await asyncio.wait_for(s.run_async("kept", timeout=5), BOUND_S)
        return r, time.monotonic() - t0

    (r, took), _ = bounded(lambda: asyncio.run(main()))
    assert r.status == "ok" and r.outputs[-1]["data"]["text/plain"] == "'yes'"
    assert not r.session_restarted  # interrupted, not killed: the state is kept
    assert took < 5
    assert s.alive


# --- close() racing run() and restart() ----------------------------------------------------------


@pytest.mark.parametrize("racer", ["run", "restart"])
def test_close_racing(tmp_path, racer):
    baseline = Baseline.take()
    root = tmp_path / "root"
    rng = random.Random(11)
    outcomes: dict[str, int] = {}
    with sandbox_exec.Sandbox(root=root) as box:
        for i in range(12 if racer == "run" else 8):
            s = box.session(f"race-{i}")
            errors: list[BaseException] = []

            # < 0: close() first, the racing call that long after; else the other way round
            lead = rng.uniform(-0.04, 0.12)

            def act(
                s: sandbox_exec.Session = s, wait: float = max(0.0, -lead), errors: list[BaseException] = errors
            ) -> None:
                time.sleep(wait)
                try:
                    if racer == "run":
                        r = s.run("import time\ntime.sleep(0.05)\n1")
                        assert r.status in ("ok", "crashed"), (r.status, r.reason)
                        if r.status == "crashed":
                            assert r.reason == "the session was closed while the cell ran", r.reason
                        outcomes[r.status] = outcomes.get(r.status, 0) + 1
                    else:
                        s.restart()
                        outcomes["restarted"] = outcomes.get("restarted", 0) + 1
                except SessionClosedError as e:
                    assert "is closed" in str(e)
                    outcomes["closed"] = outcomes.get("closed", 0) + 1
                except BaseException as e:
                    errors.append(e)

            worker = threading.Thread(target=act)
            worker.start()
            time.sleep(max(0.0, lead))
            bounded(s.close)
            worker.join(BOUND_S)
            assert not worker.is_alive(), "hang: the racing call did not return"
            assert not errors, errors
            assert s.closed and not s.alive
            assert s not in box.sessions()
            with pytest.raises(SessionClosedError):
                s.run("1")
            pid = s.worker_pid
            assert pid is None
    assert_clean(baseline, root)
    assert sum(outcomes.values()) >= 8, outcomes


# --- the persistence root's disk full -------------------------------------------------------------


@contextlib.contextmanager
def small_filesystem(path: Path, size: str) -> Iterator[Path]:
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "sandbox-exec-faults", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(path: Path) -> Path:
    """Fills the filesystem of `path` to the last block (again: what was freed since is
    taken, e.g. by a spare workdir image the Sandbox failed to make); returns the filler."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        chunk = b"\1" * (1 << 20)
        while True:
            try:
                os.write(fd, chunk)
            except OSError:
                if len(chunk) == 1:
                    break
                chunk = chunk[: len(chunk) // 2]
    finally:
        os.close(fd)
    return filler


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")
@pytest.mark.parametrize("image", [False, True], ids=["watchdog", "workdir-image"])
def test_root_disk_full(tmp_path, image):
    baseline = Baseline.take()
    with small_filesystem(tmp_path / "small", "96m") as fs:
        root = fs / "root"
        policy = Policy(checkpoint="after_cell", disk_bytes=(32 << 20) if image else None)
        box = sandbox_exec.Sandbox(root=root, policy=policy)
        try:
            s = box.session("nb")
            assert s.run("x = 'saved before'").status == "ok"
            assert s.last_checkpoint is not None and "bytes" in s.last_checkpoint, s.last_checkpoint
            filler = fill(fs)
            # A cell whose checkpoint does not fit: the cell is ok, the checkpoint's failure
            # recorded (never the cell's), the last good checkpoint kept.
            r, _ = bounded(lambda: s.run("import os\nx = 'never saved'\npad = os.urandom(4 << 20)"))
            assert r.status == "ok"
            assert s.last_checkpoint is not None and s.last_checkpoint["kind"] == "no_space", s.last_checkpoint
            assert "filesystem of the Sandbox root is full" in s.last_checkpoint["error"]
            with pytest.raises(CheckpointError) as caught:
                bounded(s.checkpoint)
            assert caught.value.kind == "no_space"
            # A new session cannot start on a full root: a clear SandboxError, no lock left
            # held, not registered.
            fill(fs)
            with pytest.raises(SandboxError, match=r"cannot write the lock file .*No space left") as refused:
                bounded(lambda: box.session("new"))
            assert "the Sandbox root's filesystem is full" in str(refused.value)
            assert [x.name for x in box.sessions()] == ["nb"]
            assert s.alive and s.run("x").outputs[-1]["data"]["text/plain"] == "'never saved'"
            # Space again: the name is free, and the old checkpoint loads.
            filler.unlink()
            assert box.session("new").run("1").status == "ok"
            s.close()
            s = box.session("nb", policy=Policy(disk_bytes=(32 << 20) if image else None))
            report = s.restore()
            assert report["restored"] == ["x"]
            assert s.run("x").outputs[-1]["data"]["text/plain"] == "'saved before'"
        finally:
            box.close()
        assert_clean(baseline, root)


# --- backends in subprocesses: /dev/shm full, descriptors exhausted, the backend killed --------

BACKEND_PRELUDE = """
import json, os, sys, time
import sandbox_exec
from sandbox_exec import SandboxError
def say(**fields):
    print(json.dumps(fields), flush=True)
"""

DEV_SHM_FULL = (
    BACKEND_PRELUDE
    + """
import shutil
free = shutil.disk_usage("/dev/shm").free
box = sandbox_exec.Sandbox(root=sys.argv[1])
s = box.session("shm")
r = s.run("import os\\nf = open('/dev/shm/mine', 'wb')\\nf.write(b'x' * 1000)\\nf.close()\\nos.getpid() > 0")
say(free=free, status=r.status, value=r.outputs[-1]["data"]["text/plain"] if r.outputs else None, start=s.enforcement["start"])
box.close()
"""
)


@pytest.mark.skipif(os.geteuid() != 0, reason="a private mount namespace over /dev/shm needs root")
def test_dev_shm_full_does_not_stop_sessions(tmp_path):
    # The rings are memfds, not files in /dev/shm, and the sandbox has a /dev/shm of its own:
    # a backend whose /dev/shm is full runs sessions as usual.
    script = tmp_path / "backend.py"
    script.write_text(DEV_SHM_FULL)
    shell = (
        "mount -t tmpfs -o size=64k sandbox-exec-shm /dev/shm && "
        "(dd if=/dev/zero of=/dev/shm/filler bs=4k 2>/dev/null || true) && "
        f"exec {sys.executable} {script} {tmp_path / 'root'}"
    )
    cp = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", shell],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout.splitlines()[-1])
    assert out["free"] == 0  # it was full
    assert out["status"] == "ok" and out["value"] == "True", out
    assert leftovers(Baseline(pid=-1, fds={}), tmp_path / "root", backend_alive=False) == []


DESCRIPTORS = (
    BACKEND_PRELUDE
    + """
import resource
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # soft only: sessions keep theirs
box = sandbox_exec.Sandbox(root=sys.argv[1])
s = box.session("a")
s.run("kept = 1")
held = []
def fill():
    # Takes every free descriptor; returns the errno that stopped it (EMFILE).
    try:
        while True:
            held.append(os.dup(0))
    except OSError as e:
        return e.errno
filled = fill()
t0 = time.monotonic()
def attempt(action):
    try:
        return {"ok": action()}
    except SandboxError as e:
        return {"error": type(e).__name__, "message": str(e)}
    except Exception as e:
        return {"error": "other " + type(e).__name__, "message": str(e)}
start = attempt(lambda: box.session("b").run("1").status)
run = attempt(lambda: s.run("kept").status)
# Ending the old interpreter gives its descriptors back, as many as the new one needs or
# not (it depends on the host): the descriptors run out again right after the old one ends,
# so the restart meets EMFILE where it starts the new interpreter, on every host.
stop = s._stop
def stop_then_fill():
    stop()
    fill()
s._stop = stop_then_fill
restart = attempt(lambda: (s.restart(), "restarted")[1])
del s._stop
after_failed_restart = {"alive": s.alive, "closed": s.closed}
took = time.monotonic() - t0
for fd in held:
    os.close(fd)
after_start = box.session("b").run("2").status
after_run = s.run("3").status
names = sorted(x.name for x in box.sessions())
box.close()
say(filled=filled, start=start, run=run, restart=restart, took=took, after_start=after_start,
    after_run=after_run, names=names, after_failed_restart=after_failed_restart)
"""
)


SIGNALS_BLOCKED = (
    BACKEND_PRELUDE
    + """
import signal, threading
# As a Ray worker (or a server that keeps signals to its main thread) does: the thread that
# starts the sessions has SIGINT blocked, and the process ignores SIGTERM and SIGHUP.
signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
out = {}
def backend_thread():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    box = sandbox_exec.Sandbox(root=sys.argv[1])
    for name, prelude in (("warm", None), ("cold", "import threading, time\\nthreading.Thread(target=time.sleep, args=(1e6,), daemon=True).start()")):
        s = box.session(name, prelude=prelude)
        status = s.run("import os\\n[l.split()[1] for l in open('/proc/self/status') if l.startswith(('SigBlk', 'SigIgn'))]")
        started = threading.Event()
        timer = threading.Thread(target=lambda: (started.wait(30), time.sleep(0.2), s.interrupt()))
        timer.start()
        r = s.run("import time\\nprint('go', flush=True)\\ntime.sleep(30)", on_output=lambda ev: started.set())
        timer.join()
        out[name] = {"start": s.enforcement["start"].split(":")[0], "masks": status.outputs[0]["data"]["text/plain"], "status": r.status}
    box.close()
t = threading.Thread(target=backend_thread)
t.start()
t.join()
say(**out)
"""
)


def test_interrupt_reaches_cells_whatever_the_backend_blocks_or_ignores(tmp_path):
    """Session.interrupt() is a SIGINT to the cell: a backend thread with SIGINT blocked (a
    Ray worker's threads) must not pass its mask, or its ignored signals, to the sessions it
    starts, warm (forked from a zygote the thread started) or cold."""
    script = tmp_path / "backend.py"
    script.write_text(SIGNALS_BLOCKED)
    cp = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "root")], capture_output=True, text=True, timeout=180
    )
    assert cp.returncode == 0, cp.stderr
    out = json.loads(cp.stdout.splitlines()[-1])
    assert out["warm"]["start"] == "warm" and out["cold"]["start"] == "cold"
    for name in ("warm", "cold"):
        blocked, ignored = ast.literal_eval(out[name]["masks"])  # two hex strings
        assert int(blocked, 16) == 0, out[name]  # nothing blocked
        assert int(ignored, 16) & ((1 << 0) | (1 << 14)) == 0, out[name]  # SIGHUP (1), SIGTERM (15) not ignored
        assert out[name]["status"] == "interrupted", out[name]


def test_descriptors_exhausted_in_the_backend(tmp_path):
    script = tmp_path / "backend.py"
    script.write_text(DESCRIPTORS)
    root = tmp_path / "root"
    cp = subprocess.run(
        [sys.executable, str(script), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cp.returncode == 0, cp.stderr  # the backend did not crash
    out = json.loads(cp.stdout.splitlines()[-1])
    assert out["filled"] == 24  # EMFILE
    # Starting a session needs descriptors (its lock, its ring, pipes, a pidfd): a clear
    # SandboxError naming the failing call, errno and the remedy; nothing registered.
    for step in ("start", "restart"):
        assert out[step].get("error") == "SandboxError", out[step]
        assert "Too many open files" in out[step]["message"] or "EMFILE" in out[step]["message"], out[step]
        assert "out of file descriptors" in out[step]["message"], out[step]
    # A cell of a running session needs none: it runs.
    assert out["run"] == {"ok": "ok"}
    # The failed restart left the session without an interpreter, and says so.
    assert out["after_failed_restart"] == {"alive": False, "closed": False}
    assert out["took"] < BOUND_S
    # With descriptors back the Sandbox works again, and the registry lists what lives.
    assert out["after_start"] == "ok" and out["after_run"] == "ok"
    assert out["names"] == ["a", "b"]
    assert leftovers(Baseline(pid=-1, fds={}), root, backend_alive=False) == []


DOOMED_BACKEND = (
    BACKEND_PRELUDE
    + """
import threading
marker = sys.argv[2]
policy = sandbox_exec.Policy(checkpoint="after_cell")
box = sandbox_exec.Sandbox(root=sys.argv[1], policy=policy, pool_size=1)
# warm (forked from the zygote), cold (a prelude that leaves a thread: not forkable), pooled
warm = box.session("warm")
cold = box.session("cold", prelude="import threading, time\\nthreading.Thread(target=time.sleep, args=(1e6,), daemon=True).start()")
deadline = time.monotonic() + 60
while box.pool_idle() < 1 and time.monotonic() < deadline:
    time.sleep(0.05)
pooled = box.session("pooled")
sessions = {"warm": warm, "cold": cold, "pooled": pooled}
for name, s in sessions.items():
    assert s.run(f"v = {name!r}").status == "ok"
# an orphan that left the worker's process group and session
warm.run("import subprocess\\nsubprocess.Popen(['/bin/sh', '-c', 'sleep 300; echo ' + " + repr(marker) + "], start_new_session=True)")
busy = "import time\\nprint('busy', flush=True)\\ntime.sleep(300)"
started = []
for name, s in sessions.items():
    threading.Thread(target=lambda s=s: s.run(busy, on_output=lambda e: started.append(1)), daemon=True).start()
while len(started) < 3:
    time.sleep(0.01)
say(starts={name: s.enforcement["start"] for name, s in sessions.items()},
    workers=[s.worker_pid for s in sessions.values()])
time.sleep(300)
"""
)


def _host_pids_with(marker: str, but: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if (
            entry.isdigit()
            and int(entry) not in (but, os.getpid())
            and marker.encode() in b"".join(_argv(int(entry)))
            and pid_alive(int(entry))
        ):
            found.append(int(entry))
    return found


def test_backend_killed_with_busy_sessions_leaves_nothing_and_a_new_backend_restores(tmp_path):
    # The backend is killed outright (no atexit, no close) while a warm, a cold and a pooled
    # session each run a cell: each launcher sees its lifeline close and ends its session
    # (the pid namespace takes every process with it, the orphan included) and removes the
    # session's cgroups; the reaper unmounts the workdir images and detaches their loops.
    root = tmp_path / "root"
    script = tmp_path / "backend.py"
    script.write_text(DOOMED_BACKEND)
    marker = f"orphan-of-dead-backend-{uuid.uuid4().hex}"
    backend = subprocess.Popen(
        [sys.executable, str(script), str(root), marker], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert backend.stdout is not None
        line = backend.stdout.readline()
        assert line, backend.stderr.read() if backend.stderr else ""
        state = json.loads(line)
        assert state["starts"]["warm"].startswith("warm:"), state
        assert state["starts"]["cold"].startswith("cold:"), state
        assert "served from the pool" in state["starts"]["pooled"], state
        assert all(pid_alive(p) for p in state["workers"])
        assert wait_until(lambda: len(_host_pids_with(marker, backend.pid)) == 1)
        during = leftovers(Baseline(backend.pid, {}), root, backend_alive=False)
        assert any(line.startswith("process ") for line in during), during
        below = descendants(backend.pid)
        assert len(below) >= 9, below  # three sessions of three processes, a zygote, the pool's
        backend.send_signal(signal.SIGKILL)
        backend.wait(timeout=10)
        t0 = time.monotonic()
        assert_clean(Baseline(backend.pid, {}), root, backend_alive=False)
        assert wait_until(lambda: not _host_pids_with(marker, backend.pid)), _host_pids_with(marker, backend.pid)
        assert not any(pid_alive(p) for p in state["workers"])
        assert not any(pid_alive(p) for p in below), [p for p in below if pid_alive(p)]
        assert time.monotonic() - t0 < CLEAN_S
    finally:
        if backend.poll() is None:
            backend.kill()
            backend.wait()
        for stream in (backend.stdout, backend.stderr):
            if stream is not None:
                stream.close()
    # A new backend on the same root starts cleanly: every name is free, and each session
    # restores its last checkpoint (saved after its last finished cell).
    baseline = Baseline.take()
    policy = Policy(restore_on_start=True, checkpoint="after_cell")
    with sandbox_exec.Sandbox(root=root, policy=policy) as box:
        for name in ("warm", "cold", "pooled"):
            s, _ = bounded(lambda name=name: box.session(name))
            assert s.last_restore is not None and s.last_restore.get("found"), (name, s.last_restore)
            assert s.run("v").outputs[-1]["data"]["text/plain"] == repr(name)
    assert_clean(baseline, root)
