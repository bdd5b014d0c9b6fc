"""What every layer shares: the vocabulary layout (`Representation`), the model's text interface,
device choice, atomic files and locks, and user-facing errors. Imports nothing else from proxylm."""
