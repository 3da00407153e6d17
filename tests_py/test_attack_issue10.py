"""Ladder C: an outside review of issue 10's features (Session.call, variables, fetch, reset,
mode="exec", the audit trail, the example service), attacked black-box from a cell and from
the backend, against what docs/api.md and docs/threat_model.md promise.

The review's findings (F1-F8: a forged Arrow null column that decoded to 80 MB, a service
value of 50 MB, user code run by "safe" previews of pandas/numpy subclasses, an infinite
timeout, the service's cell ids and notebook ids, an endpoint it documented and lacked) were
fixed; their reproducers stay here and pass. The other tests are defences that held."""

from __future__ import annotations

import asyncio
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sandbox_exec
from conftest import FIND_CHANNEL, REPO
from http_service import serve
from sandbox_exec import CallError

pytestmark = pytest.mark.c


# What a hostile cell runs to answer fetch() itself (as test_fetch_attacks.py does).
FORGE = (
    "import base64, pyarrow as pa\n"
    "import sandbox_exec._worker.calls as c\n"
    "REPLY = None\n"
    "c.OPS['fetch'] = lambda worker, args: REPLY\n"
    "def arrow(table):\n"
    "    sink = pa.BufferOutputStream()\n"
    "    with pa.ipc.new_stream(sink, table.schema) as w:\n"
    "        w.write_table(table)\n"
    "    return sink.getvalue().to_pybytes()\n"
)

PRELUDE = (
    "def echo(x):\n    return x\n"
    "def spin():\n    while True:\n        pass\n"
    "def stubborn(seconds):\n"
    "    import time\n"
    "    end = time.monotonic() + seconds\n"
    "    while time.monotonic() < end:\n"
    "        try:\n"
    "            time.sleep(0.02)\n"
    "        except KeyboardInterrupt:\n"
    "            pass\n"
    "    return 'late'\n"
)


def _ok(r: sandbox_exec.Result) -> None:
    assert r.status == "ok", (r.status, r.error, r.reason)


@pytest.fixture
def s(sandbox: sandbox_exec.Sandbox) -> Iterator[sandbox_exec.Session]:
    session = sandbox.session(f"atk-{uuid.uuid4().hex[:10]}", prelude=PRELUDE)
    yield session
    session.close()


# --- findings (open) -----------------------------------------------------------------------


def test_a_forged_null_column_does_not_allocate_past_the_limit(s: sandbox_exec.Session) -> None:
    _ok(
        s.run(
            FORGE
            + "REPLY = {'format': 'arrow', 'data': base64.b64encode(arrow(pa.table({'n': pa.nulls(10**7)}))).decode()}"
        )
    )
    limit = 1 << 20
    try:
        df = s.fetch("x", as_pandas=True, max_bytes=limit)
    except CallError:
        return  # refused: the defence we want
    assert int(df.memory_usage(deep=False).sum()) <= 16 * limit


def test_safe_previews_run_no_code_of_pandas_or_numpy_subclasses(s: sandbox_exec.Session) -> None:
    import pandas  # noqa: F401  (the test extra: never skipped)

    _ok(
        s.run(
            "import numpy as np, pandas as pd\n"
            "class D(pd.DataFrame):\n"
            "    @property\n"
            "    def shape(self):\n"
            "        open('ran_dataframe_shape', 'w').close()\n"
            "        return (1, 1)\n"
            "class A(np.ndarray):\n"
            "    @property\n"
            "    def nbytes(self):\n"
            "        open('ran_ndarray_nbytes', 'w').close()\n"
            "        return 1\n"
            "df = D({'a': [1]})\n"
            "arr = np.zeros(3).view(A)\n"
        )
    )
    s.variables(previews="safe")
    ran = sorted(p.name for p in Path(s.workdir).iterdir() if p.name.startswith("ran_"))
    assert ran == [], f"user code ran during a 'safe' listing: {ran}"


def test_an_infinite_timeout_is_refused_everywhere(tmp_path: Path) -> None:
    # inf ended every cell and call at once as "timeout" and broke the audit line: it is a
    # bad argument now, for cells and calls alike (as True is); a finite one still works.
    log = tmp_path / "audit.jsonl"
    with sandbox_exec.Sandbox(root=tmp_path / "root", audit_log=str(log)) as box:
        session = box.session("inf", prelude="def f():\n    return 1")
        # 1e10 s overflowed the core's nanosecond deadline: a cell of 0.5 s "ran past" it
        for bad in (math.inf, math.nan, True, 1e10):
            with pytest.raises(ValueError, match="positive number of seconds up to"):
                session.run("1 + 1", timeout=bad)
            with pytest.raises(ValueError, match="positive number of seconds up to"):
                session.call("f", timeout=bad)
            with pytest.raises(ValueError, match="positive number of seconds up to"):
                session.variables(timeout=bad)
        r = session.run("1 + 1", timeout=5)
        assert r.status == "ok", (r.status, r.reason)
        r = session.run("import time; time.sleep(0.2)", timeout=sandbox_exec.policy.MAX_SECONDS)
        assert r.status == "ok", (r.status, r.reason)
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["status"] == "ok" for line in lines)


