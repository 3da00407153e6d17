"""The boundary between the backend and the workdirs, the workdir names, and what the
command line prints or writes of what a cell controls (issue 7, classes 1, 3, 12, 13).

Each attack has a CONTROL that shows it works without the fix (the code before the fix,
kept here verbatim where it is short, or the unprotected operation), so each check is
known to detect the attack. Controls touch only this test's tmp_path (stand-in "host"
files).

  class  attack                                               control
  -----  ---------------------------------------------------  --------------------------------
  1      a cell plants data.csv -> host file in its kept      the old copy (shutil.copyfile)
         workdir; the next run of the notebook copies          overwrites the stand-in host file
         data.csv there
  1      a hard link to a host file planted at the name        the old copy writes through it
  1      a FIFO planted at the name / in the source dir        a writer of that FIFO would block
  1      the copy runs as root into the sandbox's workdir      the old copy leaves a root-owned
                                                               file
  1      links, FIFOs, sockets, a 000 directory and a          shutil.rmtree raises
         2000-deep tree left for cleanup                       RecursionError; rm -rf fails on
                                                               the 000 directory (unprivileged)
  12     a session named like another's mapped workdir         the old mapping gave both one
                                                               workdir (the file was read)
  12     a second live session on a workdir (one Sandbox,      without the lock the second
         two Sandboxes, two processes)                         session reads the first's files
  13     exception name/message with ESC, OSC 52, CR, C1,      the raw message carries ESC etc.
         bidi, fake progress lines
  3      an output with a lone surrogate, execution_count      nbformat.write raises
         -1, NaN: the notebook is still written                 UnicodeEncodeError, validate
                                                               raises ValidationError
"""

from __future__ import annotations

import ast
import gc
import json
import math
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import warnings
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import sandbox_exec
from conftest import FIND_CHANNEL
from sandbox_exec import Policy, Sandbox, SandboxError, _safe_fs
from sandbox_exec import notebook as notebook_mod
from sandbox_exec import sandbox as sandbox_mod
from sandbox_exec._terminal import escape_controls
from sandbox_exec.notebook import copy_neighbour_files, make_writable, run_notebook, write_notebook
from sandbox_exec.result import Result

IS_ROOT = os.geteuid() == 0
UNPRIVILEGED_UID = 65534


# --- the code before the fix, for the controls ---------------------------------------------


def old_copy_neighbour_files(
    src_dir: Path, dest_dir: Path, *, max_total_bytes: int = 50 << 20, exclude: tuple[Path, ...] = ()
) -> tuple[list[str], list[str]]:
    """notebook.copy_neighbour_files before the fix (verbatim)."""
    copied: list[str] = []
    skipped: list[str] = []
    total = 0
    excluded = {p.resolve() for p in exclude}
    dest_dir.mkdir(parents=True, exist_ok=True)
    try:
        entries = sorted(src_dir.iterdir(), key=lambda p: p.name)
    except OSError:
        return copied, skipped
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if not entry.is_file() or entry.resolve() in excluded:
                continue
            size = entry.stat().st_size
        except OSError:
            continue
        if total + size > max_total_bytes:
            skipped.append(entry.name)
            continue
        try:
            shutil.copyfile(entry, dest_dir / entry.name)
        except OSError:
            skipped.append(entry.name)
            continue
        total += size
        copied.append(entry.name)
    return copied, skipped


def old_dir_name(name: str) -> str:
    """sandbox._dir_name before the fix (verbatim)."""
    import hashlib
    import re

    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:40].lstrip(".") + "-" + digest


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def neighbour_dir(tmp_path: Path, content: str = "notebook data\n") -> Path:
    src = tmp_path / "nbdir"
    src.mkdir()
    (src / "data.csv").write_text(content)
    return src


def standin(tmp_path: Path, content: str = "HOST FILE, root-owned\n") -> Path:
    host = tmp_path / "host"
    host.mkdir(exist_ok=True)
    path = host / "passwd"
    path.write_text(content)
    return path


# --- class 1: the runner's copy into a workdir ---------------------------------------------

# What the cell finds at data.csv (a link?, its text), then the link it plants there.
PLANT = (
    "import os\nfound = os.path.islink('data.csv'), open('data.csv').read()\n"
    "os.remove('data.csv')\nos.symlink({target!r}, 'data.csv')\nfound"
)


@pytest.mark.c
@pytest.mark.parametrize("copy", ["fixed", "old (control)"])
def test_symlink_planted_in_a_kept_workdir_does_not_redirect_the_runners_copy(tmp_path, monkeypatch, copy):
    host_file = standin(tmp_path)
    before = host_file.read_text()
    src = tmp_path / "nbdir"
    src.mkdir()
    (src / "data.csv").write_text("notebook data\n")
    nb_path = src / "plant.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(PLANT.format(target=str(host_file)))]), nb_path)
    if copy != "fixed":
        monkeypatch.setattr(
            notebook_mod,
            "copy_neighbour_files",
            lambda src, dest, follow_source_links=True, **kw: old_copy_neighbour_files(src, dest, **kw),
        )
    with Sandbox(Policy(timeout_s=60), root=tmp_path / "root") as box:
        first = run_notebook(nb_path, sandbox=box)  # the cell plants the link in its kept workdir
        assert first.cells[0].outputs[-1]["data"]["text/plain"] == repr((False, "notebook data\n"))
        # the link is in the kept workdir (seen through a session: a root backend's workdir
        # is an image, mounted while a session of that name is open)
        peek = box.session("plant")
        assert peek.run("import os\nos.readlink('data.csv')").outputs[-1]["data"]["text/plain"] == repr(str(host_file))
        peek.close()
        # The next run copies the neighbours in again, then the cell looks at data.csv.
        second = run_notebook(nb_path, sandbox=box, allow_errors=True)
    if copy != "fixed":
        # CONTROL: the copy followed the planted link and overwrote the "host" file.
        assert host_file.read_text() == "notebook data\n"
        return
    assert host_file.read_text() == before
    # the cell found a fresh regular file with the notebook's data, not its link
    assert second.cells[0].outputs[-1]["data"]["text/plain"] == repr((False, "notebook data\n"))


