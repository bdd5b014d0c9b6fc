"""Shared fixtures: small hermetic corpora, so tests never depend on the stdlib's size."""

import os

import pytest


def processes_mentioning(marker: str) -> list[int]:
    """Live processes whose command line mentions `marker` (zombies have an empty cmdline)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def write_code_corpus(root, n_files: int = 40, max_functions: int = 7) -> str:
    """A folder of small, regular Python modules (a few KB in all)."""
    for i in range(n_files):
        body = "".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n\n" for j in range(1 + i % max_functions))
        (root / f"m{i:02d}.py").write_text(f'"""Module {i}."""\n\n' + body)
    return str(root)


@pytest.fixture(scope="module")
def code_corpus(tmp_path_factory):
    return write_code_corpus(tmp_path_factory.mktemp("corpus"))
