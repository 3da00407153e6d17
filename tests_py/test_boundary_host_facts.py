"""Ladder C: host facts a cell must not read, inode bombs, and cgroups left behind.

Each read runs in a cell and, as a CONTROL, the same read runs in this (unsandboxed) process,
which must see the host's value: so each check is known to detect a leak.

  case                                                   control
  -----------------------------------------------------  -----------------------------------
  /proc/meminfo MemTotal is the session's memory limit   host MemTotal differs (larger)
  /proc/sys/kernel/random/boot_id is the session's own   host boot_id readable, differs
  host-wide /proc files (interrupts, diskstats, vmstat,  the same files are nonempty on the
    zoneinfo, kallsyms, cmdline, ...) read empty            host
  host-wide /proc directories (acpi, pressure, fs, bus,  the same directories have entries
    irq, driver) are empty                                  on the host
  /proc/loadavg and /proc/stat carry no host activity    host ctxt/processes are nonzero
    (os.cpu_count() still works)                            (cpu count equal)
  /proc/self/* keeps working (fd, status, maps, ...)     -
  mountinfo shows no host devtmpfs (its size = half the  the host's mountinfo has one
    host's memory; as root only)
  inode bomb in /tmp and /dev/shm stops at nr_inodes     the same loop makes that many files
                                                            in a host tmp dir
  1 GiB-class write to /dev/shm is charged to the        - (would eat host memory)
    session's memory cgroup
  Sandbox.close() leaves no sandbox_exec-<pid> cgroup    while the sessions live, the same
    in any hierarchy                                        glob finds their groups
  the same masks and inode cap, backend as uid 65534     host MemTotal and interrupts
    (no mknod, no cgroup: RLIMIT_AS is the MemTotal)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

import sandbox_exec
from conftest import setpriv_command
from sandbox_exec import Policy
from sandbox_exec.sandbox import cgroup_support

pytestmark = pytest.mark.c

MiB = 1 << 20


def cell(box: sandbox_exec.Sandbox, code: str, policy: Policy | None = None, *, timeout: float = 60) -> dict:
    """Runs `code` (which prints one JSON line) in a fresh session; returns that JSON."""
    s = (
        box.session(f"facts-{os.urandom(4).hex()}", policy=policy)
        if policy
        else box.session(f"facts-{os.urandom(4).hex()}")
    )
    try:
        r = s.run(textwrap.dedent(code), timeout=timeout)
        assert r.status == "ok", (r.status, r.reason, r.error, r.stdout[-2000:], r.stderr[-2000:])
        return json.loads(r.stdout.strip().splitlines()[-1])
    finally:
        s.close()


def host(code: str) -> dict:
    """The same code unsandboxed (the control)."""
    cp = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert cp.returncode == 0, cp.stderr[-2000:]
    return json.loads(cp.stdout.strip().splitlines()[-1])


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


MEMINFO = """
import json
fields = {}
for line in open("/proc/meminfo"):
    key, value = line.split(":", 1)
    fields[key] = int(value.split()[0])
print(json.dumps(fields))
"""


def test_meminfo_shows_the_session_memory_limit(sandbox):
    limit = 256 * MiB
    inside = cell(sandbox, MEMINFO, Policy(memory_bytes=limit))
    outside = host(MEMINFO)
    assert inside["MemTotal"] == limit // 1024, inside
    assert inside["MemAvailable"] <= limit // 1024 and inside["SwapTotal"] == 0
    # still the full format a reader such as psutil parses
    for key in ("MemFree", "Buffers", "Cached", "Active", "Inactive", "Shmem", "SReclaimable", "Slab"):
        assert key in inside, key
    # control: the host's own figure is something else, and the same code reads it
    assert outside["MemTotal"] > limit // 1024 and outside["MemTotal"] != inside["MemTotal"]


BOOT_ID = """
import json
print(json.dumps({"boot_id": open("/proc/sys/kernel/random/boot_id").read().strip()}))
"""


def test_boot_id_is_the_sessions_own(sandbox):
    a = cell(sandbox, BOOT_ID)["boot_id"]
    b = cell(sandbox, BOOT_ID)["boot_id"]
    mine = host(BOOT_ID)["boot_id"]
    uuid = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
    assert uuid.match(a) and uuid.match(b), (a, b)
    assert a != mine and b != mine and a != b
    assert mine == read_text("/proc/sys/kernel/random/boot_id").strip()  # control


FILES = [
    "interrupts",
    "softirqs",
    "diskstats",
    "partitions",
    "vmstat",
    "zoneinfo",
    "buddyinfo",
    "pagetypeinfo",
    "slabinfo",
    "kallsyms",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "schedstat",
    "cmdline",
    "locks",
    "modules",
    "swaps",
    "iomem",
    "ioports",
    "latency_stats",
    "timer_stats",
    "vmallocinfo",
    "kcore",
    "cgroups",
    "sys/fs/file-nr",
    "sys/fs/inode-nr",
    "sys/fs/dentry-state",
]
DIRS = ["acpi", "scsi", "pressure", "fs", "bus", "irq", "driver"]
SCAN = """
import json, os
files, dirs = {}, {}
for name in FILES:
    try:
        with open("/proc/" + name, "rb") as f:
            files[name] = len(f.read(4096))
    except OSError as e:
        files[name] = "errno %d" % e.errno
