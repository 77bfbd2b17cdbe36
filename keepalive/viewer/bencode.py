"""bencode as xpra's HTML5 client writes it, read and written back unchanged.

The client encodes its packets with a bencode of its own (``js/lib/bencode.js``): dictionaries
keep their order, booleans are 0 and 1, and a JavaScript number that is not a whole one is
written as it prints (``i1.5e``). Such numbers are kept as :class:`RawNumber` and written back
byte for byte, so that a packet that is decoded and encoded again only changes where it was
changed.
"""

from __future__ import annotations

import re

#: Nesting deeper than this is refused: no packet of the client needs it, and it bounds the recursion.
MAX_DEPTH = 32
_NUMBER = re.compile(rb"-?[0-9][0-9.eE+-]*")
_WHOLE = re.compile(rb"-?[0-9]+")


class BencodeError(ValueError):
    """The bytes are not bencode."""


class RawNumber(bytes):
    """A number that is not a whole one, exactly as it was written."""


Value = int | bytes | list | dict


def decode(data: bytes) -> Value:
    """One value that spans all of ``data``."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError(f"{len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, at: int, depth: int) -> tuple[Value, int]:
    if depth > MAX_DEPTH:
        raise BencodeError("nested too deep")
    if at >= len(data):
        raise BencodeError("the data ends inside a value")
    kind = data[at:at + 1]
    if kind == b"i":
        end = data.find(b"e", at + 1)
        # "1e-7": a JavaScript number may hold an "e" of its own; bencode.js writes those too rarely to matter
        token = data[at + 1:end] if end > 0 else b""
        if not _NUMBER.fullmatch(token):
            raise BencodeError(f"not a number at byte {at}")
        return (int(token) if _WHOLE.fullmatch(token) else RawNumber(token)), end + 1
    if kind == b"l":
        items, at = [], at + 1
        while data[at:at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        return items, at + 1
    if kind == b"d":
        mapping, at = {}, at + 1
        while data[at:at + 1] != b"e":
            key, at = _decode(data, at, depth + 1)
            if not isinstance(key, bytes):
                raise BencodeError(f"a dictionary key that is not a string at byte {at}")
            mapping[key], at = _decode(data, at, depth + 1)
        return mapping, at + 1
    colon = data.find(b":", at)
    if colon < 0 or not data[at:colon].isdigit():
        raise BencodeError(f"not a value at byte {at}")
    end = colon + 1 + int(data[at:colon])
    if end > len(data):
        raise BencodeError("a string runs past the end of the data")
    return bytes(data[colon + 1:end]), end


def encode(value: Value | bool | str) -> bytes:
    if isinstance(value, RawNumber):
        return b"i" + bytes(value) + b"e"
    if isinstance(value, bool | int):
        return b"i%de" % int(value)
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list | tuple):
        return b"l" + b"".join(encode(item) for item in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(encode(key) + encode(item) for key, item in value.items()) + b"e"
    raise BencodeError(f"cannot encode a {type(value).__name__}")
