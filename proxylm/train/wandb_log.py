"""Weights & Biases logging (`logging.wandb=true`), beside metrics.jsonl and TensorBoard; optional and off by default.

    proxylm train proxy-bpe-tiny logging.wandb=true logging.wandb_mode=offline   # files in RUN/wandb; `wandb sync` later

Needs `pip install 'proxylm[wandb]'`; a run asking for it without the package is refused before any work
(check_wandb). One wandb run per proxylm run directory: its id is derived from the run directory, so `resume`
continues the same wandb run. Rank 0 logs alone.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from proxylm.core.errors import UserError


def check_wandb(logging_cfg) -> None:
    if not logging_cfg.wandb:
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise UserError("logging.wandb=true needs the wandb package: pip install 'proxylm[wandb]' (or set "
                        "logging.wandb=false)") from None


class WandbLogger:
    def __init__(self, logging_cfg, run_dir: Path, config: dict, name: str):
        import wandb

        run_id = hashlib.sha256(os.path.realpath(run_dir).encode()).hexdigest()[:16]
        self.run = wandb.init(project=logging_cfg.wandb_project, name=name, id=run_id, resume="allow",
                              dir=str(run_dir), config=config, mode=logging_cfg.wandb_mode or None)

    def log(self, record: dict) -> None:
        values = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "step"}
        if values:
            self.run.log(values, step=int(record["step"]))

    def close(self) -> None:
        self.run.finish()
