"""A process sandbox for running untrusted Python, and the test harness of graders.grade_code (stdlib only).

    from sandbox import run_program, run_tests
    result = run_program("print(input())", stdin="hi\\n", timeout=2)   # RunResult(status, stdout, ...)
    run = run_tests(solution, tests=["assert f(1) == 2"], setup="")   # HarnessResult(passed, counted, result)

What it is for: grading model-written solutions to MBPP/HumanEval problems on a research machine, where a
wrong program may loop, allocate without end, flood its output, fork, or delete files by accident, and a
reward-hacking one may try to fake a pass. It is NOT a security boundary: see "Limits" below.

run_program(source, stdin="", timeout=5.0, memory_mb=1024, max_output_bytes=1 MiB, seccomp=True) runs one
Python program and returns RunResult(status, stdout, stderr, returncode, seconds), status one of "ok", "error",
"timeout" (wall clock or CPU limit), "memory" (a MemoryError reached the top), "output_limit" (stdout + stderr
passed the cap; killed). Linux only. Calls are independent and may run in parallel threads. Layers:
- a fresh `python -S -B` per program (stdlib only, no site-packages), in its own session; cwd and HOME are a
  fresh temp dir (deleted after); minimal environment with PYTHONHASHSEED=0; stdin from an unlinked temp
  file (reads end in EOF); stdout/stderr read as they come, so a flood is cut at the cap;
- rlimits: address space (memory_mb), CPU seconds (timeout + 1), file size 1 MiB, 256 processes, no core file;
- on x86-64 Linux, a seccomp filter (kernel-enforced; the program cannot remove it) that refuses: new
  processes (fork, vfork, clone without CLONE_THREAD), exec, sockets, opening files for writing and every
  call that creates, deletes, renames or re-permissions a file, signals to other processes, ptrace, raising
  rlimits (reading them and RLIMIT_STACK stay allowed), io_uring, mount/namespace/module/reboot/clock calls
  and TIOCSTI. Threads work. No file can be written, even in cwd (the paper's code grader also failed
  programs that write files). seccomp=False turns it off (tests use that to exercise the other layers);
- a Python-level guard in the spirit of human-eval's reliability_guard (os/posix process, kill, delete and
  rename functions, open() and os.open() for writing, subprocess, socket): the only layer elsewhere;
- the parent enforces the wall-clock deadline and the output cap, then SIGKILLs the process group, the
  program itself, and every process whose environment carries this run's random tag (that catches
  setsid'ed grandchildren where processes can be created at all); if the parent dies, the child is killed.

run_tests(solution, tests, setup="", timeout=3.0) runs one program made of the solution, then the setup, then
each test statement, and returns HarnessResult(passed, counted, result): the indices of the tests that passed,
the indices that count for a score (an element that only defines things, like HumanEval's `def check`, runs
but does not count), and the RunResult. The setup runs after the solution because MBPP's test_setup_code
builds inputs with the solution's own classes (mbpp/367, the one problem of the MBPP test split with setup code,
makes trees of the Node class its solution defines); setup that only imports what the tests use works in either
order. The harness guarantees:
- after each test statement it prints a per-run random nonce and the test's index, and only those markers
  count: printing a copied marker does not help, and if the solution's or the setup's top level raises
  (SystemExit from sys.exit(0) or exit() included) or the process ends early (os._exit(0)), the tests are
  never reached, as in one Python program;
- inside `assert`s (including those in check(candidate)) the test source is rewritten: comparisons, truth
  tests, the elements that all()/any() test and the operands of arithmetic must not contain, anywhere inside
  lists/tuples/dicts/sets, an object of a class the program defined, or the assert fails. So an object whose
  __eq__ or __bool__ always returns True, or whose __sub__ lies inside `abs(f(x) - y) < 1e-6`, does not pass;
- the tests run with a fresh copy of the builtins (patching builtins.all does not help) in a copy of the
  solution's namespace (redefining check() does not help).

Limits (what is NOT covered): this is no security boundary against code written to escape. Without the
seccomp filter the Python guard is bypassed with ctypes, `del sys.modules[...]` or object.__subclasses__();
a fork bomb run as root is only stopped by the group kill at the deadline (RLIMIT_NPROC does not bind root); a
process that re-execs with a new environment after setsid escapes the tag sweep. The filter is a denylist
(system calls it does not name stay allowed), and the program runs as the calling user: it can READ every file
that user can read, use CPU, memory (per process) and time up to the limits, and find the nonce by
introspection (frames, gc, /proc/self/mem). The assert rewriting does not reach comparisons outside `assert`s,
nor calls that turn a value into plain data through the value's own methods (len() -> __len__, str() ->
__str__, math.isclose() -> __float__). Untrusted code at scale belongs in a container or VM.
"""

