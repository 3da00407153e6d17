"""Backend side: turning the worker's events into nbformat v4 outputs.

Everything here reads hostile input. Before any of it reaches Python, the supervisor
checked each message in C++ without the GIL (cpp/supervisor/json_guard.h: strict JSON, no NaN or lone
surrogates, bounded depth and containers per byte) and charged it to the cell's output
cap; what failed arrives as a REJECTED event. What passed is parsed with the json module
(never pickle, never eval) and checked against the shapes below; a message of the wrong
shape becomes a marker too, and the cell runs on. ``OutputCollector`` keeps the cell's final
output list (clear_output applied, display updates in place, streams merged as Jupyter
stores them) and hands each event, as it comes, to ``on_output``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from . import _core
from ._json import loads
from .result import (
    ClearOutputEvent,
    DisplayDataOutput,
    DisplayUpdate,
    ErrorInfo,
    ErrorOutput,
    LiveDisplayData,
    LiveExecuteResult,
    MimeBundle,
    Output,
    OutputEvent,
    StreamOutput,
    UpdateDisplayDataEvent,
)

FRAME = _core.frame
STREAM_NAMES: dict[int, Literal["stdout", "stderr"]] = {FRAME.STDOUT: "stdout", FRAME.STDERR: "stderr"}
# Not a frame type the worker can send: the supervisor's own note that it dropped one
# output for being larger than the per-output limit (payload: its size, in decimal).
DROPPED_OUTPUT = _core.DROPPED_OUTPUT_EVENT
# The supervisor's note that one message failed its JSON check (payload: the reason).
REJECTED_OUTPUT = _core.REJECTED_OUTPUT_EVENT
# The supervisor's note that it discarded events sent outside this cell (payload: bytes).
STALE = _core.STALE_EVENT
_MESSAGE = FRAME.MESSAGE
OUTPUT_TYPES = {"display_data", "execute_result", "error", "update_display_data", "clear_output"}

#: What one MESSAGE frame may be: every live event but a stream (streams have frames of their own).
MessageEvent = LiveDisplayData | LiveExecuteResult | ErrorOutput | UpdateDisplayDataEvent | ClearOutputEvent
OnOutput = Callable[[OutputEvent], None]


class CellDone(TypedDict):
    """The worker's end-of-cell report."""

    status: Literal["ok", "error"]
    error: ErrorInfo | None


class MalformedMessage(Exception):
    """The worker sent something that is not a valid output message."""


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise MalformedMessage(what)


def _is_json_value(v: Any) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, dict))


def _mime_bundle(data: Any) -> MimeBundle:
    if not isinstance(data, dict):
        raise MalformedMessage("data must be an object")
    for mime, value in data.items():
        # (an f-string message in _check() would be built for every field, also when it is fine)
        if not (isinstance(mime, str) and 0 < len(mime) < 256 and "/" in mime):
            raise MalformedMessage(f"bad mime type {mime!r}")
        if mime == "application/json" or mime.endswith("+json"):
            if not _is_json_value(value):
                raise MalformedMessage(f"bad {mime} value")
        elif not (isinstance(value, str) or (isinstance(value, list) and all(isinstance(x, str) for x in value))):
            raise MalformedMessage(f"{mime} must be text")
    return data


def _json_metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedMessage("metadata must be an object")
    return value


def _display_id(message: dict[str, Any], required: bool) -> str | None:
    transient = message.get("transient")
    if transient is None:
        if required:
            raise MalformedMessage("update_display_data without a display_id")
        return None
    _check(isinstance(transient, dict), "transient must be an object")
    display_id = transient.get("display_id")
    if display_id is None:
        _check(not required, "update_display_data without a display_id")
        return None
    if not (isinstance(display_id, str) and 0 < len(display_id) <= 256):
        raise MalformedMessage("bad display_id")
    return display_id


def _error_info(m: dict[str, Any], what: str) -> ErrorInfo:
    ename, evalue, tb = m.get("ename"), m.get("evalue"), m.get("traceback")
    if not (isinstance(ename, str) and isinstance(evalue, str)):
        raise MalformedMessage(f"bad {what}")
    if not (isinstance(tb, list) and all(isinstance(x, str) for x in tb)):
        raise MalformedMessage(f"bad {what}")
    return {"ename": ename, "evalue": evalue, "traceback": list(tb)}


