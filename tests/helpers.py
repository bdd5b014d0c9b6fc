"""Small helpers shared by the test files (fixtures live in conftest.py): stand-ins, corpora, files, processes,
a run's metrics and the CLI run in this process."""

from __future__ import annotations

import gzip
import json
import os
import time
from pathlib import Path

import proxylm.cli


# ---- stand-ins and inputs ----

def batched(generate_one):
    """A stand-in for generate_batch made of a stand-in for generate (row i = generate(prompts[i], seeds[i]))."""

    def generate_batch(model, interface, prompts, max_bytes, temperature, top_p, stop, seeds, **_):
        return [generate_one(model, interface, p, max_bytes, temperature, top_p, stop, s)
                for p, s in zip(prompts, seeds)]

    return generate_batch


def write_code_corpus(root, n_files: int = 40, max_functions: int = 7) -> str:
    """A folder of small, regular Python modules (a few KB in all)."""
    for i in range(n_files):
        body = "".join(f"def f{i}_{j}(x):\n    return x * {j} + {i}\n\n" for j in range(1 + i % max_functions))
        (root / f"m{i:02d}.py").write_text(f'"""Module {i}."""\n\n' + body)
    return str(root)


def write_jsonl(path, rows, gz: bool = False):
    """One JSON object per line (gzip-compressed with `gz`); returns `path`."""
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


# ---- processes ----

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


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(cond, timeout: float = 120.0, poll: float = 0.01) -> bool:
    """Poll `cond` until it holds (True) or `timeout` seconds pass (then its last value)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(poll)
    return bool(cond())


# ---- a run's metrics.jsonl ----

def metric_records(run_dir) -> list[dict]:
    """Every line of the run's metrics.jsonl, parsed (a torn line fails the test)."""
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def losses_by_step(run_dir) -> dict[int, float]:
    """step -> loss; a step logged twice (before a kill and again after the resume) must agree with itself."""
    out: dict[int, float] = {}
    for r in metric_records(run_dir):
        if "loss" in r:
            assert out.setdefault(r["step"], r["loss"]) == r["loss"], f"step {r['step']} differs after resume"
    return out


def val_by_step(run_dir) -> dict[int, float]:
    return {r["step"]: r["val_bpb"] for r in metric_records(run_dir) if "val_bpb" in r}


# ---- the CLI in this process ----

def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `proxylm ARGV`."""
    rc = proxylm.cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err
