"""Shared fixtures: one Sandbox per test module, a fresh session per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import sandbox_exec

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus" / "nbclient"


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("sessions")
    with sandbox_exec.Sandbox(root=root) as box:
        yield box


@pytest.fixture
def session(sandbox: sandbox_exec.Sandbox):
    s = sandbox.session(f"t-{uuid.uuid4().hex[:12]}")
    yield s
    s.close()


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def wait_until(predicate, timeout: float = 5.0, interval: float = 0.01) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


__all__ = ["CORPUS", "REPO", "pid_alive", "wait_until", "os"]
