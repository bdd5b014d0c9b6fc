"""Which documents are train and which are validation: named splits when the corpus has them, else a hash.

    roles, how = split_roles(["test", "train", "validation"], "auto", 0.05)
    # roles == {"train": "train", "validation": "val"}, how == "named splits: train 'train', validation 'validation'"

`data.splits` (default `auto`):
    auto          a corpus with named splits (a saved DatasetDict) trains on `train` and validates on the first of
                  `validation`, `valid`, `val`, `dev`, `test` it has; other splits are left out. With `train` and no
                  validation split, `train` alone is split by hash; with no `train` split, every split is merged and
                  split by hash (and the summary says so).
    hash          every document, whatever its split, split by the hash of its key (`data.val_fraction`)
    TRAIN:VAL     those named splits (e.g. `train:test`); `TRAIN` alone: that split, split by hash
A corpus without named splits (folders, JSONL, parquet, a plain Dataset) is always split by hash.

A role is "train", "val" or "hash" (split by the hash of the document key); a split with no role is left out.
"""

from __future__ import annotations

from proxylm.core.errors import ConfigError

VAL_NAMES = ("validation", "valid", "val", "dev", "test")


def split_roles(names, setting: str, val_fraction: float) -> tuple[dict[str, str], str]:
    """({split name: role}, how the split was chosen, in words) for the corpus' named splits `names`."""
    names = sorted(n for n in set(names) if n)
    by_hash = f"chosen by the hash of each document key (data.val_fraction={val_fraction})"
    if not names:
        return {}, by_hash
    if setting == "hash":
        return {n: "hash" for n in names}, f"splits {', '.join(names)} merged, {by_hash} (data.splits=hash)"
    if setting == "auto":
        train = "train" if "train" in names else None
        val = next((v for v in VAL_NAMES if v in names), None)
        if train is None:
            return ({n: "hash" for n in names}, f"no 'train' split among {', '.join(names)}: merged, {by_hash}; "
                    "set data.splits=TRAIN:VAL to choose")
    else:
        train, _, val = setting.partition(":")
        for part, what in ((train, "training"), (val, "validation")):
            if part and part not in names:
                raise ConfigError(f"data.splits={setting}: the corpus has no {what} split '{part}'; its splits: "
                                  f"{', '.join(names)} (or data.splits=auto / hash)")
        val = val or None
    left = [n for n in names if n not in (train, val)]
    note = f"; left out: {', '.join(left)}" if left else ""
    if val is None:
        return {train: "hash"}, f"split '{train}' {by_hash}, no validation split{note}"
    return {train: "train", val: "val"}, f"named splits: train on '{train}', validate on '{val}'{note}"


def check_setting(setting: str) -> None:
    if not setting or setting.count(":") > 1 or setting.startswith(":") or setting.endswith(":"):
        raise ConfigError(f"data.splits={setting!r}: use auto, hash, TRAIN:VAL (e.g. train:test) or TRAIN")


def hub_hint(spec: str) -> str:
    """For a spec that looks like a Hugging Face hub name ("owner/name"): how to give it to proxylm."""
    parts = spec.split("/")
    if len(parts) != 2 or not all(parts) or spec.startswith((".", "~")) or any(c in spec for c in "*?[ "):
        return ""
    return (f". '{spec}' looks like a Hugging Face hub dataset name: proxylm reads local files only; save it first, "
            f"e.g. python -c \"import datasets; datasets.load_dataset('{spec}').save_to_disk('data/{parts[1]}')\", "
            f"then data.corpus=data/{parts[1]} (its splits are used: README 'Splits'); the HF cache's .arrow files "
            f"also read directly: data.corpus='~/.cache/huggingface/datasets/{parts[0]}___{parts[1]}/**/*.arrow'")
