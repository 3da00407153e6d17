"""Ladder B: Session.variables() (issue 10, item 2): JSON-safe summaries of the namespace,
made in the worker without running user classes' code by default; no execution count, no
outputs; capped and marked when truncated; works in warm and cold sessions."""

from __future__ import annotations

import json
import uuid

import pytest

import sandbox_exec
from sandbox_exec._variables import KEYS

pytestmark = pytest.mark.b

PRELUDE = "import math\nHELPER = {'set': 'by the prelude'}\ndef hook():\n    return 1\n"


@pytest.fixture
def s(sandbox: sandbox_exec.Sandbox):
    session = sandbox.session(f"vars-{uuid.uuid4().hex[:8]}", prelude=PRELUDE)
    yield session
    session.close()


def by_name(summaries: list[dict]) -> dict[str, dict]:
    return {v["name"]: v for v in summaries}


def test_summaries_of_builtins_arrays_and_frames(s: sandbox_exec.Session) -> None:
    s.run(
        "import numpy as np, pandas as pd, os\n"
        "nums = [1, 2.5, 'three', None, (4,), {'k': b'v'}]\n"
        "text = 'x' * 1000\n"
        "arr = np.zeros((3, 4), dtype='float32')\n"
        "df = pd.DataFrame({'a': range(5), 'b': list('vwxyz')})\n"
        "ser = df['a']\n"
        "_hidden = 1\n"
        "1 + 1\n"  # leaves _, _N and Out entries
    )
    count = s.execution_count
    v = by_name(s.variables())
    assert s.execution_count == count
    assert v["nums"]["type"] == "list" and v["nums"]["module"] == "builtins" and v["nums"]["length"] == 6
    assert v["nums"]["preview"] == "[1, 2.5, 'three', None, (4,), {'k': b'v'}]"
    assert v["text"]["length"] == 1000 and len(v["text"]["preview"]) <= 203
    assert v["arr"]["shape"] == [3, 4] and v["arr"]["dtype"] == "float32" and v["arr"]["size"] == 48
    assert v["df"]["shape"] == [5, 2] and v["df"]["columns_total"] == 2
    assert [c["name"] for c in v["df"]["columns"]] == ["a", "b"] and v["df"]["columns"][0]["dtype"] == "int64"
    assert v["df"]["size"] > 0 and "v" in v["df"]["preview"]
    assert v["ser"]["shape"] == [5] and v["ser"]["dtype"] == "int64"
    # Skipped: modules, history, private names, the prelude's names.
    for skipped in ("np", "pd", "os", "math", "In", "Out", "_", "_i", "_i1", "_hidden", "HELPER", "hook"):
        assert skipped not in v, skipped
    assert all(tuple(x) == KEYS for x in v.values())
    json.dumps(list(v.values()), allow_nan=False)  # JSON-safe


def test_options_private_prelude_and_rebound_prelude_names(s: sandbox_exec.Session) -> None:
    s.run("_hidden = 1\nhook = 'rebound by a cell'")
    v = by_name(s.variables())
    assert "hook" in v and v["hook"]["type"] == "str"  # rebound: the user's variable now
    assert "HELPER" not in v and "_hidden" not in v
    v = by_name(s.variables(include_private=True, include_prelude=True))
    assert "HELPER" in v and "_hidden" in v
    assert "_i1" not in v and "In" not in v and "math" not in v


def test_no_output_and_no_history(s: sandbox_exec.Session) -> None:
    s.run("a = 1")
    s.variables(previews="repr")
    r = s.run("print('after'); len(In)")
    assert r.stdout == "after\n"
    assert [o["output_type"] for o in r.outputs] == ["stream", "execute_result"]
    assert r.outputs[1]["data"]["text/plain"] == str(r.execution_count + 1)  # "", then the cells


