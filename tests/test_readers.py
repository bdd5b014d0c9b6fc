"""Corpus readers by content: folder, text glob, JSONL(.gz/.zst), parquet, arrow, saved datasets; refusals,
symlinks, sampling, string overrides.   pytest tests/test_readers.py"""

from __future__ import annotations

import bz2
import gzip
import json
import os

import pytest

from proxylm.config import load_config
from proxylm.core.errors import UserError
from proxylm.data.config import DataConfig
from proxylm.data.corpus import CorpusWarning, open_corpus

pytestmark = pytest.mark.filterwarnings("ignore::proxylm.data.corpus.CorpusWarning")

TEXTS = [f"def f{i}(x):\n    return x + {i}\n" * (1 + i % 4) for i in range(30)]


def _cfg(**kw) -> DataConfig:
    return DataConfig(**{"val_fraction": 0.0, **kw})


def _docs(spec, **kw) -> dict[str, bytes]:
    return {d.key: d.data for d in open_corpus(str(spec), _cfg(**kw)).iter_documents("all")}


def _write_jsonl(path, texts, field="text", opener=open):
    with opener(path, "wt") as f:
        for t in texts:
            f.write(json.dumps({field: t}) + "\n")


def test_folder_several_globs_and_summary(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.py").write_text("a = 1\n")
    (tmp_path / "src" / "b.js").write_text("let b = 2;\n")
    (tmp_path / "c.rs").write_text("fn main() {}\n")
    (tmp_path / "skip.txt").write_text("not matched\n")
    (tmp_path / "img.png").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0")
    corpus = open_corpus(str(tmp_path), _cfg(glob="**/*.py,**/*.js,**/*.rs,**/*.png"))
    assert sorted(d.key for d in corpus.iter_documents()) == ["c.rs", "src/a.py", "src/b.js"]
    s = corpus.summary()
    assert s["types"][".py"] == {"files": 1, "bytes": 6, "documents": 1, "text_bytes": 6} and set(s["types"]) == {".py", ".js", ".rs"}
    assert s["skipped"] == {"binary": 1}  # a binary file is skipped and counted
    everything = _docs(tmp_path, glob="**/*", exclude="**/*.png")
    assert set(everything) == {"c.rs", "src/a.py", "src/b.js", "skip.txt"}


def test_jsonl_plain_gz_zst_and_text_field(tmp_path):
    import zstandard

    _write_jsonl(tmp_path / "a.jsonl", TEXTS[:10])
    _write_jsonl(tmp_path / "b.jsonl.gz", TEXTS[10:20], opener=gzip.open)
    with open(tmp_path / "c.jsonl.zst", "wb") as f:
        f.write(zstandard.ZstdCompressor().compress("".join(json.dumps({"text": t}) + "\n" for t in TEXTS[20:]).encode()))
    docs = _docs(tmp_path / "*.jsonl*")
    assert docs["a.jsonl:1"] == TEXTS[0].encode() and docs["b.jsonl.gz:3"] == TEXTS[12].encode()
    assert docs["c.jsonl.zst:10"] == TEXTS[29].encode() and len(docs) == 30
    # named by content, not by name: a gzip file called .dat is still read as JSONL
    os.rename(tmp_path / "b.jsonl.gz", tmp_path / "b.dat")
    assert len(_docs(tmp_path / "b.dat")) == 10
    _write_jsonl(tmp_path / "code.jsonl", TEXTS[:3], field="code")
    assert _docs(tmp_path / "code.jsonl", text_field="code")["code.jsonl:2"] == TEXTS[1].encode()
    with pytest.raises(UserError, match="no column 'text' or 'content'; columns: code"):  # refused at listing now
        open_corpus(str(tmp_path / "code.jsonl"), _cfg())


def test_parquet_row_groups_pieces_and_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"content": TEXTS, "n": list(range(30))}), tmp_path / "x.parquet", row_group_size=7)
    corpus = open_corpus(str(tmp_path / "*.parquet"), _cfg(max_doc_bytes=40))
    assert [u.key for u in corpus.units] == [f"x.parquet@rg{g:06d}" for g in range(5)]  # a unit per row group
    assert corpus.summary()["types"][".parquet"]["documents"] == 30  # from the footer, nothing read
    docs = {}
    for d in corpus.iter_documents():
        docs.setdefault(d.doc_key, []).append(d.data)
    assert b"".join(docs["x.parquet:29"]) == TEXTS[29].encode() and len(docs) == 30  # "content" fallback
    assert all(len(p) <= 40 for parts in docs.values() for p in parts)
    with pytest.raises(UserError, match="no column 'body'.*columns: content, n"):
        open_corpus(str(tmp_path / "x.parquet"), _cfg(text_field="body"))


