"""Ladder C: the same isolation when the backend is not root.

CI runs as root, where the sandbox's uid maps to an unprivileged host id (65534). A backend
running as an ordinary user takes the other path: the launcher enters a user namespace of
its own and maps the sandbox's uid to the caller's, with no setuid helper and no cgroup
delegation (memory falls back to RLIMIT_AS). When the tests run as root, this file runs a
backend as uid 65534 (setpriv) with a copy of the installed package, so both paths run in
CI; when the tests already run unprivileged, it runs the backend directly.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import sandbox_exec
from conftest import setpriv_command
from sandbox_exec import _core

pytestmark = pytest.mark.c

UID = 65534
BACKEND = r"""
import json, os, sys
import sandbox_exec
root, secret = sys.argv[1], sys.argv[2]
out = {"backend_uid": os.geteuid()}
with sandbox_exec.Sandbox(root=root) as box:
    s = box.session("unprivileged")
    r = s.run("import os, socket\n(os.getuid(), socket.gethostname(), [n for _, n in socket.if_nameindex()])")
    out["inside"] = r.outputs[0]["data"]["text/plain"] if r.outputs else repr(r.error)
    with open(f"/proc/{s.worker_pid}/status") as f:
        out["worker_host_uid"] = next(l.split()[1] for l in f if l.startswith("Uid:"))
    r = s.run(f"open({secret!r}).read()")
    out["secret_read"] = r.status, (r.error or {}).get("ename")
    r = s.run("open('/usr/lib/planted', 'w')")
    out["usr_write"] = r.status, (r.error or {}).get("ename")
    r = s.run("import ctypes\nctypes.CDLL(None, use_errno=True).unshare(0x10000000), ctypes.get_errno()")
    out["unshare"] = r.outputs[0]["data"]["text/plain"] if r.outputs else repr(r.error)
    r = s.run("import os, time\npids = []\nerr = None\ntry:\n    for _ in range(2000):\n"
              "        pid = os.fork()\n        if pid == 0:\n            time.sleep(30)\n            os._exit(0)\n"
              "        pids.append(pid)\nexcept OSError as e:\n    err = e.errno\n"
              "for pid in pids:\n    os.kill(pid, 9)\n(len(pids), err)")
    out["fork_bomb"] = r.outputs[0]["data"]["text/plain"] if r.outputs else repr(r.error)
    r = s.run("x = bytearray(6 << 30)")
    out["memory"] = r.status
    out["enforcement"] = s.enforcement
    r = s.run("open('kept.txt', 'w').write('ok')\n2 + 2")
    out["cell"] = r.outputs[0]["data"]["text/plain"]
print(json.dumps(out))
"""


def _package_copy(base: Path) -> Path:
    """A venv of the system Python with a copy of the installed package in it."""
    python = shutil.which("python3.11", path="/usr/bin") or "/usr/bin/python3"
    venv = base / "venv"
    subprocess.run([python, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = sorted(venv.glob("lib/python3*/site-packages"))[0]  # a whole list: no scandir left open
    pkg = Path(sandbox_exec.__file__).parent
    shutil.copytree(
        pkg, site / "sandbox_exec", ignore=shutil.ignore_patterns("__pycache__", "*.so", "sandbox_exec_launcher")
    )
    built = Path(_core.__file__).parent
    shutil.copy2(_core.__file__, site / "sandbox_exec")
    shutil.copy2(built / "sandbox_exec_launcher", site / "sandbox_exec")
    return venv / "bin" / "python"


@pytest.fixture(scope="module")
def unprivileged_run():
    base = Path(tempfile.mkdtemp(prefix="sandbox_exec-unpriv-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        secret = base / "secret.txt"
        secret.write_text("unprivileged-secret-token")
        root = base / "sessions"
        root.mkdir()
        if os.geteuid() == 0:
            if sys.version_info[:2] != (3, 11) or not Path("/usr/bin/python3.11").exists():
                pytest.skip("needs the system python3.11 matching this build's ABI to run a non-root backend")
            os.chmod(secret, 0o600)  # readable by the root backend only
            os.chown(root, UID, UID)
            python = _package_copy(base)
            cmd = [
                *setpriv_command(UID, python),
                "-c",
                BACKEND,
                str(root),
                str(secret),
            ]
        else:
            os.chmod(secret, 0o000)
            cmd = [sys.executable, "-c", BACKEND, str(root), str(secret)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=base)
        assert proc.returncode == 0, proc.stderr
        yield json.loads(proc.stdout.strip().splitlines()[-1]), root
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_backend_really_runs_unprivileged(unprivileged_run):
    out, _ = unprivileged_run
    assert out["backend_uid"] != 0


def test_sandbox_uid_maps_to_the_callers_uid(unprivileged_run):
    out, _ = unprivileged_run
    uid, hostname, interfaces = ast.literal_eval(out["inside"])
    assert uid == 1000 and hostname == "sandbox" and interfaces == ["lo"]
    assert int(out["worker_host_uid"]) == out["backend_uid"]


def test_isolation_holds_without_root(unprivileged_run):
    out, root = unprivileged_run
    # the host file is not even in the sandbox's filesystem view
    assert out["secret_read"] == ["error", "FileNotFoundError"]
    assert out["usr_write"][0] == "error"
    assert not Path("/usr/lib/planted").exists()
    ret, err = ast.literal_eval(out["unshare"])
    assert ret == -1 and err == 1  # EPERM from seccomp
    assert out["cell"] == "4"
    assert (root / "unprivileged" / "kept.txt").read_text() == "ok"


def test_processes_are_limited_without_a_pids_cgroup(unprivileged_run):
    out, _ = unprivileged_run
    assert out["enforcement"]["max_processes"] == "RLIMIT_NPROC in the session's user namespace"
    forked, err = ast.literal_eval(out["fork_bomb"])
    assert err == 11 and forked < 256  # EAGAIN at the default max_processes=256


def test_memory_limit_falls_back_to_rlimit_as(unprivileged_run):
    out, _ = unprivileged_run
    assert out["enforcement"]["memory_bytes"].startswith("RLIMIT_AS")
    assert out["memory"] == "memory"