def test_user_repr_runs_only_when_asked_and_failures_stay_local(s: sandbox_exec.Session) -> None:
    s.run(
        "calls = []\n"
        "class Loud:\n"
        "    def __repr__(self):\n"
        "        calls.append(1)\n"
        "        print('repr ran')\n"
        "        return 'LOUD'\n"
        "class Broken:\n"
        "    def __repr__(self):\n"
        "        raise RuntimeError('no')\n"
        "    def __len__(self):\n"
        "        raise RuntimeError('no')\n"
        "loud, broken, mixed = Loud(), Broken(), [Loud(), 1]\n"
        "ok = 5\n"
    )
    v = by_name(s.variables())
    assert v["loud"]["preview"] is None and v["broken"]["preview"] is None
    assert v["mixed"]["preview"] == "[<Loud>, 1]"
    assert s.run("len(calls)").outputs[0]["data"]["text/plain"] == "0"
    v = by_name(s.variables(previews="repr"))
    assert v["loud"]["preview"] == "LOUD"
    assert v["broken"]["preview"] == "<repr failed: RuntimeError>"
    assert v["ok"]["preview"] == "5"
    assert by_name(s.variables(previews="none"))["ok"]["preview"] is None


def test_a_hanging_repr_ends_at_the_deadline_and_keeps_the_session(s: sandbox_exec.Session) -> None:
    s.run("class Hang:\n    def __repr__(self):\n        while True:\n            pass\nh = Hang()\nkeep = 3")
    assert by_name(s.variables())["h"]["preview"] is None  # safe mode never calls it
    with pytest.raises(sandbox_exec.CallError) as e:
        s.variables(previews="repr", timeout=1)
    assert e.value.status == "timeout"
    assert s.run("keep").outputs[0]["data"]["text/plain"] == "3"


def test_caps_truncate_and_say_so(s: sandbox_exec.Session) -> None:
    s.run("for i in range(300):\n    globals()[f'v{i}'] = 'y' * 150")
    full = s.variables()
    assert len(full) == 301 and not full.truncated and full.total == 301  # and i
    few = s.variables(max_variables=10)
    assert len(few) == 10 and few.truncated and few.total == 301
    small = s.variables(max_bytes=5000)
    assert 0 < len(small) < 301 and small.truncated
    # The cap is on the worker's reply, which leaves out the keys that do not apply.
    assert len(json.dumps([{k: x for k, x in v.items() if x is not None} for v in small])) <= 5000


def test_frames_with_object_cells_are_not_previewed_in_safe_mode(s: sandbox_exec.Session) -> None:
    s.run(
        "import pandas as pd\n"
        "class Obj:\n"
        "    def __repr__(self):\n"
        "        raise SystemExit('would end the worker')\n"
        "objs = pd.DataFrame({'o': [Obj(), Obj()]})\n"
        "plain = pd.DataFrame({'s': ['a', None], 'n': [1.5, float('nan')]})\n"
        "wide = pd.DataFrame({f'c{i}': [i] for i in range(80)})\n"
    )
    v = by_name(s.variables())
    assert v["objs"]["preview"] is None and v["objs"]["shape"] == [2, 1]
    assert "a" in v["plain"]["preview"]
    assert v["wide"]["columns_total"] == 80 and len(v["wide"]["columns"]) == 50


def test_a_background_printer_does_not_crowd_out_the_reply(s: sandbox_exec.Session) -> None:
    # A thread a cell left printing in a tight loop (Python-level writes and, through
    # os.write, descriptor-level ones): while a call runs, what it prints is not the call's
    # output, so it can neither fill the call's output cap nor push its reply out.
    r = s.run(
        "import os, sys, threading\ngo = True\nkeep = 7\nfor i in range(300):\n    globals()[f'v{i}'] = list(range(i))\n"
        "def flood():\n"
        "    line = 'x' * 8000 + '\\n'\n"
        "    n = 0\n"
        "    while go:\n"
        "        sys.stdout.write(line)\n"
        "        n += 1\n"
        "        if n % 64 == 0:\n"
        "            os.write(1, line.encode())\n"
        "printer = threading.Thread(target=flood, daemon=True)\nprinter.start()"
    )
    assert r.status == "ok", (r.status, r.error)
    for _ in range(30):
        assert by_name(s.variables())["keep"]["preview"] == "7"
    r = s.run("go = False\nprinter.join()\nkeep")
    assert r.status == "ok" and r.outputs[-1]["data"]["text/plain"] == "7", (r.status, r.outputs[-1:])
