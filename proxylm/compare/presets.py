"""What a comparison trains: the models (a config family plus overrides), the sizes and the budgets.

    cfg = model_config("proxy-bpe", PRESETS["demo"], PRESETS["demo"].sizes[0], seed=1, corpus=None, extra=[])

A preset has one backbone size (quickstart, smoke, demo, gpu) or several (scaling, scaling-gpu), each with
its own training-FLOP budget, and a default number of seeds. Every model of a preset is trained at every
size and seed; variants on the same seed share the data order and the per-document view coin flips
(`data.seed`, `views.seed`), so their per-seed differences are paired.
"""

from __future__ import annotations

import dataclasses

# model name -> (config family, overrides). The family's `-<size>` config is the base.
COOLDOWN = ["views.schedule.decay_frac=0.2", "views.schedule.final_rate=0.0", "views.schedule.final_mode=sentinel"]
# The best small-scale recipe we found (BENCHMARKS.md, "A recipe for small scale"): half the documents
# compressed, no raw-byte head (at this size it takes loss weight from the main head), a 512-id BPE (a
# smaller output layer buys more steps per FLOP) and the cooldown to raw bytes at the end.
TUNED = ["views.rate=0.5", "model.n_raw_heads=0", "views.codec_options.bpe.vocab_size=512", *COOLDOWN]
# Bridges (proxylm/model/features.py, bridge.py): the byte arm with the input-bridge table uses the tuned
# recipe's 512-id BPE; n-grams as BLT at this scale: 3- to 5-grams, 2048 rows each.
BRIDGE_TABLE = ["model.input_bridge=own", "views.codec_options.bpe.vocab_size=512"]
INPUT_BRIDGE = ["model.input_bridge=shared"]
OUTPUT_BRIDGE = ["model.output_bridge=0.5"]
NGRAMS = ["model.ngram_sizes=[3,4,5]", "model.ngram_buckets=2048"]
MODELS: dict[str, tuple[str, list[str]]] = {
    "bytes": ("bytes", []),
    "bytes-mbp": ("bytes", ["model.n_pred_heads=8"]),  # the reference's multi-byte prediction baseline
    "tokens": ("tokens", []),
    "proxy-bpe": ("proxy-bpe", []),
    "proxy-bpe-bytes": ("proxy-bpe-bytes", []),
    "proxy-neural": ("proxy-neural", []),
    "proxy-gzip": ("proxy-gzip", []),
    "proxy-bpe-nowarmup": ("proxy-bpe", ["views.schedule.enabled=false"]),
    "proxy-bpe-alwayspair": ("proxy-bpe", ["views.schedule.enabled=false", "views.mode=translation_random"]),
    "proxy-bpe-rate0.5": ("proxy-bpe", ["views.rate=0.5"]),
    "proxy-bpe-rate0.75": ("proxy-bpe", ["views.rate=0.75"]),
    # BPE ids can only share embedding rows with raw bytes when written as bytes: the token-byte
    # proxy with compressed bytes on the raw-byte ids (the reference's "no separate embedding").
    "proxy-bpe-shared-embedding": ("proxy-bpe-bytes", ["views.separate_embedding=false"]),
    # our own idea: the rate decays to 0 over the last 20% of steps, so the model ends on raw bytes
    "proxy-bpe-cooldown": ("proxy-bpe", COOLDOWN),
    # one ingredient of the tuned recipe at a time, and the recipe itself
    "proxy-bpe-rawhead0": ("proxy-bpe", ["model.n_raw_heads=0"]),
    "proxy-bpe-vocab512": ("proxy-bpe", ["views.codec_options.bpe.vocab_size=512"]),
    "proxy-bpe-tuned": ("proxy-bpe", TUNED),
    # our own idea: a BPE id's input embedding = its row + the mean of its bytes' rows (model.compose_embedding)
    "proxy-bpe-tuned-composed": ("proxy-bpe", TUNED + ["model.compose_embedding=true"]),
    # the bridges between the views (issue 22; BENCHMARKS.md "Bridges"): the byte arms read the same features
    "bytes-trie": ("bytes", BRIDGE_TABLE),  # the input-bridge table, trained from raw bytes only
    "bytes-ngram": ("bytes", NGRAMS),
    "proxy-bpe-tuned-obridge": ("proxy-bpe", TUNED + OUTPUT_BRIDGE),
    "proxy-bpe-tuned-ibridge": ("proxy-bpe", TUNED + INPUT_BRIDGE),
    "proxy-bpe-tuned-bridges": ("proxy-bpe", TUNED + OUTPUT_BRIDGE + INPUT_BRIDGE),
    "proxy-bpe-tuned-obridge-ngram": ("proxy-bpe", TUNED + OUTPUT_BRIDGE + NGRAMS),
}
BRIDGE_ARMS = ("bytes-trie", "bytes-ngram", "proxy-bpe-tuned-obridge", "proxy-bpe-tuned-ibridge",
               "proxy-bpe-tuned-bridges", "proxy-bpe-tuned-obridge-ngram")
