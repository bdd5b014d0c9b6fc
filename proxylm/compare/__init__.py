"""The paper's headline as one command: models trained at the same FLOP budget, scored on raw bytes.

    proxylm compare --preset quickstart --out runs/quickstart --sample "def fibonacci(n):"   # ~6 min
    proxylm compare --preset smoke --out runs/compare-smoke --seeds 2   # minutes
    proxylm compare --preset demo --out runs/compare-demo               # 3 seeds; ~75 min on 2 quiet cores
    proxylm compare --preset scaling --out runs/scaling                 # 4 sizes x 4 families x 3 seeds, < 90 min
    proxylm compare --preset gpu --out runs/compare-gpu                 # one GPU
    proxylm compare --preset demo --models bytes,proxy-bpe --seeds 2 --eval-corpus ~/code --out runs/c

Every model shares one backbone (the size's) and one training-FLOP budget, counted exactly as the
trainer counts it (`train.max_flops`). Each is scored on the same held-out raw bytes (raw-byte BPB; the
token baseline through its tokenizer, over the same bytes), and on a second corpus with `--eval-corpus`.
With several seeds: mean and spread per model, each variant against its reference on paired per-seed
differences ("within noise" or not), the headline ratio with an interval. Writes `results.json`,
`results.md` and PNG plots into --out and prints `RESULT bytes_flops_to_match_proxy <ratio>`: the FLOPs
the byte baseline needs to reach proxy-BPE's final BPB, over proxy-BPE's FLOPs (below 1: the byte model
got there first). The scaling presets also fit BPB against FLOPs per family and print
`RESULT proxy_gap_trend <slope>` and `RESULT proxy_crossover_flops <flops | inf>`.

Modules: presets (models, sizes, budgets), runs (one model: fingerprint, train/reuse, score),
stats (spread, paired differences, power-law fit), report (tables, plots), driver (the loop).
"""

from proxylm.compare.driver import build_report, compare, plan, result_lines  # noqa: F401
from proxylm.compare.presets import ALL_MODELS, MODELS, PRESETS, REFERENCE, Preset, Size, model_config  # noqa: F401
from proxylm.compare.runs import check_reusable, fingerprint, run_one  # noqa: F401
from proxylm.compare.stats import aggregate, fit_power_law, flops_to_reach, headline  # noqa: F401
