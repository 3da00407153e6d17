"""Issue 9, a fork on demand in milliseconds: what a Sandbox prepares ahead of a start.

| mechanism                       | property tested                                                      |
|---------------------------------|----------------------------------------------------------------------|
| spare workdir images            | a new workdir takes one: a new filesystem, its own, never another's  |
| (_spare_images)                 | (distinct inode and filesystem id, one link, empty, the session's id) |
|                                 | capped: PER_SIZE per disk_bytes, MAX_SIZES sizes                      |
|                                 | a killed backend's spares go at the next Sandbox's init; a live one's |
|                                 | stay                                                                  |
| host ids held ahead             | the id held is locked and was checked against /proc as allocate()'s  |
| (_host_ids.IdReserve)           | is; at most RESERVE; none from a small range; given back at close     |
| cgroup lock primed              | the writes move nothing (the backend stays in its groups); a        |
| (_cgroup_prime)                 | migration during a start does not wait out a grace period            |
"""

from __future__ import annotations

import fcntl
import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import sandbox_exec
from conftest import pid_alive, wait_until
from sandbox_exec import Policy, _cgroup_prime, _host_ids, _spare_images, _workdir_image

MiB = 1 << 20
ROOT = os.geteuid() == 0
needs_images = pytest.mark.skipif(
    not _workdir_image.support()[0], reason="workdir images need a root backend with loop devices"
)
needs_root = pytest.mark.skipif(not ROOT, reason="only a root backend maps sessions to other host ids")
#: Far from the default range and from test_boundary_uids' ids.
BASE = 2_110_000_000


def spares_on_disk(root: Path) -> list[Path]:
    images = root / ".images"
    if not images.exists():
        return []
    return sorted(images / n for n in os.listdir(images) if n.startswith(".spare-") and n.endswith(".img"))


def loop_files(part: str) -> list[str]:
    """The backing files of the host's loop devices whose path contains `part`."""
    out = []
    for f in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            name = Path(f).read_text().strip()
        except OSError:
            continue
        if part in name:
            out.append(name)
    return out


def image_of(s: sandbox_exec.Session) -> Path:
    assert s._image is not None and s._image.mounted
    return s._image.path


# --- spare workdir images ------------------------------------------------------------------


