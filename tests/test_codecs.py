"""Codecs: lossless round trips, Gray coding, persistence, training cache, edit distance.

    .venv/bin/python -m pytest tests/test_codecs.py -q
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxylm.codecs import CannotEncode, load_codec
from proxylm.codecs.bits import BitCodec, DoubleBitCodec, DoubleByteCodec, HalfByteCodec
from proxylm.codecs.bpe import BpeBytesCodec, BpeCodec, byte_level_chars, gray_code, id_width
from proxylm.codecs.gzip_codec import GzipCodec
from proxylm.codecs.stability import EDIT_FAMILIES, apply_edit, levenshtein, make_edit_pairs, stability
from proxylm.prepare.codec_cache import cache_root, ensure_codec, needs_training, train_codec
from proxylm.codecs.options import codec_options_for
from proxylm.data.config import DataConfig, ViewsConfig

SMALL_VOCAB = 320
FIXED_CODECS = [HalfByteCodec(), DoubleBitCodec(), BitCodec(), DoubleByteCodec(), GzipCodec()]
HYPOTHESIS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# text a tiny BPE learns from: code, prose, and some non-ASCII so multi-byte tokens appear
TRAIN_TEXT = [
    ("def add(a, b):\n    return a + b\n\n" * 20).encode(),
    ("class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n" * 10).encode(),
    ("# café, naïve, Grüße, 東京, λx → x² 🙂\r\n" * 15).encode(),
    b"for i in range(10):\n\tprint(i)\n" * 15,
]
TRICKY_TEXTS = [
    "", "a", " ", "\n", "\r\n\r\n", "\x00", "a\x00b\x00", " " * 5000, "\t \t\n" * 300, "\ufeffBOM",
    "e\u0301 vs \u00e9", "👩\u200d💻 family 👨\u200d👩\u200d👧", "\u2028\u2029\x85", "\U0010ffff\U000e0001",
    "'s 't 're 've 'm 'll 'd", "  leading", "trailing  ", "x" * 3000, "٣٤٥ ١٢", "ｆｕｌｌ ｗｉｄｔｈ",
]


@pytest.fixture(scope="module")
def bpe() -> BpeCodec:
    return BpeCodec.train(TRAIN_TEXT, vocab_size=SMALL_VOCAB)


@pytest.fixture(scope="module")
def bpe_gray(bpe) -> BpeBytesCodec:
    return BpeBytesCodec(bpe, gray=True)


@pytest.fixture(scope="module")
def bpe_plain(bpe) -> BpeBytesCodec:
    return BpeBytesCodec(bpe, gray=False)


# ---- fixed codecs ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", FIXED_CODECS, ids=lambda c: c.name)
@HYPOTHESIS
@given(data=st.binary(max_size=300))
def test_fixed_codecs_round_trip_any_bytes(codec, data):
    symbols = codec.encode(data)
    assert symbols.dtype == np.int64 and symbols.ndim == 1
    assert symbols.size == 0 or (symbols.min() >= 0 and symbols.max() < codec.alphabet_size)
    assert codec.decode(symbols) == data


@pytest.mark.parametrize("codec,per_byte", [(HalfByteCodec(), [0xA, 0x5]), (DoubleBitCodec(), [2, 2, 1, 1]),
                                            (BitCodec(), [1, 0, 1, 0, 0, 1, 0, 1])])
def test_sub_byte_order_is_most_significant_first(codec, per_byte):
    assert codec.encode(b"\xa5").tolist() == per_byte


def test_sub_byte_decode_rejects_bad_streams():
    with pytest.raises(ValueError, match="multiple"):
        HalfByteCodec().decode([1, 2, 3])
    with pytest.raises(ValueError, match="range"):
        BitCodec().decode([0, 1, 2, 0, 0, 0, 0, 0])


def test_doublebyte_odd_length_is_lossless_and_distinct():
    codec = DoubleByteCodec()
    assert codec.encode(b"\x01\x02").tolist() == [0x0102]
    assert codec.encode(b"\x01\x02\x03").tolist() == [0x0102, DoubleByteCodec.PAIR_VALUES + 3]
    assert codec.decode(codec.encode(b"\x01\x02\x00")) != codec.decode(codec.encode(b"\x01\x02"))
    with pytest.raises(ValueError, match="last"):
        codec.decode([DoubleByteCodec.PAIR_VALUES + 1, 5])


# ---- BPE ---------------------------------------------------------------------------------------------------
def test_byte_level_table_matches_the_library():
    from tokenizers import pre_tokenizers

    chars = byte_level_chars()
    assert sorted(chars.values()) == list(range(256))
    assert set(chars) == set(pre_tokenizers.ByteLevel.alphabet())
    sample = "Aé\x00 ~\n"
    mapped = "".join(w for w, _ in pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
                     .pre_tokenize_str(sample))
    assert bytes(chars[c] for c in mapped) == sample.encode()


def test_bpe_learns_merges(bpe):
    assert bpe.alphabet_size == SMALL_VOCAB
    data = TRAIN_TEXT[0]
    assert len(bpe.encode(data)) < len(data) / 2


@pytest.mark.parametrize("text", TRICKY_TEXTS)
def test_bpe_round_trips_tricky_text(bpe, bpe_gray, text):
    data = text.encode("utf-8")
    assert bpe.decode(bpe.encode(data)) == data
    assert bpe_gray.decode(bpe_gray.encode(data)) == data


# any Unicode text, plus text dense in the characters that trip tokenizers (whitespace runs, NUL, CR, combining)
ANY_TEXT = st.one_of(st.text(max_size=200),
                     st.text(alphabet=st.sampled_from(" \t\r\n\x00\x0b\x0c\x85\u00a0\u3000'sé\u0301🙂_x1"),
                             max_size=300))


@settings(HYPOTHESIS, max_examples=300)
@given(text=ANY_TEXT)
def test_bpe_round_trips_any_text(bpe, bpe_gray, bpe_plain, text):
    data = text.encode("utf-8")
    ids = bpe.encode(data)
    assert ids.size == 0 or (ids.min() >= 0 and ids.max() < bpe.alphabet_size)
    assert bpe.decode(ids) == data
    for codec in (bpe_gray, bpe_plain):
        symbols = codec.encode(data)
        assert len(symbols) == len(ids) * codec.width
        assert codec.decode(symbols) == data


@HYPOTHESIS
@given(data=st.binary(max_size=200))
def test_bpe_on_any_bytes_round_trips_or_refuses(bpe, bpe_gray, data):
    for codec in (bpe, bpe_gray):
        try:
            symbols = codec.encode(data)
        except CannotEncode:
            with pytest.raises(UnicodeDecodeError):
                data.decode("utf-8")
            continue
        assert codec.decode(symbols) == data


@HYPOTHESIS
@given(ids=st.lists(st.integers(0, SMALL_VOCAB - 1), max_size=50))
def test_bpe_decodes_any_id_sequence_to_its_token_bytes(bpe, ids):
    assert bpe.decode(ids) == b"".join(bpe.token_bytes[i] for i in ids)


def test_bpe_codecs_pickle(bpe, bpe_gray):
    import pickle

    data = "def f(): return 'ü'\n".encode()
    for codec in (bpe, bpe_gray):
        clone = pickle.loads(pickle.dumps(codec))
        np.testing.assert_array_equal(clone.encode(data), codec.encode(data))
        assert clone.decode(codec.encode(data)) == data


@pytest.mark.parametrize("bad", [b"\xff", b"ok\xc3", b"\xed\xa0\x80", b"\xc0\xaf", b"a\x80b"])
def test_bpe_rejects_invalid_utf8(bpe, bpe_gray, bad):
    for codec in (bpe, bpe_gray):
        with pytest.raises(CannotEncode):
            codec.encode(bad)


def test_encode_many_matches_encode_and_marks_fallbacks(bpe, bpe_gray):
    datas = [b"def f():\n", b"\xff\xfe", "ünï".encode(), b""]
    for codec in (bpe, bpe_gray, HalfByteCodec()):
        many = codec.encode_many(datas)
        for data, symbols in zip(datas, many):
            try:
                expected = codec.encode(data)
            except CannotEncode:
                assert symbols is None
                continue
            np.testing.assert_array_equal(symbols, expected)
    assert bpe.encode_many(datas)[1] is None


def test_bpe_decode_rejects_unknown_ids(bpe):
    with pytest.raises(ValueError, match="range"):
        bpe.decode([0, bpe.alphabet_size])


def test_bpe_training_is_deterministic(bpe):
    again = BpeCodec.train(TRAIN_TEXT, vocab_size=SMALL_VOCAB)
    assert json.loads(again.tokenizer.to_str()) == json.loads(bpe.tokenizer.to_str())


def test_bpe_vocab_must_cover_bytes():
    with pytest.raises(ValueError, match="256"):
        BpeCodec.train(TRAIN_TEXT, vocab_size=100)


# ---- bpe-bytes and Gray coding ------------------------------------------------------------------------------
@pytest.mark.parametrize("n_tokens,width", [(2, 1), (256, 1), (257, 2), (4096, 2), (65536, 2), (65537, 3)])
def test_id_width(n_tokens, width):
    assert id_width(n_tokens) == width


def test_gray_code_neighbours_differ_in_one_bit():
    codes = gray_code(np.arange(1 << 16))
    assert len(np.unique(codes)) == len(codes)
    flips = codes[1:] ^ codes[:-1]
    assert np.all(flips & (flips - 1) == 0) and np.all(flips > 0)  # exactly one bit


def test_gray_mapping_is_a_bijection_ordered_by_token_bytes(bpe, bpe_gray):
    codes = bpe_gray.code_of_id
    assert len(np.unique(codes)) == bpe.alphabet_size
    assert codes.max() < 1 << (8 * bpe_gray.width)
    rank = codes.copy()  # invert the Gray code: rank = code ^ (code >> 1) ^ (code >> 2) ^ ...
    shift = codes >> 1
    while shift.any():
        rank ^= shift
        shift >>= 1
    by_rank = np.argsort(rank)
    assert np.array_equal(np.sort(rank), np.arange(len(codes)))
    ordered = [bpe.token_bytes[i] for i in by_rank]
    assert ordered == sorted(ordered)
    flips = codes[by_rank][1:] ^ codes[by_rank][:-1]
    assert np.all(flips & (flips - 1) == 0)
    for token_id in (0, 100, bpe.alphabet_size - 1):  # decode through the inverse table
        symbols = bpe_gray._ids_to_bytes(np.array([token_id]))
        assert bpe_gray.decode(symbols) == bpe.token_bytes[token_id]


def test_bpe_bytes_decode_is_strict(bpe_plain, bpe_gray):
    assert bpe_plain.width == 2
    with pytest.raises(ValueError, match="multiple"):
        bpe_plain.decode([0, 1, 2])
    with pytest.raises(ValueError, match="not a token"):
        bpe_plain.decode([0xFF, 0xFF])
    unused = next(c for c in range(1 << 16) if c not in set(bpe_gray.code_of_id.tolist()))
    with pytest.raises(ValueError, match="not a token"):
        bpe_gray.decode([unused >> 8, unused & 0xFF])


def test_bpe_bytes_plain_is_big_endian_id(bpe, bpe_plain):
    ids = bpe.encode(b"def add")
    symbols = bpe_plain.encode(b"def add").reshape(-1, 2)
    np.testing.assert_array_equal(symbols[:, 0] * 256 + symbols[:, 1], ids)


# ---- persistence -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda b: b, lambda b: BpeBytesCodec(b, gray=True),
                                  lambda b: BpeBytesCodec(b, gray=False), lambda b: GzipCodec(level=5),
                                  lambda b: HalfByteCodec(), lambda b: DoubleBitCodec(), lambda b: BitCodec(),
                                  lambda b: DoubleByteCodec()])
def test_save_load_equality(bpe, tmp_path, make):
    codec = make(bpe)
    loaded = load_codec(codec.save(tmp_path / "codec"))
    assert type(loaded) is type(codec) and loaded.config() == codec.config()
    assert loaded.alphabet_size == codec.alphabet_size
    for text in TRICKY_TEXTS[:8] + ["def add(a, b):  # café"]:
        data = text.encode()
        np.testing.assert_array_equal(loaded.encode(data), codec.encode(data))
        assert loaded.decode(codec.encode(data)) == data


def test_load_detects_a_mismatched_tokenizer(bpe, tmp_path):
    directory = bpe.save(tmp_path / "bpe")
    (directory / "codec.json").write_text(json.dumps({"name": "bpe", "vocab_size": 999}))
    with pytest.raises(ValueError, match="999"):
        load_codec(directory)


# ---- training and the cache ------------------------------------------------------------------------------
def test_train_codec_dispatch():
    assert needs_training("bpe") and needs_training("bpe-bytes") and not needs_training("gzip")
    assert train_codec("gzip", level=3).level == 3
    assert isinstance(train_codec("halfbyte"), HalfByteCodec)
    codec = train_codec("bpe-bytes", TRAIN_TEXT, vocab_size=SMALL_VOCAB, gray=True)
    assert codec.gray and codec.tokens.alphabet_size == SMALL_VOCAB
    with pytest.raises(ValueError, match="unknown codec"):
        train_codec("nope")


@pytest.fixture
def folder_corpus(tmp_path, monkeypatch):
    """A small folder corpus, and a cache dir of its own."""
    root = tmp_path / "corpus"
    root.mkdir()
    for i, data in enumerate(TRAIN_TEXT * 3):
        (root / f"m{i}.py").write_bytes(data)
    monkeypatch.setenv("PROXYLM_CACHE", str(tmp_path / "cache"))
    return DataConfig(corpus=str(root), val_fraction=0.2)


@pytest.fixture
def count_bpe_training(monkeypatch):
    calls = []
    original = BpeCodec.train.__func__

    def counting(cls, texts, **options):
        calls.append(options)
        return original(cls, texts, **options)

    monkeypatch.setattr(BpeCodec, "train", classmethod(counting))
    return calls


def test_ensure_codec_trains_once_and_caches(folder_corpus, count_bpe_training):
    views = ViewsConfig(codec="bpe", codec_options=codec_options_for("bpe", vocab_size=SMALL_VOCAB))
    first = ensure_codec(views, folder_corpus)
    second = ensure_codec(views, folder_corpus)
    assert len(count_bpe_training) == 1
    assert first.tokenizer.to_str() == second.tokenizer.to_str()
    entries = sorted(p.name for p in (cache_root() / "codecs").iterdir() if not p.name.startswith("."))
    assert len(entries) == 1 and entries[0].startswith("bpe-")
    assert not [p for p in (cache_root() / "codecs").iterdir() if ".tmp-" in p.name]  # nothing half-made
    ensure_codec(ViewsConfig(codec="bpe", codec_options=codec_options_for("bpe", vocab_size=SMALL_VOCAB + 8)), folder_corpus)  # new options: new codec
    assert len(count_bpe_training) == 2


def test_ensure_codec_uses_and_fills_codec_dir(folder_corpus, count_bpe_training, tmp_path):
    views = ViewsConfig(codec="bpe-bytes",
                        codec_dir=str(tmp_path / "mine"), codec_options=codec_options_for("bpe-bytes", vocab_size=SMALL_VOCAB, gray=True))
    codec = ensure_codec(views, folder_corpus)
    assert (tmp_path / "mine" / "codec.json").exists() and codec.gray
    assert isinstance(ensure_codec(views, folder_corpus), BpeBytesCodec)
    assert len(count_bpe_training) == 1
    with pytest.raises(ValueError, match="bpe-bytes"):
        ensure_codec(ViewsConfig(codec="bpe", codec_dir=str(tmp_path / "mine")), folder_corpus)


def test_ensure_codec_warns_when_saved_options_differ(folder_corpus, tmp_path):
    views = ViewsConfig(codec="bpe", codec_dir=str(tmp_path / "mine"), codec_options=codec_options_for("bpe", vocab_size=SMALL_VOCAB))
    ensure_codec(views, folder_corpus)
    with pytest.warns(UserWarning, match="vocab_size"):
        codec = ensure_codec(ViewsConfig(codec="bpe", codec_dir=str(tmp_path / "mine")), folder_corpus)
    assert codec.alphabet_size == SMALL_VOCAB  # the saved codec wins


def test_ensure_codec_crash_leaves_no_codec(folder_corpus, monkeypatch):
    def crash(cls, texts, **options):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(BpeCodec, "train", classmethod(crash))
    with pytest.raises(RuntimeError):
        ensure_codec(ViewsConfig(codec="bpe", codec_options=codec_options_for("bpe", vocab_size=SMALL_VOCAB)), folder_corpus)
    codecs_dir = cache_root() / "codecs"
    assert not [p for p in codecs_dir.iterdir() if not p.name.endswith(".lock")]


def test_ensure_codec_fixed_codec_needs_no_corpus(monkeypatch):
    monkeypatch.setattr("proxylm.prepare.codec_cache.open_corpus", lambda *a: pytest.fail("corpus opened"))
    codec = ensure_codec(ViewsConfig(codec="gzip", codec_options=codec_options_for("gzip", level=4)), DataConfig(corpus="/nonexistent"))
    assert isinstance(codec, GzipCodec) and codec.level == 4


# ---- stability -----------------------------------------------------------------------------------------------
def _reference_levenshtein(a, b) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


@settings(max_examples=200, deadline=None)
@given(a=st.lists(st.integers(0, 3), max_size=25), b=st.lists(st.integers(0, 3), max_size=25))
def test_levenshtein_matches_reference(a, b):
    assert levenshtein(a, b) == _reference_levenshtein(a, b)


def test_levenshtein_long_local_edit_is_cheap():
    a = np.arange(200_000) % 251
    b = np.concatenate([a[:100_000], [7, 7], a[100_003:]])
    assert levenshtein(a, b) == 3


@pytest.mark.parametrize("family", EDIT_FAMILIES)
def test_edits_change_text_deterministically(family):
    text = "def f(x):\n    return x + 1\n" * 10
    edit = lambda: apply_edit(text, family, np.random.default_rng(5), 10, 200)  # noqa: E731
    assert edit() == edit() != text


def test_bpe_is_more_stable_than_gzip(bpe):
    docs = [(f"d{i}", data) for i, data in enumerate(TRAIN_TEXT)] + [("bad", b"\xff" * 10)]
    pairs, skipped = make_edit_pairs(docs, trials=3, window_chars=200)
    assert skipped == 1 and len(pairs) == len(TRAIN_TEXT) * len(EDIT_FAMILIES) * 3
    bpe_scores, gzip_scores = stability(bpe, pairs), stability(GzipCodec(), pairs)
    for family in EDIT_FAMILIES:
        assert bpe_scores[family]["mean"] < gzip_scores[family]["mean"]
