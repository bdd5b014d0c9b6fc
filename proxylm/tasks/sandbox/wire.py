"""The call proxy's wire: plain data as tagged JSON in length-prefixed frames, between judge and candidate.

Standard library only (both sides load it inside their own `python -I`). The judge (judge.py) calls the
candidate's entry point through `CandidateStub`: each call's arguments go to the candidate process as one
frame, the candidate (serve) calls its function and sends back one frame. The judge builds every value it
compares from the bytes alone (`decode`, strict): nothing the candidate defines (a class, a metaclass, an
`__eq__`, a patched `json`) can reach the judge's process, only data.

Values: null/true/false, JSON numbers (NaN and +-Infinity as JSON's extension), strings, arrays (lists),
and one-key objects for the rest: {"bigint": "0x..."} (beyond 64 bits), {"tuple": [...]}, {"set": [...]}, {"frozenset": [...]}, {"dict": [[k, v],
...]}, {"bytes": base64}, {"bytearray": base64}, {"complex": [re, im]}, {"deque": [...]}, {"decimal": str},
{"fraction": [n, d]}, {"range": [start, stop, step]}, {"opaque": type name} (a value with no plain form,
e.g. re.Match: the judge gets an `Opaque` only where the task allows it, see judge.py).
"""

from __future__ import annotations

import base64
import json
import os
import struct

FRAME_BYTES = 64 * 1024 * 1024   # the largest frame either side reads (a result of 64 MiB is no test's answer)
BIGINT_HEX_DIGITS = 1 << 20      # ints beyond 64 bits travel as hex ({"bigint": "0x..."}), up to 4 Mbit
_HEADER = struct.Struct("!Q")


class WireError(Exception):
    """A frame that is not plain data in this format (or too large, or cut off)."""


class ChannelClosed(Exception):
    """The other side closed its end (it exited or was killed)."""


class Opaque:
    """A candidate's value with no plain form: not None, truthy, equal only to itself."""

    __slots__ = ("type_name",)

    def __init__(self, type_name: str):
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"<opaque {self.type_name}>"


# ---- frames ----

