"""Bring your own tokenizer as the proxy: an HF `tokenizer.json` (or a folder holding one) as a `bpe` codec.

    proxylm codec import --tokenizer path/tokenizer.json --out codecs/mine [--corpus stdlib] [--keep-special]
    proxylm train proxy-bpe-micro views.codec_dir=codecs/mine      # vocabulary size taken from the tokenizer

    codec, report = import_tokenizer("tokenizer.json", sample_docs)   # UserError with the reason if lossy

The codec must give back every byte of a document. Refused at once, with the reason:
- a normalizer that changes text (NFC/NFD/NFKC/NFKD, Lowercase, Strip, StripAccents, BertNormalizer, Nmt,
  Precompiled): e.g. NFKC turns 'ﬁ' into 'fi';
- a pre-tokenizer that drops text (Whitespace, WhitespaceSplit, BertPreTokenizer, CharDelimiterSplit, Split
  or Punctuation with behavior "removed"); a WordPiece or WordLevel model (no bytes for unknown text).
Then the round trip (encode, then decode through our own id -> bytes table) is checked on fixed probes and on a
sample of the corpus; any document that does not come back refuses the import and names it.

Supported: ByteLevel BPE (GPT-2 style), SentencePiece-style tokenizers (Metaspace "▁" for spaces, <0xNN>
byte-fallback tokens, a prepended space, Prepend/Replace normalizers) where they round-trip. Added special
tokens (`<s>`, `<|endoftext|>`, ...) are dropped unless --keep-special: text that spells them is then
tokenized as text. The codec checks every encoding it makes (Surface.verify): a document that would not come
back is emitted raw and counted, never trained on wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from proxylm.codecs.base import CannotEncode
from proxylm.codecs.bpe import TOKENIZER_FILE, BpeCodec, Surface
from proxylm.core.errors import UserError

LOSSY_NORMALIZERS = {"NFC", "NFD", "NFKC", "NFKD", "Lowercase", "Strip", "StripAccents", "BertNormalizer", "Nmt",
                     "Precompiled"}
LOSSY_PRE_TOKENIZERS = {"Whitespace", "WhitespaceSplit", "BertPreTokenizer", "CharDelimiterSplit"}
LOSSY_MODELS = {"WordPiece", "WordLevel"}
PROBES = ["def f(x):\n\treturn x  # comment\n", "  two leading spaces", " one leading space", "a", "\n",
          "trailing spaces   \n\n\n", "tabs\tand\r\nCRLF\r\n", "unicode: é ü ß 中文 😀 ﬁ", "x" * 300 + "\n",
          "if (a && b) { return -1; }\n", "<s></s><|endoftext|> look like special tokens"]
DEFAULT_SAMPLE_BYTES = 1_000_000


def read_tokenizer_json(path) -> tuple[dict, Path]:
    """(tokenizer.json as a dict, its path) from a file or an HF tokenizer folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        if not (p / TOKENIZER_FILE).exists():
            hint = (" (it has a SentencePiece tokenizer.model: convert it with transformers, "
                    "AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR), which writes tokenizer.json)"
                    if (p / "tokenizer.model").exists() else "")
            raise UserError(f"{p}: no {TOKENIZER_FILE} in this folder{hint}")
        p = p / TOKENIZER_FILE
    if not p.exists():
        raise UserError(f"--tokenizer {path}: no such file or folder")
    try:
        spec = json.loads(p.read_text(encoding="utf-8"))
        Tokenizer.from_str(json.dumps(spec))
    except (ValueError, UnicodeDecodeError, Exception) as e:  # tokenizers raises plain Exception on bad JSON
        raise UserError(f"{p}: not a tokenizers tokenizer.json ({e})") from None
    return spec, p


def _components(node) -> list[dict]:
    """A component and, for Sequence, its parts (flattened)."""
    if not node:
        return []
    parts = node.get("normalizers") or node.get("pretokenizers") or node.get("decoders")
    if node.get("type") == "Sequence" and parts is not None:
        return [c for p in parts for c in _components(p)]
    return [node]


