"""Jobs that make a run's inputs (a layer between the libraries and assemble.py): the codec cache and codec
training (codec_cache.py), M1 training for the neural codec (m1.py), offline views: encoding a corpus into shards
and reading them back (precomputed.py)."""