for name in DIRS:
    try:
        dirs[name] = len(os.listdir("/proc/" + name))
    except OSError as e:
        dirs[name] = "errno %d" % e.errno
print(json.dumps({"files": files, "dirs": dirs}))
"""


def test_host_wide_proc_files_and_directories_are_masked(sandbox):
    code = f"FILES = {FILES!r}\nDIRS = {DIRS!r}\n" + SCAN
    inside, outside = cell(sandbox, code), host(code)
    # control first: on this host, these hold host facts (root reads them all)
    shown = [n for n in FILES if isinstance(outside["files"][n], int) and outside["files"][n] > 0]
    listed = [n for n in DIRS if isinstance(outside["dirs"][n], int) and outside["dirs"][n] > 0]
    for required in ("interrupts", "diskstats", "vmstat", "zoneinfo", "cmdline", "cgroups", "sys/fs/file-nr"):
        assert required in shown, (required, outside["files"])
    assert listed, outside["dirs"]
    for name in shown:
        assert inside["files"][name] in (0,) or str(inside["files"][name]).startswith("errno"), (name, inside)
    for name in listed:
        assert inside["dirs"][name] in (0,) or str(inside["dirs"][name]).startswith("errno"), (name, inside)


ACTIVITY = """
import json, os
stat = dict(line.split(None, 1) for line in open("/proc/stat") if " " in line)
print(json.dumps({"loadavg": open("/proc/loadavg").read(), "ctxt": int(stat["ctxt"]),
                  "processes": int(stat["processes"]), "cpu": stat["cpu"].split(),
                  "cpu_count": os.cpu_count()}))
"""


def test_loadavg_and_stat_carry_no_host_activity(sandbox):
    inside, outside = cell(sandbox, ACTIVITY), host(ACTIVITY)
    assert inside["loadavg"] == "0.00 0.00 0.00 1/1 1\n"
    assert inside["ctxt"] == 0 and inside["processes"] == 1 and set(inside["cpu"]) == {"0"}
    assert inside["cpu_count"] == outside["cpu_count"]  # counted from /proc/stat's cpuN lines
    # control: the host's counters are live
    assert outside["ctxt"] > 0 and outside["processes"] > 1 and outside["loadavg"] != inside["loadavg"]


SELF = """
import json, os
print(json.dumps({"fd": sorted(os.listdir("/proc/self/fd"))[:3], "status": open("/proc/self/status").read()[:5],
                  "maps": len(open("/proc/self/maps").read()) > 0, "cgroup": open("/proc/self/cgroup").read(),
                  "mountinfo": open("/proc/self/mountinfo").read(), "uptime": open("/proc/uptime").read().split()}))
"""


def test_proc_self_keeps_working_and_mountinfo_shows_no_host_devtmpfs(sandbox):
    inside = cell(sandbox, SELF)
    assert inside["fd"] and inside["status"] == "Name:" and inside["maps"] and inside["cgroup"]
    assert len(inside["uptime"]) == 2
    mountinfo = inside["mountinfo"]
    assert " /proc/meminfo " in mountinfo and " /proc/interrupts " in mountinfo  # the masks are there
    if os.geteuid() == 0:
        # The sandbox's device nodes are its own (mknod): no bind of the host's devtmpfs,
        # whose size option is half the host's memory.
        assert "devtmpfs" not in mountinfo, mountinfo
        # control: the host's mount table shows it
        assert "devtmpfs" in read_text("/proc/self/mountinfo")


BOMB = """
import json, os, sys
where, count = WHERE, COUNT
made, err = 0, None
try:
    for i in range(count):
        open(os.path.join(where, "f%d" % i), "w").close()
        made += 1
except OSError as e:
    err = e.errno
print(json.dumps({"made": made, "errno": err}))
"""


@pytest.mark.parametrize("where", ["/tmp", "/dev/shm"])
def test_inode_bomb_stops_at_nr_inodes(sandbox, tmp_path, where):
    # disk_bytes 8 MiB: nr_inodes = max(1024, 8 MiB / 16 KiB) = 1024
    count = 5000
    inside = cell(sandbox, f"WHERE = {where!r}\nCOUNT = {count}\n" + BOMB, Policy(disk_bytes=8 * MiB))
    assert inside["errno"] == 28 and inside["made"] < 1100, inside  # ENOSPC, not the byte cap
    # control: the same loop makes them all in an unsandboxed directory
    cp = subprocess.run(
        [sys.executable, "-c", f"WHERE = {str(tmp_path)!r}\nCOUNT = {count}\n" + BOMB],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert json.loads(cp.stdout) == {"made": count, "errno": None}, cp.stderr


def test_dev_shm_is_charged_to_the_session_memory_cgroup(sandbox):
    if not cgroup_support().get("memory"):
        pytest.skip("no memory cgroup on this host: memory_bytes is RLIMIT_AS, which tmpfs pages escape")
    s = sandbox.session(f"shm-{os.urandom(4).hex()}", policy=Policy(memory_bytes=128 * MiB, disk_bytes=1 << 30))
    try:
        r = s.run(
            "chunk = b'x' * (1 << 20)\nwith open('/dev/shm/big', 'wb') as f:\n"
            "    for _ in range(512):\n        f.write(chunk)\n        f.flush()\nprint('wrote all')",
            timeout=120,
        )
        # tmpfs pages count against the session's memory: the OOM killer ends the cell
        assert r.status == "memory" and "wrote all" not in r.stdout, (r.status, r.reason)
    finally:
        s.close()


BACKEND = r"""
import glob, json, os, sys, tempfile
import sandbox_exec
def groups():
    return sorted(glob.glob(f"/sys/fs/cgroup/**/sandbox_exec-{os.getpid()}*", recursive=True))