def parse_json(payload: bytes) -> dict[str, Any]:
    try:
        value = loads(payload)
    except (ValueError, RecursionError) as e:
        raise MalformedMessage(f"invalid JSON: {e}") from None
    if not isinstance(value, dict):
        raise MalformedMessage("a message must be a JSON object")
    return value


def parse_message(payload: bytes) -> MessageEvent:
    """Validates one MESSAGE frame; returns it in Jupyter's live (iopub) shape."""
    m = parse_json(payload)
    kind = m.get("output_type")
    if not isinstance(kind, str) or kind not in OUTPUT_TYPES:  # a list or object is unhashable
        raise MalformedMessage(f"unknown output_type {kind!r}")
    if kind == "clear_output":
        wait = m.get("wait")
        if not isinstance(wait, bool):
            raise MalformedMessage("clear_output.wait must be a boolean")
        return {"output_type": "clear_output", "wait": wait}
    if kind == "error":
        error = _error_info(m, "error")
        return {
            "output_type": "error",
            "ename": error["ename"],
            "evalue": error["evalue"],
            "traceback": error["traceback"],
        }
    data = _mime_bundle(m.get("data"))
    metadata = _json_metadata(m.get("metadata", {}))
    display_id = _display_id(m, required=kind == "update_display_data")
    out: LiveDisplayData | LiveExecuteResult
    if kind == "update_display_data":
        if display_id is None:  # _display_id() raised already; this tells the type checker
            raise MalformedMessage("update_display_data without a display_id")
        return {
            "output_type": "update_display_data",
            "data": data,
            "metadata": metadata,
            "transient": {"display_id": display_id},
        }
    if kind == "execute_result":
        count = m.get("execution_count")
        if not isinstance(count, int):
            raise MalformedMessage("execute_result needs execution_count")
        out = {"output_type": "execute_result", "data": data, "metadata": metadata, "execution_count": count}
    else:
        out = {"output_type": "display_data", "data": data, "metadata": metadata}
    if display_id is not None:
        out["transient"] = {"display_id": display_id}
    return out


# The supervisor's rebuilt report of a cell without an error (nlohmann::json writes its keys
# sorted): {"execution_count":<n>,"status":"ok"}.
_OK_DONE_HEAD = b'{"execution_count":'
_OK_DONE_TAIL = b',"status":"ok"}'


def parse_cell_done(payload: bytes) -> CellDone:
    """The end-of-cell report, as the supervisor rebuilt it (cpp/supervisor/json_guard.h): a status,
    and an error of strings when the status is "error"."""
    if payload.endswith(_OK_DONE_TAIL) and payload.startswith(_OK_DONE_HEAD):
        # Most cells: the report above, told from its bytes (a count of ASCII digits, no
        # leading zero, as JSON writes it) without parsing it; anything else is parsed.
        count = payload[len(_OK_DONE_HEAD) : -len(_OK_DONE_TAIL)]
        if count.isdigit() and (count[0] != 0x30 or len(count) == 1):
            return {"status": "ok", "error": None}
    return parse_cell_done_json(payload)


def parse_cell_done_json(payload: bytes) -> CellDone:
    """parse_cell_done() of any report, parsed as JSON (the general path)."""
    m = parse_json(payload)
    status = m.get("status")
    if status not in ("ok", "error"):
        raise MalformedMessage("bad cell status")
    error = m.get("error")
    if error is None:
        return {"status": status, "error": None}
    if not isinstance(error, dict):
        raise MalformedMessage("bad cell error")
    return {"status": status, "error": _error_info(error, "cell error")}


def _printable(text: str, limit: int = 300) -> str:
    """A worker's words in a marker: control characters escaped, length bounded."""
    text = text[:limit]
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def apply_carriage_returns(text: str) -> str:
    """A carriage return followed by more text on its line overwrites the line, as a
    terminal (and Jupyter's output area, before it stores a notebook) shows it; nbconvert's
    coalesce_streams does the same. Line by line, linear in the text (a regex with
    backtracking was quadratic on a long line: the adversarial suite froze the backend)."""
    if "\r" not in text:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if "\r" in line:
            cut = line.rstrip("\r").rfind("\r")
            if cut >= 0:
                lines[i] = line[cut + 1 :]
    return "\n".join(lines)


