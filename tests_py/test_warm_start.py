"""Warm starts: sessions forked from a zygote that has the prelude loaded.

What must hold for a forked session, beyond what every session test checks (they run on
forked sessions too: warm is the default): siblings of one zygote cannot see, signal or
reach each other; they get different random streams; nothing of the zygote (descriptor,
thread) is visible in them; a session's crash leaves the zygote and its siblings running;
a dead zygote is replaced; a zygote that cannot serve safely is refused and the session
starts cold, saying why.
"""

from __future__ import annotations

import json
import os
import signal
import uuid

import pytest

import sandbox_exec
from conftest import pid_alive, wait_until

pytestmark = pytest.mark.c

PRELUDE = "import numpy as np\nimport time as _time\nPRELUDE_RAN_AT = _time.time_ns()\n"


def _value(result: sandbox_exec.Result):
    assert result.status == "ok", (result.status, result.reason, result.error)
    return json.loads(result.stdout)


def _name() -> str:
    return f"w-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory):
    with sandbox_exec.Sandbox(root=tmp_path_factory.mktemp("warm")) as b:
        yield b


@pytest.fixture
def pair(box: sandbox_exec.Sandbox):
    a, b = box.session(_name(), prelude=PRELUDE), box.session(_name(), prelude=PRELUDE)
    yield a, b
    a.close()
    b.close()


def _zygote_pid(session: sandbox_exec.Session) -> int:
    start = session.enforcement["start"]
    assert start.startswith("warm: forked from zygote "), start
    return int(start.split()[4])


def test_sessions_of_one_prelude_are_forked_from_one_zygote_that_ran_it_once(pair) -> None:
    a, b = pair
    assert _zygote_pid(a) == _zygote_pid(b)
    # The prelude ran in the zygote, before either session existed: both see its one result.
    ran = [_value(s.run("import json; print(json.dumps(PRELUDE_RAN_AT))")) for s in (a, b)]
    assert ran[0] == ran[1]
    assert a.run("np.arange(4).sum()").outputs[0]["data"]["text/plain"] == "np.int64(6)"
    assert a.execution_count == 2  # two cells: the prelude is not one of the session's


SIBLING_FACTS = """
import json, os
def ns(kind):
    return os.stat(f"/proc/self/ns/{kind}").st_ino
print(json.dumps({
    "pid": os.getpid(),
    "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit()),
    "ns": {k: ns(k) for k in ("pid", "net", "ipc", "uts", "mnt", "user")},
    "cwd": os.getcwd(),
}))
"""


def test_siblings_cannot_see_signal_or_reach_each_other(pair) -> None:
    a, b = pair
    fa, fb = _value(a.run(SIBLING_FACTS)), _value(b.run(SIBLING_FACTS))
    for kind in ("pid", "net", "ipc", "uts", "mnt", "user"):
        assert fa["ns"][kind] != fb["ns"][kind], f"siblings share a {kind} namespace"
    # Each sees only its own pid namespace: init (1) and its worker, nothing of the other's.
    assert fa["pids"] == fb["pids"] == sorted({1, fa["pid"]})
    # Its own workdir only: the sibling's is not in its view.
    probe = "import os, json; print(json.dumps(os.path.exists({!r})))"
    assert _value(a.run(probe.format(str(b.workdir)))) is False
    assert _value(b.run(probe.format(str(a.workdir)))) is False
    # Signalling the sibling's worker by its host pid reaches nothing in this namespace.
    r = a.run(
        f"import os\ntry:\n    os.kill({b.worker_pid}, 0)\n    print('reached')\nexcept OSError as e:\n    print(e.errno)"
    )
    assert r.stdout.strip() != "reached"
    assert b.run("1+1").status == "ok"


@pytest.mark.skipif(os.geteuid() != 0, reason="distinct host uids need a root backend (unprivileged: one uid)")
def test_siblings_run_as_distinct_host_uids(pair) -> None:
    a, b = pair

    def host_uid(s: sandbox_exec.Session) -> int:
        with open(f"/proc/{s.worker_pid}/status") as f:
            return int(next(line for line in f if line.startswith("Uid:")).split()[1])

    assert host_uid(a) != host_uid(b)
    assert 0 not in (host_uid(a), host_uid(b))


