"""Checkpoint and restore (issue 10, item 1): the namespace pickled and unpickled inside the
sandbox, into <workdir>/.sandbox_exec/state/checkpoint; the backend gets JSON only.

a: the report checks and the policy fields. b: round trips (on demand; after a crash; after
a backend restart, with a new Sandbox on the same root; run_async). c: what a hostile cell
can put in the state directory (a corrupt, truncated or foreign file, a FIFO, links, a huge
sparse file, a pickle that runs code) or send as a report, and the disk cap."""

from __future__ import annotations

import asyncio
import pickle
import time
import uuid
from pathlib import Path

import pytest

import sandbox_exec
from checkpoint_file import PARTS
from conftest import FIND_CHANNEL
from sandbox_exec import CheckpointError, Policy, _checkpoint, _core, _workdir_image
from sandbox_exec._worker import checkpoint as worker_checkpoint

MiB = 1 << 20
AUTO = Policy(checkpoint="after_cell", restore_on_start=True)
# Restores at start, checkpoints only when asked: a hostile cell's damage stays (an automatic
# checkpoint after it would replace the damaged file).
RESTORE_ONLY = Policy(restore_on_start=True)
STATE = ".sandbox_exec/state"


def value(s: sandbox_exec.Session, expr: str) -> str:
    r = s.run(expr)
    assert r.status == "ok", (r.error, r.reason)
    return r.outputs[-1]["data"]["text/plain"]


@pytest.fixture
def name() -> str:
    return f"ck-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def session(sandbox: sandbox_exec.Sandbox, name: str):
    s = sandbox.session(name)
    yield s
    s.close()


# --- a ------------------------------------------------------------------------------------------
@pytest.mark.a
def test_backend_and_worker_agree_on_the_path_and_format() -> None:
    assert "/".join((*worker_checkpoint.STATE_DIR, worker_checkpoint.CHECKPOINT)) == _checkpoint.CHECKPOINT_PATH
    assert _checkpoint.FORMAT == worker_checkpoint.FORMAT
    names = {
        c.__name__
        for c in vars(worker_checkpoint).values()
        if isinstance(c, type) and c.__name__.startswith("Checkpoint")
    }
    assert names == set(_checkpoint._KINDS)


@pytest.mark.a
def test_policy_fields_are_checked() -> None:
    assert Policy().checkpoint == "off" and Policy().restore_on_start is False
    with pytest.raises(sandbox_exec.PolicyError, match="checkpoint"):
        Policy(checkpoint="always")
    with pytest.raises(sandbox_exec.PolicyError, match="restore_on_start"):
        Policy(restore_on_start=1)  # type: ignore[arg-type]


GOOD = {
    "saved": ["a"],
    "skipped": [{"name": "m", "type": "module", "kind": "module", "reason": "r"}],
    "path": "elsewhere",
    "bytes": 10,
    "sha256": "0" * 64,
    "format": 1,
    "python": "3.11",
    "created": 1.0,
    "unchanged": False,
    "duration_s": 0.1,
    "extra": "dropped",
}


@pytest.mark.a
def test_a_report_keeps_only_its_checked_fields() -> None:
    report = _checkpoint.checkpoint_report(GOOD)
    assert "extra" not in report and report["path"] == ".sandbox_exec/state/checkpoint"


@pytest.mark.a
@pytest.mark.parametrize(
    "change",
    [
        {"saved": [1]},
        {"saved": "a"},
        {"skipped": [{"name": 1, "type": "t", "kind": "k", "reason": "r"}]},
        {"skipped": [["a"]]},
        {"bytes": -1},
        {"bytes": True},
        {"sha256": "../../etc"},
        {"format": 2},
        {"created": float("inf")},
        {"duration_s": "1"},
        {"python": None},
        {"unchanged": 0},
    ],
)
def test_a_malformed_report_is_a_violation(change: dict) -> None:
    with pytest.raises(CheckpointError) as e:
        _checkpoint.checkpoint_report({**GOOD, **change})
    assert e.value.kind == "violation"


# --- b ------------------------------------------------------------------------------------------
ROUND_TRIP = """
import os, numpy as np, pandas as pd
shared = [1, 2, 3]
holder = {"s": shared, "t": (shared,)}
arr = np.arange(1000, dtype=np.float32).reshape(10, 100)
df = pd.DataFrame({"x": range(5), "y": list("abcde")})
same = df
text = "é" * 3
square = lambda v: v * v
fh = open("f.txt", "w")
def helper():
    return 1
class Point:
    pass
p = Point()
points = [p]
"""


