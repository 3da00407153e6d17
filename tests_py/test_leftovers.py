"""The host checks of tests_py/leftovers.py find a live session's traces, and none after close."""

from __future__ import annotations

import pytest

import sandbox_exec
from leftovers import Baseline, cgroups_of, leftovers
from sandbox_exec.sandbox import cgroup_support

pytestmark = pytest.mark.b


@pytest.mark.parametrize("warm", [False, True], ids=["cold", "warm-with-pool"])
def test_leftovers_sees_a_live_session_and_nothing_after_close(tmp_path, warm):
    baseline = Baseline.take()
    root = tmp_path / "root"
    # warm: a zygote, a pool refilled in the background, spare images formatted ahead
    box = sandbox_exec.Sandbox(root=root, warm=warm, pool_size=2 if warm else 0)
    try:
        for name in "abc":
            assert box.session(name).run("1+1").status == "ok"
        during = leftovers(baseline, root)
        assert any(line.startswith("process ") for line in during), during
        if cgroup_support().get("version"):
            assert cgroups_of(baseline.pid), "a live session's cgroups were not found"
    finally:
        box.close()
    assert leftovers(baseline, root) == []
