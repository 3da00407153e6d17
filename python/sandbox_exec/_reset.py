"""Session.reset(), the backend's side: the request's arguments and the reply's shape.

The worker's side (what a reset clears and what it keeps) is _worker/reset.py. The reply is
hostile input like any other (a cell may have replaced the worker's code): only its three
counts are taken, each checked to be a non-negative integer.
"""

from __future__ import annotations

from typing import Any

from ._calls import expect_dict
from .errors import CallError

#: numpy's legacy seed takes 0 <= seed < 2**32; random's takes any int: the narrower range.
MAX_SEED = 2**32 - 1
_REPORT_KEYS = ("names_before", "names_after", "figures_closed")


def reset_args(keep_prelude: object, seed: object) -> dict[str, Any]:
    if not isinstance(keep_prelude, bool):
        raise TypeError("reset(): keep_prelude must be True or False")
    valid_int = isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed <= MAX_SEED
    if not (seed is None or seed == "fresh" or valid_int):
        raise ValueError(f'reset(): seed must be None, "fresh" or an integer in [0, 2**32), got {seed!r}')
    return {"keep_prelude": keep_prelude, "seed": seed}


def reset_report(value: Any) -> dict[str, int]:
    reply = expect_dict(value, "reset")
    report: dict[str, int] = {}
    for key in _REPORT_KEYS:
        n = reply.get(key)
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise CallError(f"reset: the worker's reply has no valid {key!r}", status="violation")
        report[key] = n
    return report