def _stored(output: MessageEvent) -> Output:
    """The nbformat (stored) form of a live display_data, execute_result or error: no transient."""
    if output["output_type"] == "display_data":
        return {"output_type": "display_data", "data": output["data"], "metadata": output["metadata"]}
    if output["output_type"] == "execute_result":
        return {
            "output_type": "execute_result",
            "execution_count": output["execution_count"],
            "data": output["data"],
            "metadata": output["metadata"],
        }
    if output["output_type"] == "error":
        return {
            "output_type": "error",
            "ename": output["ename"],
            "evalue": output["evalue"],
            "traceback": output["traceback"],
        }
    raise AssertionError(f"not an output: {output['output_type']}")


class OutputCollector:
    """Builds one cell's outputs from the event stream."""

    # One per cell, on every cell's path: slots make its making and its attributes cheaper.
    __slots__ = (
        "_by_display_id",
        "_clear_pending",
        "_latest",
        "_stream_spans",
        "callback_error",
        "display_ids",
        "display_updates",
        "execution_count",
        "on_output",
        "outputs",
        "oversize_dropped_bytes",
        "rejected",
        "texts",
        "violation",
    )

    def __init__(self, on_output: OnOutput | None, execution_count: int | None = None) -> None:
        self.on_output = on_output
        # The cell's own count: an execute_result carries it whatever the worker said.
        self.execution_count = execution_count
        self.outputs: list[Output] = []
        self.display_ids: dict[int, str] = {}
        self.display_updates: list[DisplayUpdate] = []
        # Each stream's whole text, built in place by the core (cpp/python/stream_text.h); stream
        # outputs refer to it by [start, end) character offsets until finish().
        self.texts = {"stdout": _core.StreamText(), "stderr": _core.StreamText()}
        self.callback_error: BaseException | None = None
        self.oversize_dropped_bytes = 0  # outputs dropped whole by the per-output limit
        self.violation: str | None = None
        self.rejected = 0  # messages that failed the supervisor's or the shape check
        self._clear_pending = False
        # output index -> (that stream output, its [start, end) in the whole stream)
        self._stream_spans: dict[int, tuple[StreamOutput, list[int]]] = {}
        self._by_display_id: dict[str, list[DisplayDataOutput]] = {}  # display id -> its outputs
        self._latest: dict[str, tuple[MimeBundle, dict[str, Any]]] = {}  # id -> newest content

    def abandon(self) -> None:
        """The session is being closed under this cell: no more events go to ``on_output``
        (a slow listener would hold close(), and so the backend's exit, once per event the
        core still has to hand over); what arrives is still collected."""
        self.on_output = None

    @property
    def live(self) -> bool:
        """Whether the core should hand over each chunk's text (someone listens live)."""
        return self.on_output is not None

    # Called from the C++ core with a batch of events: (stream type, start, end, text or
    # None) or (message type, payload). A message that fails a check becomes a marker and
    # the cell runs on (only a broken ring ends the session); returns True.
    def feed(self, events: list[tuple[Any, ...]]) -> bool:
        for event in events:
            frame_type = event[0]
            if frame_type == _MESSAGE:  # the most common event first (an execute_result, a display)
                try:
                    message = parse_message(event[1])
                except MalformedMessage as e:
                    self._rejected(str(e))
                    continue
                self._message(message)
            elif frame_type in STREAM_NAMES:
                _, start, end, text = event
                self._stream(STREAM_NAMES[frame_type], start, end, text)
            elif frame_type == DROPPED_OUTPUT:
                size = int(event[1])
                self.oversize_dropped_bytes += size
                self.add_marker(
                    f"\n[sandbox_exec: an output of {size} bytes was dropped: it is larger than the per-output limit]\n"
                )
            elif frame_type == STALE:
                self.add_marker(
                    f"\n[sandbox_exec: {int(event[1])} bytes the worker sent outside this cell "
                    f"(between cells, or an end-of-cell report for another cell) were discarded]\n"
                )
            elif frame_type == REJECTED_OUTPUT:
                self._rejected(bytes(event[1]).decode("utf-8", "replace"))
            else:  # the core hands over no other event type; parsed (and checked) all the same
                try:
                    message = parse_message(event[1])
                except MalformedMessage as e:
                    self._rejected(str(e))
                    continue
                self._message(message)
        return True

    def _rejected(self, reason: str) -> None:
        self.rejected += 1
        self.add_marker(f"\n[sandbox_exec: an output was rejected: {_printable(reason)}]\n")

    def _emit(self, event: OutputEvent) -> None:
        if self.on_output is None or self.callback_error is not None:
            return
        try:
            # A copy: the event's nested data is the stored output's too, and what a listener
            # does to its event must not change the Result. Strings are shared (immutable).
            self.on_output(copy.deepcopy(event))
        except KeyboardInterrupt:
            # A Ctrl-C of the backend that arrived while the callback ran: it interrupts the
            # cell (the core keeps it and raises it once the cell has ended), as one that
            # arrives while the core waits does.
            raise
        except BaseException as e:  # the caller's bug: remembered, re-raised after the cell
            self.callback_error = e

    def _clear(self) -> None:
        self.outputs.clear()
        self.display_ids.clear()
        self._by_display_id.clear()
        self._latest.clear()
        self._stream_spans.clear()

    def _apply_pending_clear(self) -> None:
        if self._clear_pending:
            self._clear_pending = False
            self._clear()

    def _stream(self, name: Literal["stdout", "stderr"], start: int, end: int, text: str | None) -> None:
        self._apply_pending_clear()
        last = self._stream_spans.get(len(self.outputs) - 1)
        if last is not None and last[0]["name"] == name:
            last[1][1] = end
        else:
            output: StreamOutput = {"output_type": "stream", "name": name, "text": ""}
            self._stream_spans[len(self.outputs)] = (output, [start, end])
            self.outputs.append(output)
        if text is not None:
            self._emit({"output_type": "stream", "name": name, "text": text})

    def finish(self) -> tuple[list[Output], str, str]:
        """The stored outputs (stream text cut from its whole stream, carriage returns
        applied) and the whole stdout and stderr. An output holding all of its stream shares
        that one string: a 100 MB flood is not copied again here."""
        texts = self.texts
        whole = {"stdout": texts["stdout"].value(), "stderr": texts["stderr"].value()}
        for display_id, (data, metadata) in self._latest.items():
            for output in self._by_display_id[display_id]:
                output["data"] = data
                output["metadata"] = metadata
        if self._stream_spans:
            for stream, (start, end) in self._stream_spans.values():
                name = stream["name"]
                text = whole[name][start:end]  # the whole range is the same object, no copy
                stream["text"] = apply_carriage_returns(text) if texts[name].has_cr else text
            self._stream_spans.clear()
        return self.outputs, whole["stdout"], whole["stderr"]

    def _message(self, m: MessageEvent) -> None:
        if m["output_type"] == "clear_output":
            if m["wait"]:
                self._clear_pending = True
            else:
                self._clear_pending = False
                self._clear()
            self._emit(m)
            return
        if m["output_type"] == "update_display_data":
            display_id = m["transient"]["display_id"]
            self.display_updates.append({"display_id": display_id, "data": m["data"], "metadata": m["metadata"]})
            self._update_in_place(display_id, m["data"], m["metadata"])
            self._emit(m)
            return
        if self._clear_pending:
            self._apply_pending_clear()
        if m["output_type"] == "execute_result" and self.execution_count is not None:
            m["execution_count"] = self.execution_count
        stored = _stored(m)
        if "transient" in m and m["output_type"] == "display_data" and stored["output_type"] == "display_data":
            display_id = m["transient"]["display_id"]
            # Displaying again with an id updates every earlier output with that id, as
            # Jupyter frontends and nbclient do; the caller applies it to earlier cells.
            self._update_in_place(display_id, m["data"], m["metadata"])
            self.display_ids[len(self.outputs)] = display_id
            self._by_display_id.setdefault(display_id, []).append(stored)
        self.outputs.append(stored)
        if self.on_output is not None:
            self._emit(m)

    def _update_in_place(self, display_id: str, data: MimeBundle, metadata: dict[str, Any]) -> None:
        # O(1): every output with this id shows the latest content, applied once in finish()
        # (n displays and n updates must not cost n^2 in the backend).
        if display_id in self._by_display_id:
            self._latest[display_id] = (data, metadata)

    def add_error(self, error: ErrorInfo) -> None:
        """An error output of the supervisor's own (why it ended the cell)."""
        self._message(
            {
                "output_type": "error",
                "ename": error["ename"],
                "evalue": error["evalue"],
                "traceback": error["traceback"],
            }
        )

    def add_marker(self, text: str) -> None:
        """A notice from the supervisor itself (truncation, crash), shown as stderr."""
        start, end = self.texts["stderr"].append(text)
        self._stream("stderr", start, end, text)
