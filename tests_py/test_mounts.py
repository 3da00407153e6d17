"""Host data mounts (Policy.mounts, issue 10 item 7): a host directory at a path relative to
the workdir, read-only unless named writable, without copying.

a: the Mount and Policy checks; b: real cells reading and writing through mounts, cold and
warm, per session, pooled, across restarts; c: what a hostile cell (or a backend's mistake)
can do with them: a symlink or a file planted where the mount goes (refused by the
launcher itself, not only by the backend's look), host paths that would expose the Sandbox
root, the kernel's trees or the read-only system paths, a cell unmounting or remounting, and
an unprivileged backend.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import errno
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

import sandbox_exec
from conftest import setpriv_command, wait_until
from sandbox_exec import Mount, Policy, PolicyError, SandboxError, _core, _mounts


# --- fixtures ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<host>/data (read-only data: a.txt, sub/b.csv; everyone may write it, so only a
    mount flag can refuse a write), <host>/out (for writable mounts, everyone may write),
    <host>/secret (a sibling no mount names), <host>/private (0700, root's)."""
    base = tmp_path_factory.mktemp("mount-host")
    os.chmod(base, 0o755)
    data, out, secret, private = base / "data", base / "out", base / "secret", base / "private"
    for d in (data, data / "sub", out, secret, private):
        d.mkdir()
    (data / "a.txt").write_text("hello from the host\n")
    (data / "sub" / "b.csv").write_text("x,y\n1,2\n")
    (data / "run.sh").write_text("#!/bin/sh\necho ran\n")
    (secret / "s.txt").write_text("secret\n")
    for d in (data, data / "sub", out):
        os.chmod(d, 0o777)
    for f in (data / "a.txt", data / "sub" / "b.csv"):
        os.chmod(f, 0o666)
    os.chmod(data / "run.sh", 0o777)
    os.chmod(secret, 0o755)
    os.chmod(private, 0o700)
    return base


