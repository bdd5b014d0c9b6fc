"""`proxylm codec train|stats|stability|encode` on a small folder corpus.

    .venv/bin/python -m pytest tests/test_codec_cli.py -q          # fast
    .venv/bin/python -m pytest tests/test_codec_cli.py -q -m slow  # BPE-4096 on the stdlib corpus
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import proxylm.cli
from helpers import run_cli

SMALL_VOCAB = 300
STATS_KEYS = {"bytes_per_symbol", "roundtrip_failures", "encode_mb_per_s", "decode_mb_per_s", "documents", "bytes",
              "symbols", "fallback_documents", "passthrough_share"}
STDLIB_MIN_BYTES_PER_SYMBOL = 3.0
SOURCES = {
    "geometry.py": "import math\n\n\nclass Point:\n    def __init__(self, x, y):\n        self.x = x\n"
                   "        self.y = y\n\n    def norm(self):\n        return math.hypot(self.x, self.y)\n",
    "strings.py": "def greet(name):\n    return f'Grüße, {name}! 🙂'\n\n\nprint(greet('café'))\r\n",
    "loops.py": "total = 0\nfor i in range(100):\n\tif i % 3 == 0:\n\t\ttotal += i\nprint(total)\n",
    "pkg/empty_lines.py": "\n\n\n# comment with NUL \x00 and tabs\t\t\n" + "x = [1, 2, 3]\n" * 50,
}


@pytest.fixture(autouse=True)
def only_codec_commands(monkeypatch, tmp_path):
    """The codec verbs alone (other areas' commands are tested elsewhere); a private codec cache."""
    monkeypatch.setattr(proxylm.cli, "COMMAND_MODULES", ["proxylm.cli.codec"])
    monkeypatch.setenv("PROXYLM_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def corpus(tmp_path) -> str:
    root = tmp_path / "corpus"
    for name, text in SOURCES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text * 20, encoding="utf-8")
    return str(root)


@pytest.fixture
def bpe_dir(corpus, tmp_path, capsys) -> str:
    out = tmp_path / "bpe"
    rc, _, err = run_cli(capsys, "codec", "train", "bpe", "--corpus", corpus, "--vocab-size", SMALL_VOCAB, "--out", out)
    assert rc == 0, err
    return str(out)


def stats(capsys, codec, corpus, *extra) -> dict:
    rc, out, err = run_cli(capsys, "codec", "stats", "--codec", codec, "--corpus", corpus, "--split", "all", "--json",
                       *extra)
    assert rc == 0, err
    return json.loads(out)  # exactly one JSON object on stdout


def test_stats_json_contract(capsys, bpe_dir, corpus):
    result = stats(capsys, bpe_dir, corpus)
    assert STATS_KEYS <= result.keys()
    assert result["documents"] == len(SOURCES) and result["roundtrip_failures"] == 0
    assert result["fallback_documents"] == 0 and result["passthrough_share"] == 0.0
    assert result["bytes_per_symbol"] > 1.2 and result["encode_mb_per_s"] > 0


def test_stats_counts_invalid_utf8_as_fallback(capsys, bpe_dir, corpus, tmp_path):
    (tmp_path / "corpus" / "latin1.py").write_bytes("# caf\xe9\n".encode("latin-1"))
    with pytest.warns(UserWarning):  # the corpus warns about the file
        result = stats(capsys, bpe_dir, corpus)
    assert result["fallback_documents"] == 1 and result["roundtrip_failures"] == 0


@pytest.mark.parametrize("name,bytes_per_symbol", [("gzip", None), ("halfbyte", 0.5), ("doublebit", 0.25),
                                                   ("bit", 0.125), ("doublebyte", None)])
def test_stats_of_untrained_codecs_by_name(capsys, corpus, name, bytes_per_symbol):
    result = stats(capsys, name, corpus, "--limit-docs", 2)
    assert result["documents"] == 2 and result["roundtrip_failures"] == 0
    if bytes_per_symbol is not None:
        assert result["bytes_per_symbol"] == bytes_per_symbol


def test_stats_human_output(capsys, bpe_dir, corpus):
    rc, out, _ = run_cli(capsys, "codec", "stats", "--codec", bpe_dir, "--corpus", corpus, "--split", "all")
    assert rc == 0 and "raw bytes per symbol" in out and "round-trip failures   0" in out


def test_train_bpe_bytes_gray_and_gzip(capsys, corpus, tmp_path):
    rc, _, err = run_cli(capsys, "codec", "train", "bpe-bytes", "--gray", "--corpus", corpus,
                     "--vocab-size", SMALL_VOCAB, "--out", tmp_path / "gray")
    assert rc == 0, err
    assert json.loads((tmp_path / "gray" / "codec.json").read_text())["gray"] is True
    assert stats(capsys, tmp_path / "gray", corpus)["roundtrip_failures"] == 0
    rc, _, err = run_cli(capsys, "codec", "train", "gzip", "--level", 6, "--out", tmp_path / "gz")
    assert rc == 0, err
    assert json.loads((tmp_path / "gz" / "codec.json").read_text()) == {"name": "gzip", "level": 6}


def test_train_without_out_fills_the_run_cache(capsys, corpus, tmp_path):
    rc, out, err = run_cli(capsys, "codec", "train", "bpe", "--corpus", corpus, "--vocab-size", SMALL_VOCAB)
    assert rc == 0, err
    assert str(tmp_path / "cache" / "codecs" / "bpe-") in out


def test_train_refuses_to_overwrite_without_force(capsys, bpe_dir, corpus):
    args = ["codec", "train", "bpe", "--corpus", corpus, "--vocab-size", SMALL_VOCAB + 4, "--out", bpe_dir]
    rc, _, err = run_cli(capsys, *args)
    assert rc == 2 and "--force" in err
    rc, _, err = run_cli(capsys, *args, "--force")
    assert rc == 0, err
    assert json.loads((Path(bpe_dir) / "codec.json").read_text())["vocab_size"] == SMALL_VOCAB + 4


@pytest.mark.parametrize("codec,message", [("bpe", "must be trained first"), ("/nonexistent/dir", "no such codec"),
                                           ("nope", "not a codec name")])
def test_bad_codec_arguments_are_clear_errors(capsys, corpus, codec, message):
    rc, out, err = run_cli(capsys, "codec", "stats", "--codec", codec, "--corpus", corpus)
    assert rc == 2 and message in err and not out


def test_unknown_codec_name_in_train(capsys, corpus):
    rc, _, err = run_cli(capsys, "codec", "train", "nope", "--corpus", corpus)
    assert rc == 2 and "unknown codec" in err


def test_stability_json_bpe_more_stable_than_gzip(capsys, bpe_dir, corpus):
    rc, out, err = run_cli(capsys, "codec", "stability", "--codec", bpe_dir, "--codec", "gzip", "--corpus", corpus,
                       "--split", "all", "--trials", 2, "--json")
    assert rc == 0, err
    report = json.loads(out)
    bpe, gz = report["codecs"][bpe_dir]["families"], report["codecs"]["gzip"]["families"]
    assert set(bpe) == {"delete", "insert", "replace", "whitespace"}
    for family in bpe:
        assert bpe[family]["pairs"] == len(SOURCES) * 2
        assert bpe[family]["mean"] < gz[family]["mean"]


def test_stability_table_and_bad_family(capsys, bpe_dir, corpus):
    rc, out, _ = run_cli(capsys, "codec", "stability", "--codec", bpe_dir, "--codec", "halfbyte", "--corpus", corpus,
                     "--split", "all", "--edits", "delete,whitespace")
    assert rc == 0 and "whitespace" in out and "halfbyte" in out
    rc, _, err = run_cli(capsys, "codec", "stability", "--codec", "gzip", "--corpus", corpus, "--split", "all",
                     "--edits", "shuffle")
    assert rc == 2 and "unknown edit family" in err


def test_encode_verb(capsys, bpe_dir):
    rc, out, _ = run_cli(capsys, "codec", "encode", "--codec", bpe_dir, "--text", "def norm(self):", "--json")
    result = json.loads(out)
    assert rc == 0 and result["roundtrip_ok"] and result["symbols"] == len(result["ids"]) < result["bytes"]


@pytest.mark.slow
def test_bpe_4096_on_stdlib(capsys, tmp_path):
    out = tmp_path / "bpe-4096"
    rc, _, err = run_cli(capsys, "codec", "train", "bpe", "--corpus", "stdlib", "--vocab-size", 4096, "--out", out)
    assert rc == 0, err
    rc, text, err = run_cli(capsys, "codec", "stats", "--codec", out, "--corpus", "stdlib", "--split", "val", "--json")
    result = json.loads(text)
    assert result["documents"] > 0 and result["roundtrip_failures"] == 0
    assert result["bytes_per_symbol"] >= STDLIB_MIN_BYTES_PER_SYMBOL


def test_train_never_replaces_a_non_codec_directory(capsys, tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "keep.txt").write_text("mine")
    rc, _, err = run_cli(capsys, "codec", "train", "halfbyte", "--out", tmp_path / "notes", "--force")
    assert rc == 2 and "not a codec directory" in err
    assert (tmp_path / "notes" / "keep.txt").read_text() == "mine"
