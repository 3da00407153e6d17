"""The seccomp filter is an allow list (cpp/launcher/seccomp_filter.cc): a syscall it does not name
fails with ENOSYS, the "denied on purpose" set with EPERM, and socket()/socketpair() accept
AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK/NETLINK_ROUTE only.

Two halves:

  workloads (ladder B)  real notebook work, run as cells with the filter on (the default
                        policy; each cell first checks Seccomp: 2 and that an unlisted syscall
                        is ENOSYS, so it really ran under the allow list): the existing suites
                        (test_execution, test_rich_output, conformance, test_adversarial,
                        test_layers) run their default-policy sessions under it (checked on
                        their fixture), numpy/pandas/matplotlib, threads,
                        multiprocessing (fork, spawn), subprocess, ``!ls``, asyncio, loopback
                        sockets, clocks, mmap, signals, sendfile, select/poll/epoll, getrandom.

  attacks (ladder C)    case                                          control
                        --------------------------------------------  ------------------------------
                        AF_VSOCK socket (vsock is in no network        the same cell with seccomp off
                        namespace: host services, the hypervisor)      creates one (the namespaces do
                                                                       not stop it), and so does
                                                                       python -c on the host
                        AF_PACKET, AF_ALG, AF_KEY, netlink other than  python -c on the host creates
                        NETLINK_ROUTE (uevent, audit, xfrm, ...)       them (root); AF_ALG and AF_KEY,
                                                                       absent from this VM's kernel,
                                                                       fail there with EAFNOSUPPORT
                        syscalls on no list: get_robust_list,          python -c on the host: they
                        lsm_list_modules, listmount (newer than the    work there (a made-up number,
                        filter's libseccomp), a made-up number          1000, is ENOSYS everywhere:
                                                                       shown only to prove the default
                                                                       action is an errno, not a kill)
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import textwrap

import pytest

import sandbox_exec
from sandbox_exec import Policy

#: Prepended to every cell: the same helpers inside the sandbox and in the control run.
PRELUDE = r"""
import ctypes, errno, json, os, socket, sys
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
def syscall(nr, *args):
    ctypes.set_errno(0)
    rc = _libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) if isinstance(a, int) else a for a in args])
    return {"rc": rc, "errno": ctypes.get_errno()}
def make_socket(family, kind, proto=0):
    try:
        socket.socket(family, kind, proto).close()
        return {"ok": True, "errno": None}
    except OSError as e:
        return {"ok": False, "errno": e.errno}
def report(**kw):
    print("REPORT " + json.dumps(kw), flush=True)
"""

#: Proves a cell runs under *this* filter: seccomp mode 2, and get_robust_list (on no list,
#: allowed by the old deny list and by the kernel) answers ENOSYS.
UNDER_ALLOW_LIST = (
    PRELUDE
    + r"""
