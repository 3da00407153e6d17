"""Ladder B: `python -m sandbox_exec doctor` says, for this host, what the threat model says
it says: the session's own host ids, the mechanism behind the workdir's disk cap, how to
get cgroups where there are none, whether a CPU share (Policy.cpus) can be enforced, and
whether sessions start warm (forked from a zygote) here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sandbox_exec import _workdir_image
from sandbox_exec.sandbox import cgroup_support

pytestmark = pytest.mark.b


@pytest.fixture(scope="module")
def report() -> dict[str, tuple[str, str]]:
    cp = subprocess.run([sys.executable, "-m", "sandbox_exec", "doctor"], capture_output=True, text=True, timeout=300)
    lines: dict[str, tuple[str, str]] = {}
    for line in cp.stdout.splitlines():
        for layer in (
            "host ids",
            "workdir disk cap",
            "cgroup memory",
            "cgroup cpu",
            "cgroup setup",
            "warm start (zygote)",
        ):
            if line.startswith(layer + " "):
                status, _, detail = line[len(layer) :].strip().partition(" ")
                lines[layer] = (status, detail.strip())
    assert "host ids" in lines and "workdir disk cap" in lines, cp.stdout + cp.stderr
    return lines


def test_doctor_names_the_host_id_mechanism(report):
    status, detail = report["host ids"]
    if os.geteuid() == 0:
        assert status == "ok" and "per session" in detail, report["host ids"]
    else:
        assert status != "ok" and "sharing per-user kernel limits" in detail, report["host ids"]


def test_doctor_names_the_workdir_disk_mechanism(report):
    status, detail = report["workdir disk cap"]
    if _workdir_image.support()[0]:
        # and it checked it: a 64 MiB fallocate under a 16 MiB cap got ENOSPC
        assert status == "ok" and "size-capped ext4 image" in detail and "ENOSPC" in detail, report
    else:
        assert status != "ok" and "watchdog" in detail, report


def test_doctor_says_how_to_get_cgroups_where_there_are_none(report):
    if cgroup_support().get("memory"):
        assert report["cgroup memory"][0] == "ok", report
    else:
        assert "cgroup setup" in report and "SANDBOX_EXEC_CGROUP" in report["cgroup setup"][1] + str(report), report


def test_doctor_says_whether_a_cpu_share_can_be_enforced(report):
    status, detail = report["cgroup cpu"]
    if cgroup_support().get("cpu_limit"):
        assert status == "ok", report
    else:
        assert status != "ok" and "cpus set is refused" in detail, report


def test_doctor_says_whether_sessions_start_warm(report):
    status, detail = report["warm start (zygote)"]
    # This host can fork sessions from a zygote: doctor started one and a session from it.
    assert status == "ok", detail
    assert detail.startswith("warm: forked from zygote "), detail
