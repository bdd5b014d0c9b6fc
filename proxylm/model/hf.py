"""The transformers (HF Llama) view of proxylm's Transformer: config and weight names both ways.

    hf.load_hf_weights(model, "exports/x")   # trunk and head 0 from an export (train.init_from)
    state = hf.hf_llama_state_dict(model)    # LlamaForCausalLM names, tensors shared with the model

Names map 1:1: embed -> model.embed_tokens, layers.i.attn.{q,k,v,o} -> model.layers.i.self_attn.{q,k,v,o}_proj,
layers.i.mlp.{gate,up,down} -> model.layers.i.mlp.{gate,up,down}_proj, layers.i.attn_norm -> input_layernorm,
layers.i.mlp_norm -> post_attention_layernorm, norm -> model.norm, output -> lm_head. The extra heads
(`pred_heads`: main heads 1.., `raw_heads`) have no Llama counterpart.

Used by the exporter (proxylm/export.py) and by `train.init_from` (proxylm/assemble.py).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from proxylm.model.config import ModelConfig

WEIGHTS = "model.safetensors"
WEIGHTS_INDEX = "model.safetensors.index.json"  # sharded checkpoints written by transformers itself
HF_CONFIG = "config.json"
# LlamaConfig keys that fix every weight's shape or meaning: a mismatch makes the weights unusable
SHAPE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim")
# keys a continued run may change on purpose (e.g. a longer context); a mismatch is only reported
SOFT_KEYS = ("rope_theta", "rms_norm_eps")


# ---- the mapping ---------------------------------------------------------------------------------
_HF_LAYER_NAMES = {
    "attn.q.weight": "self_attn.q_proj.weight", "attn.k.weight": "self_attn.k_proj.weight",
    "attn.v.weight": "self_attn.v_proj.weight", "attn.o.weight": "self_attn.o_proj.weight",
    "mlp.gate.weight": "mlp.gate_proj.weight", "mlp.up.weight": "mlp.up_proj.weight",
    "mlp.down.weight": "mlp.down_proj.weight", "attn_norm.weight": "input_layernorm.weight",
    "mlp_norm.weight": "post_attention_layernorm.weight",
}


def hf_llama_state_dict(model) -> dict[str, torch.Tensor]:
    """Head 0 and the trunk under LlamaForCausalLM names (extra heads dropped); tensors are shared, not copied."""
    out = {}
    for name, t in model.state_dict().items():
        if name == "embed.weight":
            out["model.embed_tokens.weight"] = t
        elif name == "norm.weight":
            out["model.norm.weight"] = t
        elif name == "output.weight":
            out["lm_head.weight"] = t
        elif name.startswith("layers."):
            _, i, rest = name.split(".", 2)
            out[f"model.layers.{i}.{_HF_LAYER_NAMES[rest]}"] = t
    return out


def hf_llama_config(cfg: ModelConfig, vocab_size: int) -> dict:
    """Keyword arguments of transformers.LlamaConfig for this architecture (special token ids are the caller's)."""
    return dict(vocab_size=vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.hidden_dim,
                num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads,
                num_key_value_heads=cfg.kv_heads, head_dim=cfg.head_dim, hidden_act="silu",
                max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
                rope_theta=cfg.rope_theta, attention_bias=False, mlp_bias=False, tie_word_embeddings=False)


def check_architecture(have: dict, want: dict, source) -> None:
    """have/want: LlamaConfig keyword dicts of the source and of the model being initialised."""
    bad = [f"{k} {have.get(k)} != {want[k]}" for k in SHAPE_KEYS if have.get(k) != want[k]]
    if bad:
        what = "vocabulary size" if any(b.startswith("vocab_size") for b in bad) else "model shape"
        raise ValueError(f"{source}: {what} does not match the model to initialise ({'; '.join(bad)}; "
                         "source != this run)")
    soft = [f"{k} {have.get(k)} != {want[k]}" for k in SOFT_KEYS if have.get(k) is not None and have[k] != want[k]]
    if soft:
        warnings.warn(f"{source}: {'; '.join(soft)} (kept this run's values)")


def read_hf_weights(directory: Path) -> dict[str, torch.Tensor]:
    if (directory / WEIGHTS).exists():
        return load_file(str(directory / WEIGHTS))
    if (directory / WEIGHTS_INDEX).exists():
        shards = sorted(set(json.loads((directory / WEIGHTS_INDEX).read_text())["weight_map"].values()))
        return {k: t for s in shards for k, t in load_file(str(directory / s)).items()}
    raise FileNotFoundError(f"{directory}: no {WEIGHTS} (not a transformers export)")


@torch.no_grad()
def load_hf_weights(model, directory) -> None:
    """Inverse of hf_llama_state_dict: copy an exported Llama checkpoint into `model` (trunk and head 0; the
    extra heads keep their current weights). Raises ValueError when vocabulary or shapes differ."""
    directory = Path(directory)
    if not (directory / HF_CONFIG).exists():
        raise FileNotFoundError(f"{directory}: no {HF_CONFIG} (not a transformers export)")
    have = json.loads((directory / HF_CONFIG).read_text())
    have.setdefault("head_dim", have.get("hidden_size", 0) // max(1, have.get("num_attention_heads", 1)))
    have.setdefault("rope_theta", (have.get("rope_parameters") or {}).get("rope_theta"))  # 5.x nests it
    check_architecture(have, hf_llama_config(model.cfg, model.vocab_size), directory)
    loaded = read_hf_weights(directory)
    if "lm_head.weight" not in loaded and have.get("tie_word_embeddings"):
        loaded["lm_head.weight"] = loaded["model.embed_tokens.weight"]
    targets = hf_llama_state_dict(model)  # shares storage with the model: copying into it loads the weights
    missing = sorted(set(targets) - set(loaded))
    if missing:
        raise ValueError(f"{directory}: missing weights {missing[:4]}{' ...' if len(missing) > 4 else ''}")
    for name, t in targets.items():
        if loaded[name].shape != t.shape:
            raise ValueError(f"{directory}: {name} has shape {tuple(loaded[name].shape)}, the model expects "
                             f"{tuple(t.shape)}")
    for name, t in targets.items():
        t.copy_(loaded[name])
