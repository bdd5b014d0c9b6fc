"""Export a run as a transformers Llama checkpoint, and load such weights back to continue training.

    proxylm export runs/proxy-bpe-tiny --out exports/proxy-bpe-tiny [--dtype float32|bfloat16] [--force]

    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained("exports/proxy-bpe-tiny")
    tok = AutoTokenizer.from_pretrained("exports/proxy-bpe-tiny")
    out = model.generate(**tok("def fib(n):", return_tensors="pt"), max_new_tokens=100)  # greedy, raw bytes only
    print(tok.decode(out[0], skip_special_tokens=True))

    proxylm train proxy-bpe-tiny train.init_from=exports/proxy-bpe-tiny --out runs/more   # continued training

The export directory: config.json (LlamaConfig, vocab = the run's Representation), model.safetensors (trunk and
main head 0 as lm_head; the training-only heads `pred_heads` and `raw_heads` are dropped), generation_config.json
(bos, the interface's stop ids as eos, pad, and `suppress_tokens` = every id the interface never emits, so plain
greedy/sampled `generate` is restricted to raw bytes), a tokenizer (tokenizer.json, tokenizer_config.json,
special_tokens_map.json), README.md (model card), and the run's representation.json and proxylm_config.yaml.

Tokenizer, byte models and proxy models (ByteInterface): a merge-free `tokenizers` BPE whose vocabulary maps each
byte's ByteLevel character (GPT-2's printable stand-in) to rep.raw_offset + byte, so text -> UTF-8 bytes -> ids;
a TemplateProcessing post-processor prepends `<bos> <raw>`; the ByteLevel decoder turns ids back into text.
Every other id (specials, spares, compressed symbols, vocabulary padding) is a named special token, and
`split_special_tokens` is on so text such as "<bos>" is read as its bytes, exactly as `proxylm generate` reads it.
Bytes that are not valid UTF-8 cannot be passed as text; `bytes_to_ids` / `ids_to_bytes` map them exactly.
Token baseline (TokenInterface, codec `bpe` only): the codec's own BPE with its ids moved to rep.compressed_ids
and `<bos>` prepended; other codecs are refused (their ids are not text tokens).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from proxylm.assemble import load_run
from proxylm.codecs.bpe import byte_level_chars
from proxylm.config import save_config, to_dict
from proxylm.core import rundir
from proxylm.core.errors import UserError
from proxylm.core.interface import TokenInterface
from proxylm.core.representation import Representation
from proxylm.core.rundir import REPRESENTATION
from proxylm.model.hf import WEIGHTS, hf_llama_config, hf_llama_state_dict

RUN_CONFIG = "proxylm_config.yaml"  # not config.yaml: that name marks a proxylm run directory
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _need_transformers():
    try:
        import transformers
    except ImportError as e:  # the optional extra
        raise UserError("proxylm export needs transformers: pip install 'proxylm[hf]'") from e
    return transformers


# ---- tokenizer -----------------------------------------------------------------------------------------------
def _reserved_name(rep: Representation, i: int) -> str:
    """Name of an id that no text encodes to (specials, spares, compressed symbols, padding)."""
    if rep.is_raw_byte(i):  # only reached by the token baseline, whose text never becomes raw-byte ids
        return f"<0x{i - rep.raw_offset:02X}>"
    if i >= rep.used_vocab_size:
        return f"<unused_{i}>"
    return rep.token_name(i)


def _byte_tokenizer(rep: Representation):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {char: rep.raw_offset + b for char, b in byte_level_chars().items()}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))  # no merges: one token per byte
    # no regex split and no prefix space: the ids are exactly the UTF-8 bytes of the text
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _token_baseline_tokenizer(rep: Representation, codec):
    from tokenizers import Tokenizer

    if codec.name != "bpe":
        raise ValueError(f"cannot export a token model over codec '{codec.name}': its ids are not text tokens a "
                         "transformers tokenizer can produce (only the 'bpe' token baseline is exportable)")
    spec = json.loads(codec.tokenizer.to_str())
    if spec.get("added_tokens"):
        raise ValueError("cannot export a BPE codec with added tokens (their ids would collide with the specials)")
    ids = rep.compressed_ids(np.arange(codec.alphabet_size))  # codec symbol -> model id
    spec["model"]["vocab"] = {t: int(ids[s]) for t, s in spec["model"]["vocab"].items()}
    return Tokenizer.from_str(json.dumps(spec))


def build_tokenizer(rep: Representation, interface):
    """A `tokenizers.Tokenizer` covering ids 0..rep.vocab_size-1 that reads text as the interface's prompt ids."""
    from tokenizers import AddedToken, Tokenizer, processors

    if isinstance(interface, TokenInterface):
        base, prefix = _token_baseline_tokenizer(rep, interface.codec), [rep.bos_id]
    else:
        base, prefix = _byte_tokenizer(rep), [rep.bos_id, rep.raw_start_id]
    spec = json.loads(base.to_str())
    vocab = spec["model"]["vocab"]
    taken = set(vocab.values())
    reserved = {_reserved_name(rep, i): i for i in range(rep.vocab_size) if i not in taken}
    clash = sorted(set(reserved) & set(vocab))
    if clash:
        raise ValueError(f"token names {clash[:5]} are both text tokens and reserved ids")
    vocab.update(reserved)  # in the model's vocabulary, so every id has a name (len(tokenizer) == vocab size)
    tok = Tokenizer.from_str(json.dumps(spec))
    # special: dropped by decode(skip_special_tokens=True); never produced from text (split_special_tokens)
    tok.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in reserved])
    names = [_reserved_name(rep, i) for i in prefix]
    tok.post_processor = processors.TemplateProcessing(
        single=" ".join(names + ["$A"]), pair=" ".join(names + ["$A", "$B:1"]),
        special_tokens=list(zip(names, prefix)))
    return tok


