"""Self-speculative and batched generation: greedy == plain greedy, the sampling rule keeps the model's
distribution, batched == per prompt, and the per-row KV cache (lengths, rollback, compaction)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from proxylm.core.representation import Representation
from proxylm.eval.generate import GenStats, generate, generate_batch, sampling_probs
from proxylm.core.interface import ByteInterface, TokenInterface
from proxylm.eval.speculative import ContextLookup, accept_drafts, accepted_greedy, draft_heads
from proxylm.model.config import ModelConfig
from proxylm.model.transformer import Transformer
import toys
from toys import REP, PairCodec

PROMPTS = [b"def f(x):\n", b"import os", b"", b"\x00\xff binary \x80", "çé ünïcode".encode()]


def random_model(rep=REP, n_pred=4, *args, **kw) -> Transformer:
    return toys.random_model(rep, n_pred, *args, **kw)


def counting_model(rep=REP, n_pred=4, wrong_every=5, stop_after=b"z") -> Transformer:
    """A model that counts bytes up (after byte c comes c+1, `stop_after` is followed by </raw>) and whose
    extra heads know the count k ahead, except that head k drafts a wrong byte from ids i with (i + k) %
    wrong_every == 0:
    drafts are accepted in runs and rejected at known places. Its layer adds nothing (o, down are zero), so the
    hidden state is the normed embedding; its cache is still written and rolled back."""
    torch.manual_seed(0)
    m = random_model(rep, n_pred=n_pred, max_seq_len=256)
    V, off = rep.vocab_size, rep.raw_offset

    def succ(i: int | None) -> int | None:
        if i == rep.raw_start_id:
            return off + ord("a")  # an empty prompt starts counting at "a"
        if i == rep.raw_end_id:
            return rep.eos_id
        if i is None or not off <= i < rep.raw_vocab_size:
            return None  # nothing else is ever read
        return rep.raw_end_id if i - off == stop_after[0] else off + (i - off + 1) % 256

    with torch.no_grad():
        e = F.normalize(torch.randn(V, m.cfg.dim), dim=1)
        m.embed.weight.copy_(e)
        for layer in m.layers:
            layer.attn.o.weight.zero_()
            layer.mlp.down.weight.zero_()
        for k, w in enumerate(m.main_head_weights()):  # head k predicts the id k+1 ahead
            w.zero_()
            for i in range(V):
                t = i
                for _ in range(k + 1):
                    t = succ(t)
                if t is None:
                    continue
                if k > 0 and (i + k) % wrong_every == 0:
                    t = off + (t + 7) % 256  # a wrong draft
                w[t] += 10.0 * e[i]
    return m


def plain(model, iface, prompt, **kw):
    return generate(model, iface, prompt, speculative=False, **kw)


def no_stop(rep=REP) -> ByteInterface:
    iface = ByteInterface(rep)
    iface.stop_ids = ()  # random models may pick a stop id; full-length outputs test more
    return iface


# ---- greedy: speculative == plain ---------------------------------------------------------------
@pytest.mark.parametrize("n_pred,n_raw", [(4, 0), (8, 0), (1, 2), (2, 1)])
def test_greedy_speculative_equals_plain_random_models(n_pred, n_raw):
    codec = PairCodec()
    rep = Representation.for_codec(codec) if n_raw else REP  # raw heads: a proxy model's vocabulary
    model, iface = random_model(rep, n_pred, n_raw), no_stop(rep)
    for prompt in PROMPTS:
        stats = GenStats()
        spec = generate(model, iface, prompt, max_bytes=40, stats=stats)
        assert stats.speculative and stats.drafts == n_pred - 1 + n_raw and stats.forwards > 0
        assert spec == plain(model, iface, prompt, max_bytes=40) and len(spec) == 40


def test_drafts_from_unstacked_heads_are_the_same(monkeypatch):
    from proxylm.eval import speculative

    codec = PairCodec()
    rep = Representation.for_codec(codec)
    model, iface = random_model(rep, n_pred=2, n_raw=2), no_stop(rep)
    stacked = generate(model, iface, b"def f(x):", max_bytes=30)
    monkeypatch.setattr(speculative.Drafter, "STACK_BYTES", 0)  # each head on its own (large vocabularies)
    assert generate(model, iface, b"def f(x):", max_bytes=30) == stacked == plain(model, iface, b"def f(x):",
                                                                                   max_bytes=30)


def test_counting_model_accepts_runs_of_drafts_and_matches_plain():
    model, iface = counting_model(), ByteInterface(REP)
    assert plain(model, iface, b"abc", max_bytes=30) == b"defghijklmnopqrstuvwxyz"  # then </raw>
    for prompt in [b"abc", b"x", b"", b"\x00\x01"]:
        for kw in [dict(max_bytes=30), dict(max_bytes=9), dict(max_bytes=200, stop=["qr"]),
                   dict(max_bytes=60, max_new_tokens=13)]:
            stats = GenStats()
            chunks = []
            spec = generate(model, iface, prompt, stats=stats, on_bytes=chunks.append, **kw)
            assert spec == plain(model, iface, prompt, **kw) == b"".join(chunks), (prompt, kw)
    stats = GenStats()
    generate(model, iface, b"\x00", max_bytes=255, stats=stats, lookup=0)  # the heads' drafts alone
    # all 3 drafts are kept in some steps, fewer in others
    assert len(stats.accepted_at) == 3 and 0 < stats.accepted_at[-1] < stats.accepted_at[0] < stats.row_steps
    assert stats.as_dict()["kept_per_step"] > 2.0 and stats.tokens == ord("z")  # 0x01 .. "z"


def test_token_model_speculative_uses_main_heads_only():
    codec = PairCodec()
    rep = Representation.for_codec(codec)
    model, iface = random_model(rep, n_pred=3, n_raw=2), TokenInterface(rep, codec)
    iface.stop_ids = ()
    assert len(draft_heads(model, iface)) == 2 and len(draft_heads(model, ByteInterface(rep))) == 4
    for prompt in [b"ab", b"xyz ab"]:
        stats = GenStats()
        kw = dict(max_bytes=10 ** 6, max_new_tokens=20)
        assert generate(model, iface, prompt, stats=stats, **kw) == plain(model, iface, prompt, **kw)
        assert stats.drafts == 2


def test_models_without_heads_fall_back_to_plain():
    model, iface = random_model(n_pred=1), no_stop()
    stats = GenStats()
    out = generate(model, iface, b"abc", max_bytes=20, speculative=True, stats=stats)
    assert out == plain(model, iface, b"abc", max_bytes=20)
    assert not stats.speculative and "no extra heads" in stats.fallback
    stats = GenStats()
    generate(model, iface, b"abc", max_bytes=20, stats=stats)  # not asked for: no fallback to report
    assert not stats.speculative and stats.fallback == ""
    stats = GenStats()
    generate(random_model(), iface, b"abc", max_bytes=8, use_cache=False, speculative=True, stats=stats)
    assert "use_cache" in stats.fallback


def test_sampling_is_speculative_only_when_asked():
    model, iface = random_model(), no_stop()
    stats = GenStats()
    generate(model, iface, b"abc", max_bytes=8, temperature=1.0, stats=stats)
    assert not stats.speculative
    stats = GenStats()
    runs = [generate(model, iface, b"abc", max_bytes=16, temperature=1.0, speculative=True, seed=s, stats=stats)
            for s in (4, 4, 5)]
    assert stats.speculative and runs[0] == runs[1] != runs[2] and len(runs[0]) == 16


def test_raw_only_even_when_heads_favour_compressed_ids():
    codec = PairCodec()
    rep = Representation.for_codec(codec)
    model = random_model(rep, n_pred=3, n_raw=1)
    with torch.no_grad():  # every head's favourite would be the compressed "ab" id or <bos>
        for w in model.main_head_weights():
            w[rep.compressed_offset + 256] += 50 * model.norm.weight.sign()
            w[rep.bos_id] += 40 * model.norm.weight.sign()
    seen = []

    class Spy(ByteInterface):
        def decode(self, ids):
            seen.extend(int(i) for i in ids)
            return super().decode(ids)

    iface = Spy(rep)
    iface.stop_ids = ()
    for temperature in (0.0, 1.0):
        out = generate(model, iface, b"ab", max_bytes=16, temperature=temperature, speculative=True)
        assert len(out) == 16
    assert seen and all(rep.raw_offset <= i < rep.raw_vocab_size for i in seen)


# ---- batches -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("speculative", [False, True])
@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_batch_equals_per_prompt(speculative, temperature):
    model, iface = random_model(n_pred=3), ByteInterface(REP)
    seeds = [11, 3, 3, 7, 0]
    row_stop = [["\n"], [], [b"os"], [], ["x"]]
    done = []
    stats = GenStats()
    outs = generate_batch(model, iface, PROMPTS, max_bytes=24, temperature=temperature, top_p=0.95,
                          stop=["qq"], seeds=seeds, row_stop=row_stop, speculative=speculative, batch_size=3,
                          stats=stats, on_done=lambda i, out: done.append((i, out)))
    assert sorted(done) == list(enumerate(outs)) and stats.prompts == len(PROMPTS)
    assert stats.speculative == speculative
    for prompt, seed, extra, out in zip(PROMPTS, seeds, row_stop, outs):
        one = generate(model, iface, prompt, max_bytes=24, temperature=temperature, top_p=0.95,
                       stop=["qq", *extra], seed=seed, speculative=speculative)
        assert out == one


def test_batch_of_counting_rows_with_different_lengths_and_stops():
    model, iface = counting_model(), ByteInterface(REP)
    prompts = [b"a", b"long prompt about k", b"w", b"\x10", b"m"]
    stats = GenStats()
    outs = generate_batch(model, iface, prompts, max_bytes=40, row_stop=[[], ["p"], [], [b"#"], ["r"]],
                          batch_size=4, stats=stats)
    assert outs == [b"bcdefghijklmnopqrstuvwxyz", b"lmno", b"xyz", bytes(range(0x11, 0x23)), b"nopq"]
    assert outs == [plain(model, iface, p, max_bytes=40, stop=s)
                    for p, s in zip(prompts, [[], ["p"], [], [b"#"], ["r"]])]
    assert stats.accepted > 0


def test_batch_argument_errors():
    model, iface = random_model(), ByteInterface(REP)
    with pytest.raises(ValueError, match="seeds"):
        generate_batch(model, iface, [b"a", b"b"], seeds=[1])
    with pytest.raises(ValueError, match="batch_size"):
        generate_batch(model, iface, [b"a"], batch_size=0)
    with pytest.raises(ValueError, match="top_p"):
        generate_batch(model, iface, [b"a"], top_p=0.0)
    assert generate_batch(model, iface, []) == []


# ---- the sampling rule -------------------------------------------------------------------------------
def chi2_critical(df: int, z: float = 3.09) -> float:
    """Wilson-Hilferty approximation of the chi-square quantile (z = 3.09: p = 0.001)."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


