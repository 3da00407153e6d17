"""Policy: the limits and permissions of a session, a frozen dataclass with safe defaults.

Each field says which layer enforces it. A field that asks for a protection this build
cannot enforce raises :class:`PolicyError` when a session starts (fail closed), never
silently runs without it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .errors import PolicyError

MiB = 1 << 20
GiB = 1 << 30
#: The longest deadline or CPU budget accepted, in seconds (about 3 years): the supervisor's
#: clock arithmetic is in 64-bit nanoseconds, which a deadline of 10**10 s would overflow.
MAX_SECONDS = 10**8


@dataclass(frozen=True)
class Mount:
    """A host directory shown in the sandbox at ``path``, relative to the session's workdir
    (``Mount("data", "/srv/uploads/nb-42")``: cells read ``data/<file>``), bound by the
    launcher in the sandbox's mount namespace: nothing is copied, and the host sees no mount.

    Read-only (nosuid, nodev, noexec; a write fails with EROFS) unless ``writable=True``, the
    named opt-out: then the cell's writes reach the host directory. ``path``: relative,
    normalized (no ``.``, ``..`` or empty part, no trailing ``/``), not in the workdir's
    ``.sandbox_exec``, without ``=`` or NUL. ``host``: an absolute path; where it points, and
    whether it is a directory the sandbox's user may use, is checked at every start (see
    ``Policy.mounts``)."""

    path: str
    host: str
    writable: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.host, os.PathLike):
            object.__setattr__(self, "host", os.fspath(self.host))
        problem = _mount_path_problem(self.path)
        if problem:
            raise PolicyError(f"Policy.mounts: the path {self.path!r} {problem}")
        if not (isinstance(self.host, str) and self.host.startswith("/") and "\0" not in self.host):
            raise PolicyError(
                f"Policy.mounts: the host directory of {self.path!r} must be an absolute path, got {self.host!r}"
            )
        if not isinstance(self.writable, bool):
            raise PolicyError(f"Policy.mounts: writable of {self.path!r} must be True or False, got {self.writable!r}")


def _mount_path_problem(path: object) -> str:
    """Why `path` cannot be a Mount's path ("" when it can; the launcher checks the same)."""
    if not isinstance(path, str) or not path:
        return "must be a non-empty string"
    if path.startswith("/"):
        return "must be relative to the workdir"
    if "=" in path or "\0" in path:
        return "may not contain '=' or NUL"
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts) or posixpath.normpath(path) != path:
        return "must be normalized, without '.', '..' or empty parts"
    if parts[0] == ".sandbox_exec":
        return "may not be in the workdir's .sandbox_exec"
    return ""