import ast
import math
import os
import re
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from typing import NamedTuple

# Runs first in the child: read and delete itself and the program file, set rlimits, die with the parent,
# install the seccomp filter and the Python guard, then exec the program as __main__.
_BOOTSTRAP = r'''
import builtins, os, resource, sys
path, parent, mem_mb, cpu_s, use_filter = sys.argv[1], *map(int, sys.argv[2:6])
with open(path, encoding="utf-8") as f:
    src = f.read()
os.unlink(path)
os.unlink("boot.py")
# (CPU: SIGXCPU at the soft limit, SIGKILL one second later. NPROC binds only non-root users.)
for res, soft, hard in ((resource.RLIMIT_AS, mem_mb << 20, mem_mb << 20), (resource.RLIMIT_CPU, cpu_s, cpu_s + 1),
                        (resource.RLIMIT_FSIZE, 1 << 20, 1 << 20), (resource.RLIMIT_NPROC, 256, 256),
                        (resource.RLIMIT_CORE, 0, 0)):
    now = resource.getrlimit(res)[1]
    if now != resource.RLIM_INFINITY:  # never try to raise a hard limit
        soft, hard = min(soft, now), min(hard, now)
    resource.setrlimit(res, (soft, hard))

def harden():
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, 9, 0, 0, 0) or os.getppid() != parent:  # PR_SET_PDEATHSIG = SIGKILL
        os._exit(137)
    if os.uname().machine != "x86_64" or not use_filter:
        return
    EPERM, ENOSYS, ALLOW = 0x50001, 0x50026, 0x7FFF0000
    deny = (57, 58, 59, 322, 101, 310, 311,  # fork vfork execve execveat ptrace process_vm_readv/writev
            62, 200, 234, 129, 297, 424, 434, 438,  # kill tkill tgkill rt_(tg)sigqueueinfo pidfd_*
            160, 41,  # setrlimit socket
            87, 263, 84, 82, 264, 316, 76, 83, 258,  # unlink unlinkat rmdir rename* truncate mkdir mkdirat
            86, 265, 88, 266, 133, 259, 85,  # link linkat symlink symlinkat mknod mknodat creat
            90, 91, 268, 452, 92, 93, 94, 260,  # chmod fchmod fchmodat fchmodat2 chown fchown lchown fchownat
            132, 235, 280, 261, 188, 189, 190, 197, 198, 199,  # utime utimes utimensat futimesat, xattr writes
            165, 166, 155, 161, 272, 308, 169,  # mount umount2 pivot_root chroot unshare setns reboot
            246, 320, 175, 313, 176, 167, 168,  # kexec_load kexec_file_load init/finit/delete_module swapon/off
            170, 171, 164, 227, 159, 305, 172, 173, 163, 179,  # set{host,domain}name, clocks, iopl ioperm acct quotactl
            321, 298, 323, 425, 426, 427,  # bpf perf_event_open userfaultfd io_uring_{setup,enter,register}
            250, 248, 249, 303, 304, 300,  # keyctl add_key request_key name_to_handle_at open_by_handle_at fanotify
            430, 431, 432, 429, 428, 442,  # fsopen fsconfig fsmount move_mount open_tree mount_setattr
            105, 106, 113, 114, 117, 119, 116, 122, 123, 126, 256, 279)  # set*id setgroups capset, page migration
    # (syscall, argument, BPF jump op, constant, verdict when the test holds, verdict when it does not);
    # JSET (0x45) tests bits, JEQ (0x15) equality. Write flags: O_WRONLY|O_RDWR|O_CREAT|O_TRUNC|O_APPEND.
    checks = ((56, 0, 0x45, 0x10000, ALLOW, EPERM),  # clone: threads only (CLONE_THREAD)
              (2, 1, 0x45, 0o3103, EPERM, ALLOW), (257, 2, 0x45, 0o3103, EPERM, ALLOW),  # open, openat
              (16, 1, 0x15, 0x5412, EPERM, ALLOW))  # ioctl TIOCSTI
    prog = [(0x20, 0, 0, 4), (0x15, 1, 0, 0xC000003E), (0x06, 0, 0, 0x80000000),  # not x86-64 (int 0x80): kill
            (0x20, 0, 0, 0), (0x35, 0, 1, 0x40000000), (0x06, 0, 0, EPERM)]  # x32 ABI numbers
    for nr in deny:
        prog += [(0x15, 0, 1, nr), (0x06, 0, 0, EPERM)]
    for nr in (435, 437):  # clone3, openat2 hide their flags in a struct: ENOSYS makes libc fall back
        prog += [(0x15, 0, 1, nr), (0x06, 0, 0, ENOSYS)]
    for nr, arg, op, k, yes, no in checks:
        prog += [(0x15, 0, 4, nr), (0x20, 0, 0, 16 + 8 * arg), (op, 0, 1, k), (0x06, 0, 0, yes), (0x06, 0, 0, no)]
    # prlimit64 (glibc's getrlimit and setrlimit): reading is fine, and so is RLIMIT_STACK (the deep-recursion
    # idiom); raising the memory or CPU limit is not. new_limit (argument 2) is a 64-bit pointer: test both words.
    prog += [(0x15, 0, 8, 302), (0x20, 0, 0, 24), (0x15, 4, 0, 3), (0x20, 0, 0, 32), (0x15, 0, 3, 0),
             (0x20, 0, 0, 36), (0x15, 0, 1, 0), (0x06, 0, 0, ALLOW), (0x06, 0, 0, EPERM)]
    prog.append((0x06, 0, 0, ALLOW))
    class Insn(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]
    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Insn))]
    insns = (Insn * len(prog))(*[Insn(*p) for p in prog])
    if libc.prctl(38, 1, 0, 0, 0) or libc.prctl(22, 2, ctypes.byref(Prog(len(prog), insns)), 0, 0):
        print("locksmith sandbox: seccomp filter refused, errno", ctypes.get_errno(), file=sys.stderr)

def guard():
    import io, posix, _posixsubprocess
    def refuse(*args, **kwargs):
        raise PermissionError("disabled by the locksmith sandbox")
    for mod in (os, posix):
        for name in ("fork", "forkpty", "system", "popen", "kill", "killpg", "execv", "execve", "execl", "execle",
                     "execlp", "execlpe", "execvp", "execvpe", "spawnv", "spawnve", "spawnl", "spawnle", "spawnlp",
                     "spawnvp", "posix_spawn", "posix_spawnp", "remove", "unlink", "rmdir", "removedirs", "rename",
                     "renames", "replace", "truncate", "chmod", "chown", "lchown", "link", "symlink", "mkdir",
                     "makedirs", "setuid", "setgid", "putenv", "unsetenv", "chroot"):
            if hasattr(mod, name):
                setattr(mod, name, refuse)
    real_open, real_os_open = io.open, posix.open
    def read_only_open(file, mode="r", *args, **kwargs):
        if any(c in str(mode) for c in "wax+"):
            raise PermissionError("writing files is disabled by the locksmith sandbox")
        return real_open(file, mode, *args, **kwargs)
    def read_only_os_open(path, flags, *args, **kwargs):
        if flags & 0o3103:
            raise PermissionError("writing files is disabled by the locksmith sandbox")
        return real_os_open(path, flags, *args, **kwargs)
    builtins.open = io.open = read_only_open
    os.open = posix.open = read_only_os_open
    _posixsubprocess.fork_exec = refuse
    sys.modules["socket"] = sys.modules["_socket"] = None

harden()
guard()
builtins.exit = builtins.quit = sys.exit  # -S skips site.py, which defines them
exec(compile(src, "main.py", "exec"), {"__name__": "__main__", "__builtins__": builtins})
'''


