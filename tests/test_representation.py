import numpy as np
import pytest

from proxylm.codecs.gzip_codec import GzipCodec
from proxylm.core.representation import SPECIAL_TOKENS, Representation


class FakeCodec:
    def __init__(self, name, alphabet, passthrough=0):
        self.name, self.alphabet_size, self.passthrough = name, alphabet, passthrough


def test_bytes_only_layout():
    rep = Representation.bytes_only()
    assert rep.n_special == 16 and rep.raw_offset == 16 and rep.raw_vocab_size == 272
    assert rep.vocab_size == 320 and rep.vocab_size % rep.pad_vocab_to == 0
    assert [rep.pad_id, rep.bos_id, rep.eos_id] == [0, 1, 2]
    assert SPECIAL_TOKENS[rep.raw_start_id] == "<raw>" and SPECIAL_TOKENS[rep.compressed_end_id] == "</compressed>"
    assert rep.bytes_from_ids(rep.raw_prompt_ids(b"hi\xff")) == b"hi\xff"


def test_separate_vs_shared_byte_codec():
    sep = Representation.for_codec(GzipCodec(), separate_embedding=True)
    shared = Representation.for_codec(GzipCodec(), separate_embedding=False)
    assert sep.compressed_offset == sep.raw_vocab_size and sep.used_vocab_size == sep.raw_vocab_size + 256
    assert shared.compressed_offset == shared.raw_offset and shared.used_vocab_size == shared.raw_vocab_size
    sym = np.array([0, 5, 255])
    for rep in (sep, shared):
        assert (rep.symbols_from_compressed_ids(rep.compressed_ids(sym)) == sym).all()


def test_large_codec_needs_separate_ids():
    with pytest.raises(ValueError, match="separate_embedding"):
        Representation.for_codec(FakeCodec("bpe", 4096), separate_embedding=False)
    rep = Representation.for_codec(FakeCodec("bpe", 4096))
    assert rep.used_vocab_size == rep.raw_vocab_size + 4096


def test_passthrough_codec_maps_bytes_to_raw_ids():
    rep = Representation.for_codec(FakeCodec("neural", 256 + 65536, passthrough=256))
    ids = rep.compressed_ids(np.array([65, 256, 256 + 65535]))
    assert ids[0] == rep.raw_ids(b"A")[0]
    assert ids[1] == rep.raw_vocab_size and ids[2] == rep.raw_vocab_size + 65535
    assert rep.used_vocab_size == 16 + 256 + 65536 and rep.vocab_size == 65856  # padded to 64
    assert (rep.symbols_from_compressed_ids(ids) == [65, 256, 256 + 65535]).all()


def test_out_of_range_symbol_is_an_error():
    rep = Representation.for_codec(GzipCodec())
    with pytest.raises(ValueError):
        rep.compressed_ids(np.array([256]))


def test_json_roundtrip(tmp_path):
    rep = Representation.for_codec(FakeCodec("bpe", 4096))
    rep.save(tmp_path / "r.json")
    again = Representation.load(tmp_path / "r.json")
    assert again == rep and again.vocab_size == rep.vocab_size