out = {}
with tempfile.TemporaryDirectory() as root:
    box = sandbox_exec.Sandbox(root=root)
    a, b, c = box.session("a"), box.session("b"), box.session("c")
    a.run("import subprocess\nsubprocess.Popen(['sleep', '300'])")
    b.run("import os, time\npids = [os.fork() or (time.sleep(300), os._exit(0)) for _ in range(50)]")
    c.run("import os\nos._exit(3)")
    c.run("1 + 1")  # restarted
    out["during"] = groups()
    box.close()
    # exactly those: another container's backend may have our pid (and a group of its own)
    out["after"] = [g for g in groups() if g in out["during"]]
print(json.dumps(out))
"""


def test_close_leaves_no_cgroups():
    if not cgroup_support().get("version"):
        pytest.skip("no cgroup delegated on this host")
    cp = subprocess.run([sys.executable, "-c", BACKEND], capture_output=True, text=True, timeout=300)
    assert cp.returncode == 0, cp.stderr[-3000:]
    out = json.loads(cp.stdout.strip().splitlines()[-1])
    assert out["during"], out  # control: the glob finds the live sessions' groups
    assert out["after"] == [], out["after"]


UNPRIVILEGED = r"""
import json, sys
import sandbox_exec
from sandbox_exec import Policy
code = sys.argv[2]
with sandbox_exec.Sandbox(root=sys.argv[1]) as box:
    s = box.session("facts", policy=Policy(memory_bytes=256 << 20, disk_bytes=8 << 20))
    r = s.run(code, timeout=60)
    print(r.stdout.strip().splitlines()[-1] if r.status == "ok" else json.dumps({"failed": [r.status, repr(r.error)]}))
"""
UNPRIVILEGED_CELL = """
import json, os
mem = dict(line.split(":", 1) for line in open("/proc/meminfo"))
made, err = 0, None
try:
    for i in range(5000):
        open("/tmp/f%d" % i, "w").close()
        made += 1
except OSError as e:
    err = e.errno
print(json.dumps({"MemTotal": int(mem["MemTotal"].split()[0]), "interrupts": len(open("/proc/interrupts").read()),
                  "boot_id": open("/proc/sys/kernel/random/boot_id").read().strip(), "made": made, "errno": err}))
"""


def test_the_same_masks_hold_for_an_unprivileged_backend():
    """The backend as uid 65534 (no mknod, no cgroup): masks and nr_inodes hold all the same."""
    import shutil
    import tempfile
    from pathlib import Path

    from test_unprivileged import UID, _package_copy

    if os.geteuid() == 0 and (sys.version_info[:2] != (3, 11) or not os.path.exists("/usr/bin/python3.11")):
        pytest.skip("needs the system python3.11 matching this build's ABI to run a non-root backend")
    base = Path(tempfile.mkdtemp(prefix="sandbox_exec-facts-", dir="/tmp"))  # traversable by uid 65534
    try:
        os.chmod(base, 0o755)
        root = base / "sessions"
        root.mkdir()
        cmd = [sys.executable]
        if os.geteuid() == 0:
            os.chown(root, UID, UID)
            cmd = [
                *setpriv_command(UID, _package_copy(base)),
            ]
        cp = subprocess.run(
            [*cmd, "-c", UNPRIVILEGED, str(root), UNPRIVILEGED_CELL],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=base,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert cp.returncode == 0, cp.stderr[-3000:]
    out = json.loads(cp.stdout.strip().splitlines()[-1])
    assert out.get("MemTotal") == 256 * 1024, out  # RLIMIT_AS, the fallback, is the session's memory
    assert out["interrupts"] == 0
    assert out["boot_id"] != read_text("/proc/sys/kernel/random/boot_id").strip()
    assert out["errno"] == 28 and out["made"] < 1100, out
    # controls: the host's values (the inode loop's control is test_inode_bomb_stops_at_nr_inodes)
    assert len(read_text("/proc/interrupts")) > 0
    assert host(MEMINFO)["MemTotal"] != 256 * 1024