@pytest.mark.c
@needs_images
def test_a_new_workdir_takes_a_spare_of_its_own(tmp_path):
    policy = Policy(disk_bytes=16 * MiB)
    with sandbox_exec.Sandbox(policy, root=tmp_path, warm=False) as box:
        first = box.session("first")  # formats its own (no size fitted yet), then spares follow
        assert not first._image.from_spare
        assert wait_until(lambda: box._table.spares.ready() == _spare_images.PER_SIZE, 60)
        ready = {p.stat().st_ino for p in spares_on_disk(tmp_path)}
        started: dict[str, sandbox_exec.Session] = {}

        def start(name: str) -> None:
            started[name] = box.session(name)

        threads = [threading.Thread(target=start, args=(n,)) for n in ("b", "c")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        b, c = started["b"], started["c"]
        assert b._image.from_spare and c._image.from_spare
        inodes = {image_of(s).stat().st_ino for s in (first, b, c)}
        assert len(inodes) == 3 and {image_of(b).stat().st_ino, image_of(c).stat().st_ino} <= ready
        for s in (b, c):
            assert image_of(s).stat().st_nlink == 1  # no spare name points at it any more
            # The loop device names the session's image (a spare mounted ahead was renamed,
            # not linked): a restart finds its workdir still mounted.
            assert s._image.still_mounted()
        # Each a filesystem of its own (mkfs drew its UUID), empty, given to the session's id.
        assert len({os.statvfs(s.workdir).f_fsid for s in (first, b, c)}) == 3
        left = {p.stat().st_ino for p in spares_on_disk(tmp_path)}
        assert not left & {image_of(b).stat().st_ino, image_of(c).stat().st_ino}
        for s in (b, c):
            assert os.listdir(s.workdir) == []
            st = os.stat(s.workdir)
            uid = s._host_id.value if s._host_id is not None else os.geteuid()
            assert (st.st_uid, st.st_gid) == (uid, uid)
            r = s.run("open('mine', 'w').write('x'); import os; print(sorted(os.listdir('.')))")
            assert r.status == "ok" and r.stdout.strip() == "['mine']", r
            assert "size-capped ext4 image" in s.enforcement["disk_bytes"], s.enforcement
        c.restart()
        assert c.run("import os; print(os.listdir('.'))").stdout.strip() == "['mine']"
        # The cap holds inside a spare as in a new image: a 32 MiB write fails in 16 MiB.
        r = b.run(
            "try:\n    open('big', 'wb').write(b'x' * (32 << 20))\nexcept OSError as e:\n    print(e.errno)",
            timeout=60,
        )
        assert r.status == "disk" and r.stdout.strip() == "28", (r.status, r.reason, r.stdout)
        assert c.run("import os; print(os.listdir('.'))").stdout.strip() == "['mine']"
    assert spares_on_disk(tmp_path) == []  # close removes them
    assert not [n for n in os.listdir(tmp_path / ".images") if n.startswith(".spare-")]


@pytest.mark.c
@needs_images
def test_spares_are_capped_per_size_and_in_sizes(tmp_path):
    with sandbox_exec.Sandbox(root=tmp_path, warm=False) as box:
        sizes = [(8 + i) * MiB for i in range(_spare_images.MAX_SIZES + 1)]
        for i, size in enumerate(sizes):
            for _ in range(2):  # the second start of a size takes a spare when one is ready
                box.run_once("1", policy=Policy(disk_bytes=size))
            sizes_kept = min(i + 1, _spare_images.MAX_SIZES)
            assert wait_until(lambda n=sizes_kept: box._table.spares.ready() >= n, 60)
            by_size: dict[str, int] = {}
            for p in spares_on_disk(tmp_path):
                by_size[p.name.split("-")[-2]] = by_size.get(p.name.split("-")[-2], 0) + 1
            assert all(n <= _spare_images.PER_SIZE for n in by_size.values()), by_size
            assert len(by_size) <= _spare_images.MAX_SIZES, by_size
        assert wait_until(lambda: box._table.spares.ready() == _spare_images.MAX_SIZES * _spare_images.PER_SIZE, 60)
        kept = {int(p.name.split("-")[-2]) for p in spares_on_disk(tmp_path)}
        assert kept == set(sizes[1:])  # the least recently used size was dropped, its spares removed


BACKEND = textwrap.dedent("""
    import json, sys, time
    import sandbox_exec
    from sandbox_exec import Policy
    box = sandbox_exec.Sandbox(Policy(disk_bytes=16 << 20), root=sys.argv[1], warm=False)
    box.session(sys.argv[2])
    deadline = time.monotonic() + 60
    while box._table.spares.ready() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    print(json.dumps(box._table.spares.ready()), flush=True)
    sys.stdin.read()
""")


@pytest.mark.c
@needs_images
def test_a_killed_backends_spares_are_reclaimed_and_a_live_ones_kept(tmp_path):
    root = tmp_path / "root"
    live, dead = (
        subprocess.Popen(
            [sys.executable, "-c", BACKEND, str(root), name], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        for name in ("live", "dead")
    )
    try:
        assert json.loads(live.stdout.readline()) == 2 and json.loads(dead.stdout.readline()) == 2
        tags = {p.name.split("-")[1] for p in spares_on_disk(root)}
        assert tags == {str(live.pid), str(dead.pid)}, tags
        assert dead.pid > 0
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(30)
        assert wait_until(lambda: not pid_alive(dead.pid), 10)
        assert any(p.name.split("-")[1] == str(dead.pid) for p in spares_on_disk(root))  # left behind
        # ... but not mounted: a spare mounted ahead is a detached mount, gone with its holder.
        assert wait_until(lambda: not loop_files(f".spare-{dead.pid}-"), 10), loop_files(f".spare-{dead.pid}-")
        with sandbox_exec.Sandbox(root=root, warm=False):
            names = [p.name for p in (root / ".images").iterdir()]
            assert not [n for n in names if n.startswith(f".spare-{dead.pid}-")], names
            assert len([n for n in names if n.startswith(f".spare-{live.pid}-") and n.endswith(".img")]) == 2
            assert f".spare-{live.pid}-" in " ".join(n for n in names if n.endswith(".lock"))
    finally:
        for p in (live, dead):
            p.stdin.close()
            p.wait(60)
            p.stdout.close()


@pytest.mark.a
def test_reclaim_keeps_a_held_tag_and_removes_the_rest(tmp_path):
    held_tag, dead_tag = "11-aa", "12-bb"
    for name in (
        f".spare-{held_tag}-100-1.img",
        f".spare-{dead_tag}-100-1.img",
        f".spare-{dead_tag}-100-2.tmp",
        f".spare-{dead_tag}.lock",
        ".spare-13-cc-100-1.img",  # no lock file at all
        "notebook.img",
    ):
        (tmp_path / name).write_bytes(b"")
    fd = os.open(tmp_path / f".spare-{held_tag}.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert _spare_images.reclaim(tmp_path) == 4
        assert sorted(os.listdir(tmp_path)) == sorted(
            [f".spare-{held_tag}-100-1.img", f".spare-{held_tag}.lock", "notebook.img"]
        )
    finally:
        os.close(fd)


# --- host ids held ahead -------------------------------------------------------------------


def uid_of(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("Uid:"))


def lock_is_free(value: int) -> bool:
    dir_fd = _host_ids.open_state_dir(_host_ids.STATE_DIR)
    try:
        fd = os.open(f"{value}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        finally:
            os.close(fd)
        return True
    finally:
        os.close(dir_fd)


@pytest.mark.c
@needs_root
def test_an_id_held_ahead_is_locked_and_was_checked_against_running_processes(tmp_path):
    first = BASE
    lingering = subprocess.Popen(
        ["setpriv", f"--reuid={first + 1}", f"--regid={first + 1}", "--clear-groups", "sleep", "120"]
    )
    try:
        assert wait_until(lambda: uid_of(lingering.pid) == first + 1, 10)
        assert lock_is_free(first + 1)  # only the /proc check keeps it out of use
        with sandbox_exec.Sandbox(root=tmp_path, host_id_range=(first, _host_ids.RESERVE_MIN_RANGE)) as box:
            a = box.session("a")  # nothing held yet: allocated on the spot
            assert uid_of(a.worker_pid) == first
            ids = box._table.ids
            assert wait_until(lambda: ids.held() == [first + 2], 30), ids.held()  # first + 1 skipped
            assert not lock_is_free(first + 2)  # held from the check on
            b = box.session("b")
            assert uid_of(b.worker_pid) == first + 2 and b._host_id.value == first + 2
            assert wait_until(lambda: ids.held() == [first + 3], 30), ids.held()
            assert len(ids.held()) <= _host_ids.RESERVE
        assert lock_is_free(first + 3)  # given back at close
    finally:
        lingering.kill()
        lingering.wait()


@pytest.mark.c
@needs_root
def test_no_id_is_held_ahead_from_a_small_range(tmp_path):
    with sandbox_exec.Sandbox(root=tmp_path, host_id_range=(BASE + 2000, 4)) as box:
        box.session("a")
        box.session("b")
        assert not wait_until(lambda: box._table.ids.held() != [], 0.5)
        assert lock_is_free(BASE + 2002)


# --- the cgroup lock primed ----------------------------------------------------------------


@pytest.mark.a
def test_priming_moves_nothing():
    path = _cgroup_prime._procs_file()
    if path is None:
        pytest.skip("no cgroup hierarchy to prime here")
    with open(path) as f:
        assert str(os.getpid()) in f.read().split()  # the backend's own group
    before = Path("/proc/self/cgroup").read_text()
    with _cgroup_prime.primed():
        assert not wait_until(lambda: Path("/proc/self/cgroup").read_text() != before, 0.1)
    assert Path("/proc/self/cgroup").read_text() == before


def _migration_ms(path: str) -> float:
    """One migration of this process into its own group (what a keeper's join waits on)."""
    t = time.monotonic()
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, b"0")
    finally:
        os.close(fd)
    return (time.monotonic() - t) * 1e3


@pytest.mark.c
@needs_root
def test_a_migration_during_a_start_does_not_wait_out_a_grace_period():
    path = _cgroup_prime._procs_file()
    if path is None:
        pytest.skip("no cgroup hierarchy to prime here")
    cold, primed = [], []
    for _ in range(5):
        time.sleep(0.2)  # a quiet spell: the lock falls back to its fast-reader state
        cold.append(_migration_ms(path))
        time.sleep(0.2)
        with _cgroup_prime.primed():
            time.sleep(0.05)  # the start's other steps
            primed.append(_migration_ms(path))
    cold.sort()
    primed.sort()
    if cold[2] < 1.0:
        pytest.skip(f"migrations here do not wait (median {cold[2]:.2f} ms): nothing to prime")
    assert primed[2] < cold[2] / 3, (primed, cold)
