"""Issue 7, class 4: sessions must not share one host uid, or they share the kernel's
per-user counters.

The kernel counts some resources per host user and refuses past a limit that is the same
for everyone with that uid: a session that takes them all denies them to every other
session, new ones included. A root backend now gives each live session its own host uid
and gid (sandbox_exec._host_ids) and makes the session's user namespace owned by it (the
launcher clones as that id), so each session has its own counters.

| attack (in session A)                                  | contained when B / a new C ...      | control (ids shared)            |
|--------------------------------------------------------|-------------------------------------|---------------------------------|
| inotify_init1 until EMFILE (fs.inotify.max_user_      | can still inotify_init1             | Policy(host_uid=fixed): B gets  |
| instances, charged to the user namespace's owner)      |                                     | EMFILE                          |
| SCM_RIGHTS: descriptors in flight, never received,     | can still send one descriptor       | Policy(host_uid=fixed): B's     |
| past RLIMIT_NOFILE (user_struct.unix_inflight)         |                                     | send fails with ETOOMANYREFS    |
| a process left running with an id                      | the id is not handed out again      | its lock alone is free          |
| two backend processes on one host                      | their sessions get different ids    | (one lock directory, /run)      |

The controls use a Policy with a fixed host_uid, which is the pre-fix behaviour (every
session as one id). Where the backend is not root no other id can be mapped (no
newuidmap): the tests that need root say so and the enforcement report's wording is tested.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import sandbox_exec
from conftest import pid_alive, setpriv_command, wait_until
from sandbox_exec import Policy, PolicyError, SandboxError, _host_ids, _safe_fs

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT, reason="only a root backend can map sessions to other host ids")

# Private ranges and fixed ids, far from the default range (2,000,000,000 + 65536) and from
# each other, so these tests hold ids no other test (or backend on this host) is using.
BASE = 2_100_000_000


def host_ids(pid: int) -> tuple[list[int], list[int]]:
    """(Uid line, Gid line) of a process, as the host sees it."""
    with open(f"/proc/{pid}/status") as f:
        lines = dict(line.split(":", 1) for line in f if ":" in line)
    return [int(x) for x in lines["Uid"].split()], [int(x) for x in lines["Gid"].split()]


def value(r: sandbox_exec.Result):
    assert r.status == "ok", (r.status, r.reason, r.error, r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


INOTIFY_FLOOD = textwrap.dedent("""
    import ctypes, json
    libc = ctypes.CDLL(None, use_errno=True)
    held = globals().setdefault("held", [])
    err = 0
    for _ in range(100000):
        fd = libc.inotify_init1(0o2000000)
        if fd < 0:
            err = ctypes.get_errno()
            break
        held.append(fd)
    print(json.dumps([len(held), err]))
""")

INOTIFY_ONE = textwrap.dedent("""
    import ctypes, json, os
    libc = ctypes.CDLL(None, use_errno=True)
    fd = libc.inotify_init1(0o2000000)
    err = ctypes.get_errno() if fd < 0 else 0
    if fd >= 0:
        os.close(fd)
    print(json.dumps([fd >= 0, err]))
""")

# Descriptors in flight: sent over a socketpair and never received. Each message carries
# up to SCM_MAX_FD (253) references to one pipe end; the kernel refuses the send once the
# sender's user has more in flight than its RLIMIT_NOFILE (ETOOMANYREFS).
SCM_FLOOD = textwrap.dedent("""
    import json, os, socket, array
    pair = globals().setdefault("pair", socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM))
    r, w = os.pipe()
    sent, err = 0, 0
    for _ in range(1000):
        try:
            pair[0].sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r] * 253))])
            sent += 253
        except OSError as e:
            err = e.errno
            break
    print(json.dumps([sent, err]))
""")

SCM_ONE = textwrap.dedent("""
    import json, os, socket, array
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    r, w = os.pipe()
    try:
        a.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
        msg, anc, flags, addr = b.recvmsg(1, socket.CMSG_SPACE(4))
        err = 0
    except OSError as e:
        err = e.errno
    print(json.dumps([err == 0, err]))
""")


# --- ids per session -------------------------------------------------------------------


def processes_with_uid(uid: int) -> list[int]:
    """The processes on the host whose real uid is `uid`."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            line = next((x for x in status.splitlines() if x.startswith("Uid:")), "")
            if line.split()[1:2] == [str(uid)]:
                found.append(int(entry))
    return found