@dataclass(frozen=True)
class Policy:
    #: Wall-clock seconds per cell (the supervisor's deadline: SIGINT, then after
    #: ``interrupt_grace_s`` the session is killed). ``None``: no deadline.
    timeout_s: float | None = 60.0
    #: CPU seconds per interpreter (RLIMIT_CPU on the worker: SIGXCPU, then the session
    #: ends as "crashed"). Per cell, CPU is also bounded by ``timeout_s``.
    cpu_s: float | None = 3600.0
    #: CPUs' worth of time the session's processes together may use, as docker's ``--cpus``
    #: (0.5: half of one CPU; 2: two): a CFS quota of ``round(cpus * 100 ms)`` per 100 ms
    #: period on the session's cgroup (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``); past it the
    #: kernel holds the session's threads until the next period. Needs the cgroup cpu
    #: controller: with ``cpus`` set, a host that does not delegate one refuses the session
    #: at start (PolicyError; there is no rlimit for a CPU share). ``None``: no cap. Also
    #: the default size of the thread pools of BLAS, OpenMP and numexpr in the session
    #: (``OMP_NUM_THREADS`` and the rest: ``ceil(cpus)``, else the CPUs the backend may run
    #: on, at most those; a name ``env`` sets wins).
    cpus: float | None = None
    #: Memory of the session's processes together: the session's memory cgroup where the
    #: host delegates one (the OOM killer ends the session, status "memory"), else the
    #: worker's address space (RLIMIT_AS: MemoryError, status "memory").
    memory_bytes: int | None = 4 * GiB
    #: Processes and threads of the session together: RLIMIT_NPROC, which the kernel counts
    #: per user namespace (each session has its own), plus the cgroup pids controller where
    #: delegated. Needs ``namespaces``.
    max_processes: int | None = 256
    #: Size of any one file written (RLIMIT_FSIZE: the write fails with EFBIG).
    max_file_bytes: int | None = 1 * GiB
    #: Disk of the session: the private /tmp and /dev/shm are each a tmpfs of this size
    #: (writes past it fail with ENOSPC; needs ``namespaces``). The workdir: where the
    #: backend is root, its own ext4 filesystem of this size (a sparse image file under
    #: ``<Sandbox root>/.images`` on a loop device, mounted at the workdir while the Session
    #: lives): every write past it fails with ENOSPC, whatever its timing or form (fallocate,
    #: files unlinked but held open, descriptors in flight in a socket); a cell that fills
    #: it ends with status "disk", and the Sandbox's watchdog ends an interpreter whose
    #: leftover processes fill it between cells. Elsewhere (an unprivileged backend, no loop
    #: devices, no mkfs.ext4) the supervisor's watchdog measures the workdir (files unlinked
    #: but held open by the session's processes included): every 0.2 s while a cell runs and
    #: at the end of every cell (a cell past the cap is interrupted, status "disk"), and
    #: between cells (an interpreter whose leftover processes grow it is ended). While the
    #: workdir is past the cap no cell runs (status "disk", the reason says so): delete
    #: files from ``Session.workdir`` on the host, or ``Session.restart()`` when the space is
    #: held by files the interpreter keeps open. Overshoot: what one cell writes between two
    #: looks (``max_file_bytes`` bounds each file); descriptors in flight in a UNIX socket
    #: are not seen. ``Session.enforcement["disk_bytes"]`` says which applies.
    disk_bytes: int | None = 1 * GiB
    #: Descriptors per process (RLIMIT_NOFILE).
    max_open_files: int | None = 1024
    #: Output bytes per cell (streams and rich outputs together); past it output is
    #: dropped and the cell's outputs end with a truncation marker. Enforced by the
    #: supervisor, whatever the worker does.
    max_output_bytes: int = 16 * MiB
    #: Bytes of one rich output (a display, a result, an error message: a figure, a big
    #: DataFrame's HTML). A larger one is dropped whole and a marker says so; the cell runs on.
    max_single_output_bytes: int = 8 * MiB
    #: Inline matplotlib figures: "png" (default, as Jupyter), "retina" (png at twice the
    #: dpi, shown at the normal size), "jpeg" or "svg"; ``figure_dpi`` None keeps matplotlib's.
    figure_format: str = "png"
    figure_dpi: int | None = None
    #: ``False``: an empty network namespace, loopback only. ``True`` is the named opt-out:
    #: the host's network (and its /etc/resolv.conf) inside the sandbox.
    network: bool = False
    #: New user, pid, mount, ipc, uts, cgroup (and network) namespaces and a new root with
    #: read-only system paths. ``False`` is the named opt-out for hosts without user
    #: namespaces: the worker then sees the host's filesystem as the backend's user.
    namespaces: bool = True
    #: The seccomp syscall filter (docs/threat_model.md lists its rules).
    seccomp: bool = True
    #: Landlock filesystem rules, where the kernel has Landlock; required when True.
    landlock: bool = True
    #: Host uid/gid the sandbox's user maps to when the backend runs as root (never 0).
    #: ``None`` (default): each live session gets its own id from the Sandbox's host id
    #: range (``Sandbox(host_id_range=...)``, /etc/subuid, or a built-in range), so the
    #: kernel's per-user counters (inotify instances, descriptors in flight over UNIX
    #: sockets, pending signals, ...) are per session. An id set here is the weaker opt-out:
    #: every session with this policy runs as that one id and shares those counters.
    #: ``host_gid`` None with ``host_uid`` set: the same number as ``host_uid``.
    host_uid: int | None = None
    host_gid: int | None = None
    #: Extra host paths bound read-only at the same path (e.g. a data directory, or the
    #: source of a package installed in editable mode outside site-packages).
    readonly_paths: tuple[str, ...] = ()
    #: Host directories shown in the sandbox at paths relative to the workdir, without
    #: copying (:class:`Mount`; e.g. ``(Mount("data", "/srv/uploads/nb-42"),)``): read-only
    #: unless ``Mount(..., writable=True)``. Bound by the launcher in the sandbox's own mount
    #: namespace (needs ``namespaces``), at every start, cold, warm or pooled. No two paths may
    #: repeat or nest. Checked at every start (PolicyError): the host directory exists, is a
    #: directory, is not under /proc, /sys or /dev, neither is nor contains nor lies in the
    #: Sandbox root; a writable one neither contains nor lies in the sandbox's read-only
    #: system paths (``readonly_paths`` included) or another mount's host directory; the
    #: sandbox's user (its host uid: see ``host_uid``) may read and search it (and write it,
    #: when writable) by its mode bits. A symlink or a file where the mount's path goes in the
    #: workdir fails the start (SandboxError); it is never followed.
    mounts: tuple[Mount, ...] = ()
    #: Seconds a cell has to stop after the deadline's interrupt before the session is killed.
    interrupt_grace_s: float = 2.0
    #: Seconds the interpreter may take to start and report ready (prelude excluded).
    start_timeout_s: float = 30.0
    #: Checkpoints of the namespace (``Session.checkpoint()``; saved and loaded inside the
    #: sandbox, into ``<workdir>/.sandbox_exec/state``, counted against ``disk_bytes``):
    #: ``"off"`` (default: only when asked) or ``"after_cell"``: one after every cell that
    #: leaves the interpreter alive (status ok, error, interrupted or timeout), within the
    #: cell's lock, its report in ``Session.last_checkpoint``; a failure there is logged
    #: and recorded, never the cell's.
    checkpoint: str = "off"
    #: ``True``: every start of the session's interpreter (the first, a restart, the restart
    #: after a crash; also in a new Sandbox on the same root) loads the last checkpoint, if
    #: there is one (``Session.last_restore`` says what happened; a checkpoint that fails to
    #: load is renamed ``checkpoint.rejected`` and the session starts empty).
    restore_on_start: bool = False
    #: Extra environment variables for the worker. Nothing of the backend's environment
    #: reaches the sandbox except what is named here. Kept as a read-only copy.
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    def __post_init__(self) -> None:
        for name, optional in (
            ("timeout_s", True),
            ("cpu_s", True),
            ("interrupt_grace_s", False),
            ("start_timeout_s", False),
        ):
            value = getattr(self, name)
            if value is None and optional:
                continue
            if isinstance(value, bool) or not (
                isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= MAX_SECONDS
            ):
                what = f"a positive number of seconds up to {MAX_SECONDS:g}" + (" or None" if optional else "")
                raise PolicyError(f"Policy.{name} must be {what}, got {value!r}")
            # Seconds as float: Policy(timeout_s=60) and Policy(timeout_s=60.0) are one policy,
            # equal and with one hash.
            object.__setattr__(self, name, float(value))
        if self.cpus is not None:
            if isinstance(self.cpus, bool) or not (
                isinstance(self.cpus, (int, float)) and math.isfinite(self.cpus) and self.cpus > 0
            ):
                raise PolicyError(f"Policy.cpus must be a positive number of CPUs or None, got {self.cpus!r}")
            if self.cpus < 0.01:
                raise PolicyError("Policy.cpus must be at least 0.01: the kernel's smallest quota (1 ms per 100 ms)")
            object.__setattr__(self, "cpus", float(self.cpus))  # one policy for 2 and 2.0, as seconds
        for name in ("memory_bytes", "max_processes", "max_file_bytes", "disk_bytes", "max_open_files"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise PolicyError(f"Policy.{name} must be a positive integer or None, got {value!r}")
        for name in ("max_output_bytes", "max_single_output_bytes"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise PolicyError(f"Policy.{name} must be a positive integer, got {value!r}")
        if self.figure_format not in ("png", "retina", "jpeg", "svg"):
            raise PolicyError(f"Policy.figure_format must be png, retina, jpeg or svg, got {self.figure_format!r}")
        if self.figure_dpi is not None and not (isinstance(self.figure_dpi, int) and 10 <= self.figure_dpi <= 1200):
            raise PolicyError(f"Policy.figure_dpi must be an integer from 10 to 1200 or None, got {self.figure_dpi!r}")
        if self.max_open_files is not None and self.max_open_files < 16:
            raise PolicyError("Policy.max_open_files must be at least 16: the interpreter needs a few itself")
        if self.max_processes is not None and self.max_processes < 8:
            raise PolicyError("Policy.max_processes must be at least 8: the interpreter uses a few threads")
        if self.memory_bytes is not None and self.memory_bytes < 64 * MiB:
            raise PolicyError("Policy.memory_bytes must be at least 64 MiB: the interpreter needs that to start")
        if self.checkpoint not in ("off", "after_cell"):
            raise PolicyError(f"Policy.checkpoint must be 'off' or 'after_cell', got {self.checkpoint!r}")
        for name in ("network", "namespaces", "seccomp", "landlock", "restore_on_start"):
            if not isinstance(getattr(self, name), bool):
                raise PolicyError(f"Policy.{name} must be True or False, got {getattr(self, name)!r}")
        for name in ("host_uid", "host_gid"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**32 - 1
            ):
                raise PolicyError(f"Policy.{name} must be a non-root id or None, got {value!r}")
        if self.host_uid is None and self.host_gid is not None:
            raise PolicyError("Policy.host_gid needs host_uid: a fixed gid with per-session uids would be shared")
        if isinstance(self.readonly_paths, str):
            raise PolicyError("Policy.readonly_paths must be absolute paths")
        object.__setattr__(self, "readonly_paths", tuple(self.readonly_paths))  # once: a generator too
        if not all(isinstance(p, str) and p.startswith("/") for p in self.readonly_paths):
            raise PolicyError("Policy.readonly_paths must be absolute paths")
        self._check_mounts()
        if not all(
            isinstance(k, str) and isinstance(v, str) and "=" not in k and "\0" not in k + v
            for k, v in dict(self.env).items()
        ):
            raise PolicyError("Policy.env must map names (without '=' or NUL) to strings")
        # A frozen policy is frozen all the way down: a read-only view of a private copy, so
        # neither the caller's dict nor the policy's own mapping can change it later.
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))

    def _check_mounts(self) -> None:
        if isinstance(self.mounts, (str, Mount, Mapping)):
            raise PolicyError("Policy.mounts must be a sequence of sandbox_exec.Mount")
        try:
            object.__setattr__(self, "mounts", tuple(self.mounts))  # once: a generator too
        except TypeError:
            raise PolicyError("Policy.mounts must be a sequence of sandbox_exec.Mount") from None
        if not all(isinstance(m, Mount) for m in self.mounts):
            raise PolicyError("Policy.mounts must be a sequence of sandbox_exec.Mount")
        paths = [m.path for m in self.mounts]
        for i, a in enumerate(paths):
            for j, b in enumerate(paths):
                if i != j and (a == b or b.startswith(a + "/")):
                    raise PolicyError(f"Policy.mounts: the paths may not repeat or nest: {a!r} and {b!r}")

    def __hash__(self) -> int:
        # The mapping by its items in a fixed order: equal policies hash equal.
        return hash(
            tuple(
                (f.name, repr(sorted(value.items()) if isinstance(value, Mapping) else value))
                for f in dataclasses.fields(self)
                for value in [getattr(self, f.name)]
            )
        )

    def __reduce__(self) -> tuple[Any, tuple[dict[str, Any]]]:
        # A mappingproxy cannot be pickled or deep-copied: the policy travels as its fields.
        return _from_fields, ({f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)},)

    def replace(self, **changes: Any) -> Policy:
        """A copy with some fields changed (validated like a new Policy)."""
        return dataclasses.replace(self, **changes)

    def unenforceable(self) -> list[str]:
        """The fields this policy asks for that its own other choices make impossible."""
        missing = []
        if not self.namespaces:
            if not self.network:
                missing.append("network=False needs namespaces=True (a network namespace)")
            if self.max_processes is not None:
                missing.append("max_processes needs namespaces=True (RLIMIT_NPROC counted per user namespace)")
            if self.disk_bytes is not None:
                missing.append("disk_bytes needs namespaces=True (a size-capped private /tmp)")
            if self.mounts:
                missing.append("mounts need namespaces=True (binds in the sandbox's own mount namespace)")
        return missing

    def host_ids(self, backend_uid: int, allocated: str | None = None) -> str:
        """What the sandbox's user is on the host, for ``enforcement()["host_uid"]``:
        `allocated` describes a session's own id ("per-session host uid N from range ...")."""
        if not self.namespaces:
            return f"none (namespaces=False): the worker runs as the backend's own uid {backend_uid}"
        if backend_uid != 0:
            return (
                f"the backend's own uid {backend_uid}, shared by all sessions (per-user kernel counters "
                "shared): unprivileged backend without newuidmap"
            )
        if self.host_uid is not None:
            gid = self.host_gid if self.host_gid is not None else self.host_uid
            return (
                f"fixed host uid {self.host_uid} / gid {gid}, shared by every session with this policy "
                "(opt-out: per-user kernel counters shared)"
            )
        return allocated or "a per-session host uid and gid from the Sandbox's host id range"

    def enforcement(
        self,
        cgroups: Mapping[str, object] | None = None,
        *,
        host_ids: str | None = None,
        workdir_image: bool | None = None,
        workdir_note: str = "",
    ) -> dict[str, str]:
        """Which mechanism enforces each field here, given the host's cgroup support
        (`host_ids`: the session's own, from host_ids(); else described for this process) and
        whether the workdir is a size-capped image (None: whether this process could make
        one); ``workdir_note`` says why not, when known."""
        cg = cgroups or {}
        if workdir_image is None:
            from ._workdir_image import support

            workdir_image, why = support()
            workdir_note = workdir_note or ("" if workdir_image else why)
        disk = (
            "tmpfs size and inode cap (nr_inodes) of /tmp and /dev/shm; size-capped ext4 image on a loop device (workdir)"
            if workdir_image
            else "tmpfs size and inode cap (nr_inodes) of /tmp and /dev/shm; watchdog on the workdir (supervisor: during and at the end of "
            "every cell, between cells; cells refused while over)"
            + (f" [no workdir image: {workdir_note}]" if workdir_note else "")
        )
        memory_cgroup = bool(cg.get("memory")) and self.memory_bytes is not None
        pids_cgroup = bool(cg.get("pids")) and self.max_processes is not None
        cpu_knob = "cpu.max" if cg.get("version") == "v2" else "cpu.cfs_quota_us"
        return {
            "timeout_s": "supervisor deadline (SIGINT, then kill)" if self.timeout_s else "none",
            "cpu_s": "RLIMIT_CPU (per interpreter)" if self.cpu_s else "none",
            "cpus": (
                "not limited"
                if self.cpus is None
                else f"cgroup {cg.get('version')} {cpu_knob}"
                if cg.get("cpu_limit")
                else "none: no cgroup cpu controller here (a session with cpus set is refused)"
            ),
            "memory_bytes": (
                f"cgroup {cg.get('version')} memory controller (whole session)"
                if memory_cgroup
                else "RLIMIT_AS (per process address space; tmpfs pages in /tmp and /dev/shm not "
                "counted: no memory cgroup here, see doctor)"
                if self.memory_bytes
                else "none"
            ),
            "max_processes": (
                "RLIMIT_NPROC in the session's user namespace"
                + (f" + cgroup {cg.get('version')} pids controller" if pids_cgroup else "")
                if self.max_processes
                else "none"
            ),
            "max_file_bytes": "RLIMIT_FSIZE" if self.max_file_bytes else "none",
            "disk_bytes": disk if self.disk_bytes else "none",
            "max_open_files": "RLIMIT_NOFILE" if self.max_open_files else "none",
            "max_output_bytes": "supervisor output cap",
            "max_single_output_bytes": "supervisor per-output cap",
            "network": "host network (opt-out)" if self.network else "empty network namespace (loopback only)",
            "namespaces": "user, pid, mount, ipc, uts, cgroup namespaces + new root"
            if self.namespaces
            else "none (opt-out): host filesystem view",
            "seccomp": "seccomp filter" if self.seccomp else "none (opt-out)",
            "landlock": "Landlock rules" if self.landlock else "none (opt-out)",
            "mounts": _describe_mounts(self.mounts),
            "host_uid": host_ids or self.host_ids(os.geteuid()),
        }


def _describe_mounts(mounts: tuple[Mount, ...]) -> str:
    if not mounts:
        return "none"
    each = ", ".join(
        f"{m.path} ({'read-write: writable=True' if m.writable else 'read-only: mount flag, EROFS'})" for m in mounts
    )
    return "binds in the sandbox's mount namespace, nosuid, nodev, noexec: " + each


def _plain(value: object) -> object:
    return dict(value) if isinstance(value, Mapping) else value


def _from_fields(fields: dict[str, Any]) -> Policy:
    return Policy(**fields)
