"""A byte model from a token model: `train.init_from` given a token model converts it, with proxy compression
as the bridge (the token model's own tokenizer becomes the compressed view it already speaks).

    proxylm train tokens-tiny --out runs/tok                                                # a token model
    proxylm train proxy-convert-tiny train.init_from=runs/tok --out runs/conv               # proxy conversion
    proxylm train bytes-tiny train.init_from=runs/tok --out runs/naive                      # naive: raw bytes only
    proxylm train proxy-convert-tiny train.init_from=~/models/SmolLM-135M --out runs/smol   # a transformers Llama dir

    conv = plan_conversion(cfg, corpus)    # None unless train.init_from is a token model; checks everything first
    cfg, codec, rep = conv.cfg, conv.codec, conv.rep
    log = conv.load(model)                 # the run's fresh Transformer, before DDP/FSDP wrapping

A token model is a proxylm `tokens` run (views.codec bpe, rate 1, vanilla) or a transformers Llama checkpoint
directory with its `tokenizer.json` (no proxylm `representation.json`: a proxylm export is initialised as before).
The target config decides what it becomes: `views.codec: bpe` (the tokenizer is the proxy codec, imported through
`proxylm/codecs/imported.py` with its lossless checks; the run also re-checks the round trip on 1 MB of its
corpus) or `views.codec: null` (the naive conversion: raw bytes only).

What each row of the new model holds:
* compressed ids: the source's embedding and output rows of the same token ids (the view it already reads);
* trunk (every layer, final norm): copied 1:1; the model shape (dim, layers, heads, GQA, ffn, norm eps, rope theta)
  comes from the source's config, overriding the run config's model keys (logged);
* raw bytes: the mean of the rows of the tokens that are exactly that byte (ByteLevel's 256 base tokens,
  SentencePiece's <0xNN> fallback and single-character tokens): a raw view is then read as the same text
  tokenized into single bytes, which the model has seen inside every rare word. A byte without such a token
  takes the mean of the tokens whose bytes contain it, else the mean of all token rows (both counted);
* specials: a proxylm source's own special rows (the same Representation layout); from a transformers source its
  bos/eos rows (config.json's bos_token_id / eos_token_id) where given; every other special, every sentinel and
  the padding rows are fresh, normal(0, the source's row std) so they sit at the scale the trunk expects;
* extra prediction and raw-byte heads: fresh (the source has none).

Refused before any work, naming the key: a shape proxylm's Llama cannot hold (head_dim other than
hidden_size / num_attention_heads, rope_scaling, attention or MLP biases, an activation other than silu, another
model_type) and target settings a conversion cannot honour (another codec, views.codec_dir, precomputed views,
model.compose_embedding). Tied embeddings are untied (both tables start from the one matrix).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from proxylm.codecs import load_codec
from proxylm.codecs.imported import import_tokenizer
from proxylm.codecs.options import codec_options_for
from proxylm.config import RunConfig, load_config
from proxylm.core.errors import UserError
from proxylm.core.representation import N_BYTES, Representation
from proxylm.model import hf
from proxylm.train.checkpoint import latest_checkpoint

RUN_CONFIG, REPRESENTATION, CODEC_DIR, TOKENIZER = "config.yaml", "representation.json", "codec", "tokenizer.json"
SUPPORTED_MODEL_TYPES = ("llama",)
# ModelConfig key <- transformers LlamaConfig key (what a converted run's shape is read from)
HF_SHAPE = {"dim": "hidden_size", "n_layers": "num_hidden_layers", "n_heads": "num_attention_heads",
            "n_kv_heads": "num_key_value_heads", "ffn_dim": "intermediate_size", "norm_eps": "rms_norm_eps",
            "rope_theta": "rope_theta"}
RUN_SHAPE = ("dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "norm_eps", "rope_theta")


# ---- what the source is ---------------------------------------------------------------------------------------
def _is_token_run_cfg(cfg: RunConfig) -> bool:
    v = cfg.views
    return v.codec == "bpe" and v.rate == 1.0 and v.mode == "vanilla" and not v.schedule.enabled


def token_model_kind(source) -> str | None:
    """"run" (a proxylm tokens run), "hf" (a transformers checkpoint with tokenizer.json), or None."""
    p = Path(source).expanduser()
    if (p / RUN_CONFIG).is_file() and (p / REPRESENTATION).is_file():
        try:
            return "run" if _is_token_run_cfg(load_config(str(p / RUN_CONFIG))) else None
        except ValueError:
            return None
    if (p / hf.HF_CONFIG).is_file() and (p / TOKENIZER).is_file() and not (p / REPRESENTATION).exists():
        return "hf"
    return None


def _hf_config(p: Path) -> dict:
    try:
        return json.loads((p / hf.HF_CONFIG).read_text())
    except ValueError as e:
        raise UserError(f"{p / hf.HF_CONFIG}: not JSON ({e})") from None


def hf_shape(conf: dict, where) -> dict:
    """ModelConfig keyword values from a transformers config.json; UserError naming the key proxylm cannot hold."""
    def refuse(key, why):
        raise UserError(f"{where}: {key}={conf.get(key)!r}: {why}; proxylm converts Llama-architecture models "
                        "(RMSNorm, RoPE, SwiGLU, no biases) only")
    if conf.get("model_type") not in SUPPORTED_MODEL_TYPES:
        refuse("model_type", f"not one of {', '.join(SUPPORTED_MODEL_TYPES)}")
    for key in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
        if not isinstance(conf.get(key), int) or conf[key] < 1:
            refuse(key, "missing or not a positive integer")
    heads, dim = conf["num_attention_heads"], conf["hidden_size"]
    if conf.get("head_dim") not in (None, dim // heads) or dim % heads:
        refuse("head_dim", f"proxylm's head_dim is hidden_size / num_attention_heads ({dim} / {heads})")
    rope = conf.get("rope_parameters") or {}  # transformers 5.x nests rope_theta and the scaling here
    scaling = conf.get("rope_scaling") or ({k: v for k, v in rope.items() if k != "rope_theta"}
                                           if rope.get("rope_type", "default") != "default" else None)
    if scaling and (scaling.get("rope_type") or scaling.get("type")) not in (None, "default"):
        conf = {**conf, "rope_scaling": scaling}
        refuse("rope_scaling", "proxylm's RoPE has no scaling")
    for key in ("attention_bias", "mlp_bias"):
        if conf.get(key):
            refuse(key, "proxylm's projections have no bias")
    if conf.get("hidden_act", "silu") != "silu":
        refuse("hidden_act", "proxylm's MLP is SwiGLU (silu)")
    out = {k: conf.get(v) for k, v in HF_SHAPE.items()}
    out["rope_theta"] = out["rope_theta"] or rope.get("rope_theta") or 10000.0
    out["norm_eps"] = out["norm_eps"] or 1e-6
    out["n_kv_heads"] = out["n_kv_heads"] or heads
    return out


@dataclass
class Source:
    """A token model on disk: where its tokenizer is, its shape and how to read its rows."""

    path: Path
    kind: str  # run | hf
    tokenizer: Path
    shape: dict  # ModelConfig keyword values
    rep: Representation | None = None  # a proxylm source's id layout
    hf_config: dict | None = None

    @classmethod
    def open(cls, source) -> "Source":
        p = Path(source).expanduser()
        kind = token_model_kind(p)
        if kind == "run":
            m = load_config(str(p / RUN_CONFIG)).model
            if m.compose_embedding:
                raise UserError(f"{p}: model.compose_embedding=true: its token rows are not its whole input "
                                "embedding; convert a token model trained without it")
            return cls(p, kind, p / CODEC_DIR / TOKENIZER, {k: _effective(m, k) for k in RUN_SHAPE},
                       rep=Representation.load(p / REPRESENTATION))
        if kind == "hf":
            conf = _hf_config(p)
            return cls(p, kind, p / TOKENIZER, hf_shape(conf, p / hf.HF_CONFIG), hf_config=conf)
        raise UserError(f"train.init_from={source}: not a token model (a proxylm tokens run, or a transformers "
                        f"Llama directory with {TOKENIZER} and {hf.HF_CONFIG})")

    def weights(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """(embedding (V, D), output (V, D), trunk {proxylm name: tensor}) in float32, rows by source id."""
        if self.kind == "run":
            found = latest_checkpoint(self.path, with_optimizer=False)
            if found is None:
                raise UserError(f"{self.path} has no readable checkpoint to convert")
            w = found[1]
            trunk = {k: t for k, t in w.items() if k.startswith("layers.") or k == "norm.weight"}
            return w["embed.weight"].float(), w["output.weight"].float(), trunk
        loaded = hf.read_hf_weights(self.path)
        embed = loaded["model.embed_tokens.weight"].float()
        out = loaded.get("lm_head.weight")
        if out is None:
            if not self.hf_config.get("tie_word_embeddings", True):
                raise UserError(f"{self.path}: no lm_head.weight and tie_word_embeddings is false")
            out = embed  # tied: both tables start from the one matrix (the run keeps them untied)
        return embed, out.float(), {k: t.float() for k, t in loaded.items()
                                    if k.startswith("model.layers.") or k == "model.norm.weight"}

    def row_ids(self, n_symbols: int) -> np.ndarray:
        """(n_symbols,) source row of each token id."""
        if self.kind == "run":
            return self.rep.compressed_ids(np.arange(n_symbols, dtype=np.int64))
        return np.arange(n_symbols, dtype=np.int64)

    def special_rows(self, rep: Representation) -> dict[int, int]:
        """target special id -> source row, for the specials the source has with the same meaning."""
        if self.kind == "run":
            return {i: i for i in range(min(rep.n_special, self.rep.n_special))}
        out = {}
        for target, key in ((rep.bos_id, "bos_token_id"), (rep.eos_id, "eos_token_id")):
            v = self.hf_config.get(key)
            v = v[0] if isinstance(v, list) and v else v
            if isinstance(v, int) and 0 <= v < self.hf_config.get("vocab_size", 0):
                out[target] = v
        return out


# ---- the plan: everything checked before any work --------------------------------------------------------------
def _check_target(cfg: RunConfig) -> None:
    v = cfg.views
    if v.codec not in ("bpe", None):
        raise UserError(f"views.codec={v.codec}: a token model converts into views.codec=bpe (its tokenizer as the "
                        "proxy) or views.codec=null (raw bytes only)")
    if v.codec and v.codec_dir:
        raise UserError(f"views.codec_dir={v.codec_dir}: converting a token model, its own tokenizer is the codec; "
                        "leave views.codec_dir unset")
    if v.precomputed:
        raise UserError("views.precomputed: a converted run encodes with its source's tokenizer; leave it unset")
    if cfg.model.compose_embedding:
        raise UserError("model.compose_embedding=true: a converted token row is its whole input embedding; set "
                        "model.compose_embedding=false")
    if v.codec and not v.separate_embedding:
        raise UserError("views.separate_embedding=false: token ids need their own rows; set it to true")


def _effective(m, key: str):
    """A ModelConfig key's value as the model uses it (None defaults resolved)."""
    return {"n_kv_heads": m.kv_heads, "ffn_dim": m.hidden_dim}.get(key, getattr(m, key))