def test_siblings_get_different_random_streams(pair) -> None:
    a, b = pair
    code = "import json, random; print(json.dumps([random.random(), float(np.random.rand())]))"
    va, vb = _value(a.run(code)), _value(b.run(code))
    assert va[0] != vb[0], "random's stream is shared with a sibling"
    assert va[1] != vb[1], "numpy's global stream is shared with a sibling"


def test_numpy_random_loaded_by_the_prelude_is_reseeded(box: sandbox_exec.Session) -> None:
    # The prelude draws from numpy's global generator (so the zygote has a state), unseeded.
    prelude = "import numpy as np\nnp.random.rand()\n"
    sessions = [box.session(_name(), prelude=prelude) for _ in range(2)]
    try:
        drawn = [_value(s.run("import json; print(json.dumps(float(np.random.rand())))")) for s in sessions]
        assert drawn[0] != drawn[1]
    finally:
        for s in sessions:
            s.close()


FDS_AND_THREADS = """
import json, os
fds = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass
names = sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))
print(json.dumps({"fds": fds, "threads": names}))
"""


def test_no_descriptor_or_thread_of_the_zygote_is_visible(pair, tmp_path) -> None:
    a, _ = pair
    facts = _value(a.run(FDS_AND_THREADS))
    # Exactly what a cold session has: stdio, the four channel descriptors, its stdin and
    # the listing's own descriptor.
    with sandbox_exec.Sandbox(root=tmp_path, warm=False) as cold_box:
        cold = cold_box.session("cold")
        assert cold.enforcement["start"].startswith("cold:")
        cold_facts = _value(cold.run(FDS_AND_THREADS))
    assert sorted(facts["fds"]) == sorted(cold_facts["fds"])
    for fd in ("5", "6", "7", "8"):  # the channel: a memfd and the doorbell pipes
        assert "socket" not in facts["fds"][fd]
    assert not any("socket" in target for target in facts["fds"].values()), facts["fds"]
    assert facts["threads"] == cold_facts["threads"], "a thread of the zygote came along"


def test_a_session_killed_leaves_the_zygote_and_its_siblings_running(box: sandbox_exec.Sandbox, pair) -> None:
    a, b = pair
    zygote = _zygote_pid(a)
    r = a.run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert r.status == "crashed"
    assert pid_alive(zygote)
    assert b.run("1+1").status == "ok"
    c = box.session(_name(), prelude=PRELUDE)
    try:
        assert _zygote_pid(c) == zygote
    finally:
        c.close()
    # The crashed one restarts warm, from the same zygote, its prelude's names back.
    assert a.run("PRELUDE_RAN_AT > 0").status == "ok"
    assert _zygote_pid(a) == zygote


def test_restart_is_warm_and_gives_a_fresh_namespace_with_the_prelude(pair) -> None:
    a, _ = pair
    a.run("mine = 1")
    old_worker = a.worker_pid
    a.restart()
    assert a.worker_pid != old_worker
    _zygote_pid(a)
    r = a.run("'mine' in globals(), 'np' in globals()")
    assert r.outputs[0]["data"]["text/plain"] == "(False, True)"


def test_a_dead_zygote_is_replaced_and_its_sessions_go_on(tmp_path) -> None:
    with sandbox_exec.Sandbox(root=tmp_path) as b:
        first = b.session("first", prelude=PRELUDE)
        zygote = _zygote_pid(first)
        os.kill(zygote, signal.SIGKILL)
        assert wait_until(lambda: not pid_alive(zygote))
        assert first.run("1+1").status == "ok"  # its session lives on: the keeper is its own
        second = b.session("second", prelude=PRELUDE)
        assert _zygote_pid(second) not in (zygote,)
        assert second.run("PRELUDE_RAN_AT > 0").outputs[0]["data"]["text/plain"] == "True"


def test_the_zygote_exits_when_the_sandbox_closes(tmp_path) -> None:
    with sandbox_exec.Sandbox(root=tmp_path) as b:
        zygote = _zygote_pid(b.session("s", prelude="x = 1"))
    assert wait_until(lambda: not pid_alive(zygote))


