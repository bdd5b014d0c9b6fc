"""Will this run fit, and how fast will it go? A plan made before renting a node, from the config alone.

    proxylm plan proxy-bpe-1.5b --gpus 8 --gpu-memory 80          # a table; refused (exit 1) if it cannot fit
    plan = make_plan(load_config("proxy-bpe-1.5b"), gpus=8, gpu_memory_gib=80)   # the same as a dict

The model is built on the meta device (shapes only, no weights allocated); the vocabulary comes from the
config's codec options (or `views.codec_dir`) through the Representation, without training a codec.

Memory per GPU, FSDP2 as proxylm/train/distributed.py wraps it (one unit per block, the root unit = embedding,
final norm and heads; bf16 parameters when train.dtype is bfloat16 or auto, fp32 gradient reduction), N = --gpus, P = params:
  params      fp32 master shards 4P/N + the gathered bf16 copies: the root unit (kept gathered through forward
              and backward) and two blocks (the one computing and the one prefetched)
  grads       fp32 shards 4P/N + the unsharded fp32 gradients of the root unit and one block before reduce-scatter
  optimizer   AdamW's two fp32 moments, 8P/N
  activations what autograd saves for backward per micro-batch (activation_bytes below; checked against
              torch.autograd.graph.saved_tensors_hooks on real CPU forwards in tests/test_plan.py), without and
              with activation checkpointing (then: each block's input, plus one block's activations recomputed)
  logits      the chunked loss's transient: model.ce_chunk positions x vocabulary, in the compute dtype, in fp32,
              its log-softmax and its gradient (proxylm/model/heads.py)
A run fits when the sum is at most USABLE_FRACTION of the GPU's memory (the rest: CUDA context, NCCL buffers,
allocator fragmentation). Step time = training FLOPs (attention at half the dense count: the causal and
document-masked kernels skip masked blocks) / (gpus x peak x MFU) with an assumed MFU.
"""

from __future__ import annotations

import torch

from proxylm.codecs.options import BYTE_VALUES
from proxylm.config import RunConfig
from proxylm.core.errors import UserError
from proxylm.core.representation import Representation
from proxylm.model.attention import backend_for
from proxylm.model.config import ModelConfig
from proxylm.model.flops import attention_flops_per_sequence, forward_flops, BACKWARD_FACTOR
from proxylm.model.transformer import Transformer

GIB = 2 ** 30
USABLE_FRACTION = 0.9  # of a GPU's memory the plan fills at most
H200_PEAK_TFLOPS = 989.0  # H100/H200 SXM dense bf16 (no sparsity)
DEFAULT_MFU = 0.4
FP32, INT64 = 4, 8
DTYPE_BYTES = {"float32": 4, "bfloat16": 2}


# ---- representation without a codec ---------------------------------------------------------------
def planned_representation(cfg: RunConfig) -> Representation:
    """The run's Representation from its config: the codec's alphabet from its options (bpe, neural) or its
    fixed size, or the codec in `views.codec_dir` when one is given. No codec is trained."""
    v = cfg.views
    if v.codec is None:
        return Representation.bytes_only()
    if v.codec_dir:
        from proxylm.codecs import load_codec

        try:
            codec = load_codec(v.codec_dir)
        except (OSError, ValueError) as e:
            raise UserError(f"views.codec_dir={v.codec_dir}: cannot read the codec ({e})") from None
        return Representation.for_codec(codec, separate_embedding=v.separate_embedding)
    from proxylm.codecs import codec_class
    from proxylm.codecs.neural.codec import NeuralCodec

    if v.codec == "bpe":  # trained codecs: the size their options ask for
        alphabet, passthrough = v.codec_options.bpe.vocab_size, 0
    elif v.codec == "bpe-bytes":
        alphabet, passthrough = BYTE_VALUES, 0  # token ids written as bytes
    elif v.codec == "neural":
        alphabet = NeuralCodec.passthrough + (1 << v.codec_options.neural.window_bits)
        passthrough = NeuralCodec.passthrough
    else:  # codecs without training (gzip, bits): built, they say their size
        try:
            codec = codec_class(v.codec)(**v.codec_options.for_codec(v.codec))
        except (TypeError, ValueError) as e:
            raise UserError(f"views.codec={v.codec}: plan cannot size it ({e}); set views.codec_dir to a trained "
                            "codec") from None
        alphabet, passthrough = codec.alphabet_size, codec.passthrough
    return Representation(codec_name=v.codec, codec_alphabet=alphabet, codec_passthrough=passthrough,
                          separate_embedding=v.separate_embedding)