@pytest.mark.c
@pytest.mark.parametrize("copy", ["fixed", "old (control)"])
def test_hardlink_planted_at_the_name_is_not_written_through(tmp_path, copy):
    host_file = standin(tmp_path)
    src = neighbour_dir(tmp_path)
    dest = tmp_path / "workdir"
    dest.mkdir()
    os.link(host_file, dest / "data.csv")
    (old_copy_neighbour_files if copy != "fixed" else copy_neighbour_files)(src, dest)
    assert (dest / "data.csv").read_text() == "notebook data\n"
    if copy != "fixed":
        assert host_file.read_text() == "notebook data\n"  # CONTROL: written through the link
        return
    assert host_file.read_text() == "HOST FILE, root-owned\n"
    assert os.stat(dest / "data.csv").st_ino != os.stat(host_file).st_ino
    assert os.stat(host_file).st_nlink == 1


@pytest.mark.c
def test_fifos_and_sockets_neither_block_nor_get_copied(tmp_path):
    fds = open_fds()
    src = neighbour_dir(tmp_path)
    os.mkfifo(src / "pipe")  # a FIFO in the source: never opened
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(src / "sock"))
    dest = tmp_path / "workdir"
    dest.mkdir()
    os.mkfifo(dest / "data.csv")  # a FIFO planted at the destination name
    # CONTROL: the planted FIFO has no reader, so a writer opening it would block for ever.
    with pytest.raises(OSError) as info:
        os.close(os.open(dest / "data.csv", os.O_WRONLY | os.O_NONBLOCK))
    assert info.value.errno == 6  # ENXIO: a blocking open waits for a reader here
    outcome: dict = {}
    worker = threading.Thread(target=lambda: outcome.update(r=copy_neighbour_files(src, dest)), daemon=True)
    worker.start()
    worker.join(120)  # generous: it must not hang at all
    listener.close()
    assert not worker.is_alive(), "the copy blocked on a FIFO"
    assert outcome["r"] == (["data.csv"], [])
    assert stat.S_ISREG(os.lstat(dest / "data.csv").st_mode)
    assert (dest / "data.csv").read_text() == "notebook data\n"
    assert sorted(p.name for p in dest.iterdir()) == ["data.csv"]
    assert open_fds() == fds


@pytest.mark.a
def test_list_dir_and_open_regular_follow_nothing(tmp_path):
    host_file = standin(tmp_path)
    d = tmp_path / "workdir"
    d.mkdir()
    (d / "f").write_text("x")
    (d / "sub").mkdir()
    (d / "link").symlink_to(host_file)
    os.mkfifo(d / "fifo")
    fd = _safe_fs.open_dir(d)
    try:
        assert _safe_fs.list_dir(fd) == [("f", "file"), ("fifo", "FIFO"), ("link", "symlink"), ("sub", "directory")]
        for name in ("link", "fifo", "sub"):
            with pytest.raises(_safe_fs.UnsafeEntry):
                _safe_fs.open_regular(name, fd)
        rfd, st = _safe_fs.open_regular("f", fd)
        os.close(rfd)
        assert st.st_size == 1
        with pytest.raises(_safe_fs.UnsafeEntry):
            _safe_fs.open_dir("link", dir_fd=fd)
    finally:
        os.close(fd)
    (tmp_path / "alias").symlink_to(d)
    with pytest.raises(_safe_fs.UnsafeEntry):  # a workdir that is a link is not entered
        _safe_fs.open_dir(tmp_path / "alias")


@pytest.mark.c
def test_a_directory_in_the_way_is_left_and_the_file_skipped(tmp_path):
    src = neighbour_dir(tmp_path)
    dest = tmp_path / "workdir"
    (dest / "data.csv").mkdir(parents=True)
    (dest / "data.csv" / "inside").write_text("the cell's")
    assert copy_neighbour_files(src, dest) == ([], ["data.csv"])
    assert (dest / "data.csv" / "inside").read_text() == "the cell's"


