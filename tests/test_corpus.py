"""Corpus readers: keys, splits, pieces, problems, sharding, manifest.   pytest tests/test_corpus.py"""

from __future__ import annotations

import json
import warnings

import pytest

from proxylm.data.config import DataConfig
from proxylm.data.corpus import CorpusWarning, cut_points, open_corpus, shard, stdlib_root


def _cfg(**kw) -> DataConfig:
    return DataConfig(**{"val_fraction": 0.0, **kw})


def _read_all(corpus, split="all") -> dict[str, bytes]:
    return {r.key: corpus.read(r) for r in corpus.documents(split)}


@pytest.fixture
def jsonl_file(tmp_path):
    lines = [
        json.dumps({"text": "first doc"}),
        json.dumps({"content": "from content"}),
        "{not json",
        json.dumps({"other": 1}),
        json.dumps({"text": ""}),
        "",
        json.dumps({"text": "line one\n" * 20}),  # 180 bytes: cut into pieces at max_doc_bytes=64
        json.dumps({"text": "lone \ud800 surrogate"}),  # JSON-escaped lone surrogate: not encodable as UTF-8
        json.dumps({"text": "é" * 40, "content": "ignored"}),  # 80 bytes, no newline: cut between characters
    ]
    path = tmp_path / "part.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_jsonl_documents_and_problems(jsonl_file):
    with pytest.warns(CorpusWarning) as rec:
        corpus = open_corpus(str(jsonl_file), _cfg(max_doc_bytes=64))
        docs = _read_all(corpus)
    messages = " ".join(str(w.message) for w in rec)
    assert f"{jsonl_file}:3" in messages and f"{jsonl_file}:4" in messages  # file and line named
    assert docs["part.jsonl:1"] == b"first doc"
    assert docs["part.jsonl:2"] == b"from content"
    assert corpus.problems["malformed_json"] == 1 and corpus.problems["no_text"] == 1
    assert corpus.problems["empty"] == 1 and corpus.problems["split"] == 2
    assert corpus.problems["invalid_utf8"] == 1
    assert docs["part.jsonl:8"] == "lone \ud800 surrogate".encode("utf-8", "surrogatepass")
    long = b"".join(docs[f"part.jsonl:7#{k}"] for k in range(3))
    assert long == b"line one\n" * 20 and all(len(docs[f"part.jsonl:7#{k}"]) <= 64 for k in range(3))
    pieces = [docs[k] for k in sorted(docs) if k.startswith("part.jsonl:9#")]
    assert b"".join(pieces).decode("utf-8") == "é" * 40  # every piece is valid UTF-8
    assert all(p.decode("utf-8") for p in pieces)
    assert not any(k.startswith(("part.jsonl:3", "part.jsonl:4", "part.jsonl:5", "part.jsonl:6")) for k in docs)
    # re-reading does not count problems twice
    _read_all(corpus)
    assert corpus.problems["malformed_json"] == 1