@pytest.mark.parametrize(
    ("prelude", "why"),
    [
        (
            "import threading, time\nthreading.Thread(target=time.sleep, args=(600,), daemon=True).start()\n",
            "threads running",
        ),
        ("kept = open('/dev/null')\n", "descriptors open"),
    ],
    ids=["thread", "descriptor"],
)
def test_a_prelude_unsafe_to_fork_starts_cold_and_says_why(box: sandbox_exec.Sandbox, prelude: str, why: str) -> None:
    s = box.session(_name(), prelude=prelude)
    try:
        start = s.enforcement["start"]
        assert start.startswith("cold: no zygote: ") and why in start, start
        assert s.run("1+1").status == "ok"  # the prelude ran cold, in the session itself
    finally:
        s.close()


def test_warm_false_starts_cold_and_says_so(tmp_path) -> None:
    with sandbox_exec.Sandbox(root=tmp_path, warm=False) as b:
        s = b.session("s", prelude="y = 2")
        assert s.enforcement["start"] == "cold: warm starts are off (Sandbox(warm=False))"
        assert s.run("y").outputs[0]["data"]["text/plain"] == "2"


def test_a_failing_prelude_fails_the_start_as_a_cold_one_does(box: sandbox_exec.Sandbox) -> None:
    with pytest.raises(sandbox_exec.PreludeError, match="ZeroDivisionError"):
        box.session(_name(), prelude="1/0")


def test_the_zygote_holds_no_session_descriptor(pair) -> None:
    a, b = pair
    zygote = _zygote_pid(a)
    targets = {os.readlink(f"/proc/{zygote}/fd/{fd}") for fd in os.listdir(f"/proc/{zygote}/fd")}
    # Its stdio, the placeholders at 4..9 (/dev/null) and its control socket; no ring memfd,
    # no doorbell pipe, no lifeline.
    assert not any(t.startswith(("pipe:", "/memfd:")) for t in targets), targets


# --- the pool ----------------------------------------------------------------------------


def test_the_pool_serves_new_notebooks_started_and_never_exceeds_its_cap(tmp_path) -> None:
    with sandbox_exec.Sandbox(root=tmp_path, pool_size=2) as b:
        b.session("first", prelude=PRELUDE)  # the shape is now one to keep ready
        assert wait_until(lambda: b.pool_idle() == 2, timeout=60)
        seen = []
        served = []
        for i in range(5):
            s = b.session(f"nb-{i}", prelude=PRELUDE)
            served.append(s)
            seen.append(b.pool_idle())
            assert s.run("PRELUDE_RAN_AT > 0").outputs[0]["data"]["text/plain"] == "True"
        assert "served from the pool" in served[0].enforcement["start"]
        assert served[0].workdir.name.startswith(".pool-")
        # Refilled in the background, never above the cap, whatever the timing.
        assert wait_until(lambda: b.pool_idle() == 2, timeout=60)
        for _ in range(50):
            seen.append(b.pool_idle())
        assert max(seen) <= 2, seen
        slots = [p for p in tmp_path.iterdir() if p.name.startswith(".pool-")]
        assert len(slots) <= 2 + len([s for s in served if s.workdir.name.startswith(".pool-")])
    # Closing the Sandbox ends the idle ones and leaves no empty slot directory behind.
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".pool-") and not any(p.iterdir())]


def test_a_pooled_sessions_files_move_to_its_name_when_it_closes(tmp_path) -> None:
    with sandbox_exec.Sandbox(root=tmp_path, pool_size=1) as b:
        b.session("seed")
        assert wait_until(lambda: b.pool_idle() == 1, timeout=60)
        s = b.session("notebook")
        assert "served from the pool" in s.enforcement["start"]
        slot = s.workdir
        assert s.run("import os\nopen('kept.txt', 'w').write('mine')\nos.getcwd()").outputs[0]["data"][
            "text/plain"
        ] == repr(str(slot))
        s.close()
        assert not slot.exists()
        again = b.session("notebook")  # its files are there: not a new notebook, not pooled
        assert "served from the pool" not in again.enforcement["start"]
        assert again.workdir == tmp_path / "notebook"
        assert again.run("open('kept.txt').read()").outputs[0]["data"]["text/plain"] == "'mine'"


def test_pool_size_is_checked(tmp_path) -> None:
    for bad in (-1, True, 1.5):
        with pytest.raises((ValueError, TypeError)):
            sandbox_exec.Sandbox(root=tmp_path, pool_size=bad)  # type: ignore[arg-type]


