"""The worker's side of calls that are not cells (see sandbox_exec/_calls.py).

A call request is ``{"call": op, "args": {...}, "execution_count": <call id>}``. The worker
runs the op, sends its JSON-safe value as one ``{"output_type": "reply", "value": ...}``
message, then the end-of-call report under the call's id. An op that raises reports the
error as a cell would (ename, evalue, traceback) and sends no reply. No execution count is
taken and nothing is added to the namespace's history.

Ops: ``call`` runs a function the prelude defined (looked up in the namespace as the
prelude left it, so a cell that rebinds the name does not redirect the backend's call).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .execute import error_content

if TYPE_CHECKING:
    from .main import Worker

Op = Callable[["Worker", dict[str, Any]], Any]


def _call_prelude_function(worker: Worker, args: dict[str, Any]) -> Any:
    name = args.get("function")
    call_args = args.get("args", [])
    kwargs = args.get("kwargs", {})
    if not isinstance(name, str) or not isinstance(call_args, list) or not isinstance(kwargs, dict):
        raise TypeError("call: bad request")
    function = worker.executor.prelude_namespace.get(name)
    if function is None or not callable(function):
        raise NameError(f"the session's prelude defined no function named {name!r}")
    with worker.user_code:  # interruptible, as a cell
        value = function(*call_args, **kwargs)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{name}() returned a value that is not JSON: {e}") from None
    return value


def _lazy(module: str, function: str) -> Op:
    """An op from another module of the worker, imported at its first call (a session that
    never inspects or checkpoints does not load that code)."""

    def op(worker: Worker, args: dict[str, Any]) -> Any:
        import importlib

        implementation: Op = getattr(importlib.import_module(f"{__package__}.{module}"), function)
        return implementation(worker, args)

    return op


# Each op's implementation lives in the module of its mechanism.
OPS: dict[str, Op] = {
    "call": _call_prelude_function,
    "reset": _lazy("reset", "op_reset"),
    "variables": _lazy("variables", "op_variables"),
    "fetch": _lazy("fetch", "op_fetch"),
    "checkpoint": _lazy("checkpoint", "op_checkpoint"),
    "restore": _lazy("checkpoint", "op_restore"),
}


def handle(worker: Worker, request: dict[str, Any]) -> None:
    call_id = request.get("execution_count")
    name = request.get("call")
    op = OPS.get(name) if isinstance(name, str) else None
    args = request.get("args", {})
    error: dict[str, Any] | None = None
    if op is None or not isinstance(args, dict) or not isinstance(call_id, int):
        error = {"ename": "ProtocolError", "evalue": f"unknown call {name!r}", "traceback": []}
    else:
        worker.in_call = True
        try:
            value = op(worker, args)
        except BaseException as exc:  # the call's failure is its result
            error = error_content(exc)
        else:
            worker.flush_streams()
            worker.channel.send_message({"output_type": "reply", "value": value})
        finally:
            worker.in_call = False
    worker.flush_streams()
    worker.channel.send_cell_done(call_id if isinstance(call_id, int) else 0, error, worker.channel.raw.take_dropped())
