"""proxylm: byte-level language models trained with proxy compression (arXiv 2602.04289)."""

__version__ = "0.1.0"