@pytest.mark.c
def test_source_links_are_not_followed_unless_asked(tmp_path):
    # The runner never asks: a notebook's directory may be any session's workdir, whose
    # links a cell chose. data.csv -> a host file is not copied in, and is named as skipped.
    host_file = standin(tmp_path)
    src = tmp_path / "nbdir"
    src.mkdir()
    os.symlink(host_file, src / "data.csv")
    dest = tmp_path / "workdir"
    dest.mkdir()
    assert copy_neighbour_files(src, dest) == ([], ["data.csv"])
    assert not (dest / "data.csv").exists()
    # control: asked to follow (an operator's own, trusted directory), the link is followed
    assert copy_neighbour_files(src, dest, follow_source_links=True) == (["data.csv"], [])
    assert (dest / "data.csv").read_text() == host_file.read_text()
    assert not (dest / "data.csv").is_symlink()


@pytest.mark.c
def test_notebook_in_a_workdir_gets_no_host_file_through_its_links(tmp_path):
    host_file = standin(tmp_path, "SECRET\n")
    with Sandbox(Policy(timeout_s=60), root=tmp_path / "root") as box:
        s = box.session("maker")
        nb = new_notebook(cells=[new_code_cell("print(open('data.csv').read())")])
        r = s.run(
            f"import os\nos.symlink({str(host_file)!r}, 'data.csv')\n"
            f"open('inner.ipynb', 'w').write({nbformat.writes(nb)!r})\n'planted'"
        )
        assert r.status == "ok", r.error
        # (the session stays open: its workdir, an image for a root backend, stays mounted)
        out = run_notebook(box.root / "maker" / "inner.ipynb", sandbox=box, allow_errors=True)
        s.close()
    assert "SECRET" not in json.dumps(out)
    assert out.cells[0].outputs[-1].get("ename") == "FileNotFoundError"


@pytest.mark.c
@pytest.mark.parametrize("copy", ["fixed", "old (control)"])
def test_copied_file_belongs_to_the_workdirs_owner(tmp_path, copy):
    src = neighbour_dir(tmp_path)
    dest = tmp_path / "workdir"
    dest.mkdir()
    owner = UNPRIVILEGED_UID if IS_ROOT else os.geteuid()
    if IS_ROOT:
        os.chown(dest, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    (old_copy_neighbour_files if copy != "fixed" else copy_neighbour_files)(src, dest)
    st = os.stat(dest / "data.csv")
    if copy != "fixed":
        assert st.st_uid == os.geteuid()  # CONTROL: the backend's own user (root when root)
        return
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (owner, 0o644)


@pytest.mark.c
def test_the_copy_as_root_reaches_the_sandbox_as_its_own_file(tmp_path):
    # End to end: the copied neighbour is the sandbox user's (it may rewrite it in place).
    src = neighbour_dir(tmp_path)
    nb_path = src / "own.ipynb"
    nbformat.write(
        new_notebook(
            cells=[
                new_code_cell(
                    "import os\nopen('data.csv', 'a').write('more\\n')\n(os.stat('data.csv').st_uid == os.getuid(), "
                    "open('data.csv').read())"
                )
            ]
        ),
        nb_path,
    )
    out = run_notebook(nb_path)
    assert ast.literal_eval(out.cells[0].outputs[-1]["data"]["text/plain"]) == (True, "notebook data\nmore\n")


# --- class 1: removal of a hostile tree ----------------------------------------------------


def build_hostile_tree(top: Path, outside: Path, depth: int) -> None:
    top.mkdir()
    (top / "to-dir").symlink_to(outside)
    (top / "to-file").symlink_to(outside / "keep")
    os.mkfifo(top / "fifo")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(top / "sock"))
    sock.close()
    (top / "locked").mkdir()
    (top / "locked" / "f").write_text("x")
    os.chmod(top / "locked", 0)
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):  # relative to a descriptor: no path-length limit
            os.mkdir("d", dir_fd=fd)
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        os.symlink(str(outside), "deep-link", dir_fd=fd)
    finally:
        os.close(fd)