# ---- activations -----------------------------------------------------------------------------------
def layer_activation_bytes(m: ModelConfig, batch: int, seq_len: int, act_bytes: int, backend: str) -> int:
    """Bytes one block saves for backward for `batch` sequences of `seq_len` (act_bytes: 2 bf16, 4 fp32).

    Per block (T = batch * seq_len positions): the two RMSNorms keep their input, their fp32 normalised
    value and rsqrt, and their output; the attention output projection its input; q and k after RoPE, v,
    the attention output and its log-sum-exp (fp32, per head); the MLP gate, SiLU(gate), up and their
    product. SDPA with a boolean mask (the CPU path) also keeps the mask as a float (B, 1, S, S) tensor
    per block; causal SDPA and FlexAttention keep no S x S tensor."""
    T, D, F = batch * seq_len, m.dim, m.hidden_dim
    kv_width = m.kv_heads * m.head_dim
    norms = T * D * (4 * act_bytes + 2 * FP32) + 2 * T * FP32  # x, norm outputs, o-input; fp32 copies; rsqrt
    attention = 2 * T * D * act_bytes + 2 * T * kv_width * act_bytes + batch * m.n_heads * seq_len * FP32
    mlp = 4 * T * F * act_bytes
    mask = batch * seq_len * seq_len * act_bytes if backend == "sdpa_masked" else 0
    return norms + attention + mlp + mask


def forward_activation_bytes(m: ModelConfig, batch: int, seq_len: int, act_bytes: int, backend: str,
                             checkpointing: bool) -> int:
    """Bytes the model's forward saves for backward (the peak, with checkpointing: every block's input plus
    one block recomputed in backward)."""
    T = batch * seq_len
    layer = layer_activation_bytes(m, batch, seq_len, act_bytes, backend)
    blocks = m.n_layers * T * m.dim * act_bytes + layer if checkpointing else m.n_layers * layer
    rope = 2 * T * m.head_dim * act_bytes  # cos, sin: shared by every block
    final_norm = T * m.dim * (act_bytes + FP32) + T * FP32
    return blocks + rope + final_norm + T * INT64  # + the input ids (the embedding's backward)


def loss_activation_bytes(m: ModelConfig, batch: int, seq_len: int, act_bytes: int) -> int:
    """Bytes the chunked loss holds for backward (its checkpoints keep their inputs): the hidden states, per
    head a target and a weight per position, and the raw positions' rows for the raw heads (at most T)."""
    T = batch * seq_len
    raw_rows = T * m.dim * act_bytes if m.n_raw_heads else 0
    return T * m.dim * act_bytes + m.n_future * T * (INT64 + FP32) + raw_rows


def activation_bytes(m: ModelConfig, batch: int, seq_len: int, act_bytes: int, backend: str,
                     checkpointing: bool) -> int:
    """Bytes saved for backward by one micro-batch's forward and loss."""
    return (forward_activation_bytes(m, batch, seq_len, act_bytes, backend, checkpointing)
            + loss_activation_bytes(m, batch, seq_len, act_bytes))


def logits_bytes(m: ModelConfig, vocab_size: int, batch: int, seq_len: int, act_bytes: int) -> int:
    """The chunked loss's transient: one chunk's logits in the compute dtype, in fp32, log-softmax, gradient."""
    return min(m.ce_chunk, batch * seq_len) * vocab_size * (act_bytes + 3 * FP32)


# ---- the plan --------------------------------------------------------------------------------------
def _meta_model(cfg: RunConfig, rep: Representation) -> Transformer:
    with torch.device("meta"):
        return Transformer(cfg.model, rep.vocab_size, rep.raw_vocab_size)


