"""Shared fixtures: small hermetic corpora, so tests never depend on the stdlib's size (helpers: helpers.py)."""

import os

import pytest
import torch
from helpers import write_code_corpus

# One torch thread: the tests' models are tiny, and on a loaded 2-core machine two threads made some tests
# 20-50x slower (thread contention), one thread keeps the suite at ~2 minutes. Subprocesses set their own.
torch.set_num_threads(1)
os.environ.setdefault("PROXYLM_THREADS", "1")  # the default thread policy, in-process and in the CLI subprocesses


@pytest.fixture(scope="module")
def code_corpus(tmp_path_factory):
    return write_code_corpus(tmp_path_factory.mktemp("corpus"))
