"""Shared fixtures: small hermetic corpora, so tests never depend on the stdlib's size."""

import os

import pytest
import torch

# One torch thread: the tests' models are tiny, and on a loaded 2-core machine two threads made some tests
# 20-50x slower (thread contention), one thread keeps the suite at ~2 minutes. Subprocesses set their own.
torch.set_num_threads(1)
os.environ.setdefault("PROXYLM_THREADS", "1")  # the default thread policy, in-process and in the CLI subprocesses


def batched(generate_one):
    """A stand-in for generate_batch made of a stand-in for generate (row i = generate(prompts[i], seeds[i]))."""

    def generate_batch(model, interface, prompts, max_bytes, temperature, top_p, stop, seeds, **_):
        return [generate_one(model, interface, p, max_bytes, temperature, top_p, stop, s)
                for p, s in zip(prompts, seeds)]

    return generate_batch


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
