"""Work dirs no program can poison (issue 26): deep trees, links, mode 000, time limit, stale sweep.

    .venv/bin/python -m pytest tests/test_workdir.py -q
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from proxylm.tasks.sandbox import Limits, Sandbox, process
from proxylm.tasks.sandbox import workdir as wd

FAST = Limits(timeout_s=5.0, memory_mb=256)
# through libc, as a hostile program would (the Python guard's realpath per mkdir makes os.mkdir quadratic)
DEEP = ("import ctypes\nlibc = ctypes.CDLL(None)\n"
        "for _ in range(5000):\n    assert libc.mkdir(b'd', 0o700) == 0 and libc.chdir(b'd') == 0\n")


@pytest.fixture
def fast_tmp(tmp_path):
    """A folder on tmpfs where there is one: removing 5,000 nested dirs costs ~15 s on a busy ext4 disk."""
    if os.access("/dev/shm", os.W_OK):
        path = tempfile.mkdtemp(dir="/dev/shm", prefix="proxylm-test-")
        yield __import__("pathlib").Path(path)
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path


def _nest(root, depth: int) -> None:
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        new = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = new
    os.close(fd)


def test_deep_tree_links_and_mode_000_are_removed(fast_tmp):
    tmp_path = fast_tmp
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("data")
    tree = tmp_path / "tree"
    tree.mkdir()
    _nest(tree, 5000)
    (tree / "link").symlink_to(victim)                  # a link to a directory: removed, never followed
    (tree / "d" / "file-link").symlink_to(victim / "keep")
    locked = tree / "locked"
    locked.mkdir()
    (locked / "inner").mkdir()
    (locked / "inner" / "f").write_text("x")
    locked.chmod(0)
    assert wd.remove_tree(str(tree)) == ""
    assert not tree.exists() and (victim / "keep").read_text() == "data"


def test_a_link_in_place_of_the_dir_is_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("data")
    (tmp_path / "wd").symlink_to(victim)
    assert wd.remove_tree(str(tmp_path / "wd")) == ""
    assert (victim / "keep").exists() and not (tmp_path / "wd").is_symlink()


def test_removal_is_bounded_in_time_and_counted(tmp_path):
    tree = tmp_path / "proxylm-sbx-1.1-x"
    tree.mkdir()
    for i in range(50):
        (tree / str(i)).write_text("")
    assert "not removed within" in wd.remove_tree(str(tree), limit_s=0.0)
    before = dict(wd.CLEANUP)
    wd.REMOVE_LIMIT_S, old = 0.0, wd.REMOVE_LIMIT_S
    try:
        assert wd.discard(str(tree)) is False
    finally:
        wd.REMOVE_LIMIT_S = old
    assert wd.CLEANUP["not_removed"] == before["not_removed"] + 1 and "not removed" in wd.CLEANUP["last_error"]


def test_a_deep_tree_fails_no_evaluation(fast_tmp):
    """The program's own 5,000 nested dirs: the run gets its verdict, its dir goes; a dead evaluator's deep
    stale dir is swept by the next sandbox in the same root, and that sandbox works."""
    tmp_path = fast_tmp
    box = Sandbox(FAST, tmp_root=str(tmp_path))
    assert box.run(DEEP).status == "passed"
    assert list(tmp_path.iterdir()) == []
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f"proxylm-sbx-{int(dead.stdout)}.12345-abc"
    stale.mkdir()
    _nest(stale, 5000)
    assert process.clean_stale(str(tmp_path)) == 1 and not stale.exists()
    stale.mkdir()
    _nest(stale, 5000)
    wd._cleaned.discard(os.path.realpath(tmp_path))
    assert Sandbox(FAST, tmp_root=str(tmp_path)).run("x = 1").status == "passed"
    assert list(tmp_path.iterdir()) == []


def test_failures_are_reported_in_benchmark_summaries(monkeypatch):
    from proxylm.tasks.sandbox import sandbox_facts

    monkeypatch.setitem(wd.CLEANUP, "not_removed", 2)
    monkeypatch.setitem(wd.CLEANUP, "last_error", "/tmp/x: not removed within 30 s")
    facts = sandbox_facts()
    assert facts["workdirs_not_removed"] == 2 and "not removed" in facts["workdir_error"]
    assert facts["verdict"].startswith("judge process")


@pytest.mark.parametrize("kw", [{"timeout_s": float("inf")}, {"timeout_s": float("nan")}, {"timeout_s": 0},
                                {"memory_mb": 2 ** 70}, {"max_processes": -1}, {"max_file_mb": 1.5}])
def test_limits_are_checked_where_they_enter(kw):
    with pytest.raises(ValueError, match=next(iter(kw))):
        Limits(**kw)