def bytes_to_ids(tokenizer, data: bytes) -> list[int]:
    """Raw bytes (any, not only UTF-8) -> the exported byte tokenizer's ids, without the `<bos><raw>` prefix."""
    char_of = {b: c for c, b in byte_level_chars().items()}
    return tokenizer.convert_tokens_to_ids([char_of[b] for b in data])


def ids_to_bytes(tokenizer, ids) -> bytes:
    """Ids -> the exact bytes their text tokens stand for (special ids dropped); works for both tokenizer kinds,
    whose text tokens are ByteLevel strings."""
    byte_of = byte_level_chars()
    special = set(tokenizer.added_tokens_decoder)
    tokens = tokenizer.convert_ids_to_tokens([int(i) for i in ids if int(i) not in special])
    return bytes(byte_of[c] for t in tokens for c in t)


def _save_tokenizer(tok, rep: Representation, max_len: int, out: Path) -> None:
    transformers = _need_transformers()
    names = {"bos_token": rep.bos_id, "eos_token": rep.eos_id, "pad_token": rep.pad_id}
    names = {k: _reserved_name(rep, i) for k, i in names.items()}
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, split_special_tokens=True,
                                                model_max_length=max_len, **names)
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    # transformers 5 writes its own class name (TokenizersBackend); the generic name loads in 4.x and 5.x
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    if not (out / "special_tokens_map.json").exists():  # 4.x reads it; 5.x no longer writes it
        (out / "special_tokens_map.json").write_text(json.dumps(names, indent=2) + "\n")


# ---- export --------------------------------------------------------------------------------------------------
def suppressed_ids(interface, vocab_size: int) -> list[int]:
    """Ids generation must never emit: everything but the interface's outputs and stop ids."""
    return torch.nonzero(~interface.allowed_ids(vocab_size)).view(-1).tolist()


def _validation_bpb(run_dir: Path, step: int) -> dict | None:
    """The validation BPB logged at `step` (else the last one before it), from metrics.jsonl or summary.json."""
    best = None
    for rec in rundir.read_metrics(run_dir):
        if "val_bpb" in rec and rec.get("step", 0) <= step:
            best = rec
    summary = rundir.read_summary(run_dir) if best is None else None
    if summary is not None and summary.get("steps") == step and summary.get("val_bpb") is not None:
        best = {"step": step, "val_bpb": summary["val_bpb"]}
    return best


def _data_summary(cfg, run_dir: Path) -> str:
    """Corpus spec, the listing start-up made and the digest of the validation text scored, all from the run
    directory (corpus.json, summary.json): exporting reads no corpus."""
    d = cfg.data
    line = (f"- corpus: `{d.corpus}` (glob `{d.glob}`, val_fraction {d.val_fraction}, documents cut at "
            f"{d.max_doc_bytes} bytes)\n")
    try:
        record = json.loads((run_dir / rundir.CORPUS).read_text())
        listing = (f"- corpus listing at training start: {record['units']} units, {record['bytes_on_disk']} bytes on "
                   f"disk (fingerprint `{record['fingerprint']}`)\n")
    except (OSError, ValueError, KeyError, TypeError):
        return line + f"- corpus listing: not recorded in the run directory (no readable `{rundir.CORPUS}`)\n"
    summary = rundir.read_summary(run_dir) or {}
    if summary.get("val_sha256"):  # the final eval's text: what val_bpb covers
        scored = (f"- validation text of the final val BPB: {summary.get('val_covers')}; sha256 "
                  f"`{summary['val_sha256']}`\n")
    else:
        e = record["eval_text"]
        scored = (f"- validation text of each periodic eval: {e['documents']} documents or pieces, {e['bytes']} bytes, "
                  f"sha256 `{e['sha256']}` (the run has no final eval in summary.json)\n")
    return line + listing + scored