@pytest.fixture(scope="module", params=[True, False], ids=["warm", "cold"])
def box(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    with sandbox_exec.Sandbox(root=tmp_path_factory.mktemp("mount-sessions"), warm=request.param) as b:
        yield b


@pytest.fixture
def open_session(box: sandbox_exec.Sandbox):
    made: list[sandbox_exec.Session] = []

    def make(policy: Policy, name: str | None = None) -> sandbox_exec.Session:
        s = box.session(name or f"m-{uuid.uuid4().hex[:10]}", policy=policy)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def ro(host: Path, path: str = "data") -> Policy:
    return Policy(mounts=(Mount(path, str(host / "data")),))


def value(result: sandbox_exec.Result) -> object:
    assert result.status == "ok", (result.status, result.error, result.reason)
    return ast.literal_eval(result.outputs[-1]["data"]["text/plain"])


def expect_started(box: sandbox_exec.Sandbox, s: sandbox_exec.Session) -> None:
    """The session started the way its Sandbox says (warm sessions really forked)."""
    warm = box._table.zygotes is not None
    assert s.enforcement["start"].startswith("warm" if warm else "cold"), s.enforcement["start"]


# --- a: the checks -------------------------------------------------------------------------
BAD_PATHS = [
    "",
    "/data",
    "..",
    "../data",
    "a/../b",
    ".",
    "./data",
    "data/.",
    "data/",
    "a//b",
    ".sandbox_exec",
    ".sandbox_exec/state",
    "a=b",
    "a\0b",
    5,
    None,
]


@pytest.mark.a
@pytest.mark.parametrize("path", BAD_PATHS, ids=[repr(p) for p in BAD_PATHS])
def test_bad_relative_paths_are_refused(path):
    with pytest.raises(PolicyError, match=r"Policy\.mounts"):
        Mount(path, "/srv/data")  # type: ignore[arg-type]


@pytest.mark.a
@pytest.mark.parametrize("good", ["data", "a/b/c", "..data", "data..", ".hidden", "x/.sandbox_exec", "with space"])
def test_good_relative_paths_are_kept_as_written(good):
    assert Mount(good, "/srv").path == good
    # the launcher's own check agrees
    iso = _core.Isolation(mountpoint="/m", mounts=[("/srv", good, False)])
    assert iso.mounts == [("/srv", good, False)]


@pytest.mark.a
@pytest.mark.parametrize("path", [p for p in BAD_PATHS if isinstance(p, str)], ids=repr)
def test_the_launchers_binding_refuses_bad_paths_too(path):
    # The C++ side does not trust the Python checks.
    with pytest.raises(ValueError, match="mount path"):
        _core.Isolation(mountpoint="/m", mounts=[("/srv", path, False)])


@pytest.mark.a
@pytest.mark.parametrize("bad", ["srv/data", "", "data\0x", 3, None])
def test_host_paths_must_be_absolute(bad):
    with pytest.raises(PolicyError, match="must be an absolute path"):
        Mount("data", bad)  # type: ignore[arg-type]
    if isinstance(bad, str) and "\0" not in bad:
        with pytest.raises(ValueError, match="absolute"):
            _core.Isolation(mountpoint="/m", mounts=[(bad, "data", False)])


@pytest.mark.a
def test_mount_fields():
    m = Mount("data", Path("/srv/data"))
    assert m.host == "/srv/data" and isinstance(m.host, str) and m.writable is False
    assert Mount("out", "/srv/out", writable=True).writable is True
    with pytest.raises(PolicyError, match="writable"):
        Mount("data", "/srv", writable=1)  # type: ignore[arg-type]
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.writable = True  # type: ignore[misc]


@pytest.mark.a
@pytest.mark.parametrize(
    "paths", [("data", "data"), ("data", "data/raw"), ("a/b/c", "a/b")], ids=["repeat", "nested", "nested-reverse"]
)
def test_paths_may_not_repeat_or_nest(paths):
    with pytest.raises(PolicyError, match="repeat or nest"):
        Policy(mounts=tuple(Mount(p, f"/srv/{i}") for i, p in enumerate(paths)))
    # siblings sharing a prefix are not nested
    Policy(mounts=(Mount("data", "/srv/1"), Mount("data2", "/srv/2"), Mount("dat", "/srv/3")))


@pytest.mark.a
@pytest.mark.parametrize("bad", ["data", Mount("data", "/srv"), {"data": "/srv"}, [("data", "/srv")], 5, None])
def test_mounts_must_be_a_sequence_of_mount(bad):
    with pytest.raises(PolicyError, match=r"sequence of sandbox_exec\.Mount"):
        Policy(mounts=bad)


@pytest.mark.a
def test_a_policy_with_mounts_replaces_hashes_pickles_and_copies():
    p = Policy(mounts=[Mount("data", "/srv/data")])  # a list is kept as a tuple
    assert p.mounts == (Mount("data", "/srv/data"),)
    q = p.replace(mounts=(*p.mounts, Mount("out", "/srv/out", writable=True)))
    r = dataclasses.replace(p, mounts=(Mount("data", "/srv/data"),))
    assert r == p and hash(r) == hash(p) and q != p
    assert len(q.mounts) == 2 and len(p.mounts) == 1
    with pytest.raises(PolicyError, match="repeat or nest"):
        p.replace(mounts=(Mount("data", "/a"), Mount("data", "/b")))
    for copied in (pickle.loads(pickle.dumps(q)), copy.deepcopy(q), copy.copy(q)):
        assert copied == q and hash(copied) == hash(q)
    assert Policy(mounts=(m for m in q.mounts)) == q  # a generator too


@pytest.mark.a
def test_mounts_need_namespaces_and_say_how_they_are_enforced():
    p = Policy(namespaces=False, network=True, max_processes=None, disk_bytes=None, mounts=(Mount("d", "/srv"),))
    assert any("mounts need namespaces" in m for m in p.unenforceable())
    e = Policy(mounts=(Mount("d", "/srv"), Mount("o", "/out", writable=True))).enforcement({})
    assert "d (read-only" in e["mounts"] and "o (read-write: writable=True)" in e["mounts"]
    assert Policy().enforcement({})["mounts"] == "none"


# --- b: cells through the mounts -----------------------------------------------------------
READ = """
import os
(open('data/a.txt').read(), sorted(os.listdir('data')), open('data/sub/b.csv').read(), os.getuid())
"""

WRITES = """
import os, errno
def code(f):
    try:
        f()
        return 0
    except OSError as e:
        return e.errno
(
    code(lambda: open('data/new.txt', 'w').write('x')),
    code(lambda: open('data/a.txt', 'w').write('x')),
    code(lambda: open('data/a.txt', 'a').write('x')),
    code(lambda: os.mkdir('data/dir')),
    code(lambda: os.unlink('data/a.txt')),
    code(lambda: os.rename('data/a.txt', 'data/b.txt')),
    code(lambda: os.chmod('data/a.txt', 0o600)),
    code(lambda: os.utime('data/a.txt')),
    code(lambda: os.symlink('/etc', 'data/link')),
)
"""


@pytest.mark.b
def test_a_cell_reads_host_files_at_the_relative_path(box, host, open_session):
    s = open_session(ro(host))
    expect_started(box, s)
    text, names, csv, uid = value(s.run(READ))
    assert text == "hello from the host\n" and names == ["a.txt", "run.sh", "sub"] and csv == "x,y\n1,2\n"
    assert uid == 1000  # the sandbox's user, as without a mount


@pytest.mark.b
def test_every_write_to_a_read_only_mount_fails_with_erofs(box, host, open_session):
    s = open_session(ro(host))
    # The files are writable by anyone (0666/0777): only the mount refuses.
    assert value(s.run(WRITES)) == (errno.EROFS,) * 9
    r = s.run("open('data/new.txt', 'w')")
    assert r.status == "error" and r.error is not None and r.error["ename"] == "OSError"
    assert "Read-only file system" in r.error["evalue"]
    assert sorted(os.listdir(host / "data")) == ["a.txt", "run.sh", "sub"]
    assert (host / "data" / "a.txt").read_text() == "hello from the host\n"


@pytest.mark.b
def test_mount_flags_read_only_nosuid_nodev_noexec(box, host, open_session):
    s = open_session(Policy(mounts=(Mount("data", str(host / "data")), Mount("out", str(host / "out"), True))))
    code = "import os\n[(os.statvfs(p).f_flag & 15) for p in ('data', 'out', '.')]"
    data, out, workdir = value(s.run(code))
    assert data == os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC
    assert out == os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC
    assert not workdir & os.ST_RDONLY
    # noexec: a program in the data directory does not run, whatever its mode
    r = s.run("import subprocess\nsubprocess.run(['data/run.sh'])")
    assert r.status == "error" and r.error is not None and r.error["ename"] == "PermissionError"


@pytest.mark.b
def test_a_writable_mount_writes_reach_the_host(box, host, open_session):
    name = f"w-{uuid.uuid4().hex[:8]}"
    s = open_session(Policy(mounts=(Mount("results/out", str(host / "out"), writable=True),)))
    r = s.run(
        f"import os\nos.makedirs('results/out/{name}')\n"
        f"open('results/out/{name}/r.txt', 'w').write('computed')\n"
        f"os.rename('results/out/{name}/r.txt', 'results/out/{name}/final.txt')\n"
        f"sorted(os.listdir('results/out/{name}'))"
    )
    assert value(r) == ["final.txt"]
    made = host / "out" / name / "final.txt"
    assert made.read_text() == "computed"
    # A root backend's host sees the session's own unprivileged host id as the owner.
    if os.geteuid() == 0:
        assert made.stat().st_uid == s._host_ids()[0] != 0
    # and the host's own changes are seen by the next cell, without copying
    (host / "out" / name / "from_host.txt").write_text("new")
    assert value(s.run(f"open('results/out/{name}/from_host.txt').read()")) == "new"


@pytest.mark.b
def test_the_hosts_sibling_directories_are_not_visible(box, host, open_session):
    s = open_session(ro(host))
    code = (
        "import os\n"
        f"(os.path.exists({str(host / 'secret')!r}), os.path.exists({str(host / 'data')!r}), "
        "os.path.exists('data/../secret'), sorted(os.listdir('data/..')) == sorted(os.listdir('.')), "
        "os.path.samefile('data/..', '.'))"
    )
    assert value(s.run(code)) == (False, False, False, True, True)


@pytest.mark.b
def test_the_mountpoint_is_made_in_the_workdir_and_what_was_there_kept(box, host, open_session):
    s = open_session(Policy())
    # a directory already at the path: hidden while mounted, kept on the host
    assert s.run("import os\nos.makedirs('inputs/raw')\nopen('inputs/raw/mine.txt', 'w').write('mine')").status == "ok"
    workdir = s.workdir
    s.close()
    s2 = open_session(
        Policy(mounts=(Mount("inputs/raw", str(host / "data")), Mount("deep/er/data", str(host / "data")))), name=s.name
    )
    assert value(s2.run("import os\n(sorted(os.listdir('inputs/raw')), os.path.isdir('deep/er/data/sub'))")) == (
        ["a.txt", "run.sh", "sub"],
        True,
    )
    # (while the session is open: a root backend's workdir is an image mounted there)
    assert (workdir / "inputs" / "raw" / "mine.txt").read_text() == "mine"
    made = workdir / "deep" / "er" / "data"
    assert made.is_dir() and not made.is_symlink() and list(made.iterdir()) == []
    # owned as the workdir is (the sandbox's user can remove it when the mount goes)
    assert made.stat().st_uid == workdir.stat().st_uid


@pytest.mark.b
def test_each_session_sees_its_own_policys_mounts(box, host, open_session):
    a = open_session(ro(host))
    b = open_session(Policy(mounts=(Mount("data", str(host / "secret")),)))
    c = open_session(Policy())
    assert value(a.run("import os\nsorted(os.listdir('data'))")) == ["a.txt", "run.sh", "sub"]
    assert value(b.run("import os\nsorted(os.listdir('data'))")) == ["s.txt"]
    assert value(c.run("import os\nos.path.exists('data')")) is False


@pytest.mark.b
def test_restart_and_a_crash_keep_the_mount(box, host, open_session):
    s = open_session(ro(host))
    assert value(s.run("open('data/a.txt').read()")) == "hello from the host\n"
    s.restart()
    assert value(s.run("open('data/a.txt').read()")) == "hello from the host\n"
    assert s.run("import os\nos._exit(3)").status == "crashed"
    assert value(s.run("import os\n(open('data/a.txt').read(), os.statvfs('data').f_flag & os.ST_RDONLY)")) == (
        "hello from the host\n",
        os.ST_RDONLY,
    )


@pytest.mark.b
def test_pooled_sessions_mount_in_their_slot(host, tmp_path):
    p = ro(host)
    with sandbox_exec.Sandbox(root=tmp_path / "pool", pool_size=1) as b:
        first = b.session("first", policy=p)
        assert value(first.run("open('data/a.txt').read()")) == "hello from the host\n"
        assert wait_until(lambda: b.pool_idle() == 1, timeout=60)
        s = b.session("second", policy=p)
        assert "served from the pool" in s.enforcement["start"]
        assert value(s.run("import os\n(open('data/a.txt').read(), os.getcwd() == str(os.path.abspath('.')))")) == (
            "hello from the host\n",
            True,
        )
        assert value(s.run("import os\nos.statvfs('data').f_flag & os.ST_RDONLY")) == os.ST_RDONLY


@pytest.mark.b
def test_a_host_path_with_a_symlink_in_it_is_refused_naming_it(box, host, open_session, tmp_path):
    """Never resolved: whoever may change a link could point the mount elsewhere later
    (tests_py/test_attack_state_mounts.py), so a link anywhere in the path is refused."""
    link = tmp_path / "data-link"
    link.symlink_to(host / "data")
    above = tmp_path / "host-link"
    above.symlink_to(host)
    for given, named in ((link, link), (above / "data", above), (above / "data" / "sub" / "..", above)):
        with pytest.raises(PolicyError, match=f"has a symlink in its path, {re.escape(str(named))}:"):
            open_session(Policy(mounts=(Mount("data", str(given)),)))
    s = open_session(Policy(mounts=(Mount("data", str(host / "data")),)))  # the same directory, given as it is
    assert value(s.run("open('data/a.txt').read()")) == "hello from the host\n"


# --- c: attacks and mistakes ---------------------------------------------------------------
PLANTS = {
    "symlink to /etc": "import os\nos.symlink('/etc', 'data')",
    "symlink to /proc/self/root": "import os\nos.symlink('/proc/self/root', 'data')",
    "symlink in the workdir": "import os\nos.mkdir('mine')\nos.symlink('mine', 'data')",
    "file": "open('data', 'w').write('not a directory')",
}


@pytest.mark.c
@pytest.mark.parametrize("plant", list(PLANTS), ids=list(PLANTS))
@pytest.mark.parametrize("look", [True, False], ids=["backend-look", "launcher-only"])
def test_something_planted_where_the_mount_goes_is_refused(box, host, open_session, monkeypatch, plant, look):
    """A cell of a session without the mount leaves a link or a file at 'data'; the next
    start with the mount must not follow it. With the backend's look switched off, the
    launcher (cold) or the zygote's keeper (warm) refuses on its own."""
    s = open_session(Policy())
    assert s.run(PLANTS[plant]).status == "ok"
    name = s.name
    s.close()
    if not look:
        monkeypatch.setattr(_mounts, "check_workdir_path", lambda workdir, mount: None)
    with pytest.raises(SandboxError) as info:
        open_session(ro(host), name=name)
    if look:
        assert "'data' in the workdir" in str(info.value) and "never followed" in str(info.value)
    else:
        assert info.value.layer == "mount" and info.value.errno in (errno.ENOTDIR, errno.ELOOP), info.value
        assert "Policy.mounts" in str(info.value)
    # Nothing was made or mounted through the link; once a cell (of a session without the
    # mount) removes the plant, the session starts with it.
    assert not os.path.exists("/etc/data")
    monkeypatch.undo()
    cleaner = open_session(Policy(), name=name)
    assert value(cleaner.run("import os\nr = os.path.exists('mine/a.txt')\nos.unlink('data')\nr")) is False
    cleaner.close()
    s2 = open_session(ro(host), name=name)
    assert value(s2.run("open('data/a.txt').read()")) == "hello from the host\n"


@pytest.mark.c
@pytest.mark.parametrize("look", [True, False], ids=["backend-look", "launcher-only"])
def test_a_parent_of_a_live_mountpoint_renamed_and_replaced_by_a_link(
    box, host, open_session, monkeypatch, look, tmp_path
):
    """Inside a live session the mountpoint itself cannot be moved (EBUSY), but its parent
    can: the cell renames it and puts a symlink to a host directory in its place (one this
    test watches: a launcher that followed it would make 'data' there as root). The restart
    refuses."""
    watched = tmp_path / "watched"
    watched.mkdir()
    s = open_session(ro(host, "in/data"))
    code = (
        "import os, errno\n"
        "def code(f):\n    try:\n        f()\n        return 0\n    except OSError as e:\n        return e.errno\n"
        "(code(lambda: os.rename('in/data', 'moved')), code(lambda: os.rmdir('in/data')), "
        f"code(lambda: os.rename('in', 'in2')), code(lambda: os.symlink({str(watched)!r}, 'in')), "
        "sorted(os.listdir('in2/data')))"
    )
    assert value(s.run(code)) == (errno.EBUSY, errno.EBUSY, 0, 0, ["a.txt", "run.sh", "sub"])
    if not look:
        monkeypatch.setattr(_mounts, "check_workdir_path", lambda workdir, mount: None)
    with pytest.raises(SandboxError) as info:
        s.restart()
    assert ("'in' in the workdir" in str(info.value)) if look else (info.value.errno in (errno.ENOTDIR, errno.ELOOP))
    assert list(watched.iterdir()) == []


@pytest.mark.c
def test_a_host_directory_under_a_directory_others_may_change_is_refused(box, host, open_session, tmp_path):
    """Every directory above a host directory is owned by root or the backend and writable by
    its owner only, unless sticky: else someone else (a cell through a writable mount, which
    a root backend needs world-writable) could rename a part of the path and put another
    directory there between two starts."""
    shared = tmp_path / "shared"
    (shared / "d").mkdir(parents=True)
    for mode, match in ((0o777, "is group- or world-writable"), (0o775, "is group- or world-writable")):
        os.chmod(shared, mode)
        with pytest.raises(PolicyError, match=f"lies in {re.escape(str(shared))} .*{match}"):
            open_session(Policy(mounts=(Mount("data", str(shared / "d")),)))
    os.chmod(shared, 0o755)
    os.chown(shared, 12345, 12345)
    with pytest.raises(PolicyError, match="is owned by neither root nor the backend"):
        open_session(Policy(mounts=(Mount("data", str(shared / "d")),)))
    os.chown(shared, os.geteuid(), os.getegid())
    os.chmod(shared, 0o1777)  # sticky, as /tmp: nobody renames what they do not own
    s = open_session(Policy(mounts=(Mount("data", str(shared / "d")),)))
    assert value(s.run("import os\nos.listdir('data')")) == []
    # the host directory itself may be anyone's, and world-writable: it is what is shared
    os.chmod(shared / "d", 0o777)
    s = open_session(Policy(mounts=(Mount("data", str(shared / "d"), writable=True),)))
    assert value(s.run("open('data/x', 'w').write('x')")) == 1


@pytest.mark.c
def test_a_host_path_with_a_link_swapped_in_is_not_followed_by_the_launcher(
    box, host, open_session, monkeypatch, tmp_path
):
    """The backend hands the launcher the path it checked (no symlink in it); a symlink put on
    that path afterwards (here: handed over unresolved) is refused by the launcher (openat2 with
    RESOLVE_NO_SYMLINKS), not followed."""
    link = tmp_path / "swapped"
    link.symlink_to("/etc")
    real_resolve = _mounts.resolve

    def unresolved(*args, **kwargs):
        return [(str(link), path, writable) for _, path, writable in real_resolve(*args, **kwargs)]

    monkeypatch.setattr(_mounts, "resolve", unresolved)
    with pytest.raises(SandboxError) as info:
        open_session(ro(host))
    assert info.value.layer == "mount" and info.value.errno == errno.ELOOP


@pytest.mark.c
def test_host_paths_that_are_not_usable_directories_are_refused(box, host, open_session):
    for policy, match in [
        (Policy(mounts=(Mount("data", str(host / "missing")),)), "cannot be used: No such file"),
        (Policy(mounts=(Mount("data", str(host / "secret" / "s.txt")),)), "is not a directory"),
        (Policy(mounts=(Mount("data", str(host / "secret" / "s.txt" / "d")),)), "s.txt is not a directory"),
        (Policy(mounts=(Mount("data", str(host / "missing" / "d")),)), "missing: No such file"),
    ]:
        with pytest.raises(PolicyError, match=match):
            open_session(policy)


@pytest.mark.c
def test_host_paths_that_expose_the_sandbox_root_or_the_kernel_are_refused(box, host, open_session):
    other = open_session(Policy())
    assert other.run("open('mine.txt', 'w').write('private')").status == "ok"
    root = box.root
    for where, match in [
        (str(root), "Sandbox root"),
        (str(root.parent), "Sandbox root"),  # contains it
        (str(other.workdir), "Sandbox root"),  # another session's workdir
        (str(root / ".mnt"), "Sandbox root"),
        ("/", "Sandbox root"),
        ("/proc", "kernel interfaces"),
        ("/proc/1", "kernel interfaces"),
        ("/sys/fs", "kernel interfaces"),
        ("/dev", "kernel interfaces"),
    ]:
        with pytest.raises(PolicyError, match=match):
            open_session(Policy(mounts=(Mount("data", where),)))


@pytest.mark.c
def test_a_writable_mount_may_not_overlap_read_only_system_paths_or_another_mount(box, host, open_session, tmp_path):
    package = os.path.dirname(sandbox_exec.__file__)
    for where in (package, sys.prefix, "/usr"):
        with pytest.raises(PolicyError, match="overlaps the sandbox's read-only path"):
            open_session(Policy(mounts=(Mount("data", where, writable=True),)))
    extra = tmp_path / "extra"
    (extra / "lib").mkdir(parents=True)
    os.chmod(extra, 0o777)
    with pytest.raises(PolicyError, match="overlaps the sandbox's read-only path"):
        open_session(Policy(readonly_paths=(str(extra / "lib"),), mounts=(Mount("data", str(extra), writable=True),)))
    # read-only mounts of the same trees are harmless: they are read-only already
    s = open_session(Policy(mounts=(Mount("pkg", package),)))
    assert value(s.run("import os\n'policy.py' in os.listdir('pkg')")) is True
    # two mounts sharing a host tree, one writable: a cell could swap the other's path
    with pytest.raises(PolicyError, match=r"overlap .* one is writable"):
        open_session(Policy(mounts=(Mount("out", str(host / "out"), True), Mount("ro", str(host / "out")))))
    # both read-only: fine (in a tree only root may change: <host>/data is world-writable,
    # so a directory in it may be no host directory at all)
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "b.csv").write_text("b\n")
    for d in (tree, tree / "sub"):
        os.chmod(d, 0o755)
    s = open_session(Policy(mounts=(Mount("a", str(tree)), Mount("b", str(tree / "sub")))))
    assert value(s.run("import os\nsorted(os.listdir('b'))")) == ["b.csv"]


