"""Shared fixtures: one Sandbox per test module, a fresh session per test."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

import ladder
import sandbox_exec

pytest_plugins = ["pytester"]  # test_ladder.py runs pytest on made-up test files

REPO = Path(__file__).resolve().parents[1]
# The nbclient test notebooks, copied into the repo with their license (see its README.md).
CORPUS = REPO / "tests_py" / "conformance" / "corpus" / "nbclient"


# Cell code that finds the worker's own channel object (what a hostile cell sends raw
# frames through: channel.send(frame_type, payload)).
FIND_CHANNEL = (
    "import gc\nchannel = next(o for o in gc.get_objects() "
    "if type(o).__name__ == 'Channel' and hasattr(o, '_chan'))._chan\n"
)


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


@pytest.fixture
def new_session(sandbox: sandbox_exec.Sandbox):
    """Sessions with their own policy, closed at the end of the test."""
    made: list[sandbox_exec.Session] = []

    def make(policy: sandbox_exec.Policy | None = None) -> sandbox_exec.Session:
        s = sandbox.session(f"t-{uuid.uuid4().hex[:12]}", policy=policy)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def allocated_bytes(path: Path) -> int:
    """Bytes allocated under `path` on the host (hard links once)."""
    seen, total = set(), 0
    for dirpath, _, filenames in os.walk(path):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


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


__all__ = ["CORPUS", "FIND_CHANNEL", "REPO", "allocated_bytes", "os", "pid_alive", "wait_until"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cold",
        action="store_true",
        help="start every session cold (Sandbox(warm=False) by default): the path a host that "
        "cannot fork from a zygote takes; scripts/test.sh runs the isolation suites this way too",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--cold"):
        # The default of Sandbox(warm=...) for this run; tests that name warm= keep theirs.
        defaults = sandbox_exec.Sandbox.__init__.__kwdefaults__
        assert defaults is not None and "warm" in defaults
        defaults["warm"] = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ladder.require_one_ladder_marker(items)


def setpriv_command(uid: int, python: str | Path) -> list[str]:
    """The command line that runs ``python`` as an unprivileged backend with host id ``uid``:
    its own ids, no supplementary groups, no capability (inheritable or bounding)."""
    return [
        "setpriv",
        f"--reuid={uid}",
        f"--regid={uid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        str(python),
    ]


async def record_loop_gaps(gaps: list[float], period_s: float) -> None:
    """Runs on an event loop until cancelled, appending the time between its wake-ups: a
    gap much longer than ``period_s`` is a time the loop was held by something else."""
    import asyncio
    import time

    last = time.monotonic()
    while True:
        await asyncio.sleep(period_s)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
