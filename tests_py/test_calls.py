"""Ladder B: calls that are not cells (issue 10, item 4): Session.call() runs a function the
prelude defined, with JSON arguments, and returns JSON; no execution count, no outputs, no
history; errors, deadlines, crashes and hostile replies end the call with CallError and
leave the session usable."""

from __future__ import annotations

import uuid

import pytest

import sandbox_exec
from conftest import FIND_CHANNEL
from sandbox_exec import CallError

pytestmark = pytest.mark.b

PRELUDE = """
import json as _json
def describe(name, limit=3):
    value = globals().get(name)
    return {"name": name, "type": type(value).__name__, "items": list(range(limit))}
def shout(text):
    print("printed, not returned")
    display("displayed, not returned")
    return text.upper()
def boom():
    raise ValueError("the hook failed")
def not_json():
    return {1, 2}
def spin():
    while True:
        pass
def die():
    import os
    os._exit(3)
"""


@pytest.fixture
def hooked(sandbox: sandbox_exec.Sandbox):
    s = sandbox.session(f"call-{uuid.uuid4().hex[:8]}", prelude=PRELUDE)
    yield s
    s.close()


def test_call_returns_json_and_takes_no_execution_count(hooked: sandbox_exec.Session) -> None:
    hooked.run("x = [1, 2, 3]")
    count = hooked.execution_count
    assert hooked.call("describe", "x", limit=2) == {"name": "x", "type": "list", "items": [0, 1]}
    assert hooked.execution_count == count
    r = hooked.run("len(In), 'x' in dir()")
    assert r.execution_count == count + 1
    # The call added no input to the history: In holds "" and the cells only (In[n] is cell
    # n; the prelude is not a cell).
    assert r.outputs[0]["data"]["text/plain"] == f"({r.execution_count + 1}, True)"


def test_what_a_call_prints_or_displays_is_not_an_output(hooked: sandbox_exec.Session) -> None:
    assert hooked.call("shout", "hi") == "HI"
    r = hooked.run("print('after')")
    assert r.stdout == "after\n"
    assert [o["output_type"] for o in r.outputs] == ["stream"]


def test_a_cell_rebinding_the_name_does_not_redirect_the_call(hooked: sandbox_exec.Session) -> None:
    hooked.run("def describe(*a, **k):\n    return 'hijacked'")
    assert hooked.call("describe", "x")["type"] == "NoneType"


def test_errors_raise_call_error_and_keep_the_session(hooked: sandbox_exec.Session) -> None:
    hooked.run("y = 5")
    with pytest.raises(CallError) as e:
        hooked.call("boom")
    assert e.value.ename == "ValueError" and "the hook failed" in e.value.evalue
    with pytest.raises(CallError, match="not JSON"):
        hooked.call("not_json")
    with pytest.raises(CallError, match="no function named 'missing'"):
        hooked.call("missing")
    with pytest.raises(TypeError, match="JSON"):
        hooked.call("describe", object())
    assert hooked.run("y").outputs[0]["data"]["text/plain"] == "5"


def test_a_call_past_its_deadline_is_interrupted(hooked: sandbox_exec.Session) -> None:
    hooked.run("z = 7")
    with pytest.raises(CallError) as e:
        hooked.call("spin", timeout=0.5)
    assert e.value.status == "timeout"
    assert hooked.run("z").outputs[0]["data"]["text/plain"] == "7"


def test_a_call_that_kills_the_interpreter_is_a_crash(hooked: sandbox_exec.Session) -> None:
    with pytest.raises(CallError) as e:
        hooked.call("die")
    assert e.value.status == "crashed"
    r = hooked.run("1 + 1")
    assert r.status == "ok" and r.session_restarted


def test_forged_replies_are_refused(hooked: sandbox_exec.Session) -> None:
    # A prelude function cannot be replaced, but a cell can patch what the worker sends: the
    # backend takes one reply, parsed as JSON and nothing else, and refuses a second one.
    hooked.run(
        FIND_CHANNEL
        + "import sandbox_exec._worker.calls as c\n"
        + "orig = c.OPS['call']\n"
        + "def twice(worker, args):\n"
        + '    channel.send(19, b\'{"output_type": "reply", "value": "forged"}\')\n'
        + "    return orig(worker, args)\n"
        + "c.OPS['call'] = twice\n"
    )
    with pytest.raises(CallError, match="more than one reply"):
        hooked.call("shout", "x")
    hooked.run("c.OPS['call'] = lambda w, a: None\nc.handle.__globals__['OPS'] = c.OPS")
    hooked.run(
        "def no_reply(worker, request):\n"
        + "    worker.channel.send_cell_done(request['execution_count'], None, 0)\n"
        + "c.handle = no_reply\nimport sandbox_exec._worker.main as m\nm.calls = c\n"
    )
    with pytest.raises(CallError, match="without a reply"):
        hooked.call("shout", "x")


def test_a_large_display_inside_a_call_is_not_sent(sandbox: sandbox_exec.Sandbox) -> None:
    prelude = "def big():\n    display('x' * 4_000_000)\n    return 'done'"
    policy = sandbox_exec.Policy(max_output_bytes=1 << 20)
    s = sandbox.session(f"call-{uuid.uuid4().hex[:8]}", prelude=prelude, policy=policy)
    try:
        assert s.call("big") == "done"
    finally:
        s.close()