def static_problems(spec: dict) -> list[str]:
    """Reasons the tokenizer cannot be lossless on raw bytes, from its configuration alone."""
    reasons = []
    for n in _components(spec.get("normalizer")):
        if n.get("type") in LOSSY_NORMALIZERS:
            example = {"NFKC": " (e.g. 'ﬁ' becomes 'fi')", "NFKD": " (e.g. 'ﬁ' becomes 'fi')",
                       "Lowercase": " ('A' becomes 'a')"}.get(n["type"], "")
            reasons.append(f"normalizer {n['type']} changes the text{example}, so decoding cannot give back the bytes")
    for p in _components(spec.get("pre_tokenizer")):
        kind = p.get("type")
        if kind in LOSSY_PRE_TOKENIZERS or (kind in ("Split", "Punctuation")
                                            and str(p.get("behavior", "")).lower() == "removed"):
            reasons.append(f"pre-tokenizer {kind} drops characters (whitespace or delimiters)")
    model = (spec.get("model") or {}).get("type")
    if model in LOSSY_MODELS:
        reasons.append(f"model {model} has no byte for unknown text and drops whitespace")
    return reasons


def _surface(spec: dict) -> Surface:
    comps = [*_components(spec.get("normalizer")), *_components(spec.get("pre_tokenizer")),
             *_components(spec.get("decoder"))]
    types = {c.get("type") for c in comps}
    space = ""
    for c in comps:
        if c.get("type") == "Metaspace":
            space = c.get("replacement", "▁")
        elif c.get("type") == "Replace" and (c.get("pattern") or {}).get("String") == " ":
            space = c.get("content", "▁")
    return Surface(byte_level="ByteLevel" in types and not space, byte_fallback=bool(spec["model"].get("byte_fallback")),
                   space=space, verify=True)


def _without_special(spec: dict) -> dict:
    """The tokenizer with its special added tokens dropped: text spelling them is tokenized as text."""
    out = dict(spec)
    out["added_tokens"] = [t for t in spec.get("added_tokens") or [] if not t.get("special")]
    return out


def _first_difference(a: bytes, b: bytes) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def import_tokenizer(path, docs=(), keep_special: bool = False) -> tuple[BpeCodec, dict]:
    """A lossless `bpe` codec from a tokenizer, checked on PROBES and on `docs` ((key, bytes) pairs).

    Raises UserError with the reason when it cannot be lossless on raw bytes."""
    spec, file = read_tokenizer_json(path)
    reasons = static_problems(spec)
    if reasons:
        raise UserError(f"{file}: refused, not lossless on raw bytes: " + "; ".join(reasons))
    if not keep_special:
        spec = _without_special(spec)
    tokenizer = Tokenizer.from_str(json.dumps(spec))
    surface = _surface(spec)
    codec = BpeCodec(tokenizer, Surface(**{**surface.__dict__, "verify": False}))
    # does the tokenizer prepend a space ("a" -> "▁a")? always, or only to a text not starting with one?
    first = codec.decode(codec.encode_unchecked(b"a"))
    if first == b" a":
        again = codec.decode(codec.encode_unchecked(b" a"))
        surface = Surface(**{**surface.__dict__, "strip_space": True, "double_space": again == b" a"})
    elif first != b"a":
        raise UserError(f"{file}: refused: 'a' comes back as {first!r} (the tokenizer adds or changes text)")
    codec = BpeCodec(tokenizer, Surface(**{**surface.__dict__, "verify": False}))
    checked = unencodable = 0
    for key, data in [*((f"probe {i}", p.encode()) for i, p in enumerate(PROBES)), *docs]:
        try:
            back = codec.decode(codec.encode_unchecked(data))
        except CannotEncode:  # not UTF-8: such documents get no compressed view (counted at training)
            unencodable += 1
            continue
        checked += 1
        if back != data:
            i = _first_difference(back, data)
            raise UserError(f"{file}: refused, not lossless on raw bytes: {key} does not come back (at byte {i}: "
                            f"{data[max(0, i - 10):i + 10]!r} became {back[max(0, i - 10):i + 10]!r})")
    codec = BpeCodec(tokenizer, surface)  # verify=True: every later encoding is checked too
    report = {"tokenizer": str(file), "vocab_size": codec.alphabet_size, "checked_documents": checked,
              "unencodable_documents": unencodable, "surface": surface.__dict__,
              "special_tokens_dropped": len(json.loads(file.read_text()).get("added_tokens") or [])
              - len(spec.get("added_tokens") or [])}
    return codec, report
