"""Ladder B: Session.reset() (issue 10, item 5): a clean namespace in the same interpreter --
the prelude's names back (or none), history fresh, figures closed, the old values freed,
the random streams as asked -- with the execution count counting on; and (adversarial) a
forged reply is refused."""

from __future__ import annotations

import random
import uuid

import pytest

import sandbox_exec
from conftest import FIND_CHANNEL
from sandbox_exec import CallError

pytestmark = pytest.mark.b

PRELUDE = "import json\nLIMIT = 3\nSHARED = []\ndef helper():\n    return LIMIT\n"
NAMES = "sorted(k for k in globals() if not k.startswith('__'))"


@pytest.fixture
def preluded(sandbox: sandbox_exec.Sandbox):
    s = sandbox.session(f"reset-{uuid.uuid4().hex[:8]}", prelude=PRELUDE)
    yield s
    s.close()


def _value(r: sandbox_exec.Result) -> str:
    assert r.status == "ok", r.error
    return str(r.outputs[-1]["data"]["text/plain"])


def test_reset_goes_back_to_the_prelude(preluded: sandbox_exec.Session) -> None:
    pid = preluded.worker_pid
    preluded.run("LIMIT = 99\nx = [1] * 10\nSHARED.append('kept')\ndef helper():\n    return 'rebound'")
    preluded.run("x")
    report = preluded.reset()
    assert report["names_after"] < report["names_before"]
    assert preluded.worker_pid == pid  # the same interpreter
    r = preluded.run(f"print({NAMES})\nprint(helper(), SHARED, len(In), In[:3], Out, _)")
    assert r.execution_count == 3  # counting on, as after %reset -f
    # The prelude's names, bound to the prelude's objects (SHARED keeps what cells did to it);
    # IPython's history fresh: this cell only.
    assert r.stdout == (
        "['In', 'LIMIT', 'Out', 'SHARED', '_', '_i', '_i3', '_ii', '_iii', 'helper', 'json']\n"
        "3 ['kept'] 4 ['', '', ''] {} None\n"
    )
    assert preluded.call("helper") == 3


def test_reset_without_the_prelude(preluded: sandbox_exec.Session) -> None:
    preluded.run("y = 1")
    preluded.reset(keep_prelude=False)
    assert preluded.run(f"print({NAMES})").stdout == "['In', 'Out', '_', '_i', '_i2', '_ii', '_iii']\n"
    # Calls still find the prelude's functions, but their globals are this namespace: the
    # prelude's LIMIT is gone from it (documented; keep_prelude=True keeps it).
    with pytest.raises(CallError, match="NameError: name 'LIMIT'"):
        preluded.call("helper")
    assert preluded.run("json").status == "error"


def test_reset_of_an_exec_session_has_no_history(sandbox: sandbox_exec.Sandbox) -> None:
    s = sandbox.session(f"reset-{uuid.uuid4().hex[:8]}", prelude=PRELUDE, mode="exec")
    try:
        s.run("z = 1")
        s.reset()
        assert s.run(f"print({NAMES})").stdout == "['LIMIT', 'SHARED', 'helper', 'json']\n"
    finally:
        s.close()


def test_reset_frees_the_old_values(session: sandbox_exec.Session) -> None:
    # Its __del__ runs only once every reference is gone: the name, Out, _, _1 and builtins._.
    session.run(
        "class Noted:\n    def __del__(self):\n        open('freed', 'w').close()\n"
        "n = Noted()\nn\nimport sys\ntry:\n    1 / 0\nexcept ZeroDivisionError:\n"
        "    sys.last_value = sys.exc_info()[1]\n    sys.last_value.held = n"
    )
    assert not (session.workdir / "freed").exists()
    session.reset()
    assert (session.workdir / "freed").exists()


def test_reset_closes_open_figures(session: sandbox_exec.Session) -> None:
    import matplotlib  # noqa: F401  (the test extra: never skipped)

    # The inline backend shows and closes figures at each cell's end; figures stay open
    # only under another backend.
    r = session.run("import matplotlib\nmatplotlib.use('agg')\nimport matplotlib.pyplot as plt\nfig = plt.figure()")
    assert r.outputs == []
    assert session.reset()["figures_closed"] == 1
    assert _value(session.run("import matplotlib.pyplot as plt\nplt.get_fignums()")) == "[]"


def test_reset_seeds_as_asked(session: sandbox_exec.Session) -> None:
    draw = "import random\nrandom.random()"
    reference = random.Random(7)
    expected = [repr(reference.random()) for _ in range(3)]
    session.reset(seed=7)
    assert _value(session.run(draw)) == expected[0]
    session.reset(seed=7)
    assert _value(session.run(draw)) == expected[0]
    assert _value(session.run(draw)) == expected[1]
    session.reset()  # seed=None: the stream goes on
    assert _value(session.run(draw)) == expected[2]
    session.reset(seed=7)
    session.reset(seed="fresh")
    assert _value(session.run(draw)) != expected[0]
    for bad in (-1, 2**32, True, 1.5, "again"):
        with pytest.raises(ValueError, match="seed"):
            session.reset(seed=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keep_prelude"):
        session.reset(keep_prelude="no")  # type: ignore[arg-type]


def test_reset_seeds_numpy_loaded_or_not(sandbox: sandbox_exec.Sandbox) -> None:
    import numpy as np

    expected = repr(float(np.random.RandomState(11).rand()))
    s = sandbox.session(f"reset-{uuid.uuid4().hex[:8]}")
    try:
        # numpy not loaded yet: seeded when a cell imports it
        assert _value(s.run("import sys\n'numpy.random' in sys.modules")) == "False"
        s.reset(seed=11)
        assert _value(s.run("import numpy as np\nfloat(np.random.rand())")) == expected
        s.reset(seed=11)  # loaded: seeded now
        assert _value(s.run("import numpy as np\nfloat(np.random.rand())")) == expected
    finally:
        s.close()


def test_a_forged_reset_reply_is_refused(preluded: sandbox_exec.Session) -> None:
    preluded.run(
        FIND_CHANNEL + "import sandbox_exec._worker.calls as c\n"
        "c.OPS['reset'] = lambda worker, args: {'names_before': 'all', 'names_after': -1, 'figures_closed': 0}\n"
    )
    with pytest.raises(CallError, match="names_before") as e:
        preluded.reset()
    assert e.value.status == "violation"
    preluded.run("c.OPS['reset'] = lambda worker, args: [1, 2]")
    with pytest.raises(CallError, match="not an object"):
        preluded.reset()
    assert _value(preluded.run("1 + 1")) == "2"  # the session stays usable