def _model_card(run, out: Path, dtype: str, dropped: dict[str, int], n_params: int) -> str:
    import yaml

    cfg, rep, iface = run.cfg, run.rep, run.interface
    v, m = cfg.views, cfg.model
    bpb = _validation_bpb(run.run_dir, run.step)
    bpb_line = (f"**{bpb['val_bpb']:.4f} bits per byte** on the validation split at step {bpb['step']}"
                + (f" ({bpb['val_bytes']} bytes)" if "val_bytes" in bpb else "")
                + ", measured by proxylm during training (raw-byte BPB)."
                if bpb else "not measured (no val_bpb logged).")
    s = v.schedule
    sched = (f"schedule: warm-up over {s.warmup_frac:.0%} of steps from rate {s.initial_rate} ({s.warmup_mode})"
             + (f", decay over the last {s.decay_frac:.0%} to rate {s.final_rate} ({s.final_mode})"
                if s.decay_frac > 0 else "") if s.enabled else "no rate/mode schedule")
    dropped_lines = "".join(f"- `{name}`: {n} parameters\n" for name, n in dropped.items() if n) or "- none\n"
    outputs = "raw bytes" if iface.kind == "bytes" else "BPE tokens"
    stops = ", ".join(f"`{_reserved_name(rep, i)}` ({i})" for i in iface.stop_ids)
    if iface.kind == "bytes":
        io = (f"Text goes in and out as raw UTF-8 bytes: byte b is id {rep.raw_offset} + b, and the tokenizer "
              f"prepends `<bos>` ({rep.bos_id}) `<raw>` ({rep.raw_start_id}). Generation stops at {stops}. "
              "Exact bytes of any output, valid UTF-8 or not: "
              f"`bytes(i - {rep.raw_offset} for i in ids if {rep.raw_offset} <= i < {rep.raw_vocab_size})`.")
    else:
        io = (f"Token baseline: text is read by the run's BPE ({run.codec.alphabet_size} tokens, ids moved to "
              f"start at {rep.compressed_offset}) after `<bos>` ({rep.bos_id}). Generation stops at {stops}.")
    return f"""---
library_name: transformers
tags: [proxylm, byte-level, llama]
---
# {cfg.name} (proxylm export, step {run.step})

A byte-level language model trained with [proxylm](https://arxiv.org/abs/2602.04289) (proxy compression),
exported as a Llama checkpoint ({n_params} parameters, {dtype}).

## Validation
{bpb_line}

## Training recipe
- views: codec `{v.codec}`, rate {v.rate}, mode `{v.mode}`, separate embedding {v.separate_embedding}; {sched}
- model: dim {m.dim}, {m.n_layers} layers, {m.n_heads} heads ({m.kv_heads} kv), ffn {m.hidden_dim},
  context {min(m.max_seq_len, cfg.data.seq_len)} trained (RoPE table {m.max_seq_len}), {m.n_pred_heads} main head(s), {m.n_raw_heads} raw head(s)
- train: {run.step} of {cfg.train.max_steps} steps, lr {cfg.train.lr} ({cfg.train.lr_schedule}),
  batch {cfg.data.batch_size} x {cfg.data.seq_len} symbols, seed {cfg.train.seed}
- vocabulary: {rep.vocab_size} ids (`{REPRESENTATION}`); the full config is in `{RUN_CONFIG}`.

## Data
{_data_summary(cfg, run.run_dir)}
## Dropped heads
Only main head 0 (next symbol) is exported as `lm_head`. Training-only heads dropped:
{dropped_lines}
## Use
```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{out}")
tok = AutoTokenizer.from_pretrained("{out}")
out = model.generate(**tok("def fib(n):", return_tensors="pt"), max_new_tokens=100)
print(tok.decode(out[0], skip_special_tokens=True))
```
{io}

Restricting generation: `generation_config.json` lists every id the model must not emit (sentinels, compressed
symbols, padding) as `suppress_tokens`, so `generate` emits only {outputs}
and stop ids with no extra arguments, greedy or sampled. If you pass your own `GenerationConfig`, copy
`suppress_tokens=model.generation_config.suppress_tokens` into it.

Continue training with proxylm: `proxylm train CONFIG train.init_from=<this directory>`.

<details><summary>proxylm config</summary>

```yaml
{yaml.safe_dump(to_dict(cfg), sort_keys=False).rstrip()}
```
</details>
"""


