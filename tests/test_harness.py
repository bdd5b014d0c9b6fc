"""The export works with lm-evaluation-harness's HF backend (`lm_eval --model hf`): HFLM scores and generates
on a tiny proxy export exactly as proxylm does on raw bytes.

    PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_harness.py
"""

import pytest
import torch

pytest.importorskip("transformers")
huggingface = pytest.importorskip(
    "lm_eval.models.huggingface", reason="lm-evaluation-harness is not installed (pip install -e '.[harness]')")

from lm_eval.api.instance import Instance  # noqa: E402

from proxylm.assemble import load_run  # noqa: E402
from proxylm.codecs.bpe import BpeCodec  # noqa: E402
from proxylm.codecs.options import codec_options_for  # noqa: E402
from proxylm.data.config import ViewsConfig  # noqa: E402
from proxylm.eval.generate import generate  # noqa: E402
from proxylm.export import export_run  # noqa: E402
from test_export import make_run  # noqa: E402

CONTEXT, CONTINUATION = "def f(x):", "\n    return 'héllo'"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("harness")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(8):
        (corpus / f"m{i}.py").write_text(f"def f{i}(x):\n    return x * {i} + 'héllo'\n" * 4)
    codec = BpeCodec.train([p.read_bytes() for p in sorted(corpus.iterdir())], vocab_size=300)
    views = ViewsConfig(codec="bpe", rate=0.5, codec_options=codec_options_for("bpe", vocab_size=codec.alphabet_size))
    run_dir = make_run(root / "proxy", corpus, views, codec, n_pred_heads=2, n_raw_heads=1)
    export_run(run_dir, root / "hf")
    lm = huggingface.HFLM(pretrained=str(root / "hf"), device="cpu", batch_size=1, dtype="float32")
    return load_run(run_dir), lm


def test_loglikelihood_is_proxylms_on_raw_bytes(exported):
    run, lm = exported
    (ll, greedy), = lm.loglikelihood([Instance("loglikelihood", {}, (CONTEXT, CONTINUATION), 0)])
    # proxylm: <bos><raw> + the bytes of context + continuation; the continuation's bytes are scored
    ids = run.interface.prompt_ids((CONTEXT + CONTINUATION).encode()).tolist()
    n_ctx = len(run.interface.prompt_ids(CONTEXT.encode()))
    with torch.no_grad():
        logp = run.model.logits(run.model(torch.tensor([ids])))[0].float().log_softmax(-1)   # (T, V)
    expected = sum(float(logp[t - 1, ids[t]]) for t in range(n_ctx, len(ids)))
    assert ll == pytest.approx(expected, abs=1e-3)
    assert greedy == all(int(logp[t - 1].argmax()) == ids[t] for t in range(n_ctx, len(ids)))


@pytest.mark.slow
def test_greedy_generate_until_is_proxylms(exported):
    run, lm = exported
    until = ["\n\n"]
    out, = lm.generate_until([Instance("generate_until", {}, (CONTEXT, {"until": until, "max_gen_toks": 24,
                                                                          "do_sample": False}), 0)])
    expected = generate(run.model, run.interface, CONTEXT.encode(), max_bytes=24, stop=[u.encode() for u in until])
    assert isinstance(out, str) and len(out) > 0
    assert out == expected.decode("utf-8", "replace")
