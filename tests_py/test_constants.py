"""The facts Python and C++ share are defined once, in C++, and read from _core."""

from __future__ import annotations

import pytest

from sandbox_exec import _core, sandbox

pytestmark = pytest.mark.a


def test_every_way_a_cell_can_end_has_a_status():
    # A CellEnd added in C++ fails here until Python decides what status it is.
    handled_elsewhere = {"done", "violation", "crashed"}
    assert set(_core.CELL_ENDS) == handled_elsewhere | set(sandbox._END_STATUS)
    assert len(set(_core.CELL_ENDS)) == len(_core.CELL_ENDS)


def test_python_reads_the_cores_limits():
    assert sandbox.MAX_MESSAGE_BYTES == _core.MAX_MESSAGE_BYTES == 64 << 20
    # The rings: powers of two, and one frame fits in the event ring with room to spare.
    for size in (_core.REQUEST_RING_BYTES, _core.EVENT_RING_BYTES):
        assert size > 0 and size & (size - 1) == 0
    assert 0 < _core.MAX_FRAME_PAYLOAD_BYTES < _core.EVENT_RING_BYTES


def test_the_sandbox_hostname_is_the_cores(session):
    r = session.run("import socket\nsocket.gethostname()")
    assert r.outputs[-1]["data"]["text/plain"] == repr(_core.SANDBOX_HOSTNAME)


def test_the_sandboxs_core_speaks_the_backends_protocol(session):
    # The handshake itself (a worker of another version refused) is shown in C++:
    # tests_cpp/supervisor/cell_runner_test.cc, WorkerOfAnotherProtocolVersionIsRefused. Here:
    # the worker's Python imports the same _core build as the backend, inside the sandbox.
    r = session.run("from sandbox_exec import _core\n(_core.PROTOCOL_VERSION, _core.__version__)")
    assert r.outputs[-1]["data"]["text/plain"] == repr((_core.PROTOCOL_VERSION, _core.__version__))


def test_a_misspelled_log_level_is_refused_not_silencing():
    with pytest.raises(ValueError, match="log level"):
        _core.set_log_level("DEBUG")
    _core.set_log_level("warn")
