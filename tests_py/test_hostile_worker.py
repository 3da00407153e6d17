"""Ladder C: a worker that breaks the protocol. The cell's own code writes garbage into its
shared-memory ring or sends malformed messages on its channel.

A broken ring (counters, frame headers, frame types) ends that one session ("crashed",
reason "protocol violation") and nothing else: the backend (this process) carries on, another
session keeps its state, and the next cell answers. A well-framed message whose content is
bad (invalid or over-deep JSON, a wrong shape, a bad end-of-cell report) becomes a marker in
the cell's outputs and the cell runs on (tests_py/test_boundary_messages.py has the rest)."""

from __future__ import annotations

import pytest

from conftest import FIND_CHANNEL

pytestmark = pytest.mark.c

# Locates the ring mapping (a memfd named sandbox_exec-ring) from inside the cell.
FIND_RING = """
import ctypes, os, time
base = next(int(line.split("-")[0], 16) for line in open("/proc/self/maps")
            if "sandbox_exec-ring" in line)
EVENT_CONTROL = base + 512          # RingControl of the event ring (channel.h)
def poke(offset, value):
    ctypes.c_uint64.from_address(EVENT_CONTROL + offset).value = value
def wake():
    os.write(7, b"!")               # the event doorbell (spawn_spec.h: kEventBell)
"""


ATTACKS = {
    # tail not a multiple of the frame alignment
    "misaligned tail": FIND_RING + "poke(64, 12345)\nwake()\ntime.sleep(2)",
    # tail claims more bytes than the ring holds
    "tail past capacity": FIND_RING + "poke(64, 1 << 40)\nwake()\ntime.sleep(2)",
    # a frame header whose length runs past what was published
    "length past the end": FIND_RING
    + (
        "data = base + 4096 + (1 << 20)\n"
        "ctypes.memmove(data, (ctypes.c_uint32 * 2)(0x7fffffff, 19), 8)\n"
        "poke(64, 8)\nwake()\ntime.sleep(2)"
    ),
    "unknown frame type": FIND_CHANNEL + "channel.send(999, b'x')\nimport time\ntime.sleep(2)",
    "ready frame mid-cell": FIND_CHANNEL + "channel.send(16, b'{}')\nimport time\ntime.sleep(2)",
}

# Well-framed messages with bad content: each becomes a marker naming why; the cell goes on.
BAD_MESSAGES = {
    "invalid json message": (FIND_CHANNEL + "channel.send(19, b'{not json')", "invalid JSON"),
    "message of the wrong shape": (
        FIND_CHANNEL + ('channel.send(19, b\'{"output_type": "display_data", "data": {"text/plain": 5}}\')'),
        "text/plain must be text",
    ),
    "deeply nested json": (
        FIND_CHANNEL + "channel.send(19, b'{\"a\":' + b'[' * 100000 + b']' * 100000 + b'}')",
        "nested deeper than 64 levels",
    ),
    "not an object": (FIND_CHANNEL + "channel.send(19, b'[1, 2]')", "must be a JSON object"),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_protocol_violation_ends_only_that_session(sandbox, attack):
    bystander = sandbox.session("bystander")
    bystander.run("mine = 'intact'")
    victim = sandbox.session(f"hostile-{abs(hash(attack))}")
    try:
        victim.run("x = 1")
        r = victim.run(ATTACKS[attack], timeout=20)
        assert r.status == "crashed", (r.status, r.outputs)
        assert r.reason is not None and "protocol violation" in r.reason
        assert r.duration_s < 1.5  # detected at once, not at the cell's end
        assert not victim.alive
        # the bystander is untouched; the hostile session restarts clean
        assert bystander.run("mine").outputs[0]["data"]["text/plain"] == "'intact'"
        r = victim.run("'x' in globals()")
        assert r.session_restarted and r.outputs[0]["data"]["text/plain"] == "False"
    finally:
        victim.close()


@pytest.mark.parametrize("attack", sorted(BAD_MESSAGES))
def test_a_bad_message_becomes_a_marker_and_the_cell_runs_on(sandbox, attack):
    code, why = BAD_MESSAGES[attack]
    s = sandbox.session(f"bad-message-{abs(hash(attack))}")
    try:
        s.run("x = 1")
        r = s.run(code + "\nprint('after')\nx + 1", timeout=20)
        assert r.status == "ok", (r.status, r.reason, r.outputs)
        assert "an output was rejected" in r.stderr and why in r.stderr, r.stderr
        assert r.stdout == "after\n"
        assert r.outputs[-1]["data"]["text/plain"] == "2"
        assert s.alive and not r.session_restarted
    finally:
        s.close()


def test_a_bad_cell_done_report_is_an_error_not_a_dead_session(sandbox):
    s = sandbox.session("bad-done")
    try:
        s.run("kept = 'yes'")
        count = s.execution_count + 1
        r = s.run(
            FIND_CHANNEL + f'channel.send(20, b\'{{"status": "maybe", "execution_count": {count}}}\')\n'
            "import time\ntime.sleep(1)",
            timeout=20,
        )
        assert r.status == "error" and r.error["ename"] == "ProtocolError", (r.status, r.error)
        assert 'not "ok" or "error"' in r.error["evalue"]
        assert r.duration_s < 1  # the report ended the cell; it was not waited out
        # (the worker's own report for that cell comes later and is discarded as stale)
        after = s.run("import time\ntime.sleep(1.5)\nkept")
        assert [o["data"]["text/plain"] for o in after.outputs if o["output_type"] == "execute_result"] == ["'yes'"]
    finally:
        s.close()


def test_output_cap_truncates_with_a_marker_and_the_cell_keeps_running(sandbox):
    import sandbox_exec

    s = sandbox.session("capped", policy=sandbox_exec.Policy(max_output_bytes=100_000))
    try:
        r = s.run("for i in range(20000):\n    print('line', i)\ndone = True\n'finished'")
        assert r.status == "ok"
        assert r.truncated_bytes > 0
        assert len(r.stdout.encode()) <= 100_000
        assert r.stdout.startswith("line 0\nline 1\n")
        assert "output truncated" in r.stderr and str(r.truncated_bytes) in r.stderr
        assert s.run("done").outputs[0]["data"]["text/plain"] == "True"
        # a single display larger than the cap is dropped whole, and counted
        r = s.run("display('z' * 500_000)\nprint('small')")
        assert r.truncated_bytes >= 500_000
        assert r.stdout == "small\n"
    finally:
        s.close()


def test_flood_does_not_grow_the_backend_memory(sandbox):
    import resource

    import sandbox_exec

    s = sandbox.session("flood", policy=sandbox_exec.Policy(max_output_bytes=1 << 20, timeout_s=120))
    try:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        r = s.run("chunk = 'x' * 65535 + '\\n'\nfor _ in range(4000):\n    print(chunk, end='')")  # ~256 MB
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        assert r.status == "ok"
        assert r.truncated_bytes > 200 << 20
        assert after - before < 64 << 20, (before, after)
    finally:
        s.close()
