"""The audit trail (issue 10, item 8): one record per cell and per call, to a hook, a
JSON-lines log and an OpenTelemetry span; complete and valid (``_audit.validate_record``)
for the statuses ok, error, timeout, crashed and memory and for a call; the code hashed
unless asked; a failing sink never fails a cell; the log opened safely; the supervisor's
log delivered into Python's ``logging``.

Ladder: a (the record's validator, the tracer without OpenTelemetry, the log's opening
rules), b (real cells end to end), c (what a hostile cell or a planted file can do to the
audit)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import sandbox_exec
from conftest import FIND_CHANNEL
from sandbox_exec import CallError, Policy, SandboxError, _audit, _core, _supervisor_log

MiB = 1 << 20
PRELUDE = "def describe(x):\n    return {'x': x}\ndef boom():\n    raise ValueError('no')\n"


class Trail:
    """A Sandbox with every sink: the hook's records, the log's lines, the spans."""

    def __init__(self, root: Path, **kwargs: Any) -> None:
        self.records: list[dict[str, Any]] = []
        self.log = root / "audit.jsonl"
        self.spans = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.spans))
        self.box = sandbox_exec.Sandbox(
            root=root / "sessions", audit=self.records.append, audit_log=self.log, tracing=provider, **kwargs
        )

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_bytes().splitlines()]

    def last(self) -> dict[str, Any]:
        """The newest record, checked: valid, the same in the log, one span for it."""
        record = self.records[-1]
        assert _audit.validate_record(record) == [], record
        assert self.lines()[-1] == record  # the log's line is the hook's record
        assert len(self.lines()) == len(self.records)
        return record


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory):
    t = Trail(tmp_path_factory.mktemp("audit"))
    yield t
    t.box.close()


@pytest.fixture
def session(trail: Trail):
    s = trail.box.session(f"audited-{uuid.uuid4().hex[:8]}", prelude=PRELUDE)
    yield s
    s.close()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def span_of(trail: Trail, record: dict[str, Any]) -> Any:
    spans = [s for s in trail.spans.get_finished_spans() if s.attributes.get("sandbox_exec.start") == record["start"]]
    assert len(spans) == 1, spans
    return spans[0]


# --- ladder b: real cells --------------------------------------------------------------------
@pytest.mark.b
def test_an_ok_cell_makes_one_complete_record_in_every_sink(trail: Trail, session: sandbox_exec.Session) -> None:
    code = "print('hello')\n41 + 1"
    r = session.run(code, cell_id="cell-7")
    assert r.status == "ok"
    rec = trail.last()
    assert rec["kind"] == "cell" and rec["op"] is None
    assert rec["session"] == session.name and rec["cell_id"] == "cell-7"
    assert rec["execution_count"] == r.execution_count == 1
    assert rec["code_sha256"] == sha(code) and rec["code_bytes"] == len(code) and rec["code"] is None
    assert rec["status"] == "ok" and rec["reason"] is None
    assert rec["duration_s"] == r.duration_s and rec["cpu_s"] == r.cpu_s
    assert rec["peak_memory_bytes"] == r.peak_memory_bytes
    assert rec["output_bytes"] > len("hello\n42") and rec["truncated_bytes"] == 0
    assert rec["worker_pid"] == session.worker_pid
    assert not rec["interpreter_restarted"] and rec["restart_reason"] is None
    enforcement = session.enforcement
    assert rec["interpreter_start"] == enforcement["start"]
    for name, limit in rec["limits"].items():
        if name != "timeout_s":
            assert limit == {"value": getattr(session.policy, name), "mechanism": enforcement[name]}, name
    assert rec["limits"]["timeout_s"]["value"] == session.policy.timeout_s
    span = span_of(trail, rec)
    assert span.name == "sandbox_exec.cell"
    assert span.attributes["sandbox_exec.cell_id"] == "cell-7"
    assert span.attributes["sandbox_exec.code_sha256"] == sha(code)
    assert span.attributes["sandbox_exec.limit.memory_bytes"] == session.policy.memory_bytes
    assert span.attributes["sandbox_exec.limit.memory_bytes.mechanism"] == enforcement["memory_bytes"]
    assert "sandbox_exec.code" not in span.attributes  # None: left out
    assert span.status.status_code == StatusCode.UNSET
    assert span.start_time == int(rec["start_unix"] * 1e9) or abs(span.start_time / 1e9 - rec["start_unix"]) < 1e-6
    assert span.end_time >= span.start_time + int(r.duration_s * 1e9) - 1000


@pytest.mark.b
def test_an_error_cell(trail: Trail, session: sandbox_exec.Session) -> None:
    r = session.run("1 / 0", cell_id="e")
    assert r.status == "error"
    rec = trail.last()
    assert rec["status"] == "error" and rec["execution_count"] == r.execution_count
    span = span_of(trail, rec)
    assert span.status.status_code == StatusCode.ERROR and "error" in span.status.description


@pytest.mark.b
def test_a_timeout_with_its_own_deadline(trail: Trail, session: sandbox_exec.Session) -> None:
    r = session.run("while True:\n    pass", timeout=0.5, cell_id="spin")
    assert r.status == "timeout"
    rec = trail.last()
    assert rec["status"] == "timeout" and "deadline" in rec["reason"]
    assert rec["limits"]["timeout_s"] == {"value": 0.5, "mechanism": "supervisor deadline (SIGINT, then kill)"}
    # (A loaded machine gives the spinning cell less than its wall time: only "some".)
    assert rec["duration_s"] == r.duration_s >= 0.5 and rec["cpu_s"] == r.cpu_s and r.cpu_s > 0.01
    assert span_of(trail, rec).status.status_code == StatusCode.ERROR


@pytest.mark.b
def test_a_crash_and_the_restart_that_follows(trail: Trail, session: sandbox_exec.Session) -> None:
    first_pid = session.worker_pid
    r = session.run("import os\nos._exit(3)", cell_id="die")
    assert r.status == "crashed"
    rec = trail.last()
    assert rec["status"] == "crashed" and "exit" in rec["reason"] and rec["worker_pid"] == first_pid
    r = session.run("1", cell_id="after")
    assert r.session_restarted
    rec = trail.last()
    assert rec["interpreter_restarted"] and rec["restart_reason"] == r.restart_reason
    assert rec["worker_pid"] == session.worker_pid != first_pid
    assert rec["execution_count"] == 1  # a fresh interpreter counts from 1


@pytest.mark.b
def test_a_memory_limit(trail: Trail) -> None:
    s = trail.box.session(f"audited-mem-{uuid.uuid4().hex[:8]}", policy=Policy(memory_bytes=256 * MiB, timeout_s=20))
    try:
        r = s.run("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))", cell_id="bomb")
        assert r.status == "memory", (r.status, r.reason)
        rec = trail.last()
        assert rec["status"] == "memory" and rec["cell_id"] == "bomb"
        assert rec["limits"]["memory_bytes"]["value"] == 256 * MiB
        assert rec["limits"]["memory_bytes"]["mechanism"] == s.enforcement["memory_bytes"]
        assert rec["peak_memory_bytes"] is not None and rec["peak_memory_bytes"] > 128 * MiB
    finally:
        s.close()


@pytest.mark.b
def test_calls_are_audited_ok_and_failed(trail: Trail, session: sandbox_exec.Session) -> None:
    before = len(trail.records)
    assert session.call("describe", 5) == {"x": 5}
    rec = trail.last()
    assert len(trail.records) == before + 1
    assert rec["kind"] == "call" and rec["op"] == "call" and rec["execution_count"] is None
    assert rec["status"] == "ok" and rec["cell_id"] is None
    assert rec["limits"]["max_reply_bytes"]["value"] == session.policy.max_output_bytes
    assert span_of(trail, rec).name == "sandbox_exec.call"
    with pytest.raises(CallError):
        session.call("boom")
    rec = trail.last()
    assert rec["kind"] == "call" and rec["status"] == "error"
    # The internal call takes a cell id (the ops issue 10 adds pass theirs).
    session._call(
        "call", {"function": "describe", "args": [1], "kwargs": {}}, timeout=10, max_reply_bytes=4096, cell_id="c9"
    )
    rec = trail.last()
    assert rec["cell_id"] == "c9" and rec["limits"]["max_reply_bytes"]["value"] == 4096
    assert session.execution_count == 0  # calls took no count


@pytest.mark.b
def test_run_async_and_run_once_take_a_cell_id(trail: Trail, session: sandbox_exec.Session) -> None:
    import asyncio

    r = asyncio.run(session.run_async("2 + 2", cell_id="async-1"))
    assert r.status == "ok" and trail.last()["cell_id"] == "async-1"
    r = trail.box.run_once("3", cell_id="once")
    assert r.status == "ok" and trail.last()["cell_id"] == "once"
    with pytest.raises(TypeError, match="cell_id"):
        session.run("1", cell_id=7)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cell_id"):
        session.run("1", cell_id="x" * 2000)


@pytest.mark.b
def test_code_is_logged_in_clear_only_when_asked(tmp_path: Path) -> None:
    secret = f"token_{uuid.uuid4().hex}"
    hashed = Trail(tmp_path / "hashed")
    try:
        hashed.box.session("s").run(f"x = '{secret}'")
        assert secret.encode() not in hashed.log.read_bytes()
        assert all(secret not in json.dumps(r) for r in hashed.records)
        assert all(secret not in str(s.attributes) for s in hashed.spans.get_finished_spans())
    finally:
        hashed.box.close()
    clear = Trail(tmp_path / "clear", audit_code=True)
    try:
        s = clear.box.session("s", prelude=PRELUDE)
        s.run(f"x = '{secret}'")
        assert clear.last()["code"] == f"x = '{secret}'"
        s.call("describe", secret)
        rec = clear.last()
        assert secret in rec["code"] and json.loads(rec["code"])["call"] == "call"
        assert rec["code_sha256"] == sha(rec["code"])
    finally:
        clear.box.close()


@pytest.mark.b
def test_a_failing_sink_never_fails_a_cell(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    got: list[dict[str, Any]] = []

    def bad_hook(record: dict[str, Any]) -> None:
        got.append(record)
        raise RuntimeError("the hook is broken")

    box = sandbox_exec.Sandbox(root=tmp_path / "s", audit=bad_hook, audit_log=tmp_path / "a.jsonl", tracing=False)
    try:
        s = box.session("s")
        with caplog.at_level(logging.ERROR, logger="sandbox_exec.audit"):
            assert s.run("1").status == "ok"
        assert len(got) == 1 and any("the hook is broken" in (r.exc_text or "") for r in caplog.records)
        assert len((tmp_path / "a.jsonl").read_bytes().splitlines()) == 1  # the other sink got it
        # The log's descriptor fails (read-only now): the cell runs, the hook still gets it.
        auditor = box._table.auditor
        assert auditor is not None
        with auditor._lock:
            os.close(auditor._fd)  # type: ignore[arg-type]
            auditor._fd = os.open(tmp_path / "a.jsonl", os.O_RDONLY)
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="sandbox_exec.audit"):
            assert s.run("2").status == "ok"
        assert len(got) == 2 and any("writing the audit log failed" in r.getMessage() for r in caplog.records)
    finally:
        box.close()


@pytest.mark.b
def test_without_sinks_no_auditor_is_made(tmp_path: Path) -> None:
    box = sandbox_exec.Sandbox(root=tmp_path, tracing=False)
    try:
        assert box._table.auditor is None
        assert box.session("s").run("1").status == "ok"
    finally:
        box.close()


@pytest.mark.b
def test_the_supervisors_log_reaches_python_logging(trail: Trail, caplog: pytest.LogCaptureFixture) -> None:
    _core.set_log_level("debug")
    try:
        with caplog.at_level(logging.DEBUG, logger=_supervisor_log.LOGGER_NAME):
            # Started on another thread: the core logs there, without the GIL (the start
            # releases it), and the record names that thread.
            made: list[sandbox_exec.Session] = []
            t = threading.Thread(target=lambda: made.append(trail.box.session(f"logged-{uuid.uuid4().hex[:8]}")))
            t.start()
            t.join()
            pid = made[0].worker_pid
            made[0].close()  # drains
    finally:
        _core.set_log_level("warn")
    records = [r for r in caplog.records if r.name == "sandbox_exec.supervisor"]
    spawned = [r for r in records if f"worker {pid}" in r.getMessage() and "spawned" in r.getMessage()]
    assert len(spawned) == 1 and spawned[0].levelno == logging.DEBUG, [r.getMessage() for r in records]
    assert spawned[0].supervisor_thread == t.native_id != threading.get_native_id()
    assert spawned[0].pathname == "(supervisor)"


# --- ladder c: what a hostile cell or a planted file can do --------------------------------
@pytest.mark.c
def test_a_hostile_cell_cannot_forge_lines_or_hide_what_it_used(tmp_path: Path) -> None:
    t = Trail(tmp_path, audit_code=True)
    try:
        s = t.box.session("hostile")
        fake = json.dumps({"schema": _audit.AUDIT_SCHEMA, "status": "ok"})
        # Its code (logged in clear here) holds a newline, a fake record, controls and a
        # line separator; it burns CPU and memory, then claims in its end-of-cell report that
        # it left 10**15 output bytes unsent.
        code = (
            f"# \n{fake}\n# \x1b[2J\u2028\r\n"
            + "import time\nb = b'x' * (200 << 20)\nt = time.process_time()\n"
            + "while time.process_time() - t < 0.3:\n    pass\n"
            + "import sandbox_exec._worker.channel as wc\n"
            + "orig = wc.Channel.send_cell_done\n"
            + "wc.Channel.send_cell_done = lambda self, c, e, d: orig(self, c, e, 10**15)\n"
        )
        s.run(code, cell_id='x\n{"forged": 1}')
        s.run("1")
        raw = t.log.read_bytes()
        assert raw.count(b"\n") == len(t.records) == 2
        assert all(line.isascii() and b"\x1b" not in line for line in raw.splitlines())
        rec = t.lines()[0]
        assert _audit.validate_record(rec) == [] and rec == t.records[0]
        assert rec["code"] == code and rec["cell_id"] == 'x\n{"forged": 1}'
        assert rec["cpu_s"] >= 0.25 and rec["peak_memory_bytes"] >= 200 * MiB
        # The claim in its report (and the next cell's) is kept apart from what the
        # supervisor measured.
        for claimed in t.records:
            assert claimed["worker_truncated_bytes"] == 10**15 and claimed["truncated_bytes"] == 0
    finally:
        t.box.close()


@pytest.mark.c
def test_a_protocol_violation_is_audited_as_crashed(trail: Trail, session: sandbox_exec.Session) -> None:
    r = session.run(FIND_CHANNEL + "channel.send(999, b'\\x1b]52;c;evil\\x07\\n')\nimport time\ntime.sleep(2)")
    assert r.status == "crashed"
    rec = trail.last()
    assert rec["status"] == "crashed" and "protocol violation" in rec["reason"]


# --- ladder a: the validator, the tracer, the log's opening rules ---------------------------
def _valid() -> dict[str, Any]:
    return {
        "schema": _audit.AUDIT_SCHEMA,
        "kind": "cell",
        "session": "s",
        "cell_id": None,
        "op": None,
        "execution_count": 1,
        "code_sha256": sha("1"),
        "code_bytes": 1,
        "code": "1",
        "start": "2024-01-02T03:04:05.000006+00:00",
        "start_unix": 1704164645.000006,
        "duration_s": 0.1,
        "cpu_s": None,
        "peak_memory_bytes": None,
        "status": "ok",
        "reason": None,
        "output_bytes": 0,
        "truncated_bytes": 0,
        "worker_truncated_bytes": 0,
        "worker_pid": 5,
        "interpreter_restarted": False,
        "restart_reason": None,
        "interpreter_start": "cold",
        "limits": {name: {"value": None, "mechanism": "none"} for name in _audit._POLICY_LIMITS},
    }


@pytest.mark.a
@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"status": "fine"}, "status"),
        ({"kind": "call"}, "op is set"),
        ({"code_sha256": "0" * 64}, "does not hash"),
        ({"start_unix": 5.0}, "disagree"),
        ({"execution_count": "1"}, "execution_count"),
        ({"interpreter_restarted": 1}, "interpreter_restarted"),
        ({"restart_reason": "x"}, "restart_reason is set"),
        ({"limits": {}}, "missing 'memory_bytes'"),
        ({"extra": 1}, "unknown key"),
    ],
)
def test_the_validator_finds_what_is_wrong(change: dict[str, Any], problem: str) -> None:
    assert _audit.validate_record(_valid()) == []
    assert any(problem in p for p in _audit.validate_record({**_valid(), **change}))
    incomplete = _valid()
    del incomplete["cpu_s"]
    assert _audit.validate_record(incomplete) == ["missing 'cpu_s'"]


@pytest.mark.a
def test_no_hard_dependency_on_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # an import of it fails
    assert _audit.make_tracer(None) is None
    assert _audit.Auditor.make(None, None, False, None) is None
    with pytest.raises(ImportError, match="opentelemetry-api"):
        _audit.make_tracer(True)
    assert _audit.make_tracer(False) is None


@pytest.mark.a
def test_the_log_is_created_0600_and_appended(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        path = tmp_path / "new.jsonl"
        fd = _audit.open_log(path)
    finally:
        os.umask(old)
    os.write(fd, b"one\n")
    os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    fd = _audit.open_log(path)
    os.write(fd, b"two\n")
    os.close(fd)
    assert path.read_bytes() == b"one\ntwo\n"


@pytest.mark.c
def test_the_log_follows_no_planted_link_and_takes_no_special_file(tmp_path: Path) -> None:
    target = tmp_path / "victim"
    target.write_bytes(b"precious\n")
    (tmp_path / "link.jsonl").symlink_to(target)
    with pytest.raises(SandboxError, match="symlink"):
        _audit.open_log(tmp_path / "link.jsonl")
    (tmp_path / "real").mkdir()
    (tmp_path / "dirlink").symlink_to(tmp_path / "real")
    with pytest.raises(SandboxError, match="symlink"):
        _audit.open_log(tmp_path / "dirlink" / "a.jsonl")
    assert not (tmp_path / "real" / "a.jsonl").exists()
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(SandboxError):  # refused at once, not blocked waiting for a reader
        _audit.open_log(tmp_path / "fifo")
    os.link(target, tmp_path / "hard.jsonl")
    with pytest.raises(SandboxError, match="hard links"):
        _audit.open_log(tmp_path / "hard.jsonl")
    assert target.read_bytes() == b"precious\n"
    with pytest.raises(SandboxError, match="audit_log"):
        sandbox_exec.Sandbox(root=tmp_path / "s", audit_log=tmp_path / "link.jsonl")


@pytest.mark.c
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a file to another user")
def test_the_log_refuses_another_users_file(tmp_path: Path) -> None:
    planted = tmp_path / "planted.jsonl"
    planted.write_bytes(b"")
    os.chown(planted, 12345, 12345)
    with pytest.raises(SandboxError, match="belongs to uid 12345"):
        _audit.open_log(planted)