# Looks for a text in the cell's own readable memory. The text is given in two halves and
# only ever matched piecewise, so the scan never builds the whole text itself.
SCAN_OWN_MEMORY = """
import ctypes, json
head, tail = {head!r}.encode(), {tail!r}.encode()
found = []
with open("/proc/self/maps") as maps:
    regions = [line.split() for line in maps]
for parts in regions:
    lo, hi = (int(x, 16) for x in parts[0].split("-"))
    name = parts[5] if len(parts) > 5 else "anonymous"
    # Readable memory only (a guard page would fault), not the kernel's [vvar]/[vsyscall].
    if not parts[1].startswith("r") or hi - lo > 1 << 28 or name.startswith("[v"):
        continue
    data = ctypes.string_at(lo, hi - lo)
    at = data.find(head)
    while at >= 0:
        if data.startswith(tail, at + len(head)):
            found.append(name)
            break
        at = data.find(head, at + 1)
print(json.dumps(found))
"""


def _scan(session: sandbox_exec.Session, text: str) -> list[str]:
    half = len(text) // 2
    return _value(session.run(SCAN_OWN_MEMORY.format(head=text[:half], tail=text[half:])))


def test_a_session_finds_nothing_of_an_earlier_siblings_start_in_its_memory(box: sandbox_exec.Sandbox) -> None:
    # The zygote's memory is every later session's: it must keep nothing of one session's
    # request (its name, workdir, host id), not even in freed heap.
    secret = f"private-notebook-{uuid.uuid4().hex}"
    first = box.session(secret, prelude=PRELUDE)
    later = box.session(_name(), prelude=PRELUDE)
    try:
        assert _zygote_pid(first) == _zygote_pid(later)
        assert _scan(later, secret) == []
        # The scan itself works: the later session finds its own name in its memory.
        assert _scan(later, later.name) != []
    finally:
        first.close()
        later.close()


def test_a_prelude_sees_its_seeds_environment_and_tempdir_kept_as_a_cold_one_does(tmp_path) -> None:
    prelude = (
        "import os, random, tempfile\nimport numpy as np\n"
        "random.seed(42)\nnp.random.seed(0)\nos.environ['FROM_PRELUDE'] = 'yes'\ntempfile.gettempdir()\n"
    )
    probe = (
        "import json, os, random, tempfile\n"
        "fd, path = tempfile.mkstemp()\nos.close(fd)\n"
        "print(json.dumps([random.random(), float(np.random.rand()), os.environ.get('FROM_PRELUDE'), "
        "os.path.dirname(path)]))"
    )
    seen = {}
    for warm in (True, False):
        with sandbox_exec.Sandbox(root=tmp_path / str(warm), warm=warm) as b:
            s = b.session("s", prelude=prelude)
            assert s.enforcement["start"].startswith("warm" if warm else "cold"), s.enforcement["start"]
            seen[warm] = _value(s.run(probe))
    # The seeded streams are the seed's (as in every cold session), the prelude's variable is
    # set, and temporary files go to the session's /tmp, not the zygote's scratch directory.
    assert seen[True] == seen[False] == [0.6394267984578837, 0.5488135039273248, "yes", "/tmp"]


def test_a_prelude_that_rendered_text_still_starts_warm(box: sandbox_exec.Sandbox) -> None:
    # matplotlib keeps the font files it rendered with open; the zygote closes them (a
    # session would find those descriptors closed under it) instead of refusing to serve.
    prelude = (
        "import io\nfrom matplotlib.figure import Figure\n"
        "f = Figure()\nf.add_subplot().set_title('x')\nf.savefig(io.BytesIO(), format='png')\n"
    )
    s = box.session(_name(), prelude=prelude)
    try:
        _zygote_pid(s)
        r = s.run("g = Figure()\ng.add_subplot().set_title('y')\ng")
        assert r.status == "ok"
        assert "image/png" in r.outputs[0]["data"]
    finally:
        s.close()