def planned_dtype(cfg: RunConfig) -> str:
    """train.dtype on the GPUs planned for: auto is bfloat16 there (every GPU this plans for computes it natively)."""
    return "bfloat16" if cfg.train.dtype == "auto" else cfg.train.dtype


def _numel(module) -> int:
    return sum(p.numel() for p in module.parameters())


def memory_per_gpu(model: Transformer, cfg: RunConfig, gpus: int, micro_batch: int, checkpointing: bool,
                   backend: str) -> dict:
    m, S = cfg.model, cfg.data.seq_len
    act = DTYPE_BYTES[planned_dtype(cfg)]
    P = _numel(model)
    block = max(_numel(b) for b in model.layers)
    root = P - sum(_numel(b) for b in model.layers)  # embedding, final norm, heads
    sharded = -(-P // gpus)
    # one process: no gathered copies, but autocast keeps a bf16 copy of every weight it uses
    gathered = (root + 2 * block) if gpus > 1 else (P if act == 2 else 0)
    out = {
        "params": sharded * FP32 + gathered * act,
        "grads": sharded * FP32 + ((root + block) * FP32 if gpus > 1 else 0),
        "optimizer": 2 * sharded * FP32,
        "activations": activation_bytes(m, micro_batch, S, act, backend, checkpointing),
        "logits": logits_bytes(m, model.vocab_size, micro_batch, S, act),
    }
    out["total"] = sum(out.values())
    return out


def largest_micro_batch(model, cfg, gpus, checkpointing, backend, budget) -> int:
    """The largest micro-batch (sequences per GPU per forward) whose total fits `budget` bytes (0: none)."""
    lo, hi = 0, 1
    while memory_per_gpu(model, cfg, gpus, hi, checkpointing, backend)["total"] <= budget and hi < 1 << 20:
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if memory_per_gpu(model, cfg, gpus, mid, checkpointing, backend)["total"] <= budget:
            lo = mid
        else:
            hi = mid
    return lo


def make_plan(cfg: RunConfig, gpus: int = 1, gpu_memory_gib: float = 80.0, mfu: float = DEFAULT_MFU,
              peak_tflops: float = H200_PEAK_TFLOPS) -> dict:
    """Everything `proxylm plan` prints, as one dict (keys: see the CLI's --json). fits=False comes with
    `reason`; nothing is refused here (the CLI refuses)."""
    rep = planned_representation(cfg)
    model = _meta_model(cfg, rep)
    m, d, t = cfg.model, cfg.data, cfg.train
    B, S = d.batch_size, d.seq_len
    backend = backend_for(m.attention, torch.device("cuda"), has_doc_ids=True)
    n_total = _numel(model)
    n_embedding = model.embed.weight.numel()
    heads = _numel(model.output) + _numel(model.pred_heads) + _numel(model.raw_heads)
    sequences = B * t.grad_accum * gpus  # per optimizer step
    tokens = sequences * S
    # raw heads run at raw positions only: about the raw share of the stream (1 - views.rate) for a proxy
    raw_share = 1.0 - cfg.views.rate if cfg.views.codec is not None else 1.0
    n_raw = int(tokens * raw_share) if m.n_raw_heads else 0
    train_factor = 1 + BACKWARD_FACTOR
    flops_total = train_factor * forward_flops(m, rep.vocab_size, rep.raw_vocab_size, sequences, S, n_raw)
    flops_attention = float(train_factor * m.n_layers * sequences * attention_flops_per_sequence(m, S))
    budget = int(gpu_memory_gib * GIB * USABLE_FRACTION)
    mem = {ac: memory_per_gpu(model, cfg, gpus, B, ac, backend) for ac in (False, True)}
    largest = {ac: largest_micro_batch(model, cfg, gpus, ac, backend, budget) for ac in (False, True)}
    ac = t.activation_checkpointing
    fits = mem[ac]["total"] <= budget
    reason = None
    if not fits:
        need = mem[ac]["total"] / GIB
        reason = (f"needs {need:.1f} GiB per GPU at data.batch_size={B} "
                  f"({'with' if ac else 'without'} activation checkpointing), over the {budget / GIB:.1f} GiB "
                  f"usable of {gpu_memory_gib:g} GiB")
        if largest[ac] >= 1:
            accum = -(-B * t.grad_accum // largest[ac])
            reason += (f"; data.batch_size={largest[ac]} train.grad_accum={accum} fits (about the same "
                       "sequences per step)")
        elif not ac and largest[True] >= 1:
            reason += f"; with train.activation_checkpointing=true data.batch_size={largest[True]} fits"
        else:
            reason += "; not even one sequence fits: use more GPUs, a shorter data.seq_len or a smaller model"
    # FlexAttention and causal kernels skip the masked blocks: about half of the dense S x S work
    flops_spent = flops_total - flops_attention / 2
    step_s = flops_spent / (gpus * peak_tflops * 1e12 * mfu)
    return {
        "config": cfg.name, "vocab_size": rep.vocab_size, "raw_vocab_size": rep.raw_vocab_size,
        "params": n_total, "params_embedding": n_embedding, "params_non_embedding": n_total - n_embedding,
        "params_heads": heads,
        "gpus": gpus, "gpu_memory_gib": gpu_memory_gib, "usable_gib": budget / GIB,
        "dtype": planned_dtype(cfg), "attention_backend": backend, "micro_batch": B, "seq_len": S,
        "grad_accum": t.grad_accum, "tokens_per_step": tokens,
        # 6N over the non-embedding (matmul) parameters, raw heads at the raw positions only; attention dense
        "flops_per_step": flops_total, "flops_6n": flops_total - flops_attention, "flops_attention": flops_attention,
        "flops_attention_causal": flops_attention / 2,
        "memory_gib": {("checkpointing" if k else "no_checkpointing"): {n: b / GIB for n, b in v.items()}
                       for k, v in mem.items()},
        "activation_checkpointing": ac,
        "largest_micro_batch": {"no_checkpointing": largest[False], "checkpointing": largest[True]},
        "assumed_mfu": mfu, "peak_tflops": peak_tflops, "step_seconds": step_s,
        "fits": fits, "reason": reason,
    }


def format_plan(p: dict) -> str:
    """The human-readable table of `proxylm plan`."""
    g = lambda n: f"{n / 1e9:.3f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"  # noqa: E731
    lines = [
        f"plan {p['config']}: {p['gpus']} GPU(s) x {p['gpu_memory_gib']:g} GiB ({p['usable_gib']:.1f} usable), "
        f"{p['dtype']}, attention {p['attention_backend']}",
        f"  parameters   {g(p['params'])} ({g(p['params_embedding'])} embedding, {g(p['params_non_embedding'])} "
        f"not, heads {g(p['params_heads'])}); vocabulary {p['vocab_size']}",
        f"  step         {p['micro_batch']} x {p['seq_len']} per GPU x {p['grad_accum']} accum x {p['gpus']} GPUs "
        f"= {p['tokens_per_step']:,} positions",
        f"  FLOPs/step   {p['flops_per_step']:.3e} (6N {p['flops_6n']:.3e} + attention {p['flops_attention']:.3e}, "
        "dense; causal kernels do about half, as the step time assumes)",
        "  memory/GPU (GiB)   params  grads  optim  activ  logits  total",
    ]
    for key, label in (("no_checkpointing", "no checkpointing"), ("checkpointing", "checkpointing")):
        mm = p["memory_gib"][key]
        lines.append(f"    {label:<17}" + "".join(f"{mm[n]:7.1f}" for n in
                                               ("params", "grads", "optimizer", "activations", "logits", "total")))
    lm = p["largest_micro_batch"]
    lines.append(f"  largest micro-batch  {lm['no_checkpointing']} without, {lm['checkpointing']} with activation "
                 f"checkpointing (this run: {'with' if p['activation_checkpointing'] else 'without'})")
    secs = p["step_seconds"]
    lines.append(f"  step time    {secs:.2f} s" if secs >= 1 else f"  step time    {secs * 1e3:.1f} ms")
    lines[-1] += (f" at an assumed MFU of {p['assumed_mfu']:.0%} of "
                 f"{p['peak_tflops']:g} TFLOP/s")
    lines.append("  fits" if p["fits"] else f"  DOES NOT FIT: {p['reason']}")
    return "\n".join(lines)