def chi2(counts: np.ndarray, probs: np.ndarray) -> tuple[float, int]:
    """Pearson's statistic over bins with an expected count >= 5 (the rest pooled) and its degrees of freedom."""
    n = counts.sum()
    exp = probs * n
    big = exp >= 5
    obs_b, exp_b = list(counts[big]), list(exp[big])
    if (~big).any():
        obs_b.append(counts[~big].sum())
        exp_b.append(exp[~big].sum())
    obs_b, exp_b = np.array(obs_b, dtype=float), np.array(exp_b)
    return float(((obs_b - exp_b) ** 2 / np.maximum(exp_b, 1e-12)).sum()), len(obs_b) - 1


def test_accept_rule_on_fixed_distributions():
    """A stub whose logits never change: p (target) and q (drafts) are fixed; the first emitted id must follow
    p[0], the second p[1], and draft 0 must be kept with probability sum(min(p, q))."""
    p = torch.tensor([[0.5, 0.2, 0.2, 0.1, 0.0], [0.1, 0.1, 0.1, 0.1, 0.6], [0.2] * 5])
    q = torch.tensor([[0.1, 0.1, 0.2, 0.3, 0.3], [0.6, 0.1, 0.1, 0.1, 0.1]])
    g = torch.Generator().manual_seed(0)
    N = 20000
    first, second, kept = np.zeros(5), np.zeros(5), 0
    for _ in range(N):
        drafts = [int(torch.multinomial(q[i], 1, generator=g)) for i in range(2)]
        a, nxt = accept_drafts(p, q, drafts, g)
        ids = drafts[:a] + [nxt]
        first[ids[0]] += 1
        kept += a >= 1
        if len(ids) > 1:
            second[ids[1]] += 1
    for counts, target in ((first, p[0]), (second, p[1])):
        stat, df = chi2(counts, target.numpy())
        assert stat < chi2_critical(df), (counts / counts.sum(), target)
    assert first[4] == 0  # p[0] gives id 4 no mass: never emitted, although q drafts it 30% of the time
    assert kept / N == pytest.approx(float(torch.minimum(p[0], q[0]).sum()), abs=0.015)
    assert accepted_greedy(torch.tensor([[1, 2, 3], [1, 9, 3]]), torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]])
                           ).tolist() == [3, 1]


