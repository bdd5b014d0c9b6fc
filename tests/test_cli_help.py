"""`proxylm --help` and `proxylm VERB --help` import no torch: building the parser stays cheap (each command
imports what it runs)."""

from __future__ import annotations

import subprocess
import sys

HELPS = [[], ["train"], ["resume"], ["eval"], ["eval", "bpb"], ["eval", "humaneval"], ["eval", "codegen"],
         ["eval", "robustness"], ["eval", "translation"], ["generate"], ["codec"], ["codec", "train"], ["data"],
         ["data", "show"], ["compare"], ["export"]]

PROBE = """
import contextlib, io, json, sys
from proxylm.cli import main
for argv in json.loads(sys.argv[1]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(argv + ["--help"])
        except SystemExit as e:
            assert e.code == 0, (argv, e.code)
print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
"""


def test_help_imports_no_torch():
    import json

    out = subprocess.run([sys.executable, "-c", PROBE, json.dumps(HELPS)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_plan_help_defaults_are_the_planners():
    from proxylm import plan
    from proxylm.cli import plan as cli_plan

    assert (cli_plan.DEFAULT_MFU, cli_plan.H200_PEAK_TFLOPS) == (plan.DEFAULT_MFU, plan.H200_PEAK_TFLOPS)