@pytest.mark.b
@needs_root
def test_live_sessions_run_as_distinct_host_ids(tmp_path):
    with sandbox_exec.Sandbox(root=tmp_path) as box:
        a, b = box.session("a"), box.session("b")
        ids = {}
        for s in (a, b):
            uids, gids = host_ids(s.worker_pid)
            assert len(set(uids)) == 1 and uids == gids, (uids, gids)  # uid = gid, all four
            ids[s.name] = uids[0]
            assert s._host_id is not None and s._host_id.value == uids[0]
            first, count = _host_ids.DEFAULT_RANGE
            assert first <= uids[0] < first + count
            assert s.enforcement["host_uid"].startswith(f"per-session host uid and gid {uids[0]} from range")
            assert os.stat(s.workdir).st_uid == uids[0]
            # Inside, the user is 1000 and the host's root is unmapped.
            assert value(
                s.run("import os, json\nprint(json.dumps([os.getuid(), open('/proc/self/uid_map').read().split()]))")
            ) == [1000, ["1000", str(uids[0]), "1"]]
        assert ids["a"] != ids["b"]
        # A restart keeps the session's id; close() gives it back.
        a.restart()
        assert host_ids(a.worker_pid)[0][0] == ids["a"]
        a.run("1")
        assert host_ids(a.worker_pid)[0][0] == ids["a"]
        a.close()
        assert a._host_id is None
        # The next session takes the id held ahead for it (_host_ids.IdReserve: one, from a
        # range this large): never a live session's (b's); a's only once no process runs with
        # it (the refill after a's close may take it, when the one held before went to b).
        assert wait_until(lambda: len(box._table.ids.held()) == 1, 30)
        ahead = box._table.ids.held()[0]
        assert ahead != ids["b"]
        assert not processes_with_uid(ahead)
        c = box.session("c")
        assert host_ids(c.worker_pid)[0][0] == ahead
        assert host_ids(c.worker_pid)[0][0] != ids["b"]


@pytest.mark.b
@needs_root
def test_user_namespace_is_owned_by_the_session_id(tmp_path):
    """The kernel charges ucounts (inotify, user namespaces, signals, message queues) to
    the owner of the namespace below: root would make every session share them."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    NS_GET_OWNER_UID = 0xB704
    with sandbox_exec.Sandbox(root=tmp_path) as box:
        s = box.session("owner")
        fd = os.open(f"/proc/{s.worker_pid}/ns/user", os.O_RDONLY)
        try:
            owner = ctypes.c_uint32(12345)
            assert libc.ioctl(fd, NS_GET_OWNER_UID, ctypes.byref(owner)) == 0, ctypes.get_errno()
        finally:
            os.close(fd)
        assert owner.value == s._host_id.value != 0
        # No supplementary group of the backend reaches the sandbox.
        with open(f"/proc/{s.worker_pid}/status") as f:
            groups = next(line for line in f if line.startswith("Groups:")).split()[1:]
        assert groups == []


@pytest.mark.c
@needs_root
def test_an_id_is_not_reused_while_a_process_runs_with_it(tmp_path):
    first = BASE
    # A process left with the first id (as a previous holder's would be).
    lingering = subprocess.Popen(["setpriv", f"--reuid={first}", f"--regid={first}", "--clear-groups", "sleep", "120"])
    try:
        assert wait_until(lambda: host_ids(lingering.pid)[0][0] == first, 10)
        # Control: nobody holds its lock; only the /proc check keeps it out of use.
        dir_fd = _host_ids.open_state_dir(_host_ids.STATE_DIR)
        try:
            fd = os.open(f"{first}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.close(fd)
        finally:
            os.close(dir_fd)
        with sandbox_exec.Sandbox(root=tmp_path, host_id_range=(first, 2)) as box:
            s = box.session("one")
            assert host_ids(s.worker_pid)[0][0] == first + 1
            with pytest.raises(SandboxError, match="every id of"):
                box.session("two")  # first + 1 held by "one", first in use by the process
            assert [x.name for x in box.sessions()] == ["one"]
            lingering.kill()
            lingering.wait()
            assert wait_until(lambda: not pid_alive(lingering.pid), 10)
            t = box.session("two")
            assert host_ids(t.worker_pid)[0][0] == first
    finally:
        lingering.kill()
        lingering.wait()


@pytest.mark.c
@needs_root
def test_range_exhaustion_fails_closed_and_close_gives_the_id_back(tmp_path):
    with sandbox_exec.Sandbox(root=tmp_path, host_id_range=(BASE + 10, 1)) as box:
        a = box.session("a")
        with pytest.raises(SandboxError, match="every id of"):
            box.session("b")
        with pytest.raises(SandboxError, match="every id of"):
            box.run_once("1")
        a.close()
        b = box.session("b")
        assert host_ids(b.worker_pid)[0][0] == BASE + 10
        b.close()
        # A session whose start fails gives its id back too.
        with pytest.raises(sandbox_exec.PreludeError):
            box.session("p", prelude="raise ValueError('no')")
        c = box.session("c")
        assert host_ids(c.worker_pid)[0][0] == BASE + 10


BACKEND = textwrap.dedent("""
    import json, os, sys
    import sandbox_exec
    with sandbox_exec.Sandbox(root=sys.argv[1], host_id_range=(int(sys.argv[2]), 4)) as box:
        s = box.session("s")
        with open(f"/proc/{s.worker_pid}/status") as f:
            uid = next(int(l.split()[1]) for l in f if l.startswith("Uid:"))
        print(json.dumps(uid), flush=True)
        sys.stdin.read()  # hold the session until the test says
