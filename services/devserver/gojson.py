"""Go ``encoding/json`` behaviour that clients can observe, reproduced in Python.

Encoding (``go_escape``): Go escapes ``<``, ``>``, ``&``, U+2028 and U+2029 inside strings and
replaces invalid UTF-8 / lone surrogates with U+FFFD.

Decoding (``decode_first``, ``field``, ``str_field``…): the public backend decodes request bodies
with ``json.NewDecoder(r).Decode(&struct)``, which

* reads only the **first** JSON value (trailing bytes are ignored), an empty body is an error;
* replaces invalid UTF-8 with U+FFFD instead of failing;
* matches object keys to struct fields **case-insensitively** (the last matching key wins);
* rejects a value of the wrong type for a field (``{"body": 42}`` → error), while ``null`` leaves
  the field at its zero value.
"""

from __future__ import annotations

import json
import re
from typing import Any

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
_ESCAPE_RE = re.compile("[<>&\u2028\u2029]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


class GoDecodeError(ValueError):
    """The body is not what ``json.Decoder.Decode`` would accept for the target."""


def go_escape(text: str) -> str:
    """Apply Go's HTML-safe escaping to already-serialised JSON text."""
    text = _SURROGATE_RE.sub("\ufffd", text)
    return _ESCAPE_RE.sub(lambda m: _ESCAPES[m.group(0)], text)


def go_string(raw: bytes) -> str:
    """Decode bytes like Go converts a byte string to runes: each invalid byte becomes U+FFFD."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    out: list[str] = []
    i = 0
    n = len(raw)
    while i < n:
        b = raw[i]
        if b < 0x80:
            out.append(chr(b))
            i += 1
            continue
        size = 2 if 0xC2 <= b <= 0xDF else 3 if 0xE0 <= b <= 0xEF else 4 if 0xF0 <= b <= 0xF4 else 0
        if size and i + size <= n:
            try:
                out.append(raw[i : i + size].decode("utf-8"))
                i += size
                continue
            except UnicodeDecodeError:
                pass
        out.append("\ufffd")
        i += 1
    return "".join(out)


def header_text(value: str) -> str:
    """ASGI headers arrive latin-1 decoded; Go sees the raw bytes. Re-read them as Go would."""
    try:
        return go_string(value.encode("latin-1"))
    except UnicodeEncodeError:
        return value


def go_truncate_bytes(text: str, limit: int) -> str:
    """``s[:limit]`` on a Go string (bytes), as it would appear once JSON-encoded."""
    return go_string(text.encode("utf-8")[:limit])


class GoObject(dict[str, Any]):
    """A decoded JSON object that remembers every key/value pair in order (duplicates included)."""

    pairs: list[tuple[str, Any]]

    def __init__(self, pairs: list[tuple[str, Any]]) -> None:
        super().__init__(pairs)
        self.pairs = pairs


def _reject_constant(name: str) -> Any:
    raise GoDecodeError(f"invalid JSON literal {name}")


_DECODER = json.JSONDecoder(object_pairs_hook=GoObject, parse_constant=_reject_constant)
_WS = " \t\r\n"


def decode_first(raw: bytes) -> Any:
    """The first JSON value of ``raw`` (``json.Decoder.Decode``); raises ``GoDecodeError``."""
    text = go_string(raw).lstrip(_WS)
    if not text:
        raise GoDecodeError("EOF")
    try:
        value, _end = _DECODER.raw_decode(text)
    except (ValueError, RecursionError) as exc:
        raise GoDecodeError(str(exc)) from exc
    return value


def _fold(name: str) -> str:
    return name.casefold()


_MISSING = object()


def field(obj: Any, name: str) -> Any:
    """The value Go would assign to struct field ``name`` (``_MISSING`` when no key matches)."""
    if not isinstance(obj, dict):
        return _MISSING
    pairs = obj.pairs if isinstance(obj, GoObject) else list(obj.items())
    folded = _fold(name)
    found: Any = _MISSING
    for key, value in pairs:
        if key == name or _fold(key) == folded:
            found = value
    return found


def is_missing(value: Any) -> bool:
    return value is _MISSING


def str_field(obj: Any, name: str, *, strict: bool = True) -> str:
    """A string field: missing/``null`` → ``""``; another type raises when ``strict``, else ``""``."""
    value = field(obj, name)
    if value is _MISSING or value is None:
        return ""
    if isinstance(value, str):
        return value
    if strict:
        raise GoDecodeError(f"field {name} is not a string")
    return ""


def bool_field(obj: Any, name: str, *, strict: bool = True) -> bool:
    value = field(obj, name)
    if value is _MISSING or value is None:
        return False
    if isinstance(value, bool):
        return value
    if strict:
        raise GoDecodeError(f"field {name} is not a bool")
    return False


def object_or_empty(value: Any) -> dict[str, Any]:
    """A payload that is not a JSON object is treated as ``{}`` (``json.Unmarshal`` error ignored)."""
    return value if isinstance(value, dict) else {}