@pytest.mark.b
def test_round_trip_reports_what_was_skipped(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    s = sandbox.session(name)
    assert s.run(ROUND_TRIP).status == "ok"
    count = s.execution_count
    report = s.checkpoint()
    assert s.execution_count == count  # no execution count taken
    assert report["saved"] == ["shared", "holder", "arr", "df", "same", "text"]
    kinds = {e["name"]: e["kind"] for e in report["skipped"]}
    assert kinds == {
        "os": "module",
        "np": "module",
        "pd": "module",
        "square": "cell_defined",
        "helper": "cell_defined",
        "Point": "cell_defined",
        "p": "cell_defined",
        "points": "cell_defined",
        "fh": "unpicklable",
    }
    fh = next(e for e in report["skipped"] if e["name"] == "fh")
    assert fh["type"] == "_io.TextIOWrapper" and "cannot pickle" in fh["reason"]
    assert report["bytes"] > 4000 and len(report["sha256"]) == 64 and report["format"] == 1
    assert s.run("os.path.isfile('.sandbox_exec/state/checkpoint')").outputs[0]["data"]["text/plain"] == "True"
    s.close()

    s = sandbox.session(name)  # a new interpreter, the same workdir
    assert s.run("shared").status == "error"
    restored = s.restore()
    assert restored["found"] and restored["restored"] == report["saved"] and restored["sha256"] == report["sha256"]
    assert value(s, "holder['s'] is shared and holder['t'][0] is shared, same is df") == "(True, True)"
    assert (
        value(s, "float(arr.sum()), arr.dtype.name, df.y.tolist(), text")
        == "(499500.0, 'float32', ['a', 'b', 'c', 'd', 'e'], 'ééé')"
    )
    s.close()


@pytest.mark.b
def test_restore_updates_and_keeps_names_not_in_the_checkpoint(session: sandbox_exec.Session) -> None:
    session.run("a = 1")
    session.checkpoint()
    session.run("a = 2\nb = 3")
    session.restore()
    assert value(session, "a, b") == "(1, 3)"


@pytest.mark.b
def test_prelude_names_are_skipped_unless_rebound(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    s = sandbox.session(name, prelude="import math\nLIMIT = 10\ndef tool():\n    return 1\n")
    try:
        s.run("LIMIT = 20\nalias = tool")
        report = s.checkpoint()
        assert report["saved"] == ["LIMIT", "alias"]  # a prelude function saved by name
        assert {e["name"]: e["kind"] for e in report["skipped"]} == {"math": "prelude", "tool": "prelude"}
        s.restart()
        assert value(s, "LIMIT") == "10"
        s.restore()
        assert value(s, "LIMIT, alias is tool") == "(20, True)"
    finally:
        s.close()


@pytest.mark.b
def test_an_unchanged_namespace_is_not_written_again(session: sandbox_exec.Session) -> None:
    session.run("a = [1, 2]\nb = {'k': a}")
    first = session.checkpoint()
    again = session.checkpoint()
    assert not first["unchanged"] and again["unchanged"]
    assert (again["sha256"], again["created"]) == (first["sha256"], first["created"])
    session.run("a.append(3)")
    assert not session.checkpoint()["unchanged"]


@pytest.mark.b
def test_missing_checkpoint_is_a_clear_error(session: sandbox_exec.Session) -> None:
    session.run("x = 1")
    with pytest.raises(CheckpointError) as e:
        session.restore()
    assert e.value.kind == "missing" and "no checkpoint" in str(e.value)
    assert value(session, "x") == "1"


@pytest.mark.b
def test_after_a_crash_the_last_good_checkpoint_is_restored(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    s = sandbox.session(name, policy=AUTO)
    try:
        assert s.last_restore == {
            "found": False,
            "path": _checkpoint.CHECKPOINT_PATH,
            "restored": [],
            "duration_s": 0.0,
        }
        s.run("x = [1, 2]")
        s.run("y = {'k': x}")
        assert s.last_checkpoint is not None and s.last_checkpoint["saved"] == ["x", "y"]
        first = s.last_checkpoint["sha256"]
        crashed = s.run("z = 3\nimport os\nos._exit(7)")
        assert crashed.status == "crashed"
        assert s.last_checkpoint["sha256"] == first  # none after a dead interpreter
        r = s.run("x, y['k'] is x, 'z' in dir()")
        assert r.session_restarted and r.outputs[0]["data"]["text/plain"] == "([1, 2], True, False)"
        assert s.last_restore is not None and s.last_restore["restored"] == ["x", "y"]
        assert r.execution_count == 1  # the restore took no execution count
    finally:
        s.close()


@pytest.mark.b
def test_restart_restores_with_restore_on_start(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    s = sandbox.session(name, policy=AUTO)
    try:
        s.run("v = 'kept'")
        s.restart()
        assert value(s, "v") == "'kept'"
    finally:
        s.close()


@pytest.mark.b
def test_a_new_sandbox_on_the_same_root_restores(tmp_path: Path) -> None:
    with sandbox_exec.Sandbox(AUTO, root=tmp_path) as box:
        s = box.session("nb-1")
        s.run("import numpy as np\nbig = np.ones(1000)\nlabel = 'before the deploy'")
        saved = s.last_checkpoint
        assert saved is not None and saved["saved"] == ["big", "label"]
    with sandbox_exec.Sandbox(AUTO, root=tmp_path) as box:  # the backend restarted
        s = box.session("nb-1")
        assert s.last_restore is not None and s.last_restore["sha256"] == saved["sha256"]
        assert value(s, "label, float(big.sum())") == "('before the deploy', 1000.0)"


@pytest.mark.b
def test_a_pooled_session_takes_its_checkpoint_home(tmp_path: Path) -> None:
    with sandbox_exec.Sandbox(AUTO, root=tmp_path, pool_size=1) as box:
        box.session("warmup").close()
        deadline = time.monotonic() + 60
        while box.pool_idle() == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        s = box.session("nb-pooled")
        assert "served from the pool" in s.enforcement["start"]
        s.run("q = 42")
        s.close()  # the slot's files (its checkpoint) move to <root>/nb-pooled
        s = box.session("nb-pooled")
        assert value(s, "q") == "42"


@pytest.mark.b
def test_run_async_checkpoints_after_each_cell(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    s = sandbox.session(name, policy=AUTO)

    async def cells() -> None:
        await s.run_async("a = 1")
        await s.run_async("b = a + 1")

    try:
        asyncio.run(cells())
        assert s.last_checkpoint is not None and s.last_checkpoint["saved"] == ["a", "b"]
    finally:
        s.close()


@pytest.mark.b
def test_an_automatic_checkpoint_that_fails_does_not_fail_the_cell(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    s = sandbox.session(name, policy=AUTO)
    try:
        s.run("ok = 1")
        # A state directory the cell replaced with a file: the checkpoint cannot be written.
        r = s.run("import shutil\nshutil.rmtree('.sandbox_exec/state')\nopen('.sandbox_exec/state', 'w').close()")
        assert r.status == "ok"
        assert s.last_checkpoint is not None and s.last_checkpoint["kind"] == "unsafe"
        assert value(s, "ok") == "1"
    finally:
        s.close()


# --- c ------------------------------------------------------------------------------------------
def _saved(s: sandbox_exec.Session, code: str = "x = 'saved'") -> dict:
    s.run(code)
    return s.checkpoint()


@pytest.mark.c
@pytest.mark.parametrize(
    ("damage", "kind"),
    [
        ("payload, m = parts()\nwrite(payload[:-1] + bytes([payload[-1] ^ 1]), m)", "corrupt"),
        ("raw = open(P, 'rb').read()\nopen(P, 'wb').write(raw[: len(raw) // 2])", "corrupt"),
        ("open(P, 'wb').close()", "corrupt"),
        ("open(P, 'wb').write(b'x' * 100)", "corrupt"),
        ("payload, m = parts()\nm['payload_bytes'] += 1\nwrite(payload, m)", "corrupt"),
        ("payload, m = parts()\nm['python'] = '2.7'\nwrite(payload, m)", "foreign"),
        ("payload, m = parts()\nm['implementation'] = 'pypy'\nwrite(payload, m)", "foreign"),
        ("payload, m = parts()\nm['format'] = 99\nwrite(payload, m)", "foreign"),
        ("os.remove(P)\nos.symlink('/etc/passwd', P)", "unsafe"),
        ("os.remove(P)\nos.mkdir(P)", "unsafe"),
        ("import shutil\nshutil.rmtree('.sandbox_exec/state')\nos.symlink('/tmp', '.sandbox_exec/state')", "unsafe"),
    ],
)
def test_a_damaged_checkpoint_is_refused_and_the_namespace_kept(
    session: sandbox_exec.Session, damage: str, kind: str
) -> None:
    _saved(session)
    assert session.run(PARTS + damage).status == "ok"
    session.run("x = 'changed since'")
    with pytest.raises(CheckpointError) as e:
        session.restore()
    assert e.value.kind == kind, e.value
    assert value(session, "x") == "'changed since'"


@pytest.mark.c
def test_a_damaged_payload_under_its_old_manifest_is_written_again(session: sandbox_exec.Session) -> None:
    # The manifest still names the namespace's checksum, the payload does not match it: the
    # next checkpoint of the same namespace is not taken as unchanged.
    good = _saved(session)
    session.run(PARTS + "payload, m = parts()\nwrite(payload[:-1] + bytes([payload[-1] ^ 1]), m)\ndel payload, m")
    assert session.run("del P, TAIL, HEAD, parts, write, json, os").status == "ok"
    again = session.checkpoint()
    assert again["sha256"] == good["sha256"] and not again["unchanged"]
    assert session.restore()["restored"] == ["x"]


@pytest.mark.c
def test_a_fifo_at_the_checkpoint_path_does_not_hang_the_call(session: sandbox_exec.Session) -> None:
    _saved(session)
    session.run(PARTS + "os.remove(P)\nos.mkfifo(P)")
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as e:
        session.restore(timeout=5)
    assert e.value.kind == "unsafe" and time.monotonic() - t0 < 5
    # A new checkpoint replaces the FIFO (a rename never opens what it replaces).
    saved = session.checkpoint()["saved"]
    assert "x" in saved and session.restore()["restored"] == saved


@pytest.mark.c
def test_a_huge_sparse_checkpoint_ends_at_the_deadline(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    # A valid manifest that claims a 64 GiB payload (sparse: no file-size cap here): the
    # checksum pass reads it (the sandbox's own time), the call's deadline ends it, the
    # session stays.
    session = sandbox.session(name, policy=Policy(max_file_bytes=None))
    _saved(session)
    session.run(
        PARTS
        + "payload, m = parts()\nsize = 64 << 30\nm['payload_bytes'] = size\nenc = json.dumps(m).encode()\n"
        + "with open(P, 'wb') as f:\n    f.write(HEAD)\n    f.seek(len(HEAD) + size)\n"
        + "    f.write(enc + len(enc).to_bytes(4, 'big') + TAIL)\n"
    )
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as e:
        session.restore(timeout=1)
    assert e.value.kind == "timeout" and time.monotonic() - t0 < 1 + session.policy.interrupt_grace_s + 2
    assert value(session, "x") == "'saved'"
    session.close()


MALICIOUS = (
    PARTS
    + """
import hashlib, pickle
class Evil:
    def __reduce__(self):
        return (exec, ("import socket; open('pwned', 'w').write(socket.gethostname())",))
payload, m = parts()
payload = pickle.dumps({"evil": Evil()}, protocol=5)
m.update(payload_bytes=len(payload), sha256=hashlib.sha256(payload).hexdigest())
write(payload, m)
"""
)


@pytest.mark.c
def test_a_malicious_pickle_runs_only_in_its_own_sandbox(
    session: sandbox_exec.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    _saved(session)
    assert session.run(MALICIOUS).status == "ok"

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the backend unpickled something")

    for attribute in ("load", "loads", "Unpickler", "_Unpickler"):
        monkeypatch.setattr(pickle, attribute, refuse)
    report = session.restore()
    monkeypatch.undo()
    assert report["restored"] == ["evil"]
    # The pickle's code ran in the worker: the sandbox's hostname, inside its workdir.
    assert value(session, "open('pwned').read()") == repr(_core.SANDBOX_HOSTNAME)


@pytest.mark.c
def test_forged_reports_are_refused(session: sandbox_exec.Session) -> None:
    session.run(
        FIND_CHANNEL
        + "import sandbox_exec._worker.calls as c\n"
        + "c.OPS['checkpoint'] = lambda w, a: {'saved': [{'x': 1}], 'skipped': 'all', 'bytes': 'many'}\n"
        + "c.OPS['restore'] = lambda w, a: {'found': 'yes', 'restored': [1]}\n"
    )
    for call in (session.checkpoint, session.restore):
        with pytest.raises(CheckpointError) as e:
            call()
        assert e.value.kind == "violation"
    assert session.last_checkpoint is None and session.last_restore is None
    assert value(session, "1 + 1") == "2"


LISTING = "'x' in dir(), sorted(__import__('os').listdir('.sandbox_exec/state'))"


@pytest.mark.c
def test_start_with_a_corrupt_checkpoint_sets_it_aside(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    s = sandbox.session(name, policy=RESTORE_ONLY)
    try:
        _saved(s)
        s.run(PARTS + "payload, m = parts()\nwrite(payload[:-1] + bytes([payload[-1] ^ 1]), m)")
        s.restart()
        assert s.last_restore is not None and s.last_restore["kind"] == "corrupt"
        assert "set aside" in s.last_restore["error"]
        assert value(s, LISTING) == "(False, ['checkpoint.rejected'])"
    finally:
        s.close()


@pytest.mark.c
def test_a_checkpoint_that_kills_its_restore_is_set_aside(sandbox: sandbox_exec.Sandbox, name: str) -> None:
    # Loading it ends the interpreter: the session starts fresh without it, instead of dying
    # at every start.
    s = sandbox.session(name, policy=RESTORE_ONLY)
    try:
        _saved(s)
        exits = MALICIOUS.replace(
            "import socket; open('pwned', 'w').write(socket.gethostname())", "import os; os._exit(9)"
        )
        s.run(exits)
        s.restart()
        assert s.last_restore is not None and s.last_restore["status"] == "crashed"
        r = s.run(LISTING)
        assert r.status == "ok" and not r.session_restarted
        assert r.outputs[0]["data"]["text/plain"] == "(False, ['checkpoint.rejected'])"
    finally:
        s.close()


@pytest.fixture(params=["image", "watchdog"])
def disk_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "image":
        possible, why = _workdir_image.support()
        if not possible:
            pytest.skip(f"the workdir image needs a root backend with loop devices: {why}")
    else:
        monkeypatch.setattr(_workdir_image, "support", lambda: (False, "forced by the test"))
    return str(request.param)


@pytest.mark.c
def test_a_checkpoint_past_disk_bytes_fails_and_keeps_the_last_one(tmp_path: Path, disk_mode: str) -> None:
    policy = Policy(disk_bytes=16 * MiB, checkpoint="after_cell")
    with sandbox_exec.Sandbox(policy, root=tmp_path) as box:
        s = box.session("nb")
        assert ("size-capped ext4 image" in s.enforcement["disk_bytes"]) == (disk_mode == "image")
        s.run("x = 'small'")
        good = s.last_checkpoint
        assert good is not None and good["saved"] == ["x"]
        r = s.run("import os\nbig = os.urandom(24 << 20)")
        assert r.status == "ok"  # the cell itself wrote nothing
        assert s.last_checkpoint is not None and s.last_checkpoint["kind"] == "no_space", s.last_checkpoint
        with pytest.raises(CheckpointError) as e:
            s.checkpoint()
        assert e.value.kind == "no_space"
        listing = value(s, "sorted(os.listdir('.sandbox_exec/state'))")
        assert listing == "['checkpoint']"  # no temporary file left
        del_big = s.run("del big\nx = 'changed'")
        assert del_big.status == "ok"
        # the cell's own checkpoint succeeded again; the failed ones never replaced the good one
        assert s.restore()["restored"] == ["x"]
        assert value(s, "x") == "'changed'"


@pytest.mark.c
def test_the_failed_big_checkpoint_left_the_previous_one(tmp_path: Path, disk_mode: str) -> None:
    policy = Policy(disk_bytes=16 * MiB)
    with sandbox_exec.Sandbox(policy, root=tmp_path) as box:
        s = box.session("nb")
        good = _saved(s)
        s.run("import os\nbig = os.urandom(24 << 20)\nx = 'changed'")
        with pytest.raises(CheckpointError) as e:
            s.checkpoint()
        assert e.value.kind == "no_space"
        restored = s.restore()
        assert restored["sha256"] == good["sha256"] and value(s, "x") == "'saved'"
        assert s.run("open('after.txt', 'w').write('cells still run')").status == "ok"


@pytest.mark.c
def test_the_backend_never_opens_the_state_directory(
    session: sandbox_exec.Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Everything under the workdir is the cell's: the backend opens nothing there for a
    # checkpoint or a restore (the worker does), so no link or FIFO there can reach it.
    import builtins
    import os

    workdir = str(session.workdir)
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *a, **k):  # type: ignore[no-untyped-def]
        opened.append(str(file))
        return real_open(file, *a, **k)

    def spy_os_open(path, *a, **k):  # type: ignore[no-untyped-def]
        opened.append(str(path))
        return real_os_open(path, *a, **k)

    session.run("x = 1")
    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    session.checkpoint()
    session.restore()
    monkeypatch.undo()
    assert not [p for p in opened if p.startswith(workdir)], opened
