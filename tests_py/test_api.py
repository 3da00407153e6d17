"""The Python API as its ecosystem expects it: context managers (with and async with), a
frozen Result built complete, and outputs whose shapes match the exported TypedDicts."""

from __future__ import annotations

import asyncio
import dataclasses
import typing
import uuid

import pytest

import sandbox_exec
from conftest import pid_alive, wait_until
from sandbox_exec import Result, SessionClosedError


def _name() -> str:
    return f"api-{uuid.uuid4().hex[:12]}"


# --- Result ------------------------------------------------------------------------------


@pytest.mark.a
@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Result)])
def test_result_fields_cannot_be_reassigned(field):
    r = Result(status="ok")
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(r, field, getattr(r, field))
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(r, field)


@pytest.mark.b
def test_a_result_after_a_crash_is_built_complete(session):
    # The restart fields used to be set on the Result after it was made: a frozen Result
    # must get them at construction.
    session.run("import os\nos._exit(3)")
    r = session.run("1 + 1")
    assert r.status == "ok" and r.session_restarted
    assert r.restart_reason is not None and "exited with status 3" in r.restart_reason
    r2 = session.run("2")
    assert not r2.session_restarted and r2.restart_reason is None


# --- context managers --------------------------------------------------------------------


@pytest.mark.b
def test_leaving_a_session_with_block_closes_it(sandbox):
    with sandbox.session(_name()) as s:
        assert s.run("x = 1\nx + 1").outputs[0]["data"]["text/plain"] == "2"
        pid = s.worker_pid
        assert pid is not None and pid_alive(pid)
    assert s.closed
    assert wait_until(lambda: not pid_alive(pid))
    assert s not in sandbox.sessions()
    with pytest.raises(SessionClosedError):
        s.run("1")


@pytest.mark.b
def test_a_session_with_block_closes_it_when_the_block_raises(sandbox):
    with pytest.raises(RuntimeError, match="backend bug"), sandbox.session(_name()) as s:
        pid = s.worker_pid
        raise RuntimeError("backend bug")
    assert s.closed
    assert pid is not None and wait_until(lambda: not pid_alive(pid))


@pytest.mark.b
def test_leaving_a_session_async_with_block_closes_it(sandbox):
    async def main() -> tuple[sandbox_exec.Session, int | None, Result]:
        async with sandbox.session(_name()) as s:
            r = await s.run_async("21 * 2")
            return s, s.worker_pid, r

    s, pid, r = asyncio.run(main())
    assert r.outputs[0]["data"]["text/plain"] == "42"
    assert s.closed
    assert pid is not None and wait_until(lambda: not pid_alive(pid))


@pytest.mark.b
def test_leaving_a_sandbox_async_with_block_closes_every_session(tmp_path):
    async def main() -> tuple[sandbox_exec.Sandbox, list[sandbox_exec.Session]]:
        async with sandbox_exec.Sandbox(root=tmp_path) as box:
            sessions = [box.session("one"), box.session("two")]
            assert all(s.alive for s in sessions)
            return box, sessions

    box, sessions = asyncio.run(main())
    assert box.closed
    for s in sessions:
        assert s.closed
    assert not any(s.alive for s in sessions)
    with pytest.raises(SessionClosedError):
        box.session("three")


# --- typed outputs -----------------------------------------------------------------------

STORED = {
    "stream": sandbox_exec.StreamOutput,
    "display_data": sandbox_exec.DisplayDataOutput,
    "execute_result": sandbox_exec.ExecuteResultOutput,
    "error": sandbox_exec.ErrorOutput,
}
LIVE = {
    "stream": sandbox_exec.StreamOutput,
    "display_data": sandbox_exec.LiveDisplayData,
    "execute_result": sandbox_exec.LiveExecuteResult,
    "error": sandbox_exec.ErrorOutput,
    "update_display_data": sandbox_exec.UpdateDisplayDataEvent,
    "clear_output": sandbox_exec.ClearOutputEvent,
}


@pytest.mark.a
def test_the_output_types_are_exported_and_cover_every_output_type():
    for name in ("Output", "OutputEvent", "ErrorInfo", "DisplayUpdate", *[t.__name__ for t in LIVE.values()]):
        assert name in sandbox_exec.__all__ and hasattr(sandbox_exec, name)
    assert set(typing.get_args(sandbox_exec.Output)) == set(STORED.values())
    assert set(typing.get_args(sandbox_exec.OutputEvent)) == set(LIVE.values())


def _assert_shape(output: typing.Mapping[str, object], kinds: dict[str, type]) -> None:
    shape = kinds[str(output["output_type"])]
    keys = set(output)
    required, optional = shape.__required_keys__, shape.__optional_keys__  # type: ignore[attr-defined]
    assert required <= keys <= required | optional, (shape.__name__, sorted(keys))


@pytest.mark.b
def test_every_output_and_event_has_its_typed_shape(session):
    events: list[sandbox_exec.OutputEvent] = []
    r = session.run(
        "import sys\nfrom IPython.display import display, update_display, clear_output\n"
        "print('gone')\nclear_output(wait=True)\n"
        "print('out')\nprint('err', file=sys.stderr)\n"
        "display({'text/plain': 'a'}, raw=True, display_id='d1')\n"
        "update_display({'text/plain': 'b'}, raw=True, display_id='d1')\n"
        "display({'text/plain': 'plain'}, raw=True)\n"
        "try:\n    1 / 0\nexcept ZeroDivisionError as e:\n    __import__('traceback').print_exc()\n"
        "42",
        on_output=events.append,
    )
    assert r.status == "ok", r
    assert [o["output_type"] for o in r.outputs] == [
        "stream",
        "stream",
        "display_data",
        "display_data",
        "stream",
        "execute_result",
    ]
    for output in r.outputs:
        _assert_shape(output, STORED)
    assert {e["output_type"] for e in events} == set(LIVE) - {"error"}
    for event in events:
        _assert_shape(event, LIVE)
    failed = session.run("raise ValueError('no')", on_output=events.append)
    assert [o["output_type"] for o in failed.outputs] == ["error"]
    _assert_shape(failed.outputs[0], STORED)
    _assert_shape(events[-1], LIVE)
    assert failed.error is not None and set(failed.error) == set(sandbox_exec.ErrorInfo.__required_keys__)
    assert [set(u) for u in r.display_updates] == [set(sandbox_exec.DisplayUpdate.__required_keys__)]