ALL_MODELS = [m for m in MODELS if m not in BRIDGE_ARMS]  # the demo's models (the bridges have their preset)

# What each variant is judged against (paired per-seed differences): its recipe without the change.
REFERENCE = {"bytes-mbp": "bytes", "tokens": "bytes", "proxy-bpe": "bytes",
             **{m: "proxy-bpe" for m in MODELS if m.startswith("proxy-") and m != "proxy-bpe"},
             "proxy-bpe-tuned-composed": "proxy-bpe-tuned"}
# The bridges preset judges each arm against the byte arm with the same input features: the proxy pays only
# where a proxy arm beats that one. "Best proxy + n-grams" is the output-bridge arm (it reads the byte arm's
# features, so bytes-ngram is its exact reference).
BRIDGE_MODELS = ["bytes", "bytes-trie", "proxy-bpe-tuned", "proxy-bpe-tuned-obridge", "proxy-bpe-tuned-ibridge",
                 "proxy-bpe-tuned-bridges", "bytes-ngram", "proxy-bpe-tuned-obridge-ngram"]
BRIDGE_REFERENCE = {"bytes-trie": "bytes", "proxy-bpe-tuned": "bytes", "proxy-bpe-tuned-obridge": "bytes",
                    "proxy-bpe-tuned-ibridge": "bytes-trie", "proxy-bpe-tuned-bridges": "bytes-trie",
                    "bytes-ngram": "bytes", "proxy-bpe-tuned-obridge-ngram": "bytes-ngram"}
# elsewhere (e.g. --models in the demo) a bridge arm is judged against its recipe without the bridge
REFERENCE.update({"bytes-trie": "bytes", "bytes-ngram": "bytes", "proxy-bpe-tuned-obridge": "proxy-bpe-tuned",
                  "proxy-bpe-tuned-ibridge": "proxy-bpe-tuned", "proxy-bpe-tuned-bridges": "proxy-bpe-tuned",
                  "proxy-bpe-tuned-obridge-ngram": "proxy-bpe-tuned-obridge"})


@dataclasses.dataclass
class Size:
    """One backbone: a config size (micro | tiny | gpu) plus model overrides, and its FLOP budget."""

    name: str  # label in tables and run directories ("tiny", "d128x4", ...)
    base: str  # config suffix: micro | tiny | gpu
    budget_flops: float
    overrides: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Preset:
    size: str  # base config suffix of a one-size preset: micro | tiny | gpu
    budget_flops: float
    models: list[str]
    eval_bytes: int  # held-out raw bytes scored per model
    evals_per_run: int = 8
    overrides: list[str] = dataclasses.field(default_factory=list)
    seeds: int = 1  # default of --seeds
    scaling: list[Size] = dataclasses.field(default_factory=list)  # several sizes (a scaling study)
    references: dict = dataclasses.field(default_factory=dict)  # model -> reference, over REFERENCE
    analysis: str = ""  # "bridges": compare/bridges.py (gap per size, translation probe, parameters per arm)

    @property
    def sizes(self) -> list[Size]:
        return self.scaling or [Size(self.size, self.size, self.budget_flops)]


