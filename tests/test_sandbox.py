"""Tests for sandbox.py: the test harness (order, markers, what counts) and hostile programs run by run_program.

Run: python -m pytest -q tests/test_sandbox.py   (about 8 s on 2 cores; the hostile programs use 1-2 s limits)
"""

import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from sandbox import run_program, run_tests

SECCOMP = os.uname().machine == "x86_64"  # the kernel filter exists only there; elsewhere those tests skip


def leftovers(started: list[int]) -> list[int]:
    """Live (non-zombie) processes that are, or share a process group or session with, a program we started."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                state, _, pgrp, session = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[:4]
            except (OSError, ValueError):
                continue
            if state not in ("Z", "X") and {int(name), int(pgrp), int(session)} & set(started):
                pids.append(int(name))
    return pids


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


# ---------------------------------------------------------------------------------------------------
# The test harness

NODE = "class Node:\n    def __init__(self, data):\n        self.data, self.left = data, None\n"


def test_harness_runs_solution_then_setup_then_tests():
    setup = "root = Node(1)\nroot.left = Node(2)\n"  # MBPP 367's convention: built with the solution's class
    run = run_tests(NODE + "def depth(n):\n    return 0 if n is None else 1 + depth(n.left)\n",
                    ["assert depth(root) == 2", "assert depth(None) == 0"], setup=setup)
    assert run.passed == {0, 1} and run.counted == (0, 1) and run.result.status == "ok"
    run = run_tests("def area(r):\n    return math.pi * r * r\n", ["assert area(1) == math.pi"], setup="import math")
    assert run.passed == {0}  # an import for the tests works after the solution too


def test_harness_counts_only_its_own_markers():
    run = run_tests("x = 1\nprint('passed 0')\n", ["assert x == 2", "def helper():\n    pass", "assert x == 1"])
    assert run.passed == {1, 2} and run.counted == (0, 2)  # the def ran but does not count
    assert run_tests("raise SystemExit(0)", ["assert True"]).passed == frozenset()
    assert run_tests("x = 1", ["assert x == 1"], setup="import sys\nsys.exit(0)").passed == frozenset()
    assert run_tests("x = 1", ["def f():\n    pass"]).counted == (0,)  # nothing would count: all of them do


# ---------------------------------------------------------------------------------------------------
# Hostile programs: each contained, fast, nothing outside the temp dir changed, no process left

@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    """A file outside the sandbox that must survive unchanged; afterwards, no process of the test remains."""
    path = tmp_path / "sentinel.txt"
    path.write_text("precious")
    before = sorted(os.listdir(tmp_path))
    started, real_popen = [], subprocess.Popen

    def recording_popen(*args, **kwargs):
        proc = real_popen(*args, **kwargs)
        started.append(proc.pid)
        return proc
    monkeypatch.setattr(subprocess, "Popen", recording_popen)
    yield path
    assert path.read_text() == "precious"
    assert sorted(os.listdir(tmp_path)) == before
    assert started  # the fixture really saw the programs
    deadline = time.monotonic() + 2
    while leftovers(started) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert leftovers(started) == []


def run(src, **kw):
    kw.setdefault("timeout", 1.5)
    t0 = time.monotonic()
    result = run_program(src, **kw)
    assert time.monotonic() - t0 < kw["timeout"] + 2.5  # kill and clean-up are prompt
    return result


def test_run_program_basics(sentinel):
    r = run("import sys\nname = input()\nprint('hello', name)\nprint('warn', file=sys.stderr)\nsys.exit(3)",
            stdin="world\n")
    assert (r.status, r.stdout, r.stderr, r.returncode) == ("error", "hello world\n", "warn\n", 3)
    assert run("print('\u00e9\u4e2d')").stdout == "\u00e9\u4e2d\n"
    assert run("raise ValueError('boom')").stderr.strip().endswith("ValueError: boom")
    assert run("exit(0)").status == "ok"
    assert run("import threading\nt = threading.Thread(target=print, args=('thread',))\nt.start()\nt.join()"
               ).stdout == "thread\n"
    r = run("import resource\nprint(resource.getrlimit(resource.RLIMIT_AS)[0] >> 20)", memory_mb=300)
    assert r.stdout.strip() == "300"
    r = run("import resource\nresource.setrlimit(resource.RLIMIT_STACK, (-1, -1))\nprint('ok')")
    assert r.stdout == "ok\n"  # the deep-recursion idiom still works
    assert run("import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))").status == "error"


def test_infinite_loop(sentinel):
    r = run("while True:\n    pass", timeout=1)
    assert r.status == "timeout" and 1 <= r.seconds < 3


def test_fork_bomb(sentinel):
    r = run("import os\nwhile True:\n    os.fork()")
    assert r.status == "error"


@pytest.mark.skipif(not SECCOMP, reason="kernel filter is x86-64 only")
def test_fork_bomb_past_the_python_guard(sentinel):
    src = "import ctypes\nlibc = ctypes.CDLL(None)\nn = 0\nwhile libc.fork() >= 0 and n < 10**6:\n    n += 1\nprint(n)"
    r = run(src)
    assert (r.status, r.stdout) == ("ok", "0\n")


def test_memory_bomb(sentinel):
    r = run("x = []\nwhile True:\n    x.append(bytearray(10**7))", memory_mb=256, timeout=5)
    assert r.status == "memory" and r.seconds < 5
    assert run("x = bytearray(10**10)").status == "memory"


def test_deep_recursion(sentinel):
    assert run("def f(n):\n    return f(n + 1)\nf(0)").status == "error"
    r = run("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return list(map(f, [n + 1]))\nf(0)")
    assert r.status == "error" and r.returncode != 0  # the C stack overflows: SIGSEGV
    r = run("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1) + 1\nf(0)", memory_mb=128,
            timeout=5)
    assert r.status in ("error", "memory") and r.returncode != 0  # frames fill the address space


def test_filesystem_outside_tmpdir(sentinel):
    d = sentinel.parent
    attempts = [
        f"open({str(sentinel)!r}, 'w').write('x')",
        f"open({str(sentinel)!r}, 'a').write('x')",
        f"open({str(d / 'new.txt')!r}, 'x').write('x')",
        f"import os\nos.remove({str(sentinel)!r})",
        f"import os\nos.unlink({str(sentinel)!r})",
        f"import os\nos.rename({str(sentinel)!r}, {str(d / 'moved.txt')!r})",
        f"import shutil\nshutil.rmtree({str(d)!r})",
        f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('x')",
        f"import os\nfd = os.open({str(sentinel)!r}, os.O_WRONLY | os.O_TRUNC)",
    ]
    if SECCOMP:  # past the Python guard, straight to libc: only the kernel filter stops these
        attempts += [f"import ctypes\nassert ctypes.CDLL(None).unlink({str(sentinel).encode()!r}) == 0",
                     f"import ctypes\nassert ctypes.CDLL(None).creat({str(d / 'c.txt').encode()!r}, 0o644) < 0\n"
                     "print('refused')"]
    for src in attempts:
        r = run(src)
        assert r.status == "error" or r.stdout == "refused\n", src
    assert run(f"print(open({str(sentinel)!r}).read())").stdout == "precious\n"  # reading is allowed


def test_closed_stdout(sentinel):
    r = run("import os, time\nos.close(1)\nos.close(2)\ntime.sleep(30)", timeout=1)
    assert r.status == "timeout"


def test_output_flood(sentinel):
    r = run("while True:\n    print('x' * 1000)", max_output_bytes=100_000)
    assert r.status == "output_limit" and len(r.stdout) <= 100_000 and r.seconds < 1.5


def test_stdin_reads_end(sentinel):
    r = run("import sys\ndata = sys.stdin.read()\nprint(len(data), repr(sys.stdin.read()), repr(sys.stdin.readline()))",
            stdin="abc\n")
    assert (r.status, r.stdout) == ("ok", "4 '' ''\n")
    assert run("input()\ninput()", stdin="one line\n").status == "error"  # EOFError, not a hang


DAEMON = """import ctypes, os, time
libc = ctypes.CDLL(None)
if libc.fork() == 0:
    libc.setsid()
    if libc.fork() == 0:
        print("DAEMON", os.getpid(), flush=True)
        time.sleep(60)
    os._exit(0)
time.sleep(0.3)
print("parent done", flush=True)
"""


@pytest.mark.parametrize("seccomp", [True, False])
def test_daemon_does_not_outlive_the_run(sentinel, seccomp):
    r = run(DAEMON, seccomp=seccomp, timeout=3)
    assert "parent done" in r.stdout
    pids = [int(line.split()[1]) for line in r.stdout.splitlines() if line.startswith("DAEMON")]
    assert bool(pids) == (not SECCOMP or not seccomp)  # with the kernel filter the fork itself fails
    assert not any(alive(pid) for pid in pids)


def test_network_is_blocked(sentinel):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    port = server.getsockname()[1]
    try:
        attempts = [f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)"]
        if SECCOMP:
            attempts.append("import sys\ndel sys.modules['socket'], sys.modules['_socket']\nimport socket\n"
                            f"socket.create_connection(('127.0.0.1', {port}), timeout=1)")
        for src in attempts:
            assert run(src).status == "error"
        with pytest.raises(BlockingIOError):
            server.accept()  # nobody connected
    finally:
        server.close()


def test_parallel_runs():
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: run_program(f"print({i} * {i})", timeout=5), range(8)))
    assert [r.stdout for r in results] == [f"{i * i}\n" for i in range(8)]
