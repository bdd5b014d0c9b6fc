"""Jobs that make a run's inputs: the codec cache and codec training, offline views (encoding)."""