@pytest.mark.c
@pytest.mark.skipif(os.geteuid() != 0, reason="a root backend's per-session host ids")
def test_a_root_backend_refuses_directories_the_sandbox_user_cannot_use(box, host, open_session):
    # 0700 root's: the session's unprivileged host id could not read it (the cell would
    # meet EACCES on every file): refused at the start, naming the uid and the fix.
    with pytest.raises(PolicyError, match=r"host uid \d+.*read and search it.*drwx------"):
        open_session(Policy(mounts=(Mount("data", str(host / "private")),)))
    # writable needs write permission for that id: 0755 root's is not enough
    with pytest.raises(PolicyError, match="read, search and write"):
        open_session(Policy(mounts=(Mount("data", str(host / "secret"), writable=True),)))
    # a fixed host_uid that owns the directory may use it
    os.chown(host / "private", 54321, 54321)
    try:
        s = open_session(Policy(host_uid=54321, mounts=(Mount("data", str(host / "private"), writable=True),)))
        assert value(s.run("open('data/mine.txt', 'w').write('ok')")) == 2
        assert (host / "private" / "mine.txt").stat().st_uid == 54321
    finally:
        os.chown(host / "private", 0, 0)


@pytest.mark.c
def test_a_cell_cannot_unmount_remount_or_move_a_mount(box, host, open_session):
    s = open_session(ro(host))
    code = (
        "import ctypes, errno, os\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "def err(rc):\n    return ctypes.get_errno() if rc != 0 else 0\n"
        "MS_REMOUNT, MS_BIND = 32, 4096\n"
        "(err(libc.umount2(b'data', 2)), err(libc.mount(None, b'data', None, MS_REMOUNT | MS_BIND, None)), "
        "err(libc.mount(b'data', b'elsewhere', None, MS_BIND, None)), "
        "err(libc.rename(b'data', b'moved')), err(libc.rmdir(b'data')))"
    )
    umount, remount, bind, rename, rmdir = value(s.run(code))
    assert umount == remount == bind == errno.EPERM  # seccomp (and no capability)
    assert rename == rmdir == errno.EBUSY
    assert (
        value(s.run("import errno\ntry:\n    open('data/x', 'w')\n    r = 0\nexcept OSError as e:\n    r = e.errno\nr"))
        == errno.EROFS
    )


