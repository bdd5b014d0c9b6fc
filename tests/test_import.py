"""Bring your own tokenizer: `proxylm codec import`, its refusals, and the round-trip check at training start.

    pytest tests/test_import.py
"""

from __future__ import annotations

import json
import warnings

import pytest
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from proxylm.cli import main
from proxylm.codecs.base import load_codec
from proxylm.codecs.imported import import_tokenizer
from proxylm.core.errors import UserError

pytestmark = pytest.mark.filterwarnings("ignore::proxylm.data.corpus.CorpusWarning")

TEXTS = [f"def f{i}(x):\n    return x * {i}  # ünïcode ✓\n\n\tpass\n" for i in range(200)]
TRICKY = [b" leading space", b"  two", b"a", b"", b"\n\n", "中文 😀 ﬁ".encode(), b"<s> and </s> <|endoftext|>"]


def _byte_level(path, normalizer=None):
    t = Tokenizer(models.BPE())
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    if normalizer is not None:
        t.normalizer = normalizer
    t.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    t.save(str(path))
    return path


def _metaspace(path, prepend="always"):
    t = Tokenizer(models.BPE(byte_fallback=True))
    t.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend)
    t.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme=prepend)])
    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    # byte-fallback pieces in the model's vocabulary, as SentencePiece conversions have them
    t.train_from_iterator(TEXTS, trainers.BpeTrainer(vocab_size=600, special_tokens=["<unk>", "<s>", "</s>",
                                                                                     *byte_tokens]))
    t.save(str(path))
    return path


def _roundtrip(codec, data: bytes) -> bool:
    return codec.decode(codec.encode(data)) == data


def test_byte_level_tokenizer_imports_and_is_lossless(tmp_path):
    codec, report = import_tokenizer(_byte_level(tmp_path / "t.json"), [(f"d{i}", t.encode()) for i, t in
                                                                        enumerate(TEXTS[:20])])
    assert codec.name == "bpe" and report["checked_documents"] >= 20 and report["special_tokens_dropped"] == 1
    assert all(_roundtrip(codec, t) for t in TRICKY)
    ids = codec.encode(b"<|endoftext|>")
    assert len(ids) > 1  # the special token is text now, not one id


@pytest.mark.parametrize("prepend", ["always", "first", "never"])
def test_metaspace_byte_fallback_round_trips(tmp_path, prepend):
    codec, report = import_tokenizer(_metaspace(tmp_path / "m.json", prepend))
    assert report["surface"]["space"] == "▁" and report["surface"]["byte_fallback"]
    assert all(_roundtrip(codec, t) for t in TRICKY + [t.encode() for t in TEXTS[:5]])
    codec.save(tmp_path / "codec")
    again = load_codec(tmp_path / "codec")
    assert again.surface == codec.surface and all(_roundtrip(again, t) for t in TRICKY)
    # text SentencePiece cannot spell back ('▁' is its space) is refused per document, never decoded wrong
    assert codec.encode_many(["a ▁ b".encode()]) == [None]


def test_lossy_tokenizers_are_refused_with_the_reason(tmp_path):
    with pytest.raises(UserError, match="normalizer NFKC changes the text"):
        import_tokenizer(_byte_level(tmp_path / "nfkc.json", normalizers.NFKC()))
    t = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    t.train_from_iterator(TEXTS, trainers.WordPieceTrainer(vocab_size=300, special_tokens=["[UNK]"]))
    t.save(str(tmp_path / "wp.json"))
    with pytest.raises(UserError, match="pre-tokenizer Whitespace drops.*model WordPiece"):
        import_tokenizer(tmp_path / "wp.json")
    # no byte fallback: characters outside the vocabulary cannot come back
    u = Tokenizer(models.BPE(unk_token="<unk>"))
    u.pre_tokenizer = pre_tokenizers.Metaspace()
    u.train_from_iterator(["plain ascii text"] * 10, trainers.BpeTrainer(vocab_size=60, special_tokens=["<unk>"]))
    u.save(str(tmp_path / "unk.json"))
    with pytest.raises(UserError, match="does not come back"):
        import_tokenizer(tmp_path / "unk.json", [("doc", "ü".encode())])
    with pytest.raises(UserError, match="no tokenizer.json"):
        import_tokenizer(tmp_path)


def test_cli_import_then_train_without_warning(tmp_path, code_corpus, capsys):
    tok = _byte_level(tmp_path / "t.json")
    out = tmp_path / "mine"
    assert main(["codec", "import", "--tokenizer", str(tok), "--out", str(out), "--corpus", code_corpus,
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["vocab_size"] == 320 and (out / "codec.json").exists()
    assert main(["codec", "import", "--tokenizer", str(_byte_level(tmp_path / "n.json", normalizers.NFKC())),
                 "--out", str(tmp_path / "bad")]) == 2
    assert "NFKC" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # "options differ" would be a UserWarning
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        rc = main(["train", "proxy-bpe-micro", f"views.codec_dir={out}", f"data.corpus={code_corpus}",
                   "train.max_steps=2", "train.eval_every=0", "eval.max_bytes=2000", "data.val_fraction=0.2",
                   "--out", str(tmp_path / "run"), "--json"])
    captured = capsys.readouterr()
    assert rc == 0
    summary = json.loads(captured.out)  # stdout is exactly one JSON object
    assert summary["steps"] == 2
    assert "vocabulary" in captured.err and "units" in captured.err  # the start-up summary is on stderr


def test_training_refuses_a_lossy_codec(tmp_path, code_corpus, capsys):
    bad = tmp_path / "lossy"
    bad.mkdir()
    t = Tokenizer.from_file(str(_byte_level(tmp_path / "t.json")))
    t.normalizer = normalizers.Lowercase()  # written by hand, not imported: nothing checked it
    t.save(str(bad / "tokenizer.json"))
    (bad / "codec.json").write_text(json.dumps({"name": "bpe", "vocab_size": 320}))
    rc = main(["train", "proxy-bpe-micro", f"views.codec_dir={bad}", f"data.corpus={code_corpus}",
               "train.max_steps=1", "--out", str(tmp_path / "run")])
    assert rc == 2 and "lossy" in capsys.readouterr().err


def test_a_lossy_tokenizer_in_an_imported_codec_folder_is_refused_not_trained_raw(tmp_path, code_corpus, capsys):
    """An imported codec verifies every encoding, so a lossy tokenizer swapped in made every document
    'unencodable' and the run trained on raw bytes; the start-of-run check now names the document."""
    out = tmp_path / "imported"
    assert main(["codec", "import", "--tokenizer", str(_byte_level(tmp_path / "t.json")), "--out", str(out),
                 "--corpus", code_corpus]) == 0
    t = Tokenizer.from_file(str(out / "tokenizer.json"))
    t.normalizer = normalizers.Lowercase()
    t.save(str(out / "tokenizer.json"))
    capsys.readouterr()
    rc = main(["train", "proxy-bpe-micro", f"views.codec_dir={out}", f"data.corpus={code_corpus}",
               "train.max_steps=1", "--out", str(tmp_path / "run")])
    assert rc == 2 and "does not give back document" in capsys.readouterr().err


def test_an_hf_tokenizer_folder_as_codec_dir_gets_the_import_command(tmp_path, code_corpus, capsys):
    folder = tmp_path / "hf-tokenizer"
    folder.mkdir()
    _byte_level(folder / "tokenizer.json")
    rc = main(["train", "proxy-bpe-micro", f"views.codec_dir={folder}", f"data.corpus={code_corpus}",
               "train.max_steps=1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert rc == 2 and f"proxylm codec import --tokenizer {folder}" in err and "remove it" not in err
