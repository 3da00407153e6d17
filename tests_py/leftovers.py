"""What a backend leaves on the host: the checks shared by the soak, fault and backend-death tests.

A backend that closed its Sandbox (or died and was followed by a new one on the same root)
must leave no sandbox process or zombie, no open descriptor it did not have before, no cgroup
named after it, no loop device or mount of a workdir image, and no temporary directory. These
functions read the host (procfs, sysfs, the mount table) and never trust the package's own
bookkeeping: a session registry that lies must not make the check pass.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path


def _stat_fields(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    rest = text[text.rindex(")") + 2 :].split()
    return rest[0], int(rest[1])


def descendants(pid: int) -> dict[int, str]:
    """Every live or zombie process below `pid` (pid -> state letter), from /proc's ppid links.

    A sandbox process that escaped into its own session or process group is still found here
    as long as it was not reparented; reparented ones are found by `sandbox_processes`.
    """
    parents: dict[int, tuple[str, int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields is not None:
                parents[int(entry)] = fields
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (state, ppid) in parents.items():
            if ppid == parent and child not in found:
                found[child] = state
                frontier.append(child)
    return found


def sandbox_processes(root: Path) -> list[int]:
    """Processes anywhere on the host whose working directory or root lies under `root`
    (a session's worker, keeper and init all live in a workdir below the Sandbox root)."""
    prefix = str(Path(root).resolve())
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        for link in ("cwd", "root"):
            try:
                target = os.readlink(f"/proc/{entry}/{link}")
            except OSError:
                continue
            if target == prefix or target.startswith(prefix + "/"):
                found.append(int(entry))
                break
    return found


def open_fds(pid: int) -> dict[int, str]:
    """A process's open descriptors and what each points at."""
    fds: dict[int, str] = {}
    for entry in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds[int(entry)] = os.readlink(f"/proc/{pid}/fd/{entry}")
        except OSError:
            continue  # closed while listing (the listing's own descriptor among them)
    return fds


def cgroups_of(backend_pid: int) -> list[str]:
    """The cgroup directories named after a backend, in every hierarchy (v1 and v2)."""
    return sorted(glob.glob(f"/sys/fs/cgroup/**/sandbox_exec-{backend_pid}*", recursive=True))


def mounts_under(root: Path) -> list[str]:
    """Mount points at or below `root` in this process's mount table."""
    prefix = str(Path(root).resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def loop_devices_under(root: Path) -> list[str]:
    """Loop devices whose backing file lies under `root` (a workdir's disk image)."""
    prefix = str(Path(root).resolve())
    found = []
    for backing in glob.glob("/sys/block/loop*/loop/backing_file"):
        try:
            target = Path(backing).read_text().strip()
        except OSError:
            continue
        if target.startswith(prefix + "/"):
            found.append(backing.split("/")[3])
    return found


def memfds(pid: int) -> list[str]:
    """The shared-memory regions (memfds) a process holds open."""
    return sorted(target for target in open_fds(pid).values() if target.startswith("/memfd:"))


@dataclasses.dataclass(frozen=True)
class Baseline:
    """The backend's state before sessions were started, to compare the state after close with."""

    pid: int
    fds: dict[int, str]
    #: processes already below the backend (another Sandbox's sessions): not this run's
    processes: frozenset[int] = frozenset()
    #: cgroups already named after the backend (another Sandbox's): not this run's
    cgroups: frozenset[str] = frozenset()

    @classmethod
    def take(cls, pid: int | None = None) -> Baseline:
        pid = os.getpid() if pid is None else pid
        return cls(pid, open_fds(pid), frozenset(descendants(pid)), frozenset(cgroups_of(pid)))


def leftovers(baseline: Baseline, root: Path | None, *, backend_alive: bool = True) -> list[str]:
    """Everything left on the host by the backend of `baseline` and a Sandbox on `root`,
    one line each; an empty list when nothing is left.

    `root` is the Sandbox's root: for a root the Sandbox created itself, the directory must be
    gone; for a given root, no process, mount or loop device may remain below it. With
    `backend_alive=False` the backend's own descriptors and children are not read (it is dead).
    """
    found: list[str] = []
    if backend_alive:
        for pid, state in sorted(descendants(baseline.pid).items()):
            if pid in baseline.processes:
                continue
            found.append(f"process {pid} below the backend ({'zombie' if state == 'Z' else state})")
        now = open_fds(baseline.pid)
        for fd, target in sorted(now.items()):
            if baseline.fds.get(fd) != target and not target.startswith("/proc/"):
                found.append(f"descriptor {fd} -> {target}")
    found.extend(f"cgroup {path}" for path in cgroups_of(baseline.pid) if path not in baseline.cgroups)
    if root is not None:
        found.extend(f"process {pid} in {root}" for pid in sandbox_processes(root))
        found.extend(f"mount {point}" for point in mounts_under(root))
        found.extend(f"loop device {name} backed by a file in {root}" for name in loop_devices_under(root))
    return found
