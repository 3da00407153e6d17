"""What crosses Ray between a node's host and the caller: plain data only, checked again on
arrival; errors as a class name from a fixed list and a message, never an object."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from .. import errors
from ..errors import SandboxError, SessionClosedError
from ..result import STATUSES, Result, make_result

_RESULT_FIELDS = tuple(f.name for f in fields(Result))
# Errors the host may name; anything else arrives as SandboxError with the name in the text.
_ERRORS: dict[str, type[Exception]] = {
    "SandboxError": SandboxError,
    "PolicyError": errors.PolicyError,
    "SessionClosedError": SessionClosedError,
    "PreludeError": errors.PreludeError,
    "CallError": errors.CallError,
    "CheckpointError": errors.CheckpointError,
    "WorkdirInUseError": errors.WorkdirInUseError,
    "ValueError": ValueError,
    "TypeError": TypeError,
}
_CALL_ERROR_ATTRS = ("status", "ename", "evalue", "traceback", "reason", "kind")
# Deeper than anything a node's Sandbox accepts from a worker (its JSON guard: 64 levels per
# message) plus the Result's own envelope, so every output a node took crosses; bounded, so
# a host cannot make the check recurse without end.
_MAX_DEPTH = 128


def _plain(value: Any, depth: int = 0) -> bool:
    """True when `value` is JSON-shaped data (dict with str or int keys, list, str, int,
    float, bool, None), nested at most _MAX_DEPTH deep: what a host may send."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return True
    if depth >= _MAX_DEPTH:
        return False
    if isinstance(value, list):
        return all(_plain(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, (str, int)) and _plain(v, depth + 1) for k, v in value.items())
    return False


def _checked(value: Any, what: str) -> Any:
    if not _plain(value):
        raise SandboxError(f"ray: the node host sent {what} that is not plain data; refused")
    return value


def _result_to_wire(result: Result) -> dict[str, Any]:
    return {name: getattr(result, name) for name in _RESULT_FIELDS}


def _result_from_wire(values: Any) -> Result:
    _checked(values, "a result")
    if not isinstance(values, dict) or set(values) != set(_RESULT_FIELDS):
        raise SandboxError("ray: the node host sent a result without Result's fields; refused")
    if values["status"] not in STATUSES or not isinstance(values["outputs"], list):
        raise SandboxError(f"ray: the node host sent a result with status {values['status']!r}; refused")
    return make_result(dict(values))


def _error_to_wire(e: BaseException) -> dict[str, Any]:
    wire: dict[str, Any] = {"raise": type(e).__name__, "message": str(e)}
    for cls in type(e).__mro__:  # the nearest class the caller knows
        if cls.__name__ in _ERRORS:
            wire["raise"] = cls.__name__
            break
    else:
        wire["message"] = f"{type(e).__name__}: {e}"
        wire["raise"] = "SandboxError"
    attrs = {a: getattr(e, a) for a in _CALL_ERROR_ATTRS if hasattr(e, a)}
    wire["attrs"] = {a: v for a, v in attrs.items() if _plain(v)}
    return wire


def _raise_from_wire(wire: dict[str, Any]) -> None:
    """Raises the error a host described: the class by name from _ERRORS (else
    SandboxError), CallError's fields from plain values only."""
    cls = _ERRORS.get(str(wire.get("raise")), SandboxError)
    message = str(wire.get("message", ""))
    if issubclass(cls, errors.CallError):
        given = wire.get("attrs")
        attrs: dict[str, Any] = given if isinstance(given, dict) else {}
        fields_ = {k: v for k, v in attrs.items() if k in ("status", "ename", "evalue", "traceback", "reason")}
        if issubclass(cls, errors.CheckpointError):
            raise cls(message, kind=str(attrs.get("kind", "error")), **fields_)
        raise cls(message, **fields_)
    raise cls(message)