class FourBytes(ByteInterface):
    """Only b"abcd" may be generated, never a stop: 64 possible 3-byte outputs."""

    def __init__(self, rep):
        super().__init__(rep)
        self.stop_ids = ()

    def allowed_ids(self, vocab_size):
        allowed = torch.zeros(vocab_size, dtype=torch.bool)
        allowed[self.rep.raw_ids(b"abcd")] = True
        return allowed


def test_speculative_sampling_keeps_the_model_distribution():
    model, iface = random_model(n_pred=3, std=0.5, seed=1), FourBytes(REP)
    T, top_p, prompt, N = 1.3, 0.97, b"x", 1500
    allowed = iface.allowed_ids(REP.vocab_size)
    outcomes = [bytes([a, b, c]) for a in b"abcd" for b in b"abcd" for c in b"abcd"]
    exact = np.zeros(64)
    with torch.no_grad():
        for j, out in enumerate(outcomes):
            ids = torch.as_tensor(np.concatenate([iface.prompt_ids(prompt), REP.raw_ids(out)])).view(1, -1)
            probs = sampling_probs(model.logits(model(ids))[0, -4:-1], allowed, T, top_p)  # (3, V)
            exact[j] = float(probs[torch.arange(3), ids[0, -3:]].prod())
        # what "always keep the drafts" would give: p(x1) q1(x2) q2(x3) from the heads at the prompt's end
        h = model(torch.as_tensor(iface.prompt_ids(prompt)).view(1, -1))[0, -1]
        q = [sampling_probs(w @ h, allowed, T, top_p) for w in model.main_head_weights()]
        wrong = np.array([float(q[0][REP.raw_offset + o[0]] * q[1][REP.raw_offset + o[1]]
                                * q[2][REP.raw_offset + o[2]]) for o in outcomes])
    assert exact.sum() == pytest.approx(1.0, abs=1e-4)
    stats = GenStats()
    outs = generate_batch(model, iface, [prompt] * N, max_bytes=3, temperature=T, top_p=top_p,
                          seeds=list(range(N)), speculative=True, batch_size=256, stats=stats)
    counts = np.array([outs.count(o) for o in outcomes], dtype=float)
    assert counts.sum() == N and stats.speculative and 0 < stats.accepted < stats.row_steps * 2
    stat, df = chi2(counts, exact)
    assert stat < chi2_critical(df)
    # the test has power: the wrong rule's distribution is far from the model's
    expected_wrong, _ = chi2(wrong * N, exact)
    assert expected_wrong > 5 * chi2_critical(df)


