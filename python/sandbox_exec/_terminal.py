"""Text a cell controls, made safe to print on the operator's terminal.

A cell decides its exception's class name and message, its outputs and (through the
workdir) file names. Printed raw, escape sequences in them retitle the terminal, write the
clipboard (OSC 52), clear the screen, or move the cursor back to overwrite an earlier line
with a fake ``[9/9] ok``. Everything the command line prints that a cell may control goes
through :func:`escape_controls`.
"""

from __future__ import annotations

import re

__all__ = ["escape_controls"]

# C0 controls (tab included), DEL, C1 controls, lone surrogates (cannot be encoded), the
# line and paragraph separators, and the bidirectional overrides and isolates (which
# reorder what is shown). A carriage return is kept only right before a newline; a newline
# is kept only in multi-line text.
_UNSAFE = re.compile(
    "\r(?!\n)|[\x00-\x09\x0b-\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e"
    "\u2066-\u2069\u200e\u200f\u061c\ud800-\udfff]"
)
_UNSAFE_ONE_LINE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c\ud800-\udfff]"
)


def _escape(match: re.Match[str]) -> str:
    c = match.group()
    code = ord(c)
    if code == 0x0A:
        return "\\n"
    if code == 0x0D:
        return "\\r"
    if code == 0x09:
        return "\\t"
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape_controls(text: object, *, multiline: bool = True) -> str:
    """``text`` (str() of it) with every terminal control written as a visible escape
    (``\\x1b``, ``\\x9b``, ``\\r``, ``\\ud800``, ...). ``multiline``: newlines (and CR LF)
    are kept; otherwise they are escaped too, so one line stays one line."""
    s = text if isinstance(text, str) else str(text)
    return (_UNSAFE if multiline else _UNSAFE_ONE_LINE).sub(_escape, s)