def test_hf_dataset_saved_to_disk_and_arrow_files(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_dict({"text": TEXTS}).save_to_disk(str(tmp_path / "ds"))
    docs = _docs(tmp_path / "ds")
    assert len(docs) == 30 and docs["ds:4"] == TEXTS[4].encode()
    DatasetDict({"train": Dataset.from_dict({"text": TEXTS[:20]}),
                 "test": Dataset.from_dict({"text": TEXTS[20:]})}).save_to_disk(str(tmp_path / "dd"))
    docs = _docs(tmp_path / "dd")
    assert docs["dd/test:0"] == TEXTS[20].encode() and len(docs) == 30
    arrow = next((tmp_path / "ds").glob("*.arrow"))
    assert len(_docs(arrow)) == 30  # a local data file of datasets' cache format


def test_dataset_dict_trains_on_train_and_validates_on_its_validation_split(tmp_path):
    from datasets import Dataset, DatasetDict

    from proxylm.core.errors import ConfigError

    DatasetDict({"train": Dataset.from_dict({"text": TEXTS[:20]}), "test": Dataset.from_dict({"text": TEXTS[20:25]}),
                 "validation": Dataset.from_dict({"text": TEXTS[25:]})}).save_to_disk(str(tmp_path / "dd"))

    def keys(split, **kw):
        corpus = open_corpus(str(tmp_path / "dd"), DataConfig(val_fraction=0.5, **kw))
        return sorted(d.key for d in corpus.iter_documents(split)), corpus

    train, corpus = keys("train")
    assert train == sorted(f"dd/train:{i}" for i in range(20))  # none held out by hash, none of another split
    assert keys("val")[0] == sorted(f"dd/validation:{i}" for i in range(5))
    assert "validate on 'validation'; left out: test" in corpus.summary()["split_how"]
    assert keys("val", splits="train:test")[0] == sorted(f"dd/test:{i}" for i in range(5))
    merged, corpus = keys("val", splits="hash")  # the old behaviour, on request
    assert {k.split(":")[0] for k in merged} >= {"dd/train"} and "merged" in corpus.summary()["split_how"]
    with pytest.raises(ConfigError, match="no validation split 'dev'; its splits: test, train, validation"):
        keys("val", splits="train:dev")
    with pytest.raises(ConfigError, match="data.splits"):
        DataConfig(splits="a:b:c")


def test_refusals_name_the_file_and_the_reader(tmp_path):
    """A folder's compressed/columnar files are skipped and counted with the reader that takes them (one run over a
    mixed folder, not one refusal per type); a single unreadable file is refused in one clean sentence."""
    (tmp_path / "a.py").write_text("a = 1\n")
    _write_jsonl(tmp_path / "data.jsonl.gz", TEXTS[:2], opener=gzip.open)
    (tmp_path / "notes.txt.bz2").write_bytes(bz2.compress(b"hello"))
    corpus = open_corpus(str(tmp_path), _cfg(glob="**/*"))
    assert [d.key for d in corpus.iter_documents()] == ["a.py"]
    skipped = corpus.summary()["skipped"]
    assert skipped == {f"gzip-compressed JSONL (folder reader reads text; the JSONL reader: data.corpus='{tmp_path}/*.jsonl.gz')": 1,
                       "bzip2-compressed data (folder reader reads text; decompress it (the JSONL reader takes "
                       ".jsonl.gz and .jsonl.zst))": 1}
    assert len(_docs(tmp_path, glob="**/*", exclude="*.gz,*.bz2")) == 1
    with pytest.raises(UserError, match=r"notes.txt.bz2: bzip2-compressed data that is not JSONL; no reader takes it: "
                                        r"decompress it \(the JSONL reader takes .jsonl.gz and .jsonl.zst\)$"):
        open_corpus(str(tmp_path / "notes.txt.bz2"), _cfg())
    with gzip.open(tmp_path / "code.py.gz", "wb") as f:
        f.write(b"print('not jsonl')\n")
    with pytest.raises(UserError, match=r"no readable text; skipped: 1 gzip-compressed data, not JSONL .*code.py.gz"):
        open_corpus(str(tmp_path / "*.py.gz"), _cfg())
    with pytest.raises(FileNotFoundError, match="matches no files"):
        open_corpus(str(tmp_path / "none-*.jsonl"), _cfg())


def test_folder_summary_counts_what_the_glob_left_out(tmp_path):
    for name in ("a.py", "b.py", "c.h", "d.h", "e.c", "f.tar.gz", "README"):
        (tmp_path / name).write_text("x\n")
    s = open_corpus(str(tmp_path), _cfg()).summary()
    assert s["left_out"] == {".h": 2, ".c": 1, ".tar.gz": 1, "(none)": 1}


def test_jsonl_without_the_field_is_refused_listing_its_fields(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text('{"body": "x = 1", "id": 3}\n{"body": "y = 2", "id": 4}\n')
    with pytest.raises(UserError, match=r"d.jsonl:1 \(the first record; JSONL fields\): no column 'text' or "
                                        r"'content'; columns: body, id; set data.text_field"):
        open_corpus(str(p), _cfg())
    corpus = open_corpus(str(p), _cfg(text_field="body"))
    assert corpus.summary()["text_fields"] == ["body"]
    assert corpus.summary()["types"][".jsonl"]["documents"] == 2


def test_hub_name_gets_a_save_to_disk_hint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"looks like a Hugging Face hub dataset name.*save_to_disk"):
        open_corpus("bigcode/the-stack-smol", _cfg())


def test_symlinks_outside_and_loops_are_skipped_and_counted(tmp_path):
    root, outside = tmp_path / "corpus", tmp_path / "secret.py"
    root.mkdir()
    outside.write_text("password = 'x'\n")
    (root / "real.py").write_text("x = 1\n")
    (root / "inside.py").symlink_to(root / "real.py")
    (root / "escape.py").symlink_to(outside)
    (root / "loop1.py").symlink_to(root / "loop2.py")
    (root / "loop2.py").symlink_to(root / "loop1.py")
    (root / "sub").symlink_to(root, target_is_directory=True)  # a folder loop: not followed
    corpus = open_corpus(str(root), _cfg())
    assert sorted(d.key for d in corpus.iter_documents()) == ["inside.py", "real.py"]
    assert corpus.summary()["skipped"] == {"symlink_outside": 1, "symlink_loop": 2, "symlink_folder": 1}


def test_samples_are_spread_fixed_and_capped(tmp_path):
    for i in range(4):
        _write_jsonl(tmp_path / f"s{i}.jsonl", [f"shard {i} doc {j} " * 10 for j in range(50)])
    cfg = DataConfig(corpus=str(tmp_path / "*.jsonl"), val_fraction=0.2)
    a = [d.key for d in open_corpus(cfg.corpus, cfg).sample("val", 2000, oversample=4)]
    b = [d.key for d in open_corpus(cfg.corpus, DataConfig(corpus=cfg.corpus, val_fraction=0.2, seed=9))
         .sample("val", 2000, oversample=4)]
    assert a == b  # independent of the seed: every model of a comparison scores the same text
    assert a != sorted(a)  # not in corpus order
    from proxylm.eval.bpb import read_eval_docs

    docs = read_eval_docs(cfg.corpus, "val", cfg, max_bytes=2000)
    assert sum(map(len, docs)) <= 2000 and len(docs) > 5
    from proxylm.prepare.codec_cache import corpus_texts

    texts = list(corpus_texts(open_corpus(cfg.corpus, cfg), "train", max_bytes=3000))
    assert 3000 <= sum(map(len, texts)) < 3000 + 300
    assert len({t.split(b" doc")[0] for t in texts}) >= 1


def test_overrides_take_strings_as_text():
    cfg = load_config("bytes-micro", ["data.glob=**/*", "data.corpus=~/code/*.jsonl.gz", "views.codec_dir=null",
                                      "data.text_field=[odd]", "data.seq_len=64"])
    assert cfg.data.glob == "**/*" and cfg.data.corpus == "~/code/*.jsonl.gz" and cfg.views.codec_dir is None
    assert cfg.data.text_field == "[odd]" and cfg.data.seq_len == 64
    from proxylm.core.errors import ConfigError

    with pytest.raises(ConfigError, match="data.seq_len"):
        load_config("bytes-micro", ["data.seq_len=[1"])


def test_problems_are_warned_with_file_and_line(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"text": "ok"}\n{bad\n')
    corpus = open_corpus(str(tmp_path / "p.jsonl"), _cfg())
    with pytest.warns(CorpusWarning, match=r"p.jsonl:2"):
        assert [d.key for d in corpus.iter_documents()] == ["p.jsonl:1"]
    assert corpus.problems["malformed_json"] == 1
