"""Bits per byte on raw text, the paper's headline metric.

    proxylm eval bpb runs/proxy-bpe-tiny --corpus stdlib --split val --json

Every document is given to the model through the run's interface (raw bytes after `<raw>` for byte
and proxy models, BPE tokens for the token baseline). Documents are concatenated into one stream with
per-document ids and positions (attention never crosses documents), cut into windows of `seq_len`
with step `stride`; every target is scored exactly once, by the first window that sees it with the
most context. Only targets the interface marks as counted (raw bytes; tokens for the token model) add
to the loss; BPB = sum of nats / (ln 2 * raw bytes), exactly.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable

import numpy as np
import torch

from proxylm.core.representation import N_BYTES
from proxylm.data.corpus import EVAL_OVERSAMPLE, open_corpus


def _stream(interface, docs: Iterable[bytes]):
    """Concatenate scored documents: ids, doc index, position in doc, counted-target mask (all (N,))."""
    ids, doc_idx, pos, counted = [], [], [], []
    n_bytes = 0
    for i, doc in enumerate(docs):
        d_ids, d_counted, d_bytes = interface.score_ids(doc)
        ids.append(np.asarray(d_ids, dtype=np.int64))
        counted.append(np.asarray(d_counted, dtype=bool))
        doc_idx.append(np.full(len(d_ids), i, dtype=np.int64))
        pos.append(np.arange(len(d_ids), dtype=np.int64))
        n_bytes += d_bytes
    if not ids:
        raise ValueError("no documents to evaluate")
    return (np.concatenate(ids), np.concatenate(doc_idx), np.concatenate(pos), np.concatenate(counted), n_bytes)


def _windows(n: int, seq_len: int, stride: int):
    """Yield (start, first_scored) for windows [start, start + seq_len + 1) of a stream of n tokens.

    Targets are positions 1..n-1; window w scores targets in [first_scored, start + seq_len].
    """
    start, scored_until = 0, 1
    while scored_until < n:
        yield start, scored_until
        scored_until = min(start + seq_len, n - 1) + 1
        start += stride


@torch.no_grad()
def evaluate_bpb(model, interface, docs: Iterable[bytes], seq_len: int, stride: int,
                 batch_size: int = 8, device: str | torch.device = "cpu") -> dict:
    if not 0 < stride <= seq_len:
        raise ValueError(f"stride must be in (0, seq_len], got {stride} for seq_len {seq_len}")
    ids, doc_idx, pos, counted, n_bytes = _stream(interface, docs)
    n = len(ids)
    was_training = model.training
    model.eval()
    total_nats, n_targets = 0.0, 0
    windows = list(_windows(n, seq_len, stride))
    for b in range(0, len(windows), batch_size):
        group = windows[b:b + batch_size]
        inp = np.full((len(group), seq_len), interface.rep.pad_id, dtype=np.int64)   # (B, L)
        tgt = np.zeros((len(group), seq_len), dtype=np.int64)                          # (B, L)
        docs_in = np.full((len(group), seq_len), -1, dtype=np.int64)                   # pad: own doc
        positions = np.zeros((len(group), seq_len), dtype=np.int64)
        score = np.zeros((len(group), seq_len), dtype=bool)
        for r, (start, first) in enumerate(group):
            end = min(start + seq_len, n - 1)  # last input position + 1
            k = end - start
            inp[r, :k] = ids[start:end]
            tgt[r, :k] = ids[start + 1:end + 1]
            docs_in[r, :k] = doc_idx[start:end]
            # RoPE positions relative to the first token of each document inside the window
            p = pos[start:end]
            first_in_doc = np.r_[True, doc_idx[start + 1:end] != doc_idx[start:end - 1]]
            segment_start = np.maximum.accumulate(np.where(first_in_doc, np.arange(k), 0))
            positions[r, :k] = p - p[segment_start]
            targets_idx = np.arange(start + 1, end + 1)
            same_doc = doc_idx[targets_idx] == doc_idx[start:end]
            score[r, :k] = same_doc & counted[targets_idx] & (targets_idx >= first)
        t = lambda a: torch.from_numpy(a).to(device)  # noqa: E731
        hidden = model(t(inp), positions=t(positions), doc_ids=t(docs_in))  # (B, L, D)
        mask = t(score)
        # only the scored positions need logits: (N, D) -> (N, V)
        logits = model.logits(hidden[mask].unsqueeze(0)).squeeze(0)
        nll = torch.nn.functional.cross_entropy(logits, t(tgt)[mask], reduction="sum")
        total_nats += float(nll.double())
        n_targets += int(mask.sum())
    model.train(was_training)
    if n_bytes == 0:
        raise ValueError("the evaluated documents contain no bytes")
    return {"bpb": total_nats / (math.log(2) * n_bytes), "bytes": n_bytes, "nats": total_nats,
            "targets": n_targets, "documents": int(doc_idx[-1]) + 1, "seq_len": seq_len, "stride": stride}


def read_eval_docs(corpus_spec: str, split: str, data_cfg, max_bytes: int = 0, corpus=None) -> list[bytes]:
    """Whole documents of a corpus split until `max_bytes` (0: all, in corpus order).

    With a budget, the documents are a sample spread over the whole split (`Corpus.sample`: units in the order
    of a fixed hash of their keys, then documents by the hash of their keys), the same for every model and
    seed. The document that would overflow the budget is cut after its last newline that fits (never inside a
    UTF-8 character, which the token baseline could not encode), and reading stops there. `corpus`: the
    corpus_spec corpus already opened with data_cfg (else opened here).
    """
    import dataclasses

    cfg = dataclasses.replace(data_cfg, corpus=corpus_spec)
    corpus = corpus if corpus is not None else open_corpus(corpus_spec, cfg)
    docs, total, seen = [], 0, 0
    for doc in corpus.sample(split, max_bytes, oversample=EVAL_OVERSAMPLE):
        seen += 1
        data = doc.data
        if max_bytes and total + len(data) > max_bytes:
            cut = data.rfind(b"\n", 0, max_bytes - total)
            if cut > 0:
                docs.append(data[:cut + 1])
            break
        docs.append(data)
        total += len(data)
    if not seen:
        raise ValueError(f"the {split} split of corpus {corpus_spec} has no documents (data.val_fraction "
                         f"{data_cfg.val_fraction}); use a bigger corpus or raise data.val_fraction")
    if not docs:
        raise ValueError(f"no document of {corpus_spec}/{split} fits in {max_bytes} bytes; raise the byte limit")
    return docs


def text_digest(docs: list[bytes]) -> dict:
    """{"documents", "bytes", "sha256"} of scored text: sha256 over each document's length and bytes, in order, so
    the same documents in another order or cut elsewhere give another digest (the model card's record)."""
    h = hashlib.sha256()
    for doc in docs:
        h.update(b"%d\n" % len(doc))
        h.update(doc)
    return {"documents": len(docs), "bytes": sum(map(len, docs)), "sha256": h.hexdigest()}


def unigram_bpb(train_docs: Iterable[bytes], eval_docs: list[bytes]) -> float:
    """BPB of a context-free byte model fit on `train_docs` (add-one smoothing): the floor any
    sequence model must clearly beat."""
    counts = np.ones(N_BYTES, dtype=np.float64)
    for doc in train_docs:
        counts += np.bincount(np.frombuffer(doc, dtype=np.uint8), minlength=N_BYTES)
    log_p = np.log2(counts / counts.sum())
    eval_counts = np.zeros(N_BYTES, dtype=np.float64)
    for doc in eval_docs:
        eval_counts += np.bincount(np.frombuffer(doc, dtype=np.uint8), minlength=N_BYTES)
    return float(-(eval_counts * log_p).sum() / eval_counts.sum())