def write_frame(fd: int, payload: bytes) -> None:
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _read_exact(fd: int, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            raise ChannelClosed("the other process closed the channel")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(fd: int, limit: int = FRAME_BYTES) -> bytes:
    (n,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    if n > limit:
        raise WireError(f"a frame of {n} bytes (at most {limit})")
    return _read_exact(fd, n)


# ---- values ----

def encode(value) -> object:
    """A JSON-ready tree for `value` (either side). Unknown types become {"opaque": name}; numpy scalars and
    arrays become Python numbers and lists (their .tolist())."""
    t = type(value)
    if t is int or (isinstance(value, int) and t is not bool):
        value = int.__index__(value)
        # decimal text of a long int is capped by Python (4300 digits); hex is not, and costs linear time
        return value if abs(value) < 1 << 64 else {"bigint": hex(value)}
    if value is None or t in (bool, float, str):
        return value
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, tuple):
        return {"tuple": [encode(v) for v in value]}
    if isinstance(value, frozenset):
        return {"frozenset": [encode(v) for v in value]}
    if isinstance(value, set):
        return {"set": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, (bytes, bytearray)):
        return {"bytearray" if isinstance(value, bytearray) else "bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, complex):
        return {"complex": [value.real, value.imag]}
    if isinstance(value, range):
        return {"range": [value.start, value.stop, value.step]}
    module, name = getattr(t, "__module__", ""), getattr(t, "__qualname__", "?")
    if module == "collections" and name == "deque":
        return {"deque": [encode(v) for v in value]}
    if module == "decimal" and name == "Decimal":
        return {"decimal": str(value)}
    if module == "fractions" and name == "Fraction":
        return {"fraction": [value.numerator, value.denominator]}
    if module == "numpy" and hasattr(value, "tolist"):
        return encode(value.tolist())
    return {"opaque": f"{module}.{name}"}


def dumps(value) -> bytes:
    return json.dumps(encode(value), separators=(",", ":")).encode()


def _b64(s) -> bytes:
    if type(s) is not str:
        raise WireError("bytes must be a base64 string")
    return base64.b64decode(s.encode("ascii"), validate=True)


def _number(x) -> float | int:
    if type(x) not in (int, float):
        raise WireError(f"a number was expected, got {type(x).__name__}")
    return x


def _items(x) -> list:
    if type(x) is not list:
        raise WireError("a container's items must be an array")
    return x


def decode(tree, opaque_ok: bool):
    """The value of a JSON tree made by `encode` (judge side: strict; anything else raises WireError)."""
    t = type(tree)
    if tree is None or t in (bool, int, float, str):
        return tree
    if t is list:
        return [decode(v, opaque_ok) for v in tree]
    if t is not dict or len(tree) != 1:
        raise WireError("a value must be a JSON scalar, an array or an object with one tag")
    (tag, x), = tree.items()
    if tag == "bigint":
        if type(x) is not str or len(x) > BIGINT_HEX_DIGITS:
            raise WireError(f"a bigint is a hex string of at most {BIGINT_HEX_DIGITS} digits")
        return int(x, 16)
    if tag in ("tuple", "set", "frozenset", "deque"):
        items = [decode(v, opaque_ok) for v in _items(x)]
        if tag == "deque":
            import collections
            return collections.deque(items)
        return {"tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict":
        out = {}
        for pair in _items(x):
            if type(pair) is not list or len(pair) != 2:
                raise WireError("a dict item must be a [key, value] pair")
            out[decode(pair[0], opaque_ok)] = decode(pair[1], opaque_ok)
        return out
    if tag == "bytes":
        return _b64(x)
    if tag == "bytearray":
        return bytearray(_b64(x))
    if tag == "complex":
        pair = _items(x)
        if len(pair) != 2:
            raise WireError("a complex number is [re, im]")
        return complex(_number(pair[0]), _number(pair[1]))
    if tag == "range":
        args = _items(x)
        if len(args) != 3 or any(type(a) is not int for a in args) or args[2] == 0:
            raise WireError("a range is [start, stop, step] of ints, step != 0")
        return range(*args)
    if tag == "decimal":
        import decimal
        if type(x) is not str or len(x) > 10_000:
            raise WireError("a decimal is a string")
        return decimal.Decimal(x)
    if tag == "fraction":
        import fractions
        pair = _items(x)
        if len(pair) != 2 or any(type(a) is not int for a in pair) or pair[1] == 0:
            raise WireError("a fraction is [numerator, denominator != 0] of ints")
        return fractions.Fraction(*pair)
    if tag == "opaque":
        if type(x) is not str:
            raise WireError("an opaque value names its type")
        if not opaque_ok:
            raise TypeError(f"the result holds a {x[:80]}: tests compare plain data only")
        return Opaque(x[:80])
    raise WireError(f"unknown tag {tag[:40]!r}")


def value_of(tree, opaque_ok: bool = False):
    """Strict: a parsed JSON tree -> value, or WireError (TypeError for a non-plain value where none is allowed)."""
    try:
        return decode(tree, opaque_ok)
    except RecursionError:
        raise WireError("nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:   # an int too long to read, bad base64
        raise WireError(f"not plain data: {str(e)[:120]}") from None
    except TypeError as e:
        if "plain data" in str(e):
            raise
        raise WireError(f"not plain data: {str(e)[:120]}") from None   # e.g. an unhashable set item or dict key


def loads(data: bytes, opaque_ok: bool = False):
    """Strict: bytes -> value (see value_of)."""
    try:
        tree = json.loads(data)
    except RecursionError:
        raise WireError("nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise WireError(f"not JSON: {str(e)[:120]}") from None
    return value_of(tree, opaque_ok)