def rmtree_recursion_error(top: Path) -> bool:
    """Whether shutil.rmtree raises RecursionError on ``top``. The directory iterators its
    frames held are closed here, not warned about at some later collection."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        try:
            shutil.rmtree(top)
            hit = False
        except RecursionError:
            hit = True
        gc.collect()
    return hit


@pytest.mark.c
def test_removal_of_a_hostile_tree_follows_no_link_and_survives_2000_levels(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("host")
    top = tmp_path / "workdir"
    build_hostile_tree(top, outside, 2000)
    # CONTROL: the standard recursive removal cannot take this tree.
    assert rmtree_recursion_error(top)
    fds = open_fds()
    sandbox_mod._remove_tree(top)
    assert not os.path.lexists(top)
    assert (outside / "keep").read_text() == "host" and sorted(os.listdir(outside)) == ["keep"]
    assert open_fds() == fds


MOUNTED = r"""
set -e
mount -t tmpfs none "$2/mnt"
touch "$2/mnt/on-tmpfs"
"$3" -c 'import sys; sys.path.insert(0, sys.argv[1]); import _safe_fs; print(_safe_fs.remove_tree(sys.argv[2]))' "$1" "$2"
ls "$2/mnt"
"""


@pytest.mark.c
def test_removal_leaves_a_mount_point_inside_the_tree(tmp_path):
    # A directory on another filesystem inside the tree (a tmpfs standing in for anything
    # mounted there) is not entered: its files stay, the removal says it is not done.
    if not IS_ROOT:
        pytest.skip("needs root to mount")  # pragma: no cover - CI runs as root
    top = tmp_path / "workdir"
    (top / "mnt").mkdir(parents=True)
    (top / "plain").write_text("x")
    proc = subprocess.run(
        [
            "unshare",
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            MOUNTED,
            "sh",
            str(Path(_safe_fs.__file__).parent),
            str(top),
            sys.executable,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "on-tmpfs"]
    assert sorted(os.listdir(top)) == ["mnt"]  # the rest was removed


@pytest.mark.c
def test_removal_as_an_unprivileged_backend(request):
    # An unprivileged backend owns what its sandbox wrote, and a cell can chmod its own
    # directories to 000. CONTROL: rm -rf (the old fallback) fails on such a tree.
    if not IS_ROOT:
        pytest.skip("runs the backend as uid 65534 through setpriv, which needs root")  # pragma: no cover
    base = Path(tempfile.mkdtemp(prefix="sandbox_exec-unpriv-", dir="/tmp"))  # tmp_path is root's only
    request.addfinalizer(lambda: shutil.rmtree(base, ignore_errors=True))
    shutil.copy(Path(_safe_fs.__file__), base / "_safe_fs.py")
    os.chmod(base, 0o755)
    os.chmod(base / "_safe_fs.py", 0o644)
    work = base / "work"
    work.mkdir()
    os.chown(work, UNPRIVILEGED_UID, UNPRIVILEGED_UID)
    script = (
        "import os, subprocess, sys\nsys.path.insert(0, sys.argv[1])\nimport _safe_fs\n"
        "def build(top):\n"
        "    os.makedirs(top + '/a/b')\n    open(top + '/a/b/f', 'w').write('x')\n"
        "    os.chmod(top + '/a/b', 0o500)\n    os.makedirs(top + '/z/y')\n    os.chmod(top + '/z/y', 0)\n"
        "    os.chmod(top + '/z', 0o500)\n    os.chmod(top + '/a', 0)\n"
        "build(sys.argv[2] + '/control')\n"
        "rc = subprocess.run(['rm', '-rf', sys.argv[2] + '/control'], stderr=subprocess.DEVNULL).returncode\n"
        "build(sys.argv[2] + '/tree')\n"
        "print(os.geteuid(), rc, os.path.lexists(sys.argv[2] + '/control'), _safe_fs.remove_tree(sys.argv[2] + '/tree'),"
        " os.path.lexists(sys.argv[2] + '/tree'))\n"
    )
    proc = subprocess.run(
        [
            "setpriv",
            f"--reuid={UNPRIVILEGED_UID}",
            f"--regid={UNPRIVILEGED_UID}",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
            str(base),
            str(work),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    uid, rc, control_left, removed, tree_left = proc.stdout.split()
    assert uid == str(UNPRIVILEGED_UID)
    assert rc != "0" and control_left == "True"  # CONTROL: rm -rf could not remove it
    assert (removed, tree_left) == ("True", "False")


# --- class 12: workdir names and locks ------------------------------------------------------

NAMES = [
    "alice",
    "alice's notebook",
    old_dir_name("alice's notebook"),
    "alice_s_notebook",
    ".",
    "..",
    ".hidden",
    "-x",
    "%41",
    "A",
    "a",
    "a" * 64,
    "a" * 65,
    "%" + "a" * 64,
    "=" + "0" * 64,
    "x/../../etc",
    "\ud800",
    "\udcff",
    "\ud83d\ude00",
    "\U0001f600",
    "é",
    "e\u0301",
    "a" * 300,
    "b" * 300,
    "\x00",
    "\x1b[2J",
    " ",
    "  ",
    ".locks",
    ".mnt",
    "%2E",
    "a.b",
    "a%2Eb",
]


@pytest.mark.a
def test_workdir_names_are_one_to_one_and_plain():
    mapped = {}
    for name in NAMES:
        d = sandbox_mod._dir_name(name)
        assert d not in mapped, f"{name!r} and {mapped[d]!r} share the workdir {d!r}"
        mapped[d] = name
        assert "/" not in d and "\x00" not in d and not d.startswith(".") and 0 < len(d.encode()) <= 255
        assert d.isascii() and d.isprintable()
    assert sandbox_mod._dir_name("alice") == "alice"  # safe names stay readable
    # CONTROL: the old mapping sent a session named like another's mapped name to its workdir.
    assert old_dir_name("alice's notebook") == old_dir_name(old_dir_name("alice's notebook"))


@pytest.mark.c
def test_a_session_named_like_anothers_workdir_gets_its_own(tmp_path):
    victim, attacker = "alice's notebook", old_dir_name("alice's notebook")
    with Sandbox(Policy(timeout_s=60), root=tmp_path / "root") as box:
        a = box.session(victim)
        assert a.run("open('private.txt', 'w').write('alice only')").status == "ok"
        b = box.session(attacker)
        assert a.workdir != b.workdir
        r = b.run("import os\nsorted(os.listdir('.'))")
        assert r.outputs[-1]["data"]["text/plain"] == "[]"


@pytest.mark.b
def test_escaped_and_hashed_names_get_working_workdirs(tmp_path):
    names = ["../../etc", "é" * 100]  # escaped; past 128 characters escaped: hashed
    with Sandbox(Policy(timeout_s=60), root=tmp_path / "root") as box:
        dirs = []
        for name in names:
            s = box.session(name)
            r = s.run("import os\nopen('mine', 'w').write('x')\nos.getcwd()")
            assert r.status == "ok", r.error
            dirs.append(s.workdir.name)
            assert (s.workdir / "mine").is_file() and s.workdir.parent == box.root
        assert dirs[0] == "%..%2F..%2Fetc" and dirs[1].startswith("=") and len(dirs[1]) == 65
        assert not (tmp_path / "etc").exists()


@pytest.mark.c
@pytest.mark.parametrize("lock", ["fixed", "no lock (control)"])
def test_a_second_live_session_on_a_workdir_is_refused_in_one_sandbox(tmp_path, monkeypatch, lock):
    # The old mapping (two names, one workdir) makes the lock the only line of defence.
    monkeypatch.setattr(sandbox_mod, "_dir_name", old_dir_name)
    if lock != "fixed":

        class NoLock:
            def __init__(self, *args):
                pass

            def release(self):
                pass

        monkeypatch.setattr(sandbox_mod, "_WorkdirLock", NoLock)
    victim, attacker = "alice's notebook", old_dir_name("alice's notebook")
    with Sandbox(Policy(timeout_s=60), root=tmp_path / "root") as box:
        a = box.session(victim)
        assert a.run("open('private.txt', 'w').write('alice only')").status == "ok"
        if lock != "fixed":
            # CONTROL: the second session reads (and could overwrite) the first one's files.
            r = box.session(attacker).run("open('private.txt').read()")
            assert r.outputs[-1]["data"]["text/plain"] == "'alice only'"
            return
        with pytest.raises(SandboxError) as info:
            box.session(attacker)
        message = str(info.value)
        assert "in use by another live session" in message and repr(victim) in message
        assert f"process {os.getpid()}" in message
        assert [s.name for s in box.sessions()] == [victim]
        a.close()
        b = box.session(attacker)  # free once the holder is closed
        assert b.run("open('private.txt').read()").status == "ok"


@pytest.mark.c
def test_a_second_live_session_on_a_workdir_is_refused_across_sandboxes(tmp_path):
    root = tmp_path / "root"
    with Sandbox(Policy(timeout_s=60), root=root) as one, Sandbox(Policy(timeout_s=60), root=root) as two:
        a = one.session("shared")
        with pytest.raises(SandboxError, match=r"in use by another live session \(session 'shared' of process"):
            two.session("shared")
        assert two.sessions() == []
        # a crash and the restart that follows keep the workdir bound
        assert a.run("import os\nos._exit(3)").status == "crashed"
        with pytest.raises(SandboxError, match="in use by another live session"):
            two.session("shared")
        assert a.run("1").session_restarted
        a.close()
        assert two.session("shared").run("1").status == "ok"
    assert list((root / ".locks").iterdir()) == []  # closed sessions leave no lock file


HOLDER = r"""
import sys
import sandbox_exec
with sandbox_exec.Sandbox(root=sys.argv[1]) as box:
    box.session("shared")
    print("holding", flush=True)
    sys.stdin.readline()