def test_folder_documents_and_problems(tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "b.py").write_text("print('b')\n")
    (tmp_path / "pkg" / "a.py").write_text("x = 1\n")
    (tmp_path / "bad.py").write_bytes(b"caf\xe9 = 1\n\xff\xfe\n")
    (tmp_path / "empty.py").write_bytes(b"")
    (tmp_path / "big.py").write_text("".join(f"line {i}\n" for i in range(100)))
    (tmp_path / "notes.txt").write_text("not matched by the glob")
    corpus = open_corpus(str(tmp_path), _cfg(max_doc_bytes=100))
    with pytest.warns(CorpusWarning, match="bad.py"):  # problems are found (and counted once) while listing
        keys = [r.key for r in corpus.documents("all")]
    assert keys == sorted(keys, key=lambda k: (k.split("#")[0], int(k.split("#")[1]) if "#" in k else -1))
    assert "pkg/a.py" in keys and "notes.txt" not in keys and "empty.py" not in keys
    assert corpus.problems["empty"] == 1 and corpus.problems["split"] == 1
    data = corpus.read(next(r for r in corpus.documents("all") if r.key == "bad.py"))
    assert data == b"caf\xe9 = 1\n\xff\xfe\n"  # bytes kept as they are
    assert corpus.problems["invalid_utf8"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second read is counted once and not warned again
        corpus.read(next(r for r in corpus.documents("all") if r.key == "bad.py"))
    assert corpus.problems["invalid_utf8"] == 1
    big = b"".join(corpus.read(r) for r in corpus.documents("all") if r.key.startswith("big.py#"))
    assert big == (tmp_path / "big.py").read_bytes()


def test_unreadable_file_is_counted_not_fatal(tmp_path):
    (tmp_path / "a.py").write_text("a = 1\n")
    (tmp_path / "gone.py").write_text("b = 2\n")
    corpus = open_corpus(str(tmp_path), _cfg())
    refs = corpus.documents("all")
    (tmp_path / "gone.py").unlink()
    with pytest.warns(CorpusWarning, match="gone.py"):
        assert corpus.read(next(r for r in refs if r.key == "gone.py")) == b""
    assert corpus.problems["unreadable"] == 1


def test_cut_points_cover_everything():
    data = ("ab\n" * 50 + "ü" * 100 + "x" * 7).encode()
    pieces = cut_points(data, 16)
    assert pieces[0][0] == 0 and pieces[-1][1] == len(data)
    assert all(a < b and b - a <= 16 for a, b in pieces)
    assert all(p[1] == q[0] for p, q in zip(pieces, pieces[1:]))
    for a, b in pieces:
        data[a:b].decode("utf-8")


def test_split_is_deterministic_and_keeps_pieces_together(tmp_path):
    for i in range(200):
        (tmp_path / f"f{i:03d}.py").write_text(f"x = {i}\n" * (1 + i % 5))
    cfg = DataConfig(val_fraction=0.2, max_doc_bytes=8)
    a, b = open_corpus(str(tmp_path), cfg), open_corpus(str(tmp_path), cfg)
    train, val = a.documents("train"), a.documents("val")
    assert [r.key for r in val] == [r.key for r in b.documents("val")]
    assert not {r.key for r in train} & {r.key for r in val}
    assert {r.key for r in train} | {r.key for r in val} == {r.key for r in a.documents("all")}
    n_val_docs = len({r.doc_key for r in val})
    assert 20 <= n_val_docs <= 60  # ~ 0.2 * 200
    assert not {r.doc_key for r in train} & {r.doc_key for r in val}  # pieces never straddle the split
    # the split depends only on the key, not on the seed
    assert [r.key for r in open_corpus(str(tmp_path), DataConfig(val_fraction=0.2, max_doc_bytes=8, seed=7))
            .documents("val")] == [r.key for r in val]


@pytest.mark.parametrize("world_size", [1, 2, 3, 7])
def test_shard_partitions_documents(tmp_path, world_size):
    for i in range(23):
        (tmp_path / f"{i}.py").write_text("y\n")
    refs = open_corpus(str(tmp_path), _cfg()).documents("all")
    shards = [shard(refs, r, world_size) for r in range(world_size)]
    keys = [r.key for s in shards for r in s]
    assert sorted(keys) == sorted(r.key for r in refs) and len(set(keys)) == len(keys)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1
    assert shard(list(reversed(refs)), 0, world_size) == shards[0]  # independent of input order
    with pytest.raises(ValueError):
        shard(refs, world_size, world_size)


def test_jsonl_glob_is_sorted_with_relative_keys(tmp_path):
    for d, name in [("b", "x.jsonl"), ("a", "y.jsonl"), ("a", "c.jsonl")]:
        (tmp_path / d).mkdir(exist_ok=True)
        (tmp_path / d / name).write_text(json.dumps({"text": f"{d}/{name}"}) + "\n")
    corpus = open_corpus(str(tmp_path / "*" / "*.jsonl"), _cfg())
    assert [r.key for r in corpus.documents("all")] == ["a/c.jsonl:1", "a/y.jsonl:1", "b/x.jsonl:1"]
    assert corpus.read(corpus.documents("all")[0]) == b"a/c.jsonl"
    with pytest.raises(FileNotFoundError):
        open_corpus(str(tmp_path / "nothing-*.jsonl"), _cfg())
    with pytest.raises(FileNotFoundError):
        open_corpus(str(tmp_path / "missing.jsonl"), _cfg())


def test_stdlib_corpus_and_manifest(tmp_path):
    corpus = open_corpus("stdlib", DataConfig())
    refs = corpus.documents("all")
    keys = [r.key for r in refs]
    assert len(refs) > 100 and "json/decoder.py" in keys
    assert not any(part in ("test", "tests", "idle_test", "site-packages")
                   for k in keys for part in k.split("/")[:-1])
    assert all(r.source.startswith(str(stdlib_root())) for r in refs)
    out = tmp_path / "val.json"
    m = corpus.write_manifest(out, "val")
    saved = json.loads(out.read_text())
    assert saved["sha256"] == m["sha256"] and saved["n_documents"] == len({r.doc_key for r in corpus.documents("val")})
    assert {"path", "size", "sha256"} <= set(saved["documents"][0])
    assert open_corpus("stdlib", DataConfig()).manifest("val")["sha256"] == m["sha256"]  # stable
