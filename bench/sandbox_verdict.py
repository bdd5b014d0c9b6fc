"""Cost of deciding the verdict in a judge process (issue 26): seconds per HumanEval program, two ways.

    nice .venv/bin/python bench/sandbox_verdict.py                # the 164 canonical solutions, 2 workers, 3 rounds
    nice .venv/bin/python bench/sandbox_verdict.py --limit 40 --rounds 1

  proxy   what `eval humaneval` runs: a judge process (prompt helpers + tests) and a candidate process
          (prompt + solution) talking through the call proxy (Program with tests)
  single  the same prompt + solution + tests as one program in one sandboxed process (the cost of the
          earlier in-process design, whose verdict the candidate could forge)
Rounds alternate the two, so machine load hits both alike. Every canonical solution must pass both ways.
Ends with RESULT lines: verdict_proxy_s_per_program, verdict_single_s_per_program, verdict_proxy_overhead.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from proxylm.tasks import humaneval as he  # noqa: E402
from proxylm.tasks.sandbox import Limits, Sandbox, detect_isolation  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    problems = he.load_problems(limit=args.limit or None)
    box = Sandbox(Limits())
    ways = {"proxy": [he.program_for(p, p["canonical_solution"]) for p in problems],
            "single": [he.build_program(p, p["canonical_solution"]) for p in problems]}
    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.rounds):
        for way, programs in ways.items():
            t = time.perf_counter()
            results = box.run_many(programs, workers=args.workers, progress=False)
            times[way].append((time.perf_counter() - t) / len(programs))
            failed = [p["task_id"] for p, r in zip(problems, results) if not r.passed]
            if failed:
                raise SystemExit(f"{way}: canonical solutions failed: {failed[:5]}")
    print(f"{len(problems)} programs, {args.workers} workers, {args.rounds} round(s); isolation: "
          f"{' '.join(detect_isolation()['unshare_prefix'][1:]) or 'no namespaces'}")
    for way, ts in times.items():
        print(f"{way:>6}: {' '.join(f'{t:.3f}' for t in ts)} s per program (wall / programs)")
    proxy, single = statistics.median(times["proxy"]), statistics.median(times["single"])
    print(f"RESULT verdict_proxy_s_per_program {proxy:.3f}")
    print(f"RESULT verdict_single_s_per_program {single:.3f}")
    print(f"RESULT verdict_proxy_overhead {proxy / single:.2f}")


if __name__ == "__main__":
    main()
