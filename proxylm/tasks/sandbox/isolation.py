"""Kernel isolation set up by the harness inside the child: read-only mounts, capabilities, seccomp, rlimits.

Standard library only (runs inside the candidate's `python -I`, before the candidate's code).
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import signal

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


def readonly_filesystem(workdir: str) -> None:
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


def drop_capabilities() -> None:
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
                                tkill=200, tgkill=234, pidfd_send_signal=424, socket=41, socketpair=53,
                                io_uring_setup=425)),
    "aarch64": (0xC00000B7, dict(clone=220, clone3=435, unshare=97, setns=268, ptrace=117,
                                 process_vm_readv=270, process_vm_writev=271, kill=129, tkill=130,
                                 tgkill=131, pidfd_send_signal=424, socket=198,
                                 socketpair=199, io_uring_setup=425)),
}
_BPF_LD_W_ABS, _BPF_JEQ, _BPF_JGE, _BPF_JSET, _BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL_PROCESS, _RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
_EPERM, _ENOSYS = 1, 38
_CLONE_THREAD = 0x10000
_X32_SYSCALL_BIT = 0x40000000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16   # struct seccomp_data (little endian: arg0's low word)


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(_SockFilter))]


def seccomp_program(machine: str, block_sockets: bool, own_pid: int) -> list[tuple[int, int, int, int]]:
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
    if block_sockets:   # every family: AF_UNIX reaches host sockets by path even through a read-only mount
        for name in ("socket", "socketpair", "io_uring_setup"):   # io_uring can open sockets too
            prog += [(_BPF_JEQ, 0, 1, nr[name]), (_BPF_RET, 0, 0, deny)]
    prog.append((_BPF_RET, 0, 0, allow))
    return prog


def install_seccomp(block_sockets: bool = True) -> None:
    machine = platform.machine()
    if machine not in _SECCOMP_ARCH:
        raise OSError(f"no seccomp table for {machine}")
    prog = seccomp_program(machine, block_sockets, os.getpid())
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), filters)
    libc = _c()
    _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(libc.prctl(_PR_SET_SECCOMP, 2, ctypes.byref(fprog), 0, 0), "seccomp")   # 2: SECCOMP_MODE_FILTER


_PR_SET_PDEATHSIG, _PR_SET_DUMPABLE = 1, 4


def set_dumpable(on: bool) -> None:
    """Off: other processes of our uid cannot open this one's /proc/PID/mem, fd/ or environ (no ptrace)."""
    _check(_c().prctl(_PR_SET_DUMPABLE, int(on), 0, 0, 0), "PR_SET_DUMPABLE")


def die_with_parent() -> None:
    """SIGKILL when the parent dies (kept across execve; unshare's --kill-child does the same for its child).
    The library's workers use proxylm/core/process.py; this child-side copy exists because the sandboxed
    interpreter imports nothing from proxylm (harness.py), and it raises where that one may not."""
    _check(_c().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0), "PR_SET_PDEATHSIG")


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


def set_limits(limits: dict, own_user_namespace: bool) -> None:
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