""")


@pytest.mark.b
@needs_root
def test_two_backend_processes_get_different_ids(tmp_path):
    procs = []
    try:
        for i in range(2):
            p = subprocess.Popen(
                [sys.executable, "-c", BACKEND, str(tmp_path / f"root{i}"), str(BASE + 20)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            procs.append(p)
        uids = [json.loads(p.stdout.readline()) for p in procs]
        assert sorted(uids) == [BASE + 20, BASE + 21], uids
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=60)
            p.stdout.close()


# --- the attacks -------------------------------------------------------------------------


def _flood_then_probe(box: sandbox_exec.Sandbox, flood: str, probe: str) -> tuple[list, list, list]:
    a = box.session("attacker")
    flooded = value(a.run(flood, timeout=120))
    b = box.session("neighbour")
    in_b = value(b.run(probe))
    c = box.session("newcomer")  # started after the flood
    in_c = value(c.run(probe))
    return flooded, in_b, in_c


@pytest.mark.c
@needs_root
def test_inotify_instances_exhausted_in_one_session_do_not_deny_others(tmp_path):
    limit = int(Path("/proc/sys/fs/inotify/max_user_instances").read_text())
    with sandbox_exec.Sandbox(root=tmp_path) as box:
        flooded, in_b, in_c = _flood_then_probe(box, INOTIFY_FLOOD, INOTIFY_ONE)
    assert flooded == [limit, errno.EMFILE], flooded  # A reached the per-user limit ...
    assert in_b == [True, 0] and in_c == [True, 0], (in_b, in_c)  # ... which is A's alone
    # Control: sessions forced to share one host id share the count.
    with sandbox_exec.Sandbox(Policy(host_uid=BASE + 30), root=tmp_path / "shared") as box:
        flooded, in_b, in_c = _flood_then_probe(box, INOTIFY_FLOOD, INOTIFY_ONE)
    assert flooded == [limit, errno.EMFILE], flooded
    assert in_b == [False, errno.EMFILE] and in_c == [False, errno.EMFILE], (in_b, in_c)


@pytest.mark.c
@needs_root
def test_descriptors_in_flight_in_one_session_do_not_deny_others(tmp_path):
    with sandbox_exec.Sandbox(root=tmp_path) as box:
        flooded, in_b, in_c = _flood_then_probe(box, SCM_FLOOD, SCM_ONE)
        nofile = box.policy.max_open_files
    assert flooded[1] == errno.ETOOMANYREFS and flooded[0] > nofile, flooded
    assert in_b == [True, 0] and in_c == [True, 0], (in_b, in_c)
    # Control: with one shared host id, A's descriptors in flight count against B's sends.
    with sandbox_exec.Sandbox(Policy(host_uid=BASE + 31), root=tmp_path / "shared") as box:
        flooded, in_b, in_c = _flood_then_probe(box, SCM_FLOOD, SCM_ONE)
    assert flooded[1] == errno.ETOOMANYREFS, flooded
    assert in_b == [False, errno.ETOOMANYREFS] and in_c == [False, errno.ETOOMANYREFS], (in_b, in_c)


# --- the workdir follows the id ----------------------------------------------------------


@pytest.mark.b
@needs_root
def test_a_workdir_left_by_an_earlier_id_is_given_to_the_new_one(tmp_path):
    with sandbox_exec.Sandbox(root=tmp_path, host_id_range=(BASE + 40, 3)) as box:
        w = box.session("w")
        old = w._host_id.value
        value(
            w.run(
                "import os, json\nos.makedirs('d/e')\nopen('d/e/f', 'w').write('a')\n"
                "os.symlink('/etc/hostname', 'd/link')\nprint(json.dumps(1))"
            )
        )
        w.close()
        blocker = box.session("blocker")  # takes the freed id: "w" comes back as another
        assert blocker._host_id.value == old
        w = box.session("w")
        new = w._host_id.value
        assert new != old
        for path in (w.workdir, w.workdir / "d", w.workdir / "d/e", w.workdir / "d/e/f", w.workdir / "d/link"):
            st = os.lstat(path)
            assert (st.st_uid, st.st_gid) == (new, new), (path, st.st_uid)
        assert os.stat("/etc/hostname").st_uid == 0  # the link was changed, not its target
        assert (
            value(
                w.run(
                    "import json\nopen('d/e/f', 'a').write('b')\nopen('d/e/g', 'w').write('c')\n"
                    "print(json.dumps(open('d/e/f').read()))"
                )
            )
            == "ab"
        )
        # Control: a file still owned by the earlier id is not the new session's to write.
        (w.workdir / "d/e/h").write_text("x")
        os.chown(w.workdir / "d/e/h", old, old)
        os.chmod(w.workdir / "d/e/h", 0o644)
        r = w.run("open('d/e/h', 'a').write('y')")
        assert r.status == "error" and r.error["ename"] == "PermissionError", (r.status, r.error)


@pytest.mark.a
@needs_root
def test_own_tree_walks_deep_trees_without_following_links(tmp_path):
    top = tmp_path / "wd"
    top.mkdir()
    deep = top
    for _ in range(1500):  # deeper than Python's recursion limit (os.fwalk recurses)
        deep = deep / "d"
        deep.mkdir()
    (deep / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("s")
    os.symlink(outside, top / "dirlink")
    os.symlink(outside / "secret", deep / "filelink")
    _host_ids.own_tree(str(top), BASE + 50, BASE + 50)
    for path in (top, deep, deep / "f", top / "dirlink", deep / "filelink"):
        assert os.lstat(path).st_uid == BASE + 50, path
    assert os.stat(outside).st_uid == 0 and os.stat(outside / "secret").st_uid == 0
    # Already the id's: nothing to walk.
    os.chown(deep / "f", 0, 0, follow_symlinks=False)
    _host_ids.own_tree(str(top), BASE + 50, BASE + 50)
    assert os.lstat(deep / "f").st_uid == 0
    # pytest's own tmp_path cleanup recurses (RecursionError on 1500 levels): remove it here.
    _safe_fs.remove_tree(top)
    assert not top.exists()


# --- an unprivileged backend: one id for all, and it says so ------------------------------

UNPRIVILEGED_BACKEND = textwrap.dedent("""
    import json, os, sys
    import sandbox_exec
    flood, probe = sys.argv[2], sys.argv[3]
    out = {"backend_uid": os.geteuid()}
    try:
        sandbox_exec.Sandbox(root=sys.argv[1], host_id_range=(2_100_000_000, 4))
        out["explicit_range"] = "accepted"
    except sandbox_exec.SandboxError as e:
        out["explicit_range"] = str(e)
    with sandbox_exec.Sandbox(root=sys.argv[1]) as box:
        a, b = box.session("a"), box.session("b")
        out["uids"] = []
        for s in (a, b):
            with open(f"/proc/{s.worker_pid}/status") as f:
                out["uids"].append(next(int(l.split()[1]) for l in f if l.startswith("Uid:")))
        out["enforcement"] = a.enforcement["host_uid"]
        out["flood"] = a.run(flood, timeout=120).stdout
        out["probe"] = b.run(probe).stdout
    print(json.dumps(out))