_status = dict(l.split(":\t", 1) for l in open("/proc/self/status").read().splitlines() if ":\t" in l)
assert _status["Seccomp"].strip() == "2", _status["Seccomp"]
_head, _len = ctypes.c_long(), ctypes.c_size_t()
_r = syscall(274, 0, ctypes.byref(_head), ctypes.byref(_len))  # get_robust_list
assert _r == {"rc": -1, "errno": errno.ENOSYS}, _r
"""
)


def parse_report(text: str) -> dict:
    lines = [line for line in text.splitlines() if line.startswith("REPORT ")]
    assert lines, text[-3000:]
    return json.loads(lines[-1][len("REPORT ") :])


def run_cell(s: sandbox_exec.Session, body: str, *, timeout: float = 120) -> sandbox_exec.Result:
    """Runs `body` under the allow list (checked first); the cell must succeed."""
    r = s.run(UNDER_ALLOW_LIST + textwrap.dedent(body), timeout=timeout)
    assert r.status == "ok", (r.status, r.reason, r.error, r.stdout[-3000:], r.stderr[-3000:])
    return r


def run_attack(s: sandbox_exec.Session, code: str, *, timeout: float = 60) -> dict:
    """Runs an attack as is (no fingerprint check: it must fail on its own merits)."""
    r = s.run(code, timeout=timeout)
    assert r.status == "ok", (r.status, r.reason, r.error, r.stdout[-3000:], r.stderr[-3000:])
    return parse_report(r.stdout)


def control(code: str, *, timeout: float = 60) -> dict:
    """The same code without the sandbox: plain python -c, as this same user."""
    cp = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    assert cp.returncode == 0, (cp.returncode, cp.stdout[-3000:], cp.stderr[-3000:])
    return parse_report(cp.stdout)


def sc_failed(outcome: dict, err: int) -> bool:
    return outcome["rc"] == -1 and outcome["errno"] == err


# ----------------------------------------------------------------------------------------
# Workloads: the existing suites, with the filter on (the default policy)
# ----------------------------------------------------------------------------------------


@pytest.mark.a
def test_default_policy_has_the_filter_on():
    assert Policy().seccomp is True


@pytest.mark.b
def test_the_whole_suite_runs_under_the_allow_list(sandbox):
    """Every other test (execution, rich output, conformance notebooks, adversarial, layers)
    runs its cells through the default Policy, so under this filter: shown here on the same
    fixture those suites use. (Running the suites again in a child pytest would only repeat
    them.)"""
    s = sandbox.session("filter-check")
    try:
        r = s.run(
            "import ctypes, errno\n"
            "status = open('/proc/self/status').read()\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "rc = libc.syscall(274, 0, 0, 0)  # get_robust_list: on no list\n"
            "(status.split('Seccomp:')[1].split()[0], rc, errno.errorcode[ctypes.get_errno()])"
        )
        assert r.status == "ok", r.error
        assert r.outputs[0]["data"]["text/plain"] == "('2', -1, 'ENOSYS')"
    finally:
        s.close()


# ----------------------------------------------------------------------------------------
# Workloads: real notebook work as cells
# ----------------------------------------------------------------------------------------


@pytest.mark.b
def test_numpy_pandas_matplotlib(session):
    r = run_cell(
        session,
        """
    import numpy as np, pandas as pd, matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    a = np.random.default_rng(0).normal(size=(200, 3))
    df = pd.DataFrame(a, columns=list("xyz"))
    df["g"] = np.arange(200) % 4
    summary = df.groupby("g").mean()
    fig, ax = plt.subplots()
    df.plot(x="x", y="y", kind="scatter", ax=ax)
    fig.savefig("plot.png")
    with open("plot.png", "rb") as f:
        head = f.read(8)
    report(shape=list(summary.shape), png=head == b"\\x89PNG\\r\\n\\x1a\\n", size=os.path.getsize("plot.png"),
           inv=float(np.linalg.inv(np.eye(3) * 2)[0, 0]))
    """,
    )
    rep = parse_report(r.stdout)
    assert rep["shape"] == [4, 3] and rep["png"] and rep["size"] > 1000 and rep["inv"] == 0.5, rep


@pytest.mark.b
def test_threads(session):
    r = run_cell(
        session,
        """
    import threading, concurrent.futures
    results = []
    lock = threading.Lock()
    def work(i):
        with lock:
            results.append(i * i)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads: t.start()
    for t in threads: t.join()
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        total = sum(ex.map(lambda x: x + 1, range(1000)))
    report(n=len(results), total=total, native=threading.get_native_id() > 0)
    """,
    )
    assert parse_report(r.stdout) == {"n": 16, "total": 500500, "native": True}


@pytest.mark.b
@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_pool(session, method):
    # The pool's function lives in a module file: spawn needs to import it by name.
    r = run_cell(
        session,
        f"""
    import multiprocessing as mp
    with open("sc_pool_mod.py", "w") as f:
        f.write("import os\\ndef square(x):\\n    return x * x, os.getpid()\\n")
    sys.path.insert(0, os.getcwd())
    import sc_pool_mod
    ctx = mp.get_context({method!r})
    with ctx.Pool(3) as pool:
        out = pool.map(sc_pool_mod.square, range(20))
    q = ctx.Queue()
    p = ctx.Process(target=q.put, args=("hello",))
    p.start(); got = q.get(timeout=60); p.join(60)
    lock = ctx.Lock()
    with lock:
        pass
    report(values=[v for v, _ in out], pids=len({{pid for _, pid in out}}) >= 1,
           other=all(pid != os.getpid() for _, pid in out), got=got, code=p.exitcode)
    """,
        timeout=180,
    )
    rep = parse_report(r.stdout)
    assert rep["values"] == [i * i for i in range(20)] and rep["other"], rep
    assert rep["got"] == "hello" and rep["code"] == 0, rep


@pytest.mark.b
def test_subprocess_shell(session):
    r = run_cell(
        session,
        """
    import subprocess
    open("marker.txt", "w").write("x")
    cp = subprocess.run(["/bin/sh", "-c", "ls; cat"], input="from-stdin\\n", capture_output=True, text=True, timeout=60)
    out = subprocess.check_output("echo $((6*7)) | cat", shell=True, text=True)
    p = subprocess.Popen(["sleep", "0.1"]); p.wait(60)
    report(rc=cp.returncode, out=cp.stdout, err=cp.stderr, sh=out.strip(), sleep=p.returncode)
    """,
    )
    rep = parse_report(r.stdout)
    assert rep["rc"] == 0 and "marker.txt" in rep["out"] and "from-stdin" in rep["out"], rep
    assert rep["sh"] == "42" and rep["sleep"] == 0, rep


@pytest.mark.b
def test_shell_escape(session):
    run_cell(session, 'open("escape-marker.txt", "w").write("x")\n')
    r = session.run("!ls\n!echo shell-$((40+2))", timeout=60)
    assert r.status == "ok", (r.status, r.error, r.stderr)
    assert "escape-marker.txt" in r.stdout and "shell-42" in r.stdout, r.stdout


@pytest.mark.b
def test_asyncio(session):
    r = run_cell(
        session,
        """
    import asyncio
    async def main():
        async def tick(i):
            await asyncio.sleep(0.01 * i)
            return i
        vals = await asyncio.gather(*(tick(i) for i in range(10)))
        proc = await asyncio.create_subprocess_exec("/bin/echo", "async-sub", stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        async def handle(reader, writer):
            writer.write((await reader.readline()).upper()); await writer.drain(); writer.close()
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"ping\\n"); await writer.drain()
        line = await reader.readline()
        writer.close(); server.close(); await server.wait_closed()
        loop = asyncio.get_running_loop()
        threaded = await loop.run_in_executor(None, sum, [1, 2, 3])
        return vals, out.decode().strip(), line.decode().strip(), threaded
    vals, out, line, threaded = asyncio.run(main())
    report(vals=vals, out=out, line=line, threaded=threaded)
    """,
    )
    assert parse_report(r.stdout) == {"vals": list(range(10)), "out": "async-sub", "line": "PING", "threaded": 6}


@pytest.mark.b
def test_loopback_sockets(session):
    r = run_cell(
        session,
        """
    import threading
    def serve(srv):
        conn, _ = srv.accept()
        with conn:
            conn.sendall(conn.recv(100)[::-1])
    out = {}
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.bind((host, 0)); srv.listen()
        t = threading.Thread(target=serve, args=(srv,)); t.start()
        with socket.create_connection((host, srv.getsockname()[1]), timeout=30) as c:
            c.sendall(b"abc"); out[str(family)] = c.recv(100).decode()
        t.join(); srv.close()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0))
    v = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); v.sendto(b"dgram", u.getsockname())
    out["udp"] = u.recv(100).decode()
    a, b = socket.socketpair(); a.sendall(b"pair"); out["pair"] = b.recv(10).decode()
    out["names"] = [n for _, n in socket.if_nameindex()]   # AF_NETLINK / NETLINK_ROUTE
    out["addrinfo"] = sorted({ai[4][0] for ai in socket.getaddrinfo("localhost", 80, proto=socket.IPPROTO_TCP)})
    report(**out)
    """,
    )
    rep = parse_report(r.stdout)
    assert (
        rep[str(int(__import__("socket").AF_INET))] == "cba" and rep[str(int(__import__("socket").AF_INET6))] == "cba"
    ), rep
    assert rep["udp"] == "dgram" and rep["pair"] == "pair" and rep["names"] == ["lo"], rep
    assert "127.0.0.1" in rep["addrinfo"], rep


@pytest.mark.b
def test_clocks_and_time(session):
    r = run_cell(
        session,
        """
    import time, datetime
    clocks = {name: getattr(time, name) for name in ("CLOCK_REALTIME", "CLOCK_MONOTONIC", "CLOCK_MONOTONIC_RAW",
              "CLOCK_BOOTTIME", "CLOCK_PROCESS_CPUTIME_ID", "CLOCK_THREAD_CPUTIME_ID", "CLOCK_TAI") if hasattr(time, name)}
    reads = {n: time.clock_gettime(c) > 0 or n.endswith("CPUTIME_ID") for n, c in clocks.items()}
    res = {n: time.clock_getres(c) > 0 for n, c in clocks.items()}
    t0 = time.monotonic(); time.sleep(0.05); slept = time.monotonic() - t0
    report(reads=reads, res=res, slept=slept >= 0.04, now=time.time() > 1.6e9,
           perf=time.perf_counter_ns() > 0, proc=time.process_time() >= 0, thread=time.thread_time() >= 0,
           today=datetime.datetime.now().year >= 2024, tz=time.localtime().tm_year >= 2024)
    """,
    )
    rep = parse_report(r.stdout)
    assert all(rep["reads"].values()) and all(rep["res"].values()) and len(rep["reads"]) >= 6, rep
    assert all(v for k, v in rep.items() if k not in ("reads", "res")), rep


@pytest.mark.b
def test_mmap(session):
    r = run_cell(
        session,
        """
    import mmap
    anon = mmap.mmap(-1, 1 << 20); anon[:5] = b"hello"; first = bytes(anon[:5]); anon.close()
    with open("mapped.bin", "wb") as f:
        f.write(b"\\0" * 8192)
    with open("mapped.bin", "r+b") as f:
        m = mmap.mmap(f.fileno(), 0); m[100:104] = b"data"; m.flush(); m.resize(16384); m.close()
    with open("mapped.bin", "rb") as f:
        data = f.read()
    ro = mmap.mmap(os.open("mapped.bin", os.O_RDONLY), 0, prot=mmap.PROT_READ)
    m2 = mmap.mmap(-1, 4096); m2.madvise(mmap.MADV_DONTNEED)
    report(first=first.decode(), data=data[100:104].decode(), size=len(data), ro=len(ro))
    """,
    )
    assert parse_report(r.stdout) == {"first": "hello", "data": "data", "size": 16384, "ro": 16384}


@pytest.mark.b
def test_signals(session):
    r = run_cell(
        session,
        """
    import signal, threading, time
    got = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: got.append(s))
    os.kill(os.getpid(), signal.SIGUSR1)
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
    old_alrm = signal.signal(signal.SIGALRM, lambda s, f: got.append(s))
    signal.setitimer(signal.ITIMER_REAL, 0.05)
    deadline = time.monotonic() + 30
    while signal.SIGALRM not in got and time.monotonic() < deadline:
        time.sleep(0.01)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR2})
    # Blocked in this thread only (the worker has other threads): aim it at this thread.
    signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR2)
    pending = signal.SIGUSR2 in signal.sigpending()
    info = signal.sigtimedwait({signal.SIGUSR2}, 5)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR2})
    pid = os.fork()
    if pid == 0:
        time.sleep(60); os._exit(0)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    pidfd = os.pidfd_open(os.getpid()); os.close(pidfd)
    signal.signal(signal.SIGUSR1, old); signal.signal(signal.SIGALRM, old_alrm)
    report(usr1=got.count(int(signal.SIGUSR1)), alrm=int(signal.SIGALRM) in got, pending=pending,
           waited=info.si_signo, child=os.WTERMSIG(status))
    """,
    )
    rep = parse_report(r.stdout)
    import signal

    assert rep == {
        "usr1": 2,
        "alrm": True,
        "pending": True,
        "waited": int(signal.SIGUSR2),
        "child": int(signal.SIGTERM),
    }, rep


@pytest.mark.b
def test_sendfile_and_friends(session):
    r = run_cell(
        session,
        """
    import shutil
    with open("src.bin", "wb") as f:
        f.write(os.urandom(1 << 20))
    src = os.open("src.bin", os.O_RDONLY); dst = os.open("dst.bin", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    sent = 0
    while sent < (1 << 20):
        n = os.sendfile(dst, src, sent, (1 << 20) - sent)
        assert n > 0
        sent += n
    os.close(src); os.close(dst)
    shutil.copyfile("src.bin", "copy.bin")   # copy_file_range / sendfile inside shutil
    r_, w_ = os.pipe()
    with open("src.bin", "rb") as f:
        moved = os.splice(f.fileno(), w_, 4096)
    same = open("src.bin", "rb").read() == open("dst.bin", "rb").read() == open("copy.bin", "rb").read()
    report(sent=sent, same=same, moved=moved, spliced=len(os.read(r_, 8192)))
    """,
    )
    assert parse_report(r.stdout) == {"sent": 1 << 20, "same": True, "moved": 4096, "spliced": 4096}


@pytest.mark.b
def test_select_poll_epoll(session):
    r = run_cell(
        session,
        """
    import select, selectors
    r_, w_ = os.pipe()
    os.write(w_, b"x")
    sel = select.select([r_], [], [], 5)[0] == [r_]
    p = select.poll(); p.register(r_, select.POLLIN); pol = p.poll(5000)[0][0] == r_
    e = select.epoll(); e.register(r_, select.EPOLLIN); ep = e.poll(5)[0][0] == r_; e.close()
    s = selectors.DefaultSelector(); s.register(r_, selectors.EVENT_READ); dflt = len(s.select(5)) == 1
    efd = os.eventfd(0); os.eventfd_write(efd, 3); ev = os.eventfd_read(efd)
    report(select=sel, poll=pol, epoll=ep, selector=dflt, selector_kind=type(s).__name__, eventfd=ev)
    """,
    )
    assert parse_report(r.stdout) == {
        "select": True,
        "poll": True,
        "epoll": True,
        "selector": True,
        "selector_kind": "EpollSelector",
        "eventfd": 3,
    }


@pytest.mark.b
def test_getrandom(session):
    r = run_cell(
        session,
        """
    import random, secrets, uuid
    report(getrandom=len(os.getrandom(32)), nonblock=len(os.getrandom(16, os.GRND_NONBLOCK)),
           urandom=len(os.urandom(32)), token=len(secrets.token_hex(8)), uuid=len(str(uuid.uuid4())),
           sysrandom=0 <= random.SystemRandom().random() < 1)
    """,
    )
    assert parse_report(r.stdout) == {
        "getrandom": 32,
        "nonblock": 16,
        "urandom": 32,
        "token": 16,
        "uuid": 36,
        "sysrandom": True,
    }


# ----------------------------------------------------------------------------------------
# Attacks, with controls
# ----------------------------------------------------------------------------------------

VSOCK = (
    PRELUDE
    + r"""
import socket
out = {"stream": make_socket(socket.AF_VSOCK, socket.SOCK_STREAM),
       "dgram": make_socket(socket.AF_VSOCK, socket.SOCK_DGRAM)}
fds = (ctypes.c_int * 2)()
out["pair"] = syscall(53, socket.AF_VSOCK, socket.SOCK_STREAM, 0, fds)
# Garbage in the high bits, which the kernel drops, does not get AF_VSOCK past the filter.
out["high_bits"] = syscall(41, (1 << 32) | socket.AF_VSOCK, socket.SOCK_STREAM, 0)
report(**out)
"""
)


@pytest.mark.c
def test_vsock_is_refused(new_session):
    rep = run_attack(new_session(), VSOCK)
    assert rep["stream"] == {"ok": False, "errno": errno.EPERM}, rep
    assert rep["dgram"] == {"ok": False, "errno": errno.EPERM}, rep
    assert sc_failed(rep["pair"], errno.EPERM) and sc_failed(rep["high_bits"], errno.EPERM), rep
    # Control 1: the host. On this VM host (/dev/vsock) the same code creates vsock sockets;
    # on a host without vsock the family is unknown (EAFNOSUPPORT), not EPERM.
    ctrl = control(VSOCK)
    if os.path.exists("/dev/vsock"):
        assert ctrl["stream"]["ok"], ctrl
    else:
        assert ctrl["stream"]["errno"] == errno.EAFNOSUPPORT, ctrl
    # Control 2: the same cell in the sandbox with only the filter off: the namespaces do not
    # stop vsock (it is in no network namespace), so the filter is what refuses it.
    inside_without_filter = run_attack(new_session(Policy(seccomp=False)), VSOCK)
    assert inside_without_filter["stream"] == ctrl["stream"], (inside_without_filter, ctrl)


OTHER_FAMILIES = (
    PRELUDE
    + r"""
import socket
out = {"packet": make_socket(socket.AF_PACKET, socket.SOCK_RAW, 0x0300),
       "packet_dgram": make_socket(socket.AF_PACKET, socket.SOCK_DGRAM, 0x0300),
       "alg": make_socket(socket.AF_ALG, socket.SOCK_SEQPACKET, 0),
       "key": make_socket(15, socket.SOCK_RAW, 2),             # AF_KEY, PF_KEY_V2
       "netlink_uevent": make_socket(socket.AF_NETLINK, socket.SOCK_DGRAM, 15),   # NETLINK_KOBJECT_UEVENT
       "netlink_audit": make_socket(socket.AF_NETLINK, socket.SOCK_RAW, 9),       # NETLINK_AUDIT
       "netlink_xfrm": make_socket(socket.AF_NETLINK, socket.SOCK_RAW, 6),        # NETLINK_XFRM
       "netlink_route": make_socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)}
