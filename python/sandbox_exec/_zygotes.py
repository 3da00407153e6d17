"""Zygotes: the backend's side of warm starts.

A zygote (``_worker/zygote.py``) is an interpreter that has run a session prelude and forks
session workers on request; each forked session is contained exactly as a cold one (the
launcher's steps, run by the zygote's forked keeper). A Sandbox keeps one zygote per
*shape*: the prelude and the worker environment its sessions get (the policy's env, figure
settings and thread-pool sizes), minus what is per session (HOME). Sessions of one shape
share the zygote's loaded modules copy-on-write.

The zygote runs the prelude outside any sandbox, with the backend's privileges: a prelude
is the backend's own trusted code (imports, helpers, seeds), as the API says; never a
user's cell. Its scratch directories (HOME, caches, TMPDIR while it imports) live under
``<Sandbox root>/.zygotes``; matplotlib's font cache there is built once per root and kept.

A zygote that cannot serve (it died, it could not settle to one thread, it left descriptors
open, it did not answer) is reported and replaced; a session that cannot get one starts
cold and says why (``Session.enforcement["start"]``).
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _core
from .errors import PreludeError

#: The largest start report a zygote sends (its MAX_REPORT_BYTES).
_MAX_REPORT_BYTES = 64 * 1024
#: Environment variables that are per session, not per shape: the zygote gets its own.
_PER_SESSION = ("HOME",)
#: Zygotes kept per Sandbox (each holds its prelude's modules, ~100 MB with the data stack):
#: past this many shapes the least recently used one is closed (its sessions live on).
MAX_ZYGOTES = 8


class ZygoteUnavailable(Exception):
    """No zygote can serve this shape now; the message says why (a cold start follows)."""


def shape_key(prelude: str, env: list[str]) -> str:
    """The zygote a session uses: its prelude and its environment minus per-session values."""
    shared = sorted(e for e in env if e.partition("=")[0] not in _PER_SESSION)
    digest = hashlib.sha256(json.dumps([prelude, shared]).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()[:16]


@dataclass
class Zygote:
    key: str
    process: subprocess.Popen[bytes]
    link: _core.ZygoteLink
    last_used: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def close(self, timeout: float = 2.0) -> None:
        """Closes the link (the zygote exits on EOF; its sessions go on) and reaps it."""
        self.link.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _zygote_env(env: list[str], scratch: Path) -> dict[str, str]:
    out = {}
    for item in env:
        k, sep, v = item.partition("=")
        if sep:
            out[k] = v
    # Where the zygote writes while it imports: never the host's /tmp or a session's dir.
    out["HOME"] = str(scratch / "home")
    out["MPLCONFIGDIR"] = str(scratch.parent / "matplotlib")
    out["XDG_CACHE_HOME"] = str(scratch.parent / "cache")
    out["TMPDIR"] = str(scratch / "tmp")
    return out


def start_zygote(key: str, prelude: str, env: list[str], root: Path, timeout_s: float) -> Zygote:
    """Starts a zygote and waits for its report. Raises PreludeError when the prelude fails
    (as a cold session would), ZygoteUnavailable when the zygote cannot serve."""
    scratch = root / ".zygotes" / key
    for d in ("home", "tmp"):
        (scratch / d).mkdir(parents=True, exist_ok=True, mode=0o700)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    prelude_read, prelude_write = os.pipe()
    try:
        process = subprocess.Popen(
            [
                sys.executable,
                "-I",
                "-m",
                "sandbox_exec._worker.zygote",
                str(theirs.fileno()),
                str(prelude_read),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(theirs.fileno(), prelude_read),
            env=_zygote_env(env, scratch),
            cwd=str(scratch / "home"),
            start_new_session=True,  # a Ctrl-C at the backend's terminal is not the zygote's
        )
    except OSError as e:
        ours.close()
        raise ZygoteUnavailable(f"the zygote could not be started: {e}") from e
    finally:
        theirs.close()
        os.close(prelude_read)
    try:
        with os.fdopen(prelude_write, "wb") as w:
            w.write(prelude.encode("utf-8", "surrogatepass"))
    except OSError:
        pass  # it died at once: its report (none) says so below
    try:
        report = _read_report(ours, process, timeout_s)
        status = report.get("status")
        if status == "error" and isinstance(report.get("error"), dict):
            error = report["error"]
            tb = error.get("traceback")
            detail = "\n".join(str(line) for line in tb) if isinstance(tb, list) else str(error.get("evalue"))
            raise PreludeError(f"the prelude ended with status 'error':\n{detail}")
        if status != "ok":
            raise ZygoteUnavailable(str(report.get("reason") or f"the zygote reported {status!r}"))
        link = _core.ZygoteLink(ours.fileno())
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        ours.close()  # the link holds its own duplicate
    return Zygote(key, process, link)


def _read_report(sock: socket.socket, process: subprocess.Popen[bytes], timeout_s: float) -> dict[str, Any]:
    # poll, not select: a backend holding a thousand descriptors (many sessions) gets socket
    # numbers past select's FD_SETSIZE (1024), where select raises ValueError.
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    if not poller.poll(timeout_s * 1000):
        raise ZygoteUnavailable(f"the zygote did not report within {timeout_s:g} s")
    data = sock.recv(_MAX_REPORT_BYTES)
    if not data:
        process.wait()
        raise ZygoteUnavailable(f"the zygote exited before reporting (status {process.returncode})")
    try:
        report = json.loads(data)
    except ValueError as e:
        raise ZygoteUnavailable("the zygote's report is not JSON") from e
    if not isinstance(report, dict):
        raise ZygoteUnavailable("the zygote's report is not an object")
    return report


class ZygoteTable:
    """A Sandbox's zygotes, one per shape; thread-safe."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._by_key: dict[str, Zygote] = {}
        self._starting: dict[str, threading.Lock] = {}
        self.closed = False

    def get(self, prelude: str, env: list[str], timeout_s: float) -> Zygote:
        """The live zygote of this shape, started (or replaced) if needed."""
        key = shape_key(prelude, env)
        with self._lock:
            if self.closed:
                raise ZygoteUnavailable("the Sandbox is closing")
            starting = self._starting.setdefault(key, threading.Lock())
        with starting:  # one start per shape at a time; other shapes go on
            with self._lock:
                z = self._by_key.get(key)
            if z is not None and z.alive():
                z.last_used = time.monotonic()
                return z
            if z is not None:
                self.discard(z)
            z = start_zygote(key, prelude, env, self.root, timeout_s)
            z.last_used = time.monotonic()
            with self._lock:
                if self.closed:
                    z.close()
                    raise ZygoteUnavailable("the Sandbox is closing")
                self._by_key[key] = z
                excess = sorted(self._by_key.values(), key=lambda x: x.last_used)[
                    : max(0, len(self._by_key) - MAX_ZYGOTES)
                ]
                for old in excess:
                    del self._by_key[old.key]
            for old in excess:
                old.close(timeout=0.5)  # not replaced: only too many shapes at once
            return z

    def discard(self, z: Zygote) -> None:
        """Stops using `z` (dead or failing); the next get() starts a new one."""
        with self._lock:
            if self._by_key.get(z.key) is z:
                del self._by_key[z.key]
        z.close(timeout=0.5)

    def live(self) -> list[Zygote]:
        with self._lock:
            return [z for z in self._by_key.values() if z.alive()]

    def close(self) -> None:
        with self._lock:
            self.closed = True
            zygotes = list(self._by_key.values())
            self._by_key.clear()
        for z in zygotes:
            z.close()