""")


@pytest.mark.c
def test_unprivileged_backend_shares_its_uid_and_says_so():
    """Without newuidmap an unprivileged backend can map only its own uid: every session runs
    as it and shares its per-user counters (the inotify flood still denies the neighbour).
    The enforcement report says so, and an explicit range is refused, not ignored."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="sandbox_exec-uids-", dir="/tmp"))  # searchable by the backend
    try:
        os.chmod(base, 0o755)
        args = [str(base / "sessions"), INOTIFY_FLOOD, INOTIFY_ONE]
        (base / "sessions").mkdir()
        if ROOT:
            from test_unprivileged import UID, _package_copy

            if sys.version_info[:2] != (3, 11) or not Path("/usr/bin/python3.11").exists():
                pytest.skip("needs the system python3.11 matching this build's ABI to run a non-root backend")
            os.chown(base / "sessions", UID, UID)
            python = _package_copy(base)
            cmd = [
                *setpriv_command(UID, python),
                "-c",
                UNPRIVILEGED_BACKEND,
                *args,
            ]
        else:
            cmd = [sys.executable, "-c", UNPRIVILEGED_BACKEND, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=base)
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["backend_uid"] != 0
    assert out["uids"] == [out["backend_uid"]] * 2
    assert "needs a backend running as root" in out["explicit_range"]
    assert out["enforcement"].startswith(f"the backend's own uid {out['backend_uid']}, shared by all sessions")
    assert json.loads(out["flood"].strip().splitlines()[-1])[1] == errno.EMFILE
    assert json.loads(out["probe"].strip().splitlines()[-1]) == [False, errno.EMFILE]