report(**out)
"""
)


@pytest.mark.c
def test_packet_alg_key_and_other_netlink_are_refused(session):
    rep = run_attack(session, OTHER_FAMILIES)
    refused = ("packet", "packet_dgram", "alg", "key", "netlink_uevent", "netlink_audit", "netlink_xfrm")
    for name in refused:
        assert rep[name] == {"ok": False, "errno": errno.EPERM}, (name, rep)
    assert rep["netlink_route"]["ok"], rep  # what glibc needs (if_nameindex, getaddrinfo)
    ctrl = control(OTHER_FAMILIES)
    # The host (root) creates each of them; the EPERM above is the filter's.
    for name in ("packet", "packet_dgram", "netlink_uevent", "netlink_audit", "netlink_xfrm"):
        assert ctrl[name]["ok"], (name, ctrl)
    # This VM's kernel has neither AF_ALG nor AF_KEY built in: on the host they fail with
    # EAFNOSUPPORT, a different errno from the filter's EPERM (a kernel with them creates them).
    for name in ("alg", "key"):
        assert ctrl[name]["ok"] or ctrl[name]["errno"] == errno.EAFNOSUPPORT, (name, ctrl)


UNLISTED = (
    PRELUDE
    + r"""
head, size = ctypes.c_long(), ctypes.c_size_t()
ids, n = (ctypes.c_uint64 * 64)(), ctypes.c_uint32(64 * 8)
req = (ctypes.c_uint32 * 6)(24, 0, 0xffffffff, 0xffffffff, 0, 0)   # mnt_id_req: LSMT_ROOT
mnts = (ctypes.c_uint64 * 256)()
report(get_robust_list=syscall(274, 0, ctypes.byref(head), ctypes.byref(size)),
       lsm_list_modules=syscall(461, ids, ctypes.byref(n), 0),
       listmount=syscall(458, req, mnts, 256, 0),
       made_up=syscall(1000),
       lookup_dcookie=syscall(212, 0, 0, 0))
"""
)


@pytest.mark.c
def test_syscalls_on_no_list_fail(session):
    rep = run_attack(session, UNLISTED)
    for name in ("get_robust_list", "lsm_list_modules", "listmount", "made_up"):
        assert sc_failed(rep[name], errno.ENOSYS), (name, rep)
    assert sc_failed(rep["lookup_dcookie"], errno.EPERM), rep  # denied on purpose
    ctrl = control(UNLISTED)
    # On the host they work (kernel >= 6.8 for listmount and lsm_list_modules): the filter,
    # not the kernel, answers ENOSYS in the sandbox. A made-up number is ENOSYS everywhere.
    assert ctrl["get_robust_list"]["rc"] == 0, ctrl
    release = tuple(int(x) for x in os.uname().release.split(".")[:2])
    if release >= (6, 8):
        assert ctrl["lsm_list_modules"]["rc"] >= 0 and ctrl["listmount"]["rc"] > 0, ctrl
    assert sc_failed(ctrl["made_up"], errno.ENOSYS)
    assert not sc_failed(ctrl["lookup_dcookie"], errno.EPERM), ctrl