# ---- the per-row KV cache ------------------------------------------------------------------------
def test_cache_rollback_equals_never_seeing_the_rejected_ids():
    model = random_model()
    ids = torch.randint(REP.raw_offset, REP.raw_vocab_size, (1, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)  # (1, 20, D)
        cache = model.new_kv_cache(1, 32)
        model(ids[:, :10], kv_cache=cache)
        junk = torch.randint(REP.raw_offset, REP.raw_vocab_size, (1, 6))
        model(torch.cat([ids[:, 10:12], junk[:, :4]], dim=1), kv_cache=cache)  # 2 kept, 4 rejected
        assert cache.lengths == [16]
        cache.set_lengths([12])
        rest = model(ids[:, 12:16], kv_cache=cache)  # overwrites the rejected positions
        step = model(ids[:, 16:17], kv_cache=cache)
    torch.testing.assert_close(rest, full[:, 12:16], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(step, full[:, 16:17], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="lengths"):
        cache.set_lengths([40])


def test_ragged_cache_rows_match_rows_alone():
    model = random_model()
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(REP.raw_offset, REP.raw_vocab_size, (1, n), generator=g) for n in (5, 11, 8)]
    with torch.no_grad():
        alone = [model(s) for s in seqs]
        cache = model.new_kv_cache(3, 24)
        for i, s in enumerate(seqs):  # prefill each row alone, then continue them together
            row = model.new_kv_cache(1, 8)
            model(s[:, :3], kv_cache=row)
            cache.copy_row(i, row)
        assert cache.lengths == [3, 3, 3]
        cache.set_lengths([3, 3, 3])
        pieces = [[], [], []]
        # uneven steps: rows advance 2 ids per forward but keep 1 or 2 (as after rejected drafts)
        keep = [1, 2, 2]
        pos = [3, 3, 3]
        while min(p + 2 <= len(s[0]) for p, s in zip(pos, seqs)):
            x = torch.cat([s[:, p:p + 2] for p, s in zip(pos, seqs)])  # (3, 2)
            before = list(cache.lengths)
            h = model(x, kv_cache=cache)
            for i in range(3):
                pieces[i].append(h[i:i + 1, :keep[i]])
            pos = [p + k for p, k in zip(pos, keep)]
            cache.set_lengths([n + k for n, k in zip(before, keep)])
        cache.keep_rows([2, 0])
        assert cache.batch_size == 2 and cache.lengths == [pos[2], pos[0]]
        h = model(torch.cat([seqs[2][:, pos[2]:pos[2] + 1], seqs[0][:, pos[0]:pos[0] + 1]]), kv_cache=cache)
    for i in range(3):
        got = torch.cat(pieces[i], dim=1)
        torch.testing.assert_close(got, alone[i][:, 3:3 + got.shape[1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h[0:1], alone[2][:, pos[2]:pos[2] + 1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h[1:2], alone[0][:, pos[0]:pos[0] + 1], atol=1e-5, rtol=1e-5)


# ---- a trained model (the realistic case: drafts are right often, not always) ---------------------------
@pytest.mark.slow
def test_trained_multi_head_model_speculative_equals_plain():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(dim=48, n_layers=2, n_heads=4, max_seq_len=160, n_pred_heads=4),
                        REP.vocab_size, REP.raw_vocab_size)
    text = "".join(f"def f{i}(x):\n    return x * {i % 7} + {i % 5}\n\n" for i in range(200)).encode()
    ids = torch.as_tensor(REP.raw_ids(text))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    for _ in range(60):
        starts = torch.randint(0, len(ids) - 70, (8,), generator=g).tolist()
        tok = torch.stack([ids[s:s + 68] for s in starts])
        doc = torch.zeros_like(tok)
        loss = model.loss(model(tok[:, :64], doc_ids=doc[:, :64]), tok, doc).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    iface = ByteInterface(REP)
    prompts = [b"def f3(x):\n", b"def g(", b"    return", b"x"]
    stats = GenStats()
    outs = generate_batch(model, iface, prompts, max_bytes=120, batch_size=2, stats=stats)
    assert outs == [plain(model, iface, p, max_bytes=120) for p in prompts]
    assert stats.as_dict()["kept_per_step"] > 1.5


# ---- drafts copied from the context (greedy) --------------------------------------------------------------
def test_context_lookup_proposes_what_followed_the_last_occurrence():
    lk = ContextLookup(list(b"xyz abc1 abc2 abc"), max_len=3, ngrams=(4, 3))
    assert bytes(lk.propose()) == b"2 a"  # "abc" last occurred before "2", and " abc" (n=4) too
    lk.extend(b"Q")
    assert lk.propose() == []  # "bcQ" never occurred
    lk = ContextLookup(list(b"one two one"), max_len=8, ngrams=(6, 3))
    assert bytes(lk.propose()) == b" two one"  # the longest n that matches wins; at most max_len ids
    assert ContextLookup([], max_len=4).propose() == [] and ContextLookup([1, 2], max_len=4).propose() == []


@pytest.mark.parametrize("n_pred", [1, 4])
def test_lookup_drafts_keep_greedy_output(n_pred):
    """Repetitive prompts make the context propose drafts (right and wrong ones): output stays plain greedy's,
    with and without heads, alone and in a batch of rows whose drafts differ in length."""
    model, iface = random_model(n_pred=n_pred, max_seq_len=256), no_stop()
    prompts = [b"abcabcabcabcabc", b"def f(x):\n    return x\ndef g(x):\n    return", b"xyz", b""]
    stats = GenStats()
    outs = [generate(model, iface, p, max_bytes=60, stats=stats) for p in prompts]
    assert outs == [plain(model, iface, p, max_bytes=60) for p in prompts]
    assert stats.lookup == 8 and 0 < stats.lookup_steps <= stats.row_steps and 0 < stats.lookup_accepted
    assert stats.speculative == (n_pred > 1)
    batch_stats = GenStats()
    assert generate_batch(model, iface, prompts, max_bytes=60, batch_size=3, stats=batch_stats) == outs
    assert batch_stats.lookup_steps > 0
    off = GenStats()
    assert generate(model, iface, prompts[0], max_bytes=60, lookup=0, stats=off) == outs[0]
    assert off.lookup == off.lookup_steps == 0


def test_lookup_is_greedy_only_and_off_with_no_speculative():
    model, iface = random_model(n_pred=1), no_stop()
    for kw in [dict(temperature=0.8, seed=3), dict(speculative=False)]:
        stats = GenStats()
        generate(model, iface, b"abcabcabcabc", max_bytes=30, stats=stats, **kw)
        assert stats.lookup == stats.lookup_steps == 0
    with pytest.raises(ValueError, match="lookup"):
        generate(model, iface, b"abc", max_bytes=5, lookup=-1)