# --- c: an unprivileged backend ------------------------------------------------------------
UNPRIVILEGED = r"""
import json, os, sys
import sandbox_exec
from sandbox_exec import Mount, Policy
root, data, out, warm = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "warm"
res = {"backend_uid": os.geteuid()}
policy = Policy(mounts=(Mount("data", data), Mount("out", out, writable=True)))
with sandbox_exec.Sandbox(root=root, warm=warm) as box:
    s = box.session("unpriv", policy=policy)
    res["start"] = s.enforcement["start"]
    code = ("import os\ndef code(f):\n    try:\n        f()\n        return 0\n    except OSError as e:\n        return e.errno\n"
            "(open('data/a.txt').read(), code(lambda: open('data/new', 'w')), "
            "code(lambda: open('out/made.txt', 'w').write('unpriv')), os.statvfs('data').f_flag & 15)")
    r = s.run(code)
    res["cell"] = r.outputs[-1]["data"]["text/plain"] if r.outputs else repr((r.status, r.error))
    s.close()
    # what a cell could have left where the mount goes: a link to /etc
    os.rmdir(os.path.join(s.workdir, "data"))
    os.symlink("/etc", os.path.join(s.workdir, "data"))
    try:
        box.session("unpriv", policy=policy)
        res["planted"] = "started"
    except sandbox_exec.SandboxError as e:
        res["planted"] = str(e)
print(json.dumps(res))
"""


