"""The mixing modes: a small table of what a document chosen for compression becomes.

    MODES["translation_random"]   # MixMode(paired=True, same_document=True, order="random", sentinels=True)

`vanilla` and `sentinel` give one view per document (vanilla without sentinels: the token baseline);
`translation_*` put both views of a document in one context (in-context translation), `parallel_*` make
them two separate documents. The suffix says which view comes first (`random`: a per-document coin).
"""

from __future__ import annotations

from dataclasses import dataclass

RAW, COMPRESSED = "raw", "compressed"
RAW_FIRST, COMPRESSED_FIRST, RANDOM = (RAW, COMPRESSED), (COMPRESSED, RAW), None


@dataclass(frozen=True)
class MixMode:
    name: str
    paired: bool = False  # a chosen document gets both views
    same_document: bool = False  # paired views share one document (translation) or not (parallel)
    order: tuple[str, str] | None = RAW_FIRST  # paired: view order; None: a per-document coin flip
    sentinels: bool = True  # views wrapped in <raw>…</raw> / <compressed>…</compressed>


MODES: dict[str, MixMode] = {m.name: m for m in (
    MixMode("vanilla", sentinels=False),
    MixMode("sentinel"),
    MixMode("translation_raw_compressed", paired=True, same_document=True, order=RAW_FIRST),
    MixMode("translation_compressed_raw", paired=True, same_document=True, order=COMPRESSED_FIRST),
    MixMode("translation_random", paired=True, same_document=True, order=RANDOM),
    MixMode("parallel_raw_compressed", paired=True, order=RAW_FIRST),
    MixMode("parallel_compressed_raw", paired=True, order=COMPRESSED_FIRST),
    MixMode("parallel_random", paired=True, order=RANDOM),
)}
MIX_MODES = tuple(MODES)


def mix_mode(name: str, key: str = "views.mode") -> MixMode:
    """The mode called `name`; an unknown name is an error naming the config key."""
    if name not in MODES:
        raise ValueError(f"{key}: unknown mixing mode '{name}'; valid: {', '.join(MIX_MODES)}")
    return MODES[name]
