"""Ladder C: each isolation layer on its own, so every one is shown to hold even if the
others were missing (defence in depth), with the same cell run without the layer as the
control that shows the attack works there."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import sandbox_exec
from sandbox_exec import Policy

pytestmark = pytest.mark.c

# Everything off: the starting point each test adds one layer to.
BARE = Policy(namespaces=False, network=True, seccomp=False, landlock=False, max_processes=None, disk_bytes=None)


def run_one(tmp_path: Path, policy: Policy, code: str) -> sandbox_exec.Result:
    with sandbox_exec.Sandbox(policy, root=tmp_path / "root") as box:
        return box.session("layer").run(code, timeout=30)


@pytest.fixture
def outside_target():
    # Outside /tmp (which Landlock leaves writable) and outside the sandbox root.
    path = Path("/var/tmp") / f"sandbox_exec-layer-{uuid.uuid4().hex}"
    yield path
    if path.exists():
        path.unlink()


def test_landlock_alone_blocks_writes_outside_the_workdir(tmp_path, outside_target):
    code = f"open({str(outside_target)!r}, 'w').write('escaped')"
    control = run_one(tmp_path, BARE, code)
    assert control.status == "ok" and outside_target.read_text() == "escaped"
    outside_target.unlink()
    r = run_one(tmp_path, BARE.replace(landlock=True), code)
    assert r.status == "error" and r.error["ename"] == "PermissionError"
    assert not outside_target.exists()


def test_seccomp_alone_refuses_keyrings_and_ptrace(tmp_path):
    code = (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        # keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_PROCESS_KEYRING, create=1): a keyring id
        "r1 = libc.syscall(250, 0, -2, 1)\ne1 = ctypes.get_errno()\n"
        "r2 = libc.ptrace(0, 0, 0, 0)\ne2 = ctypes.get_errno()\n"  # PTRACE_TRACEME
        "(r1 > 0, e1, r2, e2)"
    )
    control = run_one(tmp_path, BARE, code)
    # without the filter both succeed for any user
    assert control.outputs[0]["data"]["text/plain"] == "(True, 0, 0, 0)"
    r = run_one(tmp_path, BARE.replace(seccomp=True), code)
    assert r.outputs[0]["data"]["text/plain"] == "(False, 1, -1, 1)"  # both EPERM


def test_namespaces_alone_hide_the_host(tmp_path):
    secret = Path("/var/tmp") / f"sandbox_exec-secret-{uuid.uuid4().hex}"
    secret.write_text("host secret")
    try:
        code = (
            f"import os, socket\nvisible = os.path.exists({str(secret)!r})\n"
            "(visible, os.getpid(), socket.gethostname() == 'sandbox')"
        )
        control = run_one(tmp_path, BARE, code)
        assert control.outputs[0]["data"]["text/plain"].startswith("(True,")
        r = run_one(tmp_path, BARE.replace(namespaces=True, network=False), code)
        assert r.outputs[0]["data"]["text/plain"] == "(False, 2, True)"
    finally:
        secret.unlink()


def test_the_bare_policy_really_is_bare(tmp_path):
    # The controls above mean something only if BARE runs the cell as the backend's user on
    # the host's filesystem.
    r = run_one(tmp_path, BARE, "import os\n(os.geteuid(), os.path.exists('/proc/1/cmdline'))")
    assert r.outputs[0]["data"]["text/plain"] == f"({os.geteuid()}, True)"