def wants_conversion(cfg: RunConfig) -> bool:
    """train.init_from names a token model and the run reads raw bytes (a tokens run into a tokens run is a plain
    init_from: same vocabulary)."""
    src = cfg.train.init_from
    if not src:
        return False
    kind = token_model_kind(src)
    return kind == "hf" or (kind == "run" and not _is_token_run_cfg(cfg))


@dataclass
class Conversion:
    cfg: RunConfig  # the run's config with the source's model shape (and bpe vocab size)
    codec: object | None
    rep: Representation
    source: Source
    token_bytes: list[bytes]
    changed: dict  # model key -> (run config's value, source's value)

    def load(self, model) -> str:
        """Fill `model` (built from self.cfg and self.rep) from the source; returns the log line."""
        return load_token_model(model, self)


def plan_conversion(cfg: RunConfig) -> Conversion | None:
    """None unless `train.init_from` is a token model to convert; else the converted run's config, codec and
    Representation. UserError (naming the key) for what cannot be converted; nothing is written."""
    if not wants_conversion(cfg):
        return None
    _check_target(cfg)
    src = Source.open(cfg.train.init_from)
    derived = ("n_kv_heads", "ffn_dim")  # None defaults: set only where the default would derive another value
    changed = {k: (getattr(cfg.model, k), v) for k, v in src.shape.items()
               if k not in derived and getattr(cfg.model, k) != v}
    try:
        model_cfg = dataclasses.replace(cfg.model, **{k: v for k, (_, v) in changed.items()})
    except ValueError as e:
        raise UserError(f"{cfg.train.init_from}: its shape does not make a proxylm model ({e})") from None
    for k in derived:
        want = src.shape[k]
        if _effective(model_cfg, k) != want:
            changed[k] = (getattr(cfg.model, k), want)
            model_cfg = dataclasses.replace(model_cfg, **{k: want})
    if not src.tokenizer.is_file():
        raise UserError(f"{src.path}: no {src.tokenizer.relative_to(src.path)} (the token model's tokenizer)")
    # the probes here; the run checks the round trip on 1 MB of its own corpus before training (assemble)
    codec, _ = import_tokenizer(src.tokenizer)
    n_sym = codec.alphabet_size
    if src.kind == "run" and load_codec(src.path / CODEC_DIR).symbol_bytes() != codec.symbol_bytes():
        raise UserError(f"{src.path / CODEC_DIR}: its tokenizer, imported, does not give the bytes the run's codec "
                        "gives for every token id; convert a run whose codec is a BPE tokenizer")
    limit = src.rep.codec_alphabet if src.kind == "run" else src.hf_config.get("vocab_size", 0)
    if n_sym > limit:
        raise UserError(f"{src.path}: the tokenizer has {n_sym} tokens but the model has rows for {limit} "
                        "(vocab_size); give the model's own tokenizer")
    views = cfg.views
    if views.codec:
        views = dataclasses.replace(views, codec_options=codec_options_for("bpe", vocab_size=n_sym))
    new = dataclasses.replace(cfg, model=model_cfg, views=views)
    rep = (Representation.for_codec(codec, separate_embedding=True) if views.codec
           else Representation.bytes_only())
    return Conversion(new, codec if views.codec else None, rep, src, codec.symbol_bytes(), changed)


