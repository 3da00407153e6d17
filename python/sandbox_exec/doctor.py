"""``python -m sandbox_exec doctor``: what this host gives each isolation layer and limit.

Each check is a real probe (a syscall, a mount, a sandbox started with one layer at a
time), not a guess from version numbers; the last check starts a session with the default
policy, which is what the backend will get.
"""

from __future__ import annotations

import os
import platform
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from . import _core, _host_ids
from .errors import SandboxError
from .policy import Policy
from .sandbox import Sandbox, cgroup_support, launcher_path


@dataclass
class Check:
    layer: str
    ok: bool
    detail: str


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _probe_session(policy: Policy, code: str = "1 + 1") -> tuple[bool, str]:
    """Starts a session with `policy` and runs `code`: (worked, detail)."""
    with tempfile.TemporaryDirectory(prefix="sandbox_exec-doctor-") as root:
        try:
            with Sandbox(policy, root=root) as box:
                r = box.session("doctor").run(code, timeout=30)
                if r.status != "ok":
                    return False, f"cell ended {r.status}: {r.reason or r.error}"
                if not r.outputs:
                    return True, "ok"
                first = r.outputs[0]
                if first["output_type"] != "execute_result":
                    return False, f"the cell's first output is {first['output_type']}, not its result"
                return True, str(first["data"]["text/plain"])
        except SandboxError as e:
            return False, str(e)


def _probe_warm_start() -> tuple[bool, str]:
    """Whether sessions can be forked from a zygote here (else every start is cold)."""
    with tempfile.TemporaryDirectory(prefix="sandbox_exec-doctor-") as root:
        try:
            with Sandbox(root=root) as box:
                s = box.session("doctor-warm", prelude="import json")
                start = s.enforcement["start"]
                r = s.run("json.dumps(1)", timeout=30)
                if r.status != "ok":
                    return False, f"{start}; its first cell ended {r.status}: {r.reason or r.error}"
                return start.startswith("warm"), start
        except SandboxError as e:
            return False, str(e)


def _probe_host_ids() -> tuple[bool, str]:
    """Whether each session gets its own host uid (per-user kernel counters per session)."""
    if os.geteuid() != 0:
        return False, (
            f"every session runs as uid {os.geteuid()}, sharing per-user kernel limits (inotify "
            "instances, descriptors in flight): unprivileged backend without newuidmap"
        )
    rng = _host_ids.resolve_range()
    os.close(_host_ids.open_state_dir(_host_ids.STATE_DIR))
    return True, f"a host uid and gid per session from {rng.describe()}, locks in {_host_ids.STATE_DIR}"


def cgroup_advice(uid: int) -> str:
    """How to give sessions a memory and pids cgroup on this host (what detect() looks for)."""
    delegated = os.environ.get("SANDBOX_EXEC_CGROUP")
    v2 = (_read("/sys/fs/cgroup/cgroup.controllers") or "").split()
    if delegated:
        return (
            f"SANDBOX_EXEC_CGROUP={delegated} is not usable: it must be a cgroup v2 directory this user "
            "may write, listing memory and pids in cgroup.controllers and holding no process itself "
            "(sessions go in sandbox_exec-<pid>-<random>/<session> below it)"
        )
    if v2 and uid == 0:
        return (
            "cgroup v2 as root: sessions go in /sys/fs/cgroup/sandbox_exec/sandbox_exec-<pid>-<random>/; "
            "enabling memory/pids there failed (see the detail above; in a container the cgroup "
            "namespace's root may hold processes, which forbids it)"
        )
    if v2:
        return (
            "cgroup v2, unprivileged: run the backend inside a group delegated to its user, in a child "
            "of it, and name the delegated group in SANDBOX_EXEC_CGROUP (cgroup v2 lets a process "
            "move a session's processes only below the nearest group it may write, and enable "
            "controllers only in a group that holds no process). With systemd >= 254: a unit with "
            "Delegate=yes and DelegateSubgroup=backend, e.g. `systemd-run --user -p Delegate=yes "
            "-p DelegateSubgroup=backend -E SANDBOX_EXEC_CGROUP=... python ...`, where the group is "
            "/sys/fs/cgroup + the parent of the path /proc/self/cgroup shows. By hand, as root: "
            "echo '+memory +pids +cpu' > /sys/fs/cgroup/cgroup.subtree_control; mkdir -p "
            "/sys/fs/cgroup/sandbox_exec-users/backend; chown -R <user> /sys/fs/cgroup/sandbox_exec-users; "
            "echo <backend pid> > /sys/fs/cgroup/sandbox_exec-users/backend/cgroup.procs; and start the "
            "backend with SANDBOX_EXEC_CGROUP=/sys/fs/cgroup/sandbox_exec-users. A delegated directory "
            "is never removed; only the groups sandbox_exec creates in it are"
        )
    return (
        "cgroup v1: the backend's own group in the memory and pids hierarchies "
        "(/sys/fs/cgroup/<controller>/<its group>) must be writable by it: run as root or chown them "
        "to this user"
    )


