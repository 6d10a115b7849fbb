"""Byte-level encoding of the signaling relay, as the public backend's Go code produces it.

* Payloads the server *relays* went through ``json.Unmarshal`` into ``map[string]any`` and back:
  object keys come out sorted (at every depth), every number is a ``float64`` and is written the
  way ``encoding/json`` writes floats, duplicate keys keep the last value, a payload that is not a
  JSON object becomes ``{}``.
* Every frame goes out through ``json.Encoder.Encode``: compact, HTML-safe escaping (``<`` →
  ``\\u003c`` …), lone surrogates replaced by U+FFFD, one trailing ``\\n``.
* The envelope is a Go struct: ``type``, ``request_id`` (omitted when empty), ``channel_id``,
  ``payload`` in that order.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from services.devserver.gojson import go_escape


class PayloadError(ValueError):
    """A payload Go's ``json.Unmarshal`` would have refused (so the server uses ``{}``)."""


def go_float(value: float) -> str:
    """``encoding/json``'s float64 formatting: shortest digits, ``'f'`` unless tiny or huge."""
    if not math.isfinite(value):
        raise PayloadError("unsupported float value")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    magnitude = abs(value)
    if magnitude < 1e-6 or magnitude >= 1e21:
        mantissa, _, exponent = repr(value).partition("e")
        if exponent.startswith("-0"):
            exponent = "-" + exponent[2:]
        return f"{mantissa}e{exponent}"
    text = format(Decimal(repr(value)), "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _encode(value: Any, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, int):
        out.append(go_float(float(value)) if abs(value) > 2**53 else str(value))
    elif isinstance(value, float):
        out.append(go_float(value))
    elif isinstance(value, dict):
        out.append("{")
        first = True
        for key, item in value.items():
            if not first:
                out.append(",")
            first = False
            out.append(json.dumps(str(key), ensure_ascii=False))
            out.append(":")
            _encode(item, out)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _encode(item, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(value).__name__}")


def go_dumps(value: Any) -> str:
    """Compact Go-style JSON text of ``value`` (dict order kept; no trailing newline)."""
    out: list[str] = []
    _encode(value, out)
    return go_escape("".join(out))


def relay_tree(value: Any) -> Any:
    """``value`` as it looks after a Go ``any`` round trip: sorted keys, numbers as float64."""
    if isinstance(value, dict):
        return {str(key): relay_tree(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [relay_tree(item) for item in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError as exc:
            raise PayloadError("number out of float64 range") from exc
        if not math.isfinite(number):
            raise PayloadError("number out of float64 range")
        return number
    raise PayloadError(f"unexpected JSON value {type(value).__name__}")


def relay_payload(raw: Any) -> dict[str, Any]:
    """The payload map the relay works on: a JSON object, anything else (or an error) → ``{}``."""
    if not isinstance(raw, dict):
        return {}
    try:
        tree = relay_tree(raw)
    except (PayloadError, RecursionError):
        return {}
    assert isinstance(tree, dict)
    return tree


def sort_tree(value: Any) -> Any:
    """Sort object keys at every depth (after the server inserted its own keys)."""
    if isinstance(value, dict):
        return {key: sort_tree(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [sort_tree(item) for item in value]
    return value


def envelope(kind: str, request_id: str, channel_id: str, payload: Any) -> str:
    """One outbound signaling frame, exactly as ``json.Encoder.Encode`` writes it."""
    frame: dict[str, Any] = {"type": kind}
    if request_id:
        frame["request_id"] = request_id
    if channel_id:
        frame["channel_id"] = channel_id
    frame["payload"] = payload
    return go_dumps(frame) + "\n"


def go_time_nanos(ns: int | None = None) -> str:
    """``time.Now().UTC().Format(time.RFC3339Nano)``: nanoseconds, trailing zeros trimmed."""
    ns = time.time_ns() if ns is None else ns
    seconds, fraction = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{fraction:09d}".rstrip("0")
    return f"{stamp}.{digits}Z" if digits else f"{stamp}Z"


def go_time(seconds: float) -> str:
    """RFC 3339 with whole seconds (UTC)."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