# The scaling study's backbones (seq 256, batch 8 as tiny): 33K, 107K, 640K and 3.3M non-embedding parameters
# (100x), budgets growing with size (x4, x5, x5), as far as 2 CPU cores allow in bfloat16 (`train.dtype=auto`
# below): the three smaller sizes within ~10x of their compute-optimal budgets (~120 N^2 FLOPs: 1.3e11, 1.4e12,
# 4.9e13), the largest ~65x below its own (1.3e15); budgets far below compute-optimal make the frontier
# non-monotonic (BENCHMARKS.md: the layout tried first, and the measured costs).
SCALING_SIZES = [
    Size("d32x2", "tiny", 2e11, ["model.dim=32", "model.n_layers=2", "model.n_heads=2"]),
    Size("d64x2", "tiny", 8e11, ["model.dim=64", "model.n_layers=2", "model.n_heads=2"]),
    Size("d128x3", "tiny", 4e12, ["model.dim=128", "model.n_layers=3", "model.n_heads=4"]),
    Size("d256x4", "tiny", 2e13, ["model.dim=256", "model.n_layers=4", "model.n_heads=4"]),
]
BRIDGE_SIZES = [SCALING_SIZES[2], Size("tiny", "tiny", 8e12)]  # d128x3 and the tiny backbone (issue 22's two)
# The same study on one GPU (bench/gpu_all.sh runs a subset), sized for a 15-minute device budget (not measured yet).
SCALING_GPU_SIZES = [
    Size("d256x4", "gpu", 5e14, ["model.dim=256", "model.n_layers=4", "model.n_heads=4"]),
    Size("d512x8", "gpu", 2e15, ["model.dim=512", "model.n_layers=8", "model.n_heads=8"]),
    Size("d768x12", "gpu", 8e15),
]
SCALING_MODELS = ["bytes", "tokens", "proxy-bpe", "proxy-bpe-tuned"]

# Periodic evals are forward passes over eval_bytes (twice over, with stride seq_len/2): keep their
# cost a small fraction of the training budget.
PRESETS = {
    # the README's main job: the headline trio, 2 seeds (its cost: README, BENCHMARKS.md)
    # in bfloat16 where the CPU computes it natively: the same budget in less time (BENCHMARKS.md)
    "quickstart": Preset("tiny", 4.5e12, ["bytes", "tokens", "proxy-bpe"], eval_bytes=30_000, evals_per_run=4,
                         seeds=2, overrides=["train.dtype=auto"]),
    "smoke": Preset("micro", 1.5e11, ["bytes", "tokens", "proxy-bpe", "proxy-gzip"], eval_bytes=20_000,
                    evals_per_run=4),
    "demo": Preset("tiny", 8e12, ALL_MODELS, eval_bytes=40_000, evals_per_run=6, seeds=3),
    "gpu": Preset("gpu", 3e17, ALL_MODELS, eval_bytes=5_000_000),
    "scaling": Preset("tiny", 0, SCALING_MODELS, eval_bytes=30_000, evals_per_run=5, seeds=3,
                      overrides=["train.dtype=auto"], scaling=SCALING_SIZES),
    # issue 22: 8 arms at the scaling study's largest backbone and at tiny (the demo's), 3 seeds (BENCHMARKS.md
    # "Bridges"); `compare --sizes d32x2` also takes the scaling study's other sizes
    "bridges": Preset("tiny", 0, BRIDGE_MODELS, eval_bytes=30_000, evals_per_run=5, seeds=3,
                      scaling=BRIDGE_SIZES, references=BRIDGE_REFERENCE,
                      analysis="bridges"),
    "scaling-gpu": Preset("gpu", 0, SCALING_MODELS, eval_bytes=1_000_000, evals_per_run=5, seeds=1,
                          scaling=SCALING_GPU_SIZES),
}


def model_config(name: str, preset: Preset, size: Size, seed: int, corpus: str | None, extra: list[str]):
    """The run config of one model: its family's config at `size`, at the size's budget.

    eval.max_bytes is the preset's, so the trainer's periodic evals score the same held-out bytes as
    the final table. `extra` (the command line's key=value) comes last and wins.
    """
    from proxylm.config import load_config

    if name not in MODELS:
        raise ValueError(f"unknown model '{name}'; known: {', '.join(MODELS)}")
    family, overrides = MODELS[name]
    settings = [f"train.max_flops={size.budget_flops}", "train.max_steps=1000000", f"train.seed={seed}",
                f"eval.max_bytes={preset.eval_bytes}", f"eval.final_max_bytes={preset.eval_bytes}",
                f"train.evals_per_run={preset.evals_per_run}",
                f"data.seed={seed}", f"views.seed={seed}", f"name={name}"]
    if corpus:
        settings.append(f"data.corpus={corpus}")
    return load_config(f"{family}-{size.base}", size.overrides + overrides + settings + preset.overrides + list(extra))