def _probe_workdir_disk() -> tuple[bool, str]:
    """Whether disk_bytes is a filesystem limit on the workdir here: a session with a
    16 MiB cap must get ENOSPC from a 64 MiB fallocate in its workdir."""
    from ._workdir_image import support

    possible, why = support()
    if not possible:
        return False, f"watchdog on the workdir (no size-capped image: {why})"
    with (
        tempfile.TemporaryDirectory(prefix="sandbox_exec-doctor-") as root,
        Sandbox(Policy(disk_bytes=16 << 20), root=root) as box,
    ):
        s = box.session("doctor")
        mechanism = s.enforcement["disk_bytes"]
        if "image" not in mechanism:
            return False, mechanism
        r = s.run(
            "import os\nfd = os.open('big', os.O_CREAT | os.O_WRONLY)\nerr = None\ntry:\n"
            "    os.posix_fallocate(fd, 0, 64 << 20)\nexcept OSError as e:\n    err = e.errno\nerr",
            timeout=30,
        )
        results = [o["data"]["text/plain"] for o in r.outputs if o["output_type"] == "execute_result"]
        got = results[-1] if results else repr(r.error)
        if got != "28":
            return False, f"a 64 MiB fallocate under a 16 MiB cap gave {got} (expected ENOSPC)"
        return True, "size-capped ext4 image on a loop device (a 64 MiB fallocate under 16 MiB: ENOSPC)"


def checks() -> list[Check]:
    out: list[Check] = []

    def add(layer: str, probe: Callable[[], tuple[bool, str]]) -> None:
        try:
            ok, detail = probe()
        except Exception as e:  # a probe must never stop the report
            ok, detail = False, f"{type(e).__name__}: {e}"
        out.append(Check(layer, ok, detail))

    uid = os.geteuid()
    add(
        "host",
        lambda: (
            True,
            f"{platform.system()} {platform.release()}, running as "
            f"{'root (sandbox ids map to an unprivileged host id)' if uid == 0 else f'uid {uid}'}",
        ),
    )
    add("launcher", lambda: (True, launcher_path()))
    add("host ids", _probe_host_ids)
    max_userns = _read("/proc/sys/user/max_user_namespaces")
    add(
        "user namespaces",
        lambda: (
            max_userns not in (None, "0"),
            f"user.max_user_namespaces = {max_userns}"
            + (
                ""
                if _read("/proc/sys/kernel/unprivileged_userns_clone") in (None, "1")
                else "; kernel.unprivileged_userns_clone = 0"
            ),
        ),
    )
    seccomp_line = next(
        (line for line in (_read("/proc/self/status") or "").splitlines() if line.startswith("Seccomp:")), None
    )
    add("seccomp", lambda: (seccomp_line is not None, seccomp_line or "no Seccomp field in /proc/self/status"))
    abi = _core.landlock_abi()
    add("landlock", lambda: (abi > 0, f"ABI version {abi}" if abi > 0 else "not available in this kernel"))
    cg = cgroup_support()
    add(
        "cgroup memory",
        lambda: (
            bool(cg["memory"]),
            cg["detail"] if cg["memory"] else f"{cg['detail']}; memory_bytes falls back to RLIMIT_AS",
        ),
    )
    add(
        "cgroup pids",
        lambda: (
            bool(cg["pids"]),
            cg["detail"] if cg["pids"] else f"{cg['detail']}; max_processes relies on RLIMIT_NPROC per user namespace",
        ),
    )
    add(
        "cgroup cpu",
        lambda: (
            bool(cg["cpu_limit"]),
            cg["detail"] if cg["cpu_limit"] else f"{cg['detail']}; a policy with cpus set is refused (no fallback)",
        ),
    )
    if not (cg["memory"] and cg["pids"]):
        add("cgroup setup", lambda: (False, cgroup_advice(uid)))
    # One layer at a time on top of a bare session, so a failure names its layer.
    bare = Policy(namespaces=False, network=True, seccomp=False, landlock=False, max_processes=None, disk_bytes=None)
    add("bare session (no isolation)", lambda: _probe_session(bare))
    add(
        "namespaces + new root",
        lambda: _probe_session(bare.replace(namespaces=True, network=False, max_processes=256, disk_bytes=1 << 30)),
    )
    add("seccomp filter", lambda: _probe_session(bare.replace(seccomp=True)))
    add("landlock rules", lambda: _probe_session(bare.replace(landlock=True)))
    add("workdir disk cap", _probe_workdir_disk)
    add("warm start (zygote)", _probe_warm_start)
    add(
        "default policy (all layers)",
        lambda: _probe_session(
            Policy(), "import os, socket\n(os.getuid(), socket.gethostname(), sorted(socket.if_nameindex()))"
        ),
    )
    return out


def main() -> int:
    results = checks()
    width = max(len(c.layer) for c in results)
    for c in results:
        print(f"{c.layer:<{width}}  {'ok  ' if c.ok else 'FAIL'}  {c.detail}")
    print()
    print("Default policy, enforced on this host by:")
    for field, mechanism in Policy().enforcement(cgroup_support()).items():
        print(f"  {field:<17} {mechanism}")
    essential = {"launcher", "default policy (all layers)"}
    return 0 if all(c.ok for c in results if c.layer in essential) else 1