# ---- the rows ---------------------------------------------------------------------------------------------------
def byte_sources(token_bytes: list[bytes]) -> tuple[list[list[int]], dict[str, int]]:
    """For each byte value: the token ids whose rows its raw-byte row averages, and how many bytes took each rule
    (single: tokens that are exactly the byte; containing: tokens whose bytes contain it; all: every token)."""
    single: list[list[int]] = [[] for _ in range(N_BYTES)]
    containing: list[list[int]] = [[] for _ in range(N_BYTES)]
    for t, b in enumerate(token_bytes):
        if len(b) == 1:
            single[b[0]].append(t)
        for v in set(b):
            containing[v].append(t)
    every = [t for t, b in enumerate(token_bytes) if b]
    out, counts = [], {"single": 0, "containing": 0, "all": 0}
    for v in range(N_BYTES):
        rule, ids = ("single", single[v]) if single[v] else ("containing", containing[v]) if containing[v] \
            else ("all", every)
        counts[rule] += 1
        out.append(ids)
    return out, counts


def _fill(table: torch.Tensor, source: torch.Tensor, conv: Conversion, gen: torch.Generator) -> None:
    """table (V_new, D) <- rows of source (V_src, D) by the rules in the module docstring."""
    rep, src = conv.rep, conv.source
    std = float(source.std())
    table.copy_(torch.randn(table.shape, generator=gen) * std)  # specials, sentinels, padding: fresh
    n_sym = len(conv.token_bytes)
    rows = torch.as_tensor(src.row_ids(n_sym))
    if conv.codec is not None:
        ids = torch.as_tensor(rep.compressed_ids(np.arange(n_sym, dtype=np.int64)))
        table[ids] = source[rows]
    for v, toks in enumerate(byte_sources(conv.token_bytes)[0]):
        table[rep.raw_offset + v] = source[rows[torch.as_tensor(toks)]].mean(0)
    for target, row in src.special_rows(rep).items():
        table[target] = source[row]


