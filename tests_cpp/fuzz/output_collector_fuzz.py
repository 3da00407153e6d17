"""Fuzz target (atheris, libFuzzer for Python): the backend's validation of a worker's output
messages, python/sandbox_exec/_outputs.py and _json.py, on any bytes.

Run by scripts/fuzz.sh with the .venv's Python (atheris comes with the package's "fuzz"
extra). In the backend these functions only see messages the C++ guard passed
(cpp/supervisor/json_guard.h, fuzzed by json_guard_fuzz); here they get any bytes, so each
property below holds for a superset of what they meet. Asserted (an AssertionError or any
unexpected exception is a crash that libFuzzer saves):
  * _json.loads(data) is json.loads(data): the same value (compared through repr, NaN
    included) or the same exception type;
  * parse_message() returns a message or raises MalformedMessage, nothing else; a message
    it returns has the fields of its output_type;
  * parse_cell_done()'s shortcut for the common report agrees with the general JSON path;
  * OutputCollector.feed() of the message takes it (returns True, never raises) and counts
    a refusal as a rejection; finish() gives outputs that are strict JSON (json.dumps with
    allow_nan=False) whenever the payload is strict JSON (what the C++ guard lets through).
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any

import atheris

from sandbox_exec import _json, _outputs

# instrument_all() rather than instrument_imports(): the editable install imports the package
# through its own loader, whose modules instrument_imports() leaves without coverage.
atheris.instrument_all()


def _outcome(fn: Any, data: bytes) -> tuple[str, str]:
    try:
        return ("value", repr(fn(data)))
    except Exception as e:  # the exception's type is what is compared
        return ("raised", type(e).__name__)


def _no_constants(name: str) -> Any:
    raise ValueError(f"not strict JSON: {name}")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: Python's float() overflows to inf
        raise ValueError(f"number overflows a double: {text}")
    return value


def _strict_json(data: bytes) -> bool:
    """Whether `data` is strict JSON as the C++ guard has it: no NaN or Infinity, no number
    that overflows a double."""
    try:
        json.loads(data, parse_constant=_no_constants, parse_float=_finite_float)
    except (ValueError, RecursionError):
        return False
    return True


REQUIRED = {
    "display_data": {"data", "metadata"},
    "execute_result": {"data", "metadata", "execution_count"},
    "update_display_data": {"data", "metadata", "transient"},
    "error": {"ename", "evalue", "traceback"},
    "clear_output": {"wait"},
}


def TestOneInput(data: bytes) -> None:
    # _json.loads is json.loads.
    fast, reference = _outcome(_json.loads, data), _outcome(json.loads, data)
    assert fast == reference, (fast, reference)

    # parse_message: a message or MalformedMessage.
    try:
        message = _outputs.parse_message(data)
    except _outputs.MalformedMessage:
        message = None
    if message is not None:
        kind = message["output_type"]
        assert set(message) >= REQUIRED[kind] | {"output_type"}, message

    # parse_cell_done's shortcut agrees with the JSON path.
    try:
        done: Any = _outputs.parse_cell_done(data)
    except _outputs.MalformedMessage:
        done = None
    try:
        general: Any = _outputs.parse_cell_done_json(data)
    except _outputs.MalformedMessage:
        general = None
    assert done == general, (done, general)

    # The collector takes anything and says so.
    collector = _outputs.OutputCollector(on_output=lambda event: None, execution_count=1)
    assert collector.feed([(_outputs.FRAME.MESSAGE, data)]) is True
    assert collector.rejected == (1 if message is None else 0)
    outputs, _stdout, stderr = collector.finish()
    if message is None:
        assert "an output was rejected" in stderr
    if _strict_json(data):
        json.dumps(outputs, allow_nan=False)


def main() -> None:
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
