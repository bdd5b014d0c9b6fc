"""Sandbox working directories: made per program, removed afterwards, stale ones of dead evaluators cleaned.

A program may leave anything in its working directory: 5,000 nested directories, a million files, symlinks
to the user's home, directories with mode 000. `remove_tree` never recurses (it hoists subdirectories to
the top and empties them one level at a time, so depth costs no stack and no descriptors), never follows a
link (every step is relative to an open directory, with O_NOFOLLOW), stops at a time limit, and never
raises: a directory it cannot remove is counted (`CLEANUP`) and left for the next evaluator's stale-dir
sweep, which is bounded the same way.
"""

from __future__ import annotations

import os
import stat
import tempfile
import time

from .policy import WORKDIR_PREFIX

REMOVE_LIMIT_S = 30.0   # per directory (5,000 nested dirs take ~15 s on a busy ext4 disk, 0.2 s on tmpfs)
CLEANUP = {"removed": 0, "not_removed": 0, "last_error": ""}   # this process's tally, reported in summaries
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _open_dir(name: str, dir_fd: int) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:   # a program's chmod 000: it was our directory, make it ours to read again
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _empty_one(sub_fd: int, root_fd: int, hoisted: list[int]) -> None:
    """Unlink the files of one directory; move its subdirectories up into the root (no descent)."""
    with os.scandir(sub_fd) as it:
        names = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
    for name, is_dir in names:
        if not is_dir:
            os.unlink(name, dir_fd=sub_fd)
            continue
        while True:
            hoisted[0] += 1
            try:
                os.rename(name, f".rm{hoisted[0]}", src_dir_fd=sub_fd, dst_dir_fd=root_fd)
                break
            except FileExistsError:
                continue
            except OSError as e:
                if e.errno not in (39, 17):   # ENOTEMPTY/EEXIST: the name is taken, try the next
                    raise


def remove_tree(path: str, limit_s: float | None = None) -> str:
    """Remove `path` (a directory, never followed if a link); '' when done, else why not. Never raises."""
    limit_s = REMOVE_LIMIT_S if limit_s is None else limit_s
    deadline = time.monotonic() + limit_s
    parent, name = os.path.split(os.path.abspath(path))
    try:
        parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        return f"{parent}: {e.strerror}"
    try:
        try:
            st = os.lstat(name, dir_fd=parent_fd)
        except FileNotFoundError:
            return ""
        if not stat.S_ISDIR(st.st_mode):   # a link or a file where the dir was: remove the entry only
            os.unlink(name, dir_fd=parent_fd)
            return ""
        root_fd = _open_dir(name, parent_fd)
        hoisted = [0]
        try:
            while True:
                if time.monotonic() > deadline:
                    return f"{path}: not removed within {limit_s:g} s"
                with os.scandir(root_fd) as it:
                    entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
                if not entries:
                    break
                for entry, is_dir in entries:
                    if time.monotonic() > deadline:
                        break
                    if not is_dir:
                        os.unlink(entry, dir_fd=root_fd)
                        continue
                    sub_fd = _open_dir(entry, root_fd)
                    try:
                        _empty_one(sub_fd, root_fd, hoisted)
                    finally:
                        os.close(sub_fd)
                    os.rmdir(entry, dir_fd=root_fd)
        finally:
            os.close(root_fd)
        os.rmdir(name, dir_fd=parent_fd)
        return ""
    except OSError as e:
        return f"{path}: {e.strerror or e}"
    finally:
        os.close(parent_fd)


def discard(path: str) -> bool:
    """remove_tree, counted in CLEANUP; True when removed."""
    why = remove_tree(path)
    if why:
        CLEANUP["not_removed"] += 1
        CLEANUP["last_error"] = why
        return False
    CLEANUP["removed"] += 1
    return True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks (field 22 of /proc/PID/stat): pid + this is unique."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return None


def owner_tag(pid: int | None = None) -> str:
    pid = os.getpid() if pid is None else pid
    return f"{pid}.{_start_time(pid) or 0}"


_cleaned: set[str] = set()


def clean_stale(root: str) -> int:
    """Remove `proxylm-sbx-<pid>.<start>-*` dirs in `root` whose owner is gone; returns how many."""
    removed = 0
    try:
        names = os.listdir(root)
    except OSError:
        return 0
    for name in names:
        if not name.startswith(WORKDIR_PREFIX):
            continue
        tag = name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        pid, _, start = tag.partition(".")
        if not pid.isdigit() or not start.isdigit():
            continue   # not named by this version: owner unknown, left alone
        if _start_time(int(pid)) == start:
            continue   # the owner still runs
        path = os.path.join(root, name)
        try:
            st = os.lstat(path)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid():   # never a symlink, never someone else's
            removed += discard(path)
    return removed


def make_workdir(root: str | None) -> str:
    root = os.path.realpath(root or tempfile.gettempdir())
    if root not in _cleaned:
        _cleaned.add(root)
        clean_stale(root)
    return os.path.realpath(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{owner_tag()}-", dir=root))
