"""Decoding defaults, torch-free so that the CLI's help can show them (`proxylm --help` imports no torch)."""

LOOKUP_DRAFTS = 8  # default most drafts copied from the context per forward (greedy; 0: off)
