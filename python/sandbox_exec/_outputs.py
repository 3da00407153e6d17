"""Backend side: turning the worker's events into nbformat v4 outputs.

Everything here reads hostile input: the worker's frames are JSON parsed with the json
module (never pickle, never eval), checked against the shapes below, and anything else
is a protocol violation that ends the session. ``OutputCollector`` keeps the cell's final
output list (clear_output applied, display updates in place, streams merged as Jupyter
stores them) and hands each event, as it comes, to ``on_output``.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

from . import _core

FRAME = _core.frame
STREAM_NAMES = {FRAME.STDOUT: "stdout", FRAME.STDERR: "stderr"}
# Not a frame type the worker can send: the supervisor's own note that it dropped one
# output for being larger than the per-output limit (payload: its size, in decimal).
DROPPED_OUTPUT = _core.DROPPED_OUTPUT_EVENT
OUTPUT_TYPES = {"display_data", "execute_result", "error", "update_display_data", "clear_output"}


class MalformedMessage(Exception):
    """The worker sent something that is not a valid output message."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise MalformedMessage(what)


def _is_json_value(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, dict))


def _mime_bundle(data: Any) -> dict[str, Any]:
    _check(isinstance(data, dict), "data must be an object")
    for mime, value in data.items():
        _check(isinstance(mime, str) and 0 < len(mime) < 256 and "/" in mime, f"bad mime type {mime!r}")
        if mime == "application/json" or mime.endswith("+json"):
            _check(_is_json_value(value), f"bad {mime} value")
        else:
            _check(isinstance(value, str) or (isinstance(value, list) and all(isinstance(x, str) for x in value)),
                   f"{mime} must be text")
    return data


def _display_id(message: dict[str, Any], required: bool) -> str | None:
    transient = message.get("transient")
    if transient is None:
        _check(not required, "update_display_data without a display_id")
        return None
    _check(isinstance(transient, dict), "transient must be an object")
    display_id = transient.get("display_id")
    if display_id is None:
        _check(not required, "update_display_data without a display_id")
        return None
    _check(isinstance(display_id, str) and 0 < len(display_id) <= 256, "bad display_id")
    return display_id


def parse_json(payload: bytes) -> dict[str, Any]:
    try:
        value = json.loads(payload)
    except (ValueError, RecursionError) as e:
        raise MalformedMessage(f"invalid JSON: {e}") from None
    _check(isinstance(value, dict), "a message must be a JSON object")
    return value


def parse_message(payload: bytes) -> dict[str, Any]:
    """Validates one MESSAGE frame; returns it in Jupyter's live (iopub) shape."""
    m = parse_json(payload)
    kind = m.get("output_type")
    _check(kind in OUTPUT_TYPES, f"unknown output_type {kind!r}")
    if kind == "clear_output":
        _check(isinstance(m.get("wait"), bool), "clear_output.wait must be a boolean")
        return {"output_type": kind, "wait": m["wait"]}
    if kind == "error":
        _check(isinstance(m.get("ename"), str) and isinstance(m.get("evalue"), str), "bad error")
        tb = m.get("traceback")
        _check(isinstance(tb, list) and all(isinstance(x, str) for x in tb), "bad traceback")
        return {"output_type": kind, "ename": m["ename"], "evalue": m["evalue"], "traceback": tb}
    out: dict[str, Any] = {"output_type": kind, "data": _mime_bundle(m.get("data")),
                           "metadata": m.get("metadata", {})}
    _check(isinstance(out["metadata"], dict), "metadata must be an object")
    display_id = _display_id(m, required=kind == "update_display_data")
    if display_id is not None:
        out["transient"] = {"display_id": display_id}
    if kind == "execute_result":
        _check(isinstance(m.get("execution_count"), int), "execute_result needs execution_count")
        out["execution_count"] = m["execution_count"]
    return out


def parse_cell_done(payload: bytes) -> dict[str, Any]:
    m = parse_json(payload)
    _check(m.get("status") in ("ok", "error"), "bad cell status")
    error = m.get("error")
    if error is not None:
        _check(isinstance(error, dict) and isinstance(error.get("ename"), str)
               and isinstance(error.get("evalue"), str) and isinstance(error.get("traceback"), list),
               "bad cell error")
        error = {"ename": error["ename"], "evalue": error["evalue"],
                 "traceback": [str(x) for x in error["traceback"]]}
    return {"status": m["status"], "error": error}


# A carriage return followed by more text overwrites its line, as a terminal (and Jupyter's
# output area, before it stores a notebook) shows it; nbconvert's coalesce_streams does the same.
_OVERWRITTEN = re.compile(r"[^\n]*\r(?=[^\n])")


def apply_carriage_returns(text: str) -> str:
    return _OVERWRITTEN.sub("", text) if "\r" in text else text