# --- the example service over HTTP ----------------------------------------------------------


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The example service on a loopback port (uvicorn), driven by an httpx client, as
    test_example_service.py runs it."""
    import httpx  # the test extra (with fastapi and uvicorn)

    sys.path.insert(0, str(REPO))
    from examples.notebook_service.service import create_app

    root = tmp_path_factory.mktemp("service")
    app = create_app(root=str(root / "sessions"), pool_size=0, audit_log=str(root / "audit.jsonl"))
    with serve(app) as url, httpx.Client(base_url=url, timeout=120) as c:
        yield c


def _execute(client: Any, notebook: str, code: str, cell_id: str = "c1") -> Any:
    return client.post("/execute", json={"notebook_id": notebook, "cell_id": cell_id, "code": code})


def test_service_values_stay_within_the_fetch_limit(client: Any) -> None:
    nb = f"nb-{uuid.uuid4().hex[:8]}"
    r = _execute(client, nb, "cat = pd.DataFrame({'c': pd.Categorical(['A' * 50_000] * 1000)})")
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text[:500]
    r = client.get(f"/notebooks/{nb}/variables/cat")
    assert r.status_code >= 400 or len(r.content) <= 32 << 20, len(r.content)


def test_service_refuses_a_long_cell_id_as_a_client_error(client: Any) -> None:
    r = _execute(client, f"nb-{uuid.uuid4().hex[:8]}", "1", cell_id="c" * 2000)
    assert 400 <= r.status_code < 500, r.status_code


def test_service_refuses_a_notebook_id_with_a_trailing_newline(client: Any) -> None:
    r = _execute(client, f"nb-{uuid.uuid4().hex[:8]}\n", "1")
    assert r.status_code == 400, r.status_code


def test_service_has_the_checkpoint_endpoint_it_documents(client: Any) -> None:
    nb = f"nb-{uuid.uuid4().hex[:8]}"
    assert _execute(client, nb, "x = 1").status_code == 200
    assert client.post(f"/notebooks/{nb}/checkpoint").status_code == 200


# --- defences that held (regression tests) --------------------------------------------------


def test_session_names_like_the_roots_own_entries_get_their_own_workdirs(tmp_path: Path) -> None:
    root = tmp_path / "root"
    with sandbox_exec.Sandbox(root=root) as box:
        victim = box.session("victim")
        _ok(victim.run("open('secret.txt', 'w').write('s3cret')"))
        for name in (".", "..", ".locks", ".images", ".zygotes", ".mnt", "victim/.."):
            session = box.session(name)
            workdir = Path(session.workdir).resolve()
            assert workdir.parent == root.resolve(), (name, workdir)
            assert workdir.name not in (".", "..", ".locks", ".images", ".zygotes", ".mnt", "victim")
            r = session.run("import os\nsorted(os.listdir('.'))")
            _ok(r)
            assert r.outputs[0]["data"]["text/plain"] == "[]", (name, r.outputs)
            session.close()


def test_an_array_of_a_zero_size_dtype_is_bounded_by_the_limit(s: sandbox_exec.Session) -> None:
    # 'V0' items take no bytes, so shape x itemsize == 0 bytes of data says nothing: a
    # 128-byte .npy would be 10**12 elements for whoever iterates it. The element count is
    # bounded by max_bytes instead (held: refused past it, delivered under it).
    _ok(s.run("import numpy as np\nz = np.empty(10**12, 'V0')\nsmall = np.empty(1000, 'V0')"))
    with pytest.raises(CallError):
        s.fetch("z", max_bytes=1 << 20)
    assert s.fetch("small", max_bytes=1 << 20).shape == (1000,)


def test_a_call_from_another_thread_waits_for_a_running_async_cell(s: sandbox_exec.Session) -> None:
    _ok(s.run("x = 1"))

    async def main() -> tuple[list[str], sandbox_exec.Result]:
        cell = asyncio.create_task(s.run_async("import time\ntime.sleep(1.0)\ny = 2"))
        await asyncio.sleep(0.2)
        names = [v["name"] for v in await asyncio.to_thread(s.variables)]
        return names, await cell

    names, result = asyncio.run(main())
    _ok(result)
    assert names == ["x", "y"]  # it ran after the cell, not beside it


def test_close_during_a_spinning_call_ends_it_at_once(s: sandbox_exec.Session) -> None:
    got: dict[str, Any] = {}

    def call() -> None:
        try:
            got["value"] = s.call("spin", timeout=60)
        except CallError as e:
            got["error"] = e

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.5)
    started = time.monotonic()
    s.close()
    thread.join(10)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert isinstance(got.get("error"), CallError)


def test_a_late_reply_of_a_timed_out_call_is_not_the_next_calls(s: sandbox_exec.Session) -> None:
    _ok(s.run("keep = 'state'"))
    with pytest.raises(CallError) as e:
        s.call("stubborn", 1.0, timeout=0.3)  # ignores the interrupt, answers within the grace
    assert e.value.status == "timeout"
    assert [s.call("echo", i) for i in range(20)] == list(range(20))
    assert s.run("keep").outputs[0]["data"]["text/plain"] == "'state'"


def test_reply_frames_a_thread_sends_between_calls_are_not_taken(s: sandbox_exec.Session) -> None:
    _ok(
        s.run(
            FIND_CHANNEL + "import threading, time\ngo = True\n"
            "def spam():\n"
            "    while go:\n"
            "        try:\n"
            '            channel.send(19, b\'{"output_type": "reply", "value": "forged"}\')\n'
            "        except Exception:\n"
            "            pass\n"
            "        time.sleep(0.001)\n"
            "spammer = threading.Thread(target=spam, daemon=True)\nspammer.start()"
        )
    )
    time.sleep(0.2)
    for i in range(10):
        try:
            assert s.call("echo", i) == i
        except CallError as e:  # refusing a second reply is fine; taking "forged" is not
            assert e.status == "violation", e
    _ok(s.run("go = False\nspammer.join()"))
    assert s.call("echo", "after") == "after"


def test_odd_namespace_keys_break_neither_variables_nor_reset(s: sandbox_exec.Session) -> None:
    _ok(
        s.run(
            "class S(str):\n"
            "    def startswith(self, *a):\n"
            "        raise RuntimeError('user code')\n"
            "globals()[42] = 'not a str key'\n"
            "globals()[S('sub')] = 1\n"
            "globals()['\\x1b]0;title\\x07\\x1b[2J'] = 2\n"
            "plain = 3\n"
        )
    )
    names = [v["name"] for v in s.variables()]
    assert "plain" in names
    # A name is the namespace's key, verbatim (escapes included): the caller escapes it for
    # a terminal, as it does any text from the sandbox.
    assert "\x1b]0;title\x07\x1b[2J" in names
    report = s.reset()
    assert report["names_after"] <= report["names_before"]
    _ok(s.run("1"))


def test_call_arguments_are_checked_and_a_huge_one_leaves_the_session_usable(s: sandbox_exec.Session) -> None:
    with pytest.raises(TypeError):
        s.call("echo", {"a": float("nan")})
    with pytest.raises(CallError):
        s.call("echo", "x" * (40 << 20))  # the echo is past the reply cap
    assert s.call("echo", [1, {"b": None}]) == [1, {"b": None}]


def test_an_audit_hook_that_uses_the_session_does_not_deadlock(tmp_path: Path) -> None:
    # The hook runs before run() returns, on the caller's thread. Using the session from it is
    # refused (RuntimeError, logged on sandbox_exec.audit), not a deadlock, and the cell's
    # result is intact.
    seen: list[Any] = []
    holder: dict[str, sandbox_exec.Session] = {}

    def hook(record: dict[str, Any]) -> None:
        if record["kind"] == "cell":
            try:
                seen.append([v["name"] for v in holder["s"].variables()])
            except RuntimeError as e:
                seen.append(e)

    with sandbox_exec.Sandbox(root=tmp_path / "root", audit=hook) as box:
        holder["s"] = box.session("hooked")
        done: dict[str, sandbox_exec.Result] = {}
        thread = threading.Thread(target=lambda: done.setdefault("r", holder["s"].run("q = 1")))
        thread.start()
        thread.join(30)
        assert not thread.is_alive(), "the hook deadlocked run()"
        _ok(done["r"])
        assert len(seen) == 1
        assert [v["name"] for v in holder["s"].variables()] == ["q"]