@torch.no_grad()
def load_token_model(model, conv: Conversion) -> str:
    src = conv.source
    embed, output, trunk = src.weights()
    D = model.cfg.dim
    if embed.shape[1] != D or output.shape[1] != D:
        raise UserError(f"{src.path}: embedding width {embed.shape[1]} != hidden size {D}")
    gen = torch.Generator().manual_seed(conv.cfg.train.seed)  # fresh rows: the same on every rank
    for target, source in ((model.embed.weight, embed), (model.output.weight, output)):
        new = torch.empty(target.shape, dtype=torch.float32)
        _fill(new, source, conv, gen)
        target.copy_(new)
    own = model.state_dict() if src.kind == "run" else hf.hf_llama_state_dict(model)
    names = [n for n in own if n.startswith(("layers.", "model.layers.")) or n in ("norm.weight", "model.norm.weight")]
    for name in names:
        if name not in trunk:
            raise UserError(f"{src.path}: the checkpoint lacks {name}")
        if trunk[name].shape != own[name].shape:
            raise UserError(f"{src.path}: {name} has shape {tuple(trunk[name].shape)}, the converted model expects "
                            f"{tuple(own[name].shape)}")
        own[name].copy_(trunk[name])
    _, counts = byte_sources(conv.token_bytes)
    taken = ", ".join(f"model.{k}={new}" + (f" (config had {old})" if old is not None else "")
                      for k, (old, new) in conv.changed.items())
    return (f"converted token model {src.path} ({src.kind}): {len(conv.token_bytes) if conv.codec else 0} token rows "
            f"-> compressed ids; raw-byte rows from single-byte tokens {counts['single']}, from tokens containing "
            f"the byte {counts['containing']}, from all tokens {counts['all']}; specials copied "
            f"{len(src.special_rows(conv.rep))}, the rest fresh; trunk {len(names)} tensors copied"
            + (f"; shape from the source: {taken}" if taken else ""))
