"""_core as a guest in someone else's process, and the one version the package reports.

A backend loads _core next to its own extensions (pyzmq's libzmq, pandas, numpy). If _core
exported its copies of the C++ runtime's or its static libraries' symbols, the dynamic
linker could bind those libraries to them instead of libstdc++'s (a mismatched ABI: a crash
in libzmq's I/O thread, far from us). So _core exports PyInit__core alone, and both of our
binaries need only the C and C++ runtime libraries (what the wheel can count on: see
scripts/wheel_smoke.sh for the same checks on the built wheel, away from this checkout).
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import textwrap

import pytest

import sandbox_exec
from sandbox_exec import _core
from sandbox_exec.sandbox import launcher_path

# libc, libm, libstdc++, libgcc_s and the dynamic loader: on every glibc system that runs C++.
RUNTIME = re.compile(
    r"(libc\.so\.6|libm\.so\.6|libstdc\+\+\.so\.6|libgcc_s\.so\.1"
    r"|ld-linux[-a-z0-9_.]*\.so\.\d+)"
)


def dynamic_exports(path: str) -> list[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=True).stdout
    return sorted({line.split()[-1] for line in out.splitlines() if line.strip()})


def needed(path: str) -> list[str]:
    out = subprocess.run(["readelf", "-d", path], capture_output=True, text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


@pytest.mark.a
def test_core_exports_only_its_init_function():
    assert dynamic_exports(_core.__file__) == ["PyInit__core"]


@pytest.mark.a
@pytest.mark.parametrize("binary", ["_core", "sandbox_exec_launcher"])
def test_binaries_need_only_the_c_and_cxx_runtime(binary):
    path = _core.__file__ if binary == "_core" else launcher_path()
    libs = needed(path)
    assert libs, f"readelf found no NEEDED entries in {path}: not a dynamic ELF file?"
    assert [lib for lib in libs if not RUNTIME.fullmatch(lib)] == [], libs


@pytest.mark.a
def test_one_version_everywhere():
    assert sandbox_exec.__version__ == importlib.metadata.version("sandbox_exec") == _core.__version__


# One process, as a notebook backend runs: sessions (the supervisor's threads, _core loaded)
# and a Jupyter kernel client (pyzmq: libzmq and its I/O thread) and pandas, in both orders,
# with a session open while the other side is busy.
CHILD = textwrap.dedent("""
    import sys
    from pathlib import Path

    order, root, runtime_dir = sys.argv[1], Path(sys.argv[2]), sys.argv[3]

    def sessions(box):
        closed = box.session("closed")
        r = closed.run("x = 6 * 7\\nx")
        assert r.status == "ok" and r.outputs[-1]["data"]["text/plain"] == "42", r
        closed.close()
        left_open = box.session("open")
        r = left_open.run("import json\\nprint(json.dumps({'y': 1}))")
        assert r.status == "ok" and r.stdout == '{"y": 1}\\n', r
        return left_open

    def jupyter():
        import os
        os.environ["JUPYTER_RUNTIME_DIR"] = runtime_dir
        from jupyter_client import KernelManager
        km = KernelManager(kernel_name="python3")
        km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=120)
            msg_id = kc.execute("1+1")
            while True:
                msg = kc.get_iopub_msg(timeout=60)
                if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "execute_result":
                    assert msg["content"]["data"]["text/plain"] == "2", msg
                    break
            reply = kc.get_shell_msg(timeout=60)
            assert reply["content"]["status"] == "ok", reply
        finally:
            kc.stop_channels()
            km.shutdown_kernel(now=True)

    def pandas_frame():
        import pandas as pd
        df = pd.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]})
        assert df["a"].sum() == 6 and list(df.columns) == ["a", "b"]

    import sandbox_exec
    with sandbox_exec.Sandbox(root=root) as box:
        if order == "sessions-first":
            left_open = sessions(box)
            jupyter()
            pandas_frame()
        else:
            jupyter()
            pandas_frame()
            left_open = sessions(box)
            jupyter()  # libzmq's threads again, with a session open
        r = left_open.run("print('still here')")  # the open session survived the other side
        assert r.status == "ok" and r.stdout == "still here\\n", r
    print("child done")
""")


@pytest.mark.c
@pytest.mark.jupyter
@pytest.mark.parametrize("order", ["sessions-first", "jupyter-first"])
def test_sessions_and_a_jupyter_client_and_pandas_share_one_process(order, tmp_path):
    root, runtime_dir = tmp_path / "sessions", tmp_path / "jupyter-runtime"
    root.mkdir()
    runtime_dir.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, order, str(root), str(runtime_dir)], capture_output=True, text=True, timeout=400
    )
    # A negative return code is the signal that killed it (-11: the segfault this guards against).
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    assert proc.stdout.rstrip().endswith("child done"), proc.stdout