class RunResult(NamedTuple):
    status: str  # "ok" | "error" | "timeout" | "memory" | "output_limit"
    stdout: str
    stderr: str
    returncode: int | None
    seconds: float


def _tagged_pids(tag: bytes) -> list[int]:
    """Processes whose initial environment carries this run's tag (setsid'ed descendants included)."""
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if tag in f.read():
                        pids.append(int(name))
            except OSError:  # gone already, or not ours to read
                pass
    return pids


def _kill_all(proc: subprocess.Popen, tag: bytes) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the program and every descendant still in its group
    except OSError:
        pass
    proc.kill()
    proc.wait()
    for _ in range(100):  # descendants that left the group; a fork race can need a few rounds
        pids = _tagged_pids(tag) if os.path.isdir("/proc") else []
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def run_program(source: str, stdin: str = "", timeout: float = 5.0, memory_mb: int = 1024,
                max_output_bytes: int = 1 << 20, seccomp: bool = True) -> RunResult:
    """Run `source` as __main__ in the sandbox described in the module docstring. Safe to call from threads."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    tag = secrets.token_hex(8)  # marks every process of this run (see _kill_all)
    with tempfile.TemporaryDirectory(prefix="locksmith-") as tmp, tempfile.TemporaryFile() as stdin_file:
        for name, text in (("main.py", source), ("boot.py", _BOOTSTRAP)):
            with open(os.path.join(tmp, name), "w", encoding="utf-8", errors="replace") as f:
                f.write(text)
        stdin_file.write(stdin.encode("utf-8", "replace"))
        stdin_file.seek(0)
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": tmp, "PYTHONHASHSEED": "0",
               "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8", "OMP_NUM_THREADS": "1",
               "LOCKSMITH_RUN": tag}
        loader = "exec(compile(open('boot.py').read(), 'locksmith-sandbox', 'exec'))"  # short, for `ps`
        cmd = [sys.executable, "-S", "-B", "-c", loader, "main.py", str(os.getpid()), str(int(memory_mb)),
               str(math.ceil(timeout) + 1), str(int(seccomp))]
        proc = subprocess.Popen(cmd, stdin=stdin_file, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp,
                                env=env, start_new_session=True, close_fds=True)
        out, err, status = bytearray(), bytearray(), None
        sel = selectors.DefaultSelector()
        for pipe, buf in ((proc.stdout, out), (proc.stderr, err)):
            os.set_blocking(pipe.fileno(), False)
            sel.register(pipe, selectors.EVENT_READ, buf)

        def pump(wait: float) -> bool:  # read what is there; False once the output cap is passed
            for key, _ in sel.select(wait):
                data = os.read(key.fd, 1 << 16)
                if not data:
                    sel.unregister(key.fileobj)
                key.data.extend(data)
            return len(out) + len(err) <= max_output_bytes

        try:
            while sel.get_map():  # until both pipes close (normally: the program exited)
                left = deadline - time.monotonic()
                if left <= 0:
                    status = "timeout"
                    break
                if not pump(min(left, 0.1)):
                    status = "output_limit"
                    break
                if proc.poll() is not None:  # exited, but a descendant may still hold the pipes
                    break
            if status is None:
                try:
                    proc.wait(max(0.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:  # e.g. closed its stdout and kept running
                    status = "timeout"
        finally:
            _kill_all(proc, f"LOCKSMITH_RUN={tag}".encode())
            drain_until = time.monotonic() + 0.5  # whatever the pipes still hold after the kill
            while sel.get_map() and time.monotonic() < drain_until and status != "output_limit":
                if not pump(0.05):
                    status = "output_limit"
            sel.close()
            proc.stdout.close()
            proc.stderr.close()
    rc = proc.returncode
    if status is None:
        if rc == 0:
            status = "ok"
        elif rc == -signal.SIGXCPU:
            status = "timeout"
        elif b"MemoryError" in err[-2000:]:
            status = "memory"
        else:
            status = "error"
    def text(b: bytearray) -> str:
        return bytes(b[:max_output_bytes]).decode("utf-8", "replace")
    return RunResult(status, text(out), text(err), rc, time.monotonic() - t0)


# ---------------------------------------------------------------------------------------------------
# The test harness

class _StrictAsserts(ast.NodeTransformer):
    """Inside `assert`s: `a OP b` -> _lsm_cmp(("OP",), a, b); a truth test x -> _lsm_true(x); operands of
    arithmetic x -> _lsm_val(x) (raises for program-defined values); all/any -> _lsm_all/_lsm_any."""

    def __init__(self):
        self.depth = 0

    def visit_Assert(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1
        node.test = self._truth(node.test)
        return node

    def visit_Compare(self, node):
        self.generic_visit(node)
        if not self.depth:
            return node
        ops = ast.Tuple([ast.Constant(type(op).__name__) for op in node.ops], ast.Load())
        return ast.Call(ast.Name("_lsm_cmp", ast.Load()), [ops, node.left, *node.comparators], [])

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if self.depth:
            node.left, node.right = self._val(node.left), self._val(node.right)
        return node

    def visit_UnaryOp(self, node):
        self.generic_visit(node)
        if self.depth and not isinstance(node.op, ast.Not):
            node.operand = self._val(node.operand)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        if self.depth and isinstance(node.func, ast.Name) and node.func.id in ("all", "any"):
            node.func = ast.Name("_lsm_" + node.func.id, ast.Load())
        return node

    @staticmethod
    def _val(e):
        return ast.Call(ast.Name("_lsm_val", ast.Load()), [e], [])

    def _truth(self, e):
        if isinstance(e, ast.BoolOp):
            e.values = [self._truth(v) for v in e.values]
            return e
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            e.operand = self._truth(e.operand)
            return e
        if isinstance(e, ast.Call) and isinstance(e.func, ast.Name) and e.func.id == "_lsm_cmp":
            return e
        return ast.Call(ast.Name("_lsm_true", ast.Load()), [e], [])


def _strict_test(test: str) -> str:
    try:
        return ast.unparse(ast.fix_missing_locations(_StrictAsserts().visit(ast.parse(test))))
    except (SyntaxError, ValueError, RecursionError):
        return test  # runs as given and fails


def _counts_as_test(test: str) -> bool:
    """A test element that only defines things (HumanEval's `def check`) runs but does not count."""
    try:
        return any(isinstance(s, (ast.Assert, ast.Expr)) for s in ast.parse(test).body)
    except (SyntaxError, ValueError, RecursionError):
        return True


# The test program. The nonce reaches the child only inside this source, which the bootstrap deletes
# from disk before the solution runs; tests run in a copy of the solution's namespace with fresh builtins.
_HARNESS = r'''
import builtins, collections, operator, os, sys, traceback

def _main(nonce, setup, solution, tests):
    write, clean_builtins = os.write, dict(vars(builtins))
    scalars = {type(None), bool, int, float, complex, str, bytes}
    def trusted(x):  # no object of a class the program defined, anywhere inside x
        stack, budget = [x], 10**6
        while stack:
            y = stack.pop()
            budget -= 1
            t = type(y)
            if t in scalars:
                continue
            if budget < 0 or any(c.__module__ == "__main__" for c in t.__mro__):
                return False
            if isinstance(y, dict):
                stack.extend(y.keys())
                stack.extend(y.values())
            elif isinstance(y, (list, tuple, set, frozenset, collections.deque)):
                stack.extend(y)
        return True
    ops = {"Eq": operator.eq, "NotEq": operator.ne, "Lt": operator.lt, "LtE": operator.le, "Gt": operator.gt,
           "GtE": operator.ge, "In": lambda a, b: a in b, "NotIn": lambda a, b: a not in b,
           "Is": operator.is_, "IsNot": operator.is_not}
    def cmp(names, *values):
        for name, a, b in zip(names, values, values[1:]):
            if name not in ("Is", "IsNot") and not (trusted(a) and trusted(b)):
                return False
            if not ops[name](a, b):
                return False
        return True
    def truth(x):
        return trusted(x) and bool(x)
    def val(x):
        if not trusted(x):
            raise AssertionError("a value of a class the program defined")
        return x
    helpers = {"_lsm_cmp": cmp, "_lsm_true": truth, "_lsm_val": val,
               "_lsm_all": lambda xs: all(truth(x) for x in xs), "_lsm_any": lambda xs: any(truth(x) for x in xs)}
    g = {"__name__": "__main__", "__builtins__": builtins}
    for name, src in (("<solution>", solution), ("<setup>", setup)):  # setup may use the solution's classes
        try:
            exec(compile(src, name, "exec"), g)
        except BaseException:  # SystemExit included: as in one program, the tests are never reached
            try:
                traceback.print_exc()
            except BaseException:
                pass
            return
    tg = dict(g)
    tg["__builtins__"] = clean_builtins
    for i, test in enumerate(tests):
        tg.update(helpers)
        try:
            exec(compile(test, f"<test {i}>", "exec"), tg)
        except BaseException:
            try:
                traceback.print_exc()
            except BaseException:
                pass
            continue
        write(1, f"\n{nonce} passed {i}\n".encode())
'''


class HarnessResult(NamedTuple):
    passed: frozenset  # indices of the test statements that ran to the end
    counted: tuple     # indices that count for a score (all of them when none would)
    result: RunResult


def run_tests(solution: str, tests: list[str], setup: str = "", timeout: float = 3.0) -> HarnessResult:
    """Run the solution, then the setup, then each test in one sandboxed program (see the module docstring)."""
    counted = tuple(i for i, t in enumerate(tests) if _counts_as_test(t)) or tuple(range(len(tests)))
    nonce = secrets.token_hex(16)
    args = (nonce, setup, solution, [_strict_test(t) for t in tests])
    result = run_program(_HARNESS + f"_main({', '.join(map(repr, args))})\n", timeout=timeout)
    passed = frozenset(int(i) for i in re.findall(nonce + r" passed (\d+)", result.stdout))
    return HarnessResult(passed, counted, result)
