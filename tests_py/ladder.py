"""The test ladder: every test sits on exactly one rung (a: unit, b: real cells and
notebooks end to end, c: adversarial and production-like), by a module's ``pytestmark``,
a class's or the test's own marker, never two different ones. conftest.py fails
collection otherwise, so the rule cannot drift."""

from __future__ import annotations

import pytest

LADDERS = ("a", "b", "c")


def require_one_ladder_marker(items: list[pytest.Item]) -> None:
    wrong = []
    for item in items:
        ladders = sorted({m.name for m in item.iter_markers() if m.name in LADDERS})
        if len(ladders) != 1:
            wrong.append(f"{item.nodeid}: {', '.join(ladders) or 'no ladder marker'}")
    if wrong:
        raise pytest.UsageError("every test needs exactly one ladder marker (a, b or c):\n  " + "\n  ".join(wrong))