"""


@pytest.mark.c
def test_a_second_live_session_on_a_workdir_is_refused_across_processes(tmp_path):
    root = tmp_path / "root"
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as holder:
        try:
            assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
            with Sandbox(Policy(timeout_s=60), root=root) as box:
                with pytest.raises(SandboxError, match=f"session 'shared' of process {holder.pid}"):
                    box.session("shared")
                assert holder.stdin is not None
                holder.stdin.write("\n")
                holder.stdin.flush()
                assert holder.wait(timeout=120) == 0
                assert box.session("shared").run("1").status == "ok"
        finally:
            if holder.poll() is None:
                holder.kill()


@pytest.mark.b
def test_run_once_removes_its_workdir_and_lock(tmp_path):
    with Sandbox(Policy(timeout_s=60), root=tmp_path / "root") as box:
        assert box.run_once("open('f', 'w').write('x')").status == "ok"
        assert [p.name for p in box.root.iterdir() if not p.name.startswith(".")] == []
        assert list((box.root / ".locks").iterdir()) == []


# --- class 13: terminal escapes ------------------------------------------------------------

EVIL = "\x1b]0;owned\x07\x1b]52;c;cHduZWQ=\x07\x1b[2J\x1b[H\r|####| [9/9] ok 0.01s\n[9/9] ok\x9b31m\x7f\u202eevil\ud800"
EVIL_CELL = f"Evil = type('Evil\\x1b[1A\\x1b[2K', (Exception,), {{}})\nraise Evil({EVIL!r})"
# Bytes a terminal acts on: C0 but newline, DEL, C1 (as UTF-8), the bidi override.
TERMINAL_CONTROLS = (
    [bytes([b]) for b in range(0x20) if b != 0x0A]
    + [b"\x7f"]
    + [chr(c).encode() for c in range(0x80, 0xA0)]
    + ["\u202e".encode()]
)


def assert_no_terminal_controls(data: bytes) -> None:
    found = [c for c in TERMINAL_CONTROLS if c in data]
    assert not found, f"terminal controls reached the operator: {found!r}"


@pytest.mark.a
def test_escape_controls():
    assert (
        escape_controls("a\x1b[2Jb\r\nc\rd\te\x9b\x7f\u202e\ud800") == "a\\x1b[2Jb\r\nc\\rd\\te\\x9b\\x7f\\u202e\\ud800"
    )
    assert escape_controls("one\ntwo", multiline=False) == "one\\ntwo"
    assert escape_controls(escape_controls(EVIL)) == escape_controls(EVIL)  # idempotent
    assert_no_terminal_controls(escape_controls(EVIL).encode("utf-8"))
    assert escape_controls("plain ünïcode 日本") == "plain ünïcode 日本"


@pytest.mark.c
@pytest.mark.parametrize("allow_errors", [False, True])
def test_terminal_escapes_from_a_cell_are_printed_escaped(tmp_path, allow_errors):
    nb_path = tmp_path / "evil.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell("print('before')"), new_code_cell(EVIL_CELL)]), nb_path)
    # CONTROL: what the cell controls really carries the escapes (the runner's raw message).
    with pytest.raises(notebook_mod.CellExecutionError) as info:
        run_notebook(nb_path)
    raw = info.value.result.error["ename"] + info.value.result.error["evalue"] + str(info.value)
    assert "\x1b]52;" in raw and "\x1b[2J" in raw and "\x1b[1A" in raw and "\r" in raw
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_exec", "run", str(nb_path), "-o", str(tmp_path / "out.ipynb")]
        + (["--allow-errors"] if allow_errors else []),
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
    )
    assert proc.returncode == (0 if allow_errors else 1), proc.stderr
    assert_no_terminal_controls(proc.stderr)
    text = proc.stderr.decode("utf-8")
    assert "\\x1b]52;c;cHduZWQ=\\x07" in text and "Evil\\x1b[1A\\x1b[2K" in text
    lines = text.splitlines()
    # no line of the cell's making poses as the runner's
    assert not any(line.startswith("[9/9]") or line.startswith("|####|") for line in lines), lines
    assert sum("] error " in line for line in lines) == 1
    # the written notebook keeps the text, escaped as JSON (safe to cat)
    assert_no_terminal_controls((tmp_path / "out.ipynb").read_bytes())
    out = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert out.cells[1].outputs[-1]["evalue"].startswith("\x1b]0;owned")


# --- class 3: an output that cannot be written costs no other output -----------------------


def fake_results() -> dict[str, Result]:
    ok = {"output_type": "stream", "name": "stdout", "text": "kept\n"}
    return {
        "good": Result(status="ok", outputs=[ok], execution_count=1),
        "surrogate": Result(
            status="ok",
            execution_count=2,
            outputs=[ok, {"output_type": "display_data", "data": {"text/plain": "\ud800"}, "metadata": {}}],
        ),
        "negative": Result(
            status="ok",
            execution_count=3,
            outputs=[
                {"output_type": "execute_result", "execution_count": -1, "data": {"text/plain": "x"}, "metadata": {}},
                ok,
            ],
        ),
        "nan": Result(
            status="ok",
            execution_count=4,
            outputs=[{"output_type": "display_data", "data": {"text/plain": "n"}, "metadata": {"v": math.nan}}],
        ),
        "bad count": Result(status="ok", execution_count=-1, outputs=[ok]),
        "last": Result(status="ok", outputs=[ok], execution_count=6),
    }


@pytest.mark.b
def test_unwritable_outputs_become_markers_and_the_notebook_is_written(tmp_path, monkeypatch):
    results = fake_results()
    monkeypatch.setattr(sandbox_exec.Session, "run", lambda self, code, **kw: results[code])
    nb = new_notebook(cells=[new_code_cell(code) for code in results])
    # CONTROL: the same outputs put in a notebook unsanitized cannot be written.
    raw = nbformat.from_dict(json.loads(json.dumps(nb)))
    for cell, r in zip(raw.cells, results.values()):
        cell.outputs = [nbformat.from_dict(o) for o in r.outputs]
        cell.execution_count = r.execution_count
    with pytest.raises(nbformat.ValidationError):
        nbformat.validate(raw)
    with pytest.raises(UnicodeEncodeError):
        nbformat.writes(raw).encode("utf-8")
    lines: list[str] = []
    out_path = tmp_path / "out.ipynb"
    run_notebook(nb, output_path=out_path, progress=lines.append)
    written = nbformat.read(out_path, as_version=4)
    nbformat.validate(written)
    json.loads(out_path.read_text(encoding="utf-8"), parse_constant=lambda c: pytest.fail(f"{c} written"))
    cells = written.cells
    texts = [[o.get("text") or o["data"]["text/plain"] for o in c.outputs] for c in cells]
    assert texts[0] == texts[-1] == ["kept\n"]
    assert texts[1][0] == "kept\n" and "dropped: it cannot be encoded as UTF-8" in texts[1][1]
    assert "dropped: it does not validate" in texts[2][0] and texts[2][1] == "kept\n"
    assert "dropped: it is not valid JSON" in texts[3][0]
    assert cells[4].execution_count is None and texts[4] == ["kept\n"]
    assert [c.execution_count for c in cells] == [1, 2, 3, 4, None, 6]
    assert sum(line.startswith("note: code cell") for line in lines) == 4, lines


@pytest.mark.b
def test_unwritable_display_update_of_an_earlier_cell_becomes_a_marker(tmp_path, monkeypatch):
    shown = {"output_type": "display_data", "data": {"text/plain": "v1"}, "metadata": {}}
    results = {
        "show": Result(status="ok", execution_count=1, outputs=[shown], display_ids={0: "d"}),
        "update": Result(
            status="ok",
            execution_count=2,
            outputs=[{"output_type": "stream", "name": "stdout", "text": "updated\n"}],
            display_updates=[{"display_id": "d", "data": {"text/plain": "\udfff"}, "metadata": {}}],
        ),
    }
    monkeypatch.setattr(sandbox_exec.Session, "run", lambda self, code, **kw: results[code])
    run_notebook(
        new_notebook(cells=[new_code_cell("show"), new_code_cell("update")]), output_path=tmp_path / "out.ipynb"
    )
    cells = nbformat.read(tmp_path / "out.ipynb", as_version=4).cells
    assert "an output was dropped: it cannot be encoded" in cells[0].outputs[0]["text"]
    assert cells[1].outputs[0]["text"] == "updated\n"


@pytest.mark.a
def test_make_writable_leaves_a_good_cell_alone():
    cell = new_code_cell("x", outputs=[nbformat.v4.new_output("stream", name="stdout", text="hi")])
    cell.execution_count = 3
    before = json.dumps(cell)
    assert make_writable(cell, 5) == [] and json.dumps(cell) == before


@pytest.mark.a
def test_write_notebook_writes_what_json_cannot_encode(tmp_path):
    # A lone surrogate anywhere (here in an input cell no run touched) is written as a
    # JSON escape, C1 and DEL likewise; the notebook reads back the same.
    nb = new_notebook(cells=[new_code_cell("s = '\ud800'\nt = '\x9b\x7f\u202e'")])
    with pytest.raises(UnicodeEncodeError):  # CONTROL: nbformat.write fails on it
        with open(tmp_path / "control.ipynb", "w", encoding="utf-8") as f:
            nbformat.write(nb, f)
    write_notebook(nb, tmp_path / "out.ipynb")
    data = (tmp_path / "out.ipynb").read_bytes()
    assert_no_terminal_controls(data)
    assert nbformat.read(tmp_path / "out.ipynb", as_version=4).cells[0].source == nb.cells[0].source


@pytest.mark.c
def test_hostile_outputs_end_to_end_lose_no_other_cell(tmp_path):
    # A worker sends what the boundary may or may not refuse: a lone surrogate (a JSON
    # escape on the wire), an execution_count of -1. Whatever the boundary makes of them
    # (an output, a marker, a protocol violation), the other cells' outputs are written.
    cells = [
        "print('first')",
        "display({'text/plain': '\\ud800'}, raw=True)",
        FIND_CHANNEL + 'channel.send(19, b\'{"output_type": "display_data", "data": '
        '{"text/plain": "\\\\ud800"}, "metadata": {}}\')\nprint(\'after surrogate\')',
        FIND_CHANNEL + 'channel.send(19, b\'{"output_type": "execute_result", "execution_count": -1, '
        '"data": {"text/plain": "x"}, "metadata": {}}\')\nprint(\'after count\')',
        "print('last')",
    ]
    nb_path = tmp_path / "hostile.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(c) for c in cells]), nb_path)
    proc = subprocess.run(
        [sys.executable, "-m", "sandbox_exec", "run", str(nb_path), "-o", "out.ipynb", "--allow-errors"],
        cwd=tmp_path,
        capture_output=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr.decode("utf-8", "replace")
    written = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    nbformat.validate(written)
    streams = ["".join(o.get("text", "") for o in c.outputs if o["output_type"] == "stream") for c in written.cells]
    assert streams[0] == "first\n" and streams[-1] == "last\n"
    assert all(c.execution_count is None or c.execution_count >= 0 for c in written.cells)
    for c in written.cells:
        for o in c.outputs:
            assert o.get("execution_count", 0) is None or o.get("execution_count", 0) >= 0
            # dropped or replaced, not kept as a lone surrogate
            assert not any("\ud800" <= ch <= "\udfff" for ch in json.dumps(o, ensure_ascii=False)), o


@pytest.mark.c
def test_the_cli_runner_copies_no_host_file_from_another_sandboxs_workdir(tmp_path):
    # A cell of one Sandbox plants data.txt -> a root-only host file and a notebook that reads
    # it in its kept workdir; the operator later runs that notebook with the CLI (a new,
    # temporary Sandbox). Nothing of the host file reaches the new session.
    secret = tmp_path / "root-only.txt"
    secret.write_text("HOST-SECRET-" + "7" * 8 + "\n")
    secret.chmod(0o600)
    with Sandbox(Policy(timeout_s=60), root=tmp_path / "root") as box:
        s = box.session("planted")
        r = s.run(
            f"import os, json\nos.symlink({str(secret)!r}, 'data.txt')\n"
            "nb = {'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [{'cell_type': 'code', "
            "'id': 'c1', 'metadata': {}, 'execution_count': None, 'outputs': [], "
            "'source': \"import os\\nprint(open('data.txt').read() if os.path.exists('data.txt') else 'absent')\"}]}\n"
            "json.dump(nb, open('report.ipynb', 'w'))"
        )
        assert r.status == "ok", r.error
        out = tmp_path / "out.ipynb"
        p = subprocess.run(
            [sys.executable, "-m", "sandbox_exec", "run", str(s.workdir / "report.ipynb"), "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 0, p.stderr
        assert "HOST-SECRET" not in out.read_text()
        assert "absent" in out.read_text()
        assert "data.txt" in p.stderr  # named as not copied
        # control: the planted link does lead to the secret, for anyone who follows it
        assert os.readlink(s.workdir / "data.txt") == str(secret)


@pytest.mark.c
@pytest.mark.parametrize("planted", ["symlink to a host file", "0666 file of another owner"])
def test_writing_the_executed_notebook_follows_nothing_a_cell_planted(tmp_path, planted):
    host_file = standin(tmp_path)
    host_file.chmod(0o600)
    out_dir = tmp_path / "workdir"
    out_dir.mkdir()
    out = out_dir / "report.executed.ipynb"
    if planted.startswith("symlink"):
        os.symlink(host_file, out)
    else:
        out.write_text("{}")
        os.chown(out, 2_000_000_123, 2_000_000_123)
        out.chmod(0o666)
    before = host_file.read_text()
    write_notebook(new_notebook(cells=[new_code_cell("1")]), out)
    assert host_file.read_text() == before and (host_file.stat().st_mode & 0o777) == 0o600
    st = os.lstat(out)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid()
    assert st.st_mode & 0o777 == 0o644  # not the planted file's mode
    assert nbformat.read(out, as_version=4).cells[0].source == "1"


@pytest.mark.c
def test_a_name_swapped_while_the_notebook_is_written_is_detected(tmp_path, monkeypatch):
    # The race of a cell's leftover thread, made deterministic: between the write and the
    # rename the temporary name is replaced by a symlink to a host file. The runner's mode
    # change went through its descriptor, so the host file keeps its mode, and the swap is
    # reported instead of leaving a planted link as "the executed notebook".
    host_file = standin(tmp_path)
    host_file.chmod(0o600)
    out = tmp_path / "report.executed.ipynb"
    real_replace = os.replace

    def swapping_replace(src, dst, *, src_dir_fd=None, dst_dir_fd=None):
        os.unlink(src, dir_fd=src_dir_fd)
        os.symlink(host_file, src, dir_fd=src_dir_fd)
        return real_replace(src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd)

    monkeypatch.setattr(os, "replace", swapping_replace)
    with pytest.raises(OSError, match="replaced by something else"):
        write_notebook(new_notebook(cells=[new_code_cell("1")]), out)
    assert host_file.stat().st_mode & 0o777 == 0o600
    assert not os.path.lexists(out)  # the planted link is not left as "the executed notebook"


@pytest.mark.c
def test_one_display_update_fanned_out_to_many_outputs_is_written_a_few_times(tmp_path):
    # Found by an outside review: K tiny outputs with one display id, then one large update:
    # every output shows the update, and the runner wrote K copies (100 x 2 MiB = 200 MiB).
    code = (
        "for _ in range(40):\n    display({'text/plain': 'tiny'}, raw=True, display_id='d')\n"
        "display({'text/plain': 'u' * 300_000}, raw=True, display_id='d', update=True)\n"
    )
    src = tmp_path / "fan.ipynb"
    nbformat.write(new_notebook(cells=[new_code_cell(code)]), src)
    out = tmp_path / "fan.out.ipynb"
    nb = run_notebook(src, output_path=str(out))
    size = out.stat().st_size
    # control: in the cell's Result all 40 outputs carry the 300 kB update (one object in
    # memory); written naively, that is 40 copies (12 MB)
    with Sandbox(Policy(timeout_s=60)) as box:
        r = box.session("fan-control").run(code)
    shown = [o for o in r.outputs if o.get("output_type") == "display_data"]
    assert len(shown) == 40 and all(o["data"]["text/plain"] == "u" * 300_000 for o in shown)
    assert len(nb.cells[0].outputs) == 40
    assert size < 6 * 300_000 + 200_000, size
    text = out.read_text()
    assert text.count("u" * 300_000) <= 4 and "not repeated" in text
    nbformat.validate(nbformat.read(out, as_version=4))


@pytest.mark.c
def test_deep_output_indentation_does_not_multiply_the_written_notebook(tmp_path):
    # Found by an outside review: nbformat indents one value per line by its depth, so 4 MB of
    # deeply nested output became a 129 MB notebook. Past 16 MiB of indentation (and past the
    # content's own size) the runner writes it without indentation.
    deep: object = [0] * 300_000
    for _ in range(58):
        deep = [deep]
    nb = new_notebook(cells=[new_code_cell("x")])
    nb.cells[0].outputs = [nbformat.v4.new_output("display_data", data={"application/json": {"v": deep}})]
    compact = len(json.dumps(deep))
    assert len(nbformat.writes(nb)) > 16 << 20  # control: the indented form is ~30x the content
    out = tmp_path / "deep.ipynb"
    write_notebook(nb, out)
    assert out.stat().st_size < 2 * compact + (1 << 20), (out.stat().st_size, compact)
    back = nbformat.read(out, as_version=4)
    nbformat.validate(back)
    assert back.cells[0].outputs[0]["data"]["application/json"]["v"] == deep