def test_zygotes_are_capped_per_sandbox(tmp_path, monkeypatch) -> None:
    from sandbox_exec import _zygotes

    monkeypatch.setattr(_zygotes, "MAX_ZYGOTES", 2)
    with sandbox_exec.Sandbox(root=tmp_path) as b:
        sessions = [b.session(f"s{i}", prelude=f"shape = {i}") for i in range(4)]
        zygotes = [_zygote_pid(s) for s in sessions]
        assert len(set(zygotes)) == 4
        assert wait_until(lambda: sum(pid_alive(z) for z in zygotes) == 2)
        assert pid_alive(zygotes[-1]) and pid_alive(zygotes[-2])  # the most recently used stay
        # Sessions of a closed zygote live on; a new session of that shape gets a new zygote.
        assert sessions[0].run("shape").outputs[0]["data"]["text/plain"] == "0"
        again = b.session("again", prelude="shape = 0")
        assert _zygote_pid(again) not in zygotes


def test_a_prelude_importing_pyarrow_starts_warm(box: sandbox_exec.Sandbox) -> None:
    # pyarrow's jemalloc starts a background thread at import unless told not to (the session
    # environment's JE_ARROW_MALLOC_CONF); pandas imports pyarrow when it is installed, so
    # without it every session of a pandas prelude would start cold.
    import pyarrow  # noqa: F401  (the test extra: never skipped)

    s = box.session(f"w-{uuid.uuid4().hex[:8]}", prelude="import pyarrow, pandas")
    try:
        assert s.enforcement["start"].startswith("warm:"), s.enforcement["start"]
        r = s.run(
            "import os; sorted(open(f'/proc/self/task/{t}/comm').read().strip() for t in os.listdir('/proc/self/task'))"
        )
        assert "jemalloc" not in r.outputs[0]["data"]["text/plain"], r.outputs
    finally:
        s.close()


FIGURE_PRELUDE = "import numpy as np, matplotlib\nimport matplotlib.pyplot as plt\n"
# Text in several sizes and a mathtext label: the fonts, the glyph and layout caches and the
# PNG writer all take part in the image.
FIGURE_CELL = (
    "fig, ax = plt.subplots()\nax.plot(np.arange(50) ** 0.5, label='sqrt')\n"
    "ax.set_title('First figure')\nax.set_xlabel(r'$\\alpha_i$')\nax.legend()\nplt.show()"
)


def _figure(session: sandbox_exec.Session) -> tuple[str, str]:
    r = session.run(FIGURE_CELL)
    assert r.status == "ok", (r.status, r.reason, r.error)
    (out,) = r.outputs
    return out["data"]["text/plain"], out["data"]["image/png"]


def test_a_warm_sessions_first_figure_is_a_cold_sessions_byte_for_byte(box: sandbox_exec.Sandbox, tmp_path) -> None:
    # The zygote rendered figures before forking (its warm-up); nothing of that may show in
    # a session's figures: the same text/plain and the same PNG bytes as a cold session's.
    warm = box.session(_name(), prelude=FIGURE_PRELUDE)
    try:
        _zygote_pid(warm)
        first_warm = _figure(warm)
        later_warm = _figure(warm)
    finally:
        warm.close()
    with sandbox_exec.Sandbox(root=tmp_path, warm=False) as cold_box:
        cold = cold_box.session("cold", prelude=FIGURE_PRELUDE)
        assert cold.enforcement["start"].startswith("cold:")
        first_cold = _figure(cold)
    assert first_warm[0] == first_cold[0] == later_warm[0]
    assert first_warm[1] == first_cold[1], "a warm session's first figure differs from a cold session's"
    assert later_warm[1] == first_cold[1]


OPEN_FILES = """
import json, os
print(json.dumps(sorted(os.readlink(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")
                        if os.path.exists(f"/proc/self/fd/{fd}"))))
"""


def test_no_font_file_of_the_zygote_is_open_in_a_new_warm_session(box: sandbox_exec.Sandbox) -> None:
    # The zygote rendered text (its warm-up and this prelude): matplotlib keeps those font
    # files open, and the zygote closes them before it serves; a session reopens what it uses.
    prelude = FIGURE_PRELUDE + "fig, ax = plt.subplots()\nax.set_title('x')\nfig.canvas.draw()\nplt.close(fig)\n"
    s = box.session(_name(), prelude=prelude)
    try:
        _zygote_pid(s)
        targets = _value(s.run(OPEN_FILES))
        assert not [t for t in targets if t.lower().endswith((".ttf", ".otf", ".afm", ".pfb"))], targets
        # and the session's own text still renders (its fonts reopened)
        assert _figure(s)[1]
    finally:
        s.close()