def trained_context(run_cfg, model_cfg) -> int:
    """Positions the model was trained on: the packed window (data.seq_len), at most its RoPE table."""
    return min(model_cfg.max_seq_len, run_cfg.data.seq_len)


FEATURES_FILE = "proxylm_input_features.safetensors"
FEATURES_NOTE = f"""
## Input features (not computed by LlamaForCausalLM)

This model adds extra embeddings to each raw byte's input (proxylm's `model.input_bridge` and/or
`model.ngram_sizes`; proxylm/model/features.py): the row of the longest codec symbol ending at the byte (a trie
over the codec's vocabulary: a table the paper's models do not keep) and hashed byte n-gram rows. Their tables and
the trie are in `{FEATURES_FILE}`; `transformers` alone does not compute them, so use proxylm
(`proxylm generate RUN`, or train on with `train.init_from`) for this model's real outputs.
"""


def export_features(model, out: Path, dtype: str) -> dict | None:
    """The input features' tables and trie (model.features) beside the weights; None when the model has none."""
    if model.features is None:
        return None
    state = {k: (t.to(DTYPES[dtype]) if t.is_floating_point() else t).contiguous()
             for k, t in model.features.state_dict().items()}
    save_file(state, str(out / FEATURES_FILE), metadata={"format": "pt"})
    return {"file": FEATURES_FILE, "tensors": len(state), "params": sum(t.numel() for t in state.values()
                                                                         if t.is_floating_point())}


def export_run(run_dir, out_dir, dtype: str = "float32", force: bool = False) -> dict:
    """Write the transformers directory for the run's latest checkpoint; returns a summary."""

    transformers = _need_transformers()
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    run = load_run(run_dir, "cpu")
    rep, iface, model = run.rep, run.interface, run.model
    tokenizer = build_tokenizer(rep, iface)  # first: a refused token model writes nothing
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()) and not force:
        raise ValueError(f"{out} exists and is not empty (use --force to write into it)")
    out.mkdir(parents=True, exist_ok=True)

    state = hf_llama_state_dict(model)
    state["model.embed_tokens.weight"] = model.input_embedding_table().detach()  # model.compose_embedding included
    weights = {k: t.to(DTYPES[dtype]).contiguous() for k, t in state.items()}
    save_file(weights, str(out / WEIGHTS), metadata={"format": "pt"})  # transformers requires format=pt
    stop = list(iface.stop_ids)
    config = transformers.LlamaConfig(**hf_llama_config(model.cfg, rep.vocab_size), bos_token_id=rep.bos_id,
                                      eos_token_id=rep.eos_id, pad_token_id=rep.pad_id,
                                      architectures=["LlamaForCausalLM"])
    # the context claimed is the one trained (data.seq_len), not the RoPE table's size: lm-eval and generate()
    # read max_position_embeddings / model_max_length and would score or write beyond what the model ever saw
    context = trained_context(run.cfg, model.cfg)
    config.max_position_embeddings = context
    # the dtype the weights are stored in: 5.x names it `dtype`, 4.x `torch_dtype` (deprecated in 5.x)
    setattr(config, "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype", dtype)
    config.save_pretrained(str(out))
    transformers.GenerationConfig(bos_token_id=rep.bos_id, eos_token_id=stop, pad_token_id=rep.pad_id,
                                  suppress_tokens=suppressed_ids(iface, rep.vocab_size),
                                  do_sample=False).save_pretrained(str(out))
    _save_tokenizer(tokenizer, rep, context, out)
    shutil.copyfile(run.run_dir / REPRESENTATION, out / REPRESENTATION)
    save_config(run.cfg, out / RUN_CONFIG)

    features = export_features(model, out, dtype)
    dropped = {"pred_heads": sum(p.numel() for p in model.pred_heads.parameters()),
               "raw_heads": sum(p.numel() for p in model.raw_heads.parameters())}
    n_params = sum(t.numel() for t in weights.values())
    card = _model_card(run, out, dtype, dropped, n_params)
    if features:
        card += FEATURES_NOTE
    (out / "README.md").write_text(card)
    bpb = _validation_bpb(run.run_dir, run.step)
    return {"out": str(out), "run": str(run.run_dir), "step": run.step, "interface": iface.kind, "context": context,
            "vocab_size": rep.vocab_size, "params": n_params, "dtype": dtype, "dropped_heads": dropped,
            "val_bpb": bpb["val_bpb"] if bpb else None, "input_features": features}