def _stored(output: dict[str, Any]) -> dict[str, Any]:
    """The nbformat (stored) form of a live output: no transient."""
    return {k: v for k, v in output.items() if k != "transient"}


class OutputCollector:
    """Builds one cell's outputs from the event stream."""

    def __init__(self, on_output: Callable[[dict[str, Any]], None] | None) -> None:
        self.on_output = on_output
        self.outputs: list[dict[str, Any]] = []
        self.display_ids: dict[int, str] = {}
        self.display_updates: list[dict[str, Any]] = []
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self.callback_error: BaseException | None = None
        self.oversize_dropped_bytes = 0  # outputs dropped whole by the per-output limit
        self.violation: str | None = None
        self._clear_pending = False
        # Text of stream outputs, kept as chunk lists until finish() (joining on every chunk
        # would be quadratic for a flood).
        self._stream_parts: dict[int, list[str]] = {}
        self._cleared = False

    # Called from the C++ core with a batch of (frame type, payload) pairs. Returns False
    # on a malformed message (the core then ends the session).
    def feed(self, events: list[tuple[int, bytes]]) -> bool:
        try:
            for frame_type, payload in events:
                if frame_type == DROPPED_OUTPUT:
                    size = int(payload)
                    self.oversize_dropped_bytes += size
                    self.add_marker(f"\n[sandbox_exec: an output of {size} bytes was dropped: it is "
                                    f"larger than the per-output limit]\n")
                elif frame_type in STREAM_NAMES:
                    self._stream(STREAM_NAMES[frame_type], payload)  # decoded by the core
                else:
                    self._message(parse_message(payload))
        except MalformedMessage as e:
            self.violation = str(e)
            return False
        return True

    def _emit(self, event: dict[str, Any]) -> None:
        if self.on_output is None or self.callback_error is not None:
            return
        try:
            self.on_output(event)
        except BaseException as e:  # the caller's bug: remembered, re-raised after the cell
            self.callback_error = e

    def _clear(self) -> None:
        self._cleared = True
        self.outputs.clear()
        self.display_ids.clear()
        self._stream_parts.clear()

    def _apply_pending_clear(self) -> None:
        if self._clear_pending:
            self._clear_pending = False
            self._clear()

    def _stream(self, name: str, text: str) -> None:
        (self.stdout if name == "stdout" else self.stderr).append(text)
        self._apply_pending_clear()
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last["output_type"] == "stream" and last["name"] == name:
            self._stream_parts[len(self.outputs) - 1].append(text)
        else:
            self._stream_parts[len(self.outputs)] = [text]
            self.outputs.append({"output_type": "stream", "name": name, "text": ""})
        self._emit({"output_type": "stream", "name": name, "text": text})

    def finish(self) -> tuple[list[dict[str, Any]], str, str]:
        """The stored outputs (stream chunks joined, carriage returns applied) and the
        whole stdout and stderr text. When a stream's text is all in one output, that
        output and the concatenated stream share one string: a 100 MB flood is joined once."""
        whole = {"stdout": "".join(self.stdout), "stderr": "".join(self.stderr)}
        per_name: dict[str, int] = {}
        for index in self._stream_parts:
            name = self.outputs[index]["name"]
            per_name[name] = per_name.get(name, 0) + 1
        for index, parts in self._stream_parts.items():
            name = self.outputs[index]["name"]
            if not self._cleared and per_name[name] == 1 and len(parts) == len(getattr(self, name)):
                text = whole[name]
            else:
                text = "".join(parts)
            self.outputs[index]["text"] = apply_carriage_returns(text)
        self._stream_parts.clear()
        return self.outputs, whole["stdout"], whole["stderr"]

    def _message(self, m: dict[str, Any]) -> None:
        kind = m["output_type"]
        if kind == "clear_output":
            if m["wait"]:
                self._clear_pending = True
            else:
                self._clear_pending = False
                self._clear()
            self._emit(m)
            return
        if kind == "update_display_data":
            display_id = m["transient"]["display_id"]
            self.display_updates.append({"display_id": display_id, "data": m["data"], "metadata": m["metadata"]})
            for index, did in self.display_ids.items():
                if did == display_id:
                    self.outputs[index]["data"] = m["data"]
                    self.outputs[index]["metadata"] = m["metadata"]
            self._emit(m)
            return
        self._apply_pending_clear()
        if kind == "display_data" and "transient" in m:
            self.display_ids[len(self.outputs)] = m["transient"]["display_id"]
        self.outputs.append(_stored(m))
        self._emit(m)

    def add_marker(self, text: str) -> None:
        """A notice from the supervisor itself (truncation, crash), shown as stderr."""
        self._stream("stderr", text)