@pytest.fixture(scope="module")
def unprivileged_backend():
    """The command of a backend running as uid 65534 with a copy of the package (as
    test_unprivileged.py does), or this interpreter when the tests run unprivileged; and a
    directory it may use."""
    base = Path(tempfile.mkdtemp(prefix="sandbox_exec-mount-unpriv-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        if os.geteuid() != 0:
            yield [sys.executable], base
            return
        if sys.version_info[:2] != (3, 11) or not Path("/usr/bin/python3.11").exists():
            pytest.skip("needs the system python3.11 matching this build's ABI to run a non-root backend")
        from test_unprivileged import UID, _package_copy

        python = _package_copy(base)
        # and the zygote's module, so that its sessions can start warm too
        import sandbox_exec._zygote as zygote

        site = sorted((base / "venv").glob("lib/python3*/site-packages"))[0]
        shutil.copy2(zygote.__file__, site / "sandbox_exec")
        yield [*setpriv_command(UID, python)], base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.c
@pytest.mark.parametrize("warm", ["warm", "cold"])
def test_an_unprivileged_backends_mounts(unprivileged_backend, warm):
    cmd, base = unprivileged_backend
    run = base / f"run-{warm}"
    root, data, out = run / "sessions", run / "data", run / "out"
    for d in (root, data, out):
        d.mkdir(parents=True)
    (data / "a.txt").write_text("hi")
    os.chmod(data / "a.txt", 0o600)  # the backend's own file, private to it
    if os.geteuid() == 0:
        from test_unprivileged import UID

        for p in (run, root, data, data / "a.txt", out):
            os.chown(p, UID, UID)
        os.chmod(data, 0o700)
        os.chmod(out, 0o700)
    proc = subprocess.run(
        [*cmd, "-c", UNPRIVILEGED, str(root), str(data), str(out), warm],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=base,
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["backend_uid"] != 0
    assert res["start"].startswith(warm), res["start"]
    text, create, write, flags = ast.literal_eval(res["cell"])
    # The sandbox's user is the backend's own uid on the host: its private files are readable.
    assert text == "hi" and create == errno.EROFS and write == 0
    assert flags == os.ST_RDONLY | os.ST_NOSUID | os.ST_NODEV | os.ST_NOEXEC
    assert (out / "made.txt").read_text() == "unpriv"
    assert "'data' in the workdir" in res["planted"], res["planted"]
