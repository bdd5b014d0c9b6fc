"""User-facing errors: the CLI prints these as one line (no traceback) and exits non-zero."""


class UserError(ValueError):
    """An error caused by input (a file, a key, a flag); the message says which and what to do.
    (A ValueError: a bad input is a bad value, and callers that catch ValueError keep working.)"""


class ConfigError(UserError):
    """A config key or value is wrong; the message names the key."""


class CannotEncode(ValueError):
    """This input has no compressed view under this codec (the pipeline falls back to raw)."""


def require(ok: bool, key: str, value, what: str) -> None:
    """Config checks: raise ConfigError "key=value: what" unless `ok` (the loader prefixes the section)."""
    if not ok:
        raise ConfigError(f"{key}={value!r}: {what}")
