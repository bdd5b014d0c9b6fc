"""User-facing errors: the CLI prints these as one line (no traceback) and exits non-zero."""


class UserError(Exception):
    """An error caused by input (a file, a key, a flag); the message says which and what to do."""


class ConfigError(UserError, ValueError):
    """A config key or value is wrong; the message names the key."""


class CannotEncode(ValueError):
    """This input has no compressed view under this codec (the pipeline falls back to raw)."""
