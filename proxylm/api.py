"""The Python API: train or load a run, generate from text, score bits per byte. Raw text in, raw text out.

    import proxylm.api as api
    model = api.load("runs/proxy-bpe-tiny")                 # the latest checkpoint of a run directory
    model.generate("def fibonacci(n):", max_bytes=200)      # str in, str out (bytes in, bytes out)
    model.bpb(["def f(x):\\n    return x\\n"])               # raw-byte bits per byte of the texts
    model.score(["..."])                                     # {"bpb", "bytes", "nats", "documents", ...}
    api.train("bytes-micro", "runs/x", ["train.max_steps=20"])   # what `proxylm train` does; returns the run dir

Every model reads and writes raw bytes through its run's interface (`<bos><raw>` + bytes for byte and proxy
models, BPE tokens for the token baseline): the compressor a proxy model was trained with is never needed here.
A worked example (run by tests/test_api.py):

>>> import tempfile
>>> import proxylm.api as api
>>> run_dir = api.train("bytes-micro", tempfile.mkdtemp() + "/run", ["train.max_steps=3", "train.threads=1",
...                     "eval.max_bytes=3000", "eval.final_max_bytes=3000"], quiet=True)
>>> model = api.load(run_dir)
>>> model.step, model.kind
(3, 'bytes')
>>> text = model.generate("def add(a, b):", max_bytes=12)
>>> isinstance(text, str) and len(text.encode("utf-8", "surrogateescape")) <= 12
True
>>> model.generate(b"import ", max_bytes=4) == model.generate(b"import ", max_bytes=4)   # greedy: deterministic
True
>>> 0 < model.bpb("def add(a, b):\\n    return a + b\\n") < 16
True
>>> sorted(model.score(["x = 1\\n", "y = 2\\n"]))[:3]
['bpb', 'bytes', 'documents']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from proxylm.assemble import LoadedRun, build_trainer, load_run
from proxylm.config import load_config
from proxylm.core.device import pick_device
from proxylm.eval.bpb import evaluate_bpb
from proxylm.eval.generate import generate as _generate


@dataclass
class Model:
    """A trained run, ready for generation and scoring (`load` makes one)."""

    run: LoadedRun

    @property
    def step(self) -> int:
        return self.run.step

    @property
    def kind(self) -> str:
        """"bytes", "proxy" or "tokens": what the model reads at inference (raw bytes for the first two)."""
        codec = self.run.cfg.views.codec
        return self.run.interface.kind if self.run.interface.kind != "bytes" else ("proxy" if codec else "bytes")

    def generate(self, prompt: str | bytes, max_bytes: int = 256, temperature: float = 0.0, top_p: float = 1.0,
                 stop: Iterable[str | bytes] = (), seed: int = 0) -> str | bytes:
        """The continuation of `prompt` (without it): str for a str prompt (invalid UTF-8 kept as surrogate
        escapes), bytes for bytes. Greedy when temperature == 0; see proxylm.eval.generate for the rest."""
        data = prompt.encode("utf-8", "surrogateescape") if isinstance(prompt, str) else bytes(prompt)
        room = self.run.model.cfg.max_seq_len - len(self.run.interface.prompt_ids(data))
        if room < 1:
            raise ValueError(f"the prompt fills the model's context ({self.run.model.cfg.max_seq_len} positions)")
        out = _generate(self.run.model, self.run.interface, data, max_bytes=min(max_bytes, room),
                        temperature=temperature, top_p=top_p, stop=stop, seed=seed)
        return out.decode("utf-8", "surrogateescape") if isinstance(prompt, str) else out

    def score(self, texts: str | bytes | Iterable[str | bytes], seq_len: int = 0, stride: int = 0,
              batch_size: int = 8) -> dict:
        """Raw-byte BPB of the texts (each a document): {"bpb", "bytes", "nats", "documents", ...}; the window
        defaults to the run's eval/training seq_len, the stride to half of it."""
        if isinstance(texts, (str, bytes)):
            texts = [texts]
        docs = [t.encode() if isinstance(t, str) else bytes(t) for t in texts]
        cfg = self.run.cfg
        seq_len = seq_len or cfg.eval.seq_len or cfg.data.seq_len
        device = next(self.run.model.parameters()).device
        return evaluate_bpb(self.run.model, self.run.interface, docs, seq_len, stride or max(1, seq_len // 2),
                            batch_size, device)

    def bpb(self, texts: str | bytes | Iterable[str | bytes], **kw) -> float:
        """Raw-byte bits per byte of the texts (see `score`)."""
        return self.score(texts, **kw)["bpb"]


def load(run_dir, device: str = "cpu") -> Model:
    """The latest complete checkpoint of a run directory (`device`: cpu, cuda, auto)."""
    return Model(load_run(Path(run_dir), pick_device(device)))


def train(config: str, out, overrides: Iterable[str] = (), quiet: bool = False) -> Path:
    """Train `config` (a shipped name or a YAML path) with `key=value` overrides into `out`; the run directory.
    As `proxylm train CONFIG ... --out OUT` (quiet: no progress bar; the summary and evals go to stderr)."""
    cfg = load_config(config, list(overrides))
    trainer = build_trainer(cfg, out, quiet=quiet)
    try:
        trainer.fit()
    finally:
        trainer.run_lock.release()
    return Path(out)


__all__ = ["Model", "load", "train"]