# --- configuration -----------------------------------------------------------------------


@pytest.mark.a
def test_host_id_policy_fields():
    assert Policy().host_uid is None and Policy().host_gid is None  # per session by default
    assert Policy(host_uid=5000).host_gid is None
    for bad in ({"host_uid": 0}, {"host_uid": 2**32 - 1}, {"host_uid": True}, {"host_gid": 5000}, {"host_uid": "5000"}):
        with pytest.raises(PolicyError, match="host_"):
            Policy(**bad)
    assert "per-session" in Policy().host_ids(0)
    assert "shared by every session" in Policy(host_uid=5000).host_ids(0)
    unpriv = Policy().host_ids(1234)
    assert "1234" in unpriv and "shared by all sessions" in unpriv and "newuidmap" in unpriv
    assert Policy(namespaces=False, network=True).host_ids(0).startswith("none")
    assert Policy().enforcement({}, host_ids="x")["host_uid"] == "x"


@pytest.mark.a
def test_host_id_range_sources(tmp_path):
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    assert _host_ids.resolve_range(subuid=str(subuid), subgid=str(subgid)).source == "built-in default"
    subuid.write_text("alice:100000:65536\nsandbox_exec:3000000000:1000\n")
    subgid.write_text("sandbox_exec:3000000500:100000\n")
    rng = _host_ids.resolve_range(subuid=str(subuid), subgid=str(subgid))
    assert (rng.first, rng.count) == (3000000500, 500)  # the ids both files give
    subgid.write_text("sandbox_exec:100:10\n")
    with pytest.raises(SandboxError, match="share no id"):
        _host_ids.resolve_range(subuid=str(subuid), subgid=str(subgid))
    assert _host_ids.resolve_range((BASE, 10)).count == 10
    for bad in ((0, 10), (2**32 - 5, 10), (BASE, 0), ("1", 2), (BASE,)):
        with pytest.raises(SandboxError, match=r"host.id.range"):
            _host_ids.resolve_range(bad)
    with pytest.raises(SandboxError, match="accounts"):
        _host_ids.resolve_range((1, 65535))  # root's group, daemon, nobody, ...


@pytest.mark.a
def test_unprivileged_backend_refuses_an_explicit_range(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1234)
    with pytest.raises(SandboxError, match="needs a backend running as root"):
        sandbox_exec.Sandbox(root=tmp_path, host_id_range=(BASE, 10))
