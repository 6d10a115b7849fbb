"""HTTP helpers that reproduce the public backend's byte-level conventions.

Shared by every devserver module: compact JSON with one trailing newline, the flat error
envelope, CORS headers on every response, plain-text router errors, and the identity rules
of the wire protocol (section 2).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from starlette.requests import HTTPConnection
from starlette.responses import Response

from services.devserver.gojson import go_escape, header_text
from services.devserver.transport import WSControl, abort_websocket, keepalive, ws_control

__all__ = [
    "CORS_HEADERS",
    "DEV_DEVICE",
    "DEV_UID",
    "Identity",
    "WSControl",
    "abort_websocket",
    "dumps",
    "dumps_text",
    "empty_response",
    "error_response",
    "http_identity",
    "json_response",
    "keepalive",
    "method_not_allowed",
    "not_found_text",
    "rfc3339",
    "rfc3339_nanos",
    "utf8_identity",
    "ws_control",
]

CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": "Content-Type, Authorization, If-Match, X-OpenChat-User-UID, X-OpenChat-Device-ID",
    "Access-Control-Allow-Methods": "GET, POST, PUT, DELETE, OPTIONS",
}

DEV_UID = "uid_dev_local"
DEV_DEVICE = "dev_local"


def dumps(body: Any) -> bytes:
    """Compact JSON plus the trailing newline the public backend writes.

    Strings are escaped like Go's ``encoding/json`` (``<``, ``>``, ``&``, U+2028/U+2029 as ``\\u…``;
    lone surrogates as U+FFFD), so bodies are byte-identical to the Go server's.
    """
    return (go_escape(json.dumps(body, separators=(",", ":"), ensure_ascii=False)) + "\n").encode()


def dumps_text(body: Any) -> str:
    """``dumps`` as text, for WebSocket text frames."""
    return go_escape(json.dumps(body, separators=(",", ":"), ensure_ascii=False)) + "\n"


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        content=dumps(body),
        status_code=status,
        media_type="application/json",
        headers={**CORS_HEADERS, **(headers or {})},
    )


def error_response(status: int, code: str, message: str, retryable: bool = False) -> Response:
    return json_response({"code": code, "message": message, "retryable": retryable}, status)


def not_found_text() -> Response:
    return Response(
        b"404 page not found\n", 404, media_type="text/plain; charset=utf-8", headers=dict(CORS_HEADERS)
    )


def method_not_allowed() -> Response:
    return Response(b"", 405, headers=dict(CORS_HEADERS))


def rfc3339(ts: datetime) -> str:
    """RFC 3339 UTC with whole seconds, as the backend writes every timestamp."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def rfc3339_nanos(ts: datetime) -> str:
    """The one nanosecond form (``ts`` of pong frames); Python has microseconds, padded to 9 digits."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


@dataclass(frozen=True)
class Identity:
    user_uid: str
    device_id: str
    asserted: bool  # False when the uid was filled in by the development default


def http_identity(conn: HTTPConnection, production: bool) -> Identity:
    """Identity of an HTTP request (wire §2): header, then ``Bearer <uid>``, then the dev default."""
    uid = conn.headers.get("x-openchat-user-uid", "").strip()
    if not uid:
        auth = conn.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            uid = auth[7:].strip()
    device = conn.headers.get("x-openchat-device-id", "").strip() or DEV_DEVICE
    if uid:
        return Identity(uid, device, True)
    # Production only rejects a missing uid on strict routes; callers check ``asserted``.
    return Identity(DEV_UID, device, False)


def utf8_identity(conn: HTTPConnection, production: bool) -> Identity:
    """``http_identity`` with header bytes read as Go reads them (UTF-8, invalid bytes → U+FFFD)."""
    ident = http_identity(conn, production)
    return Identity(header_text(ident.user_uid), header_text(ident.device_id), ident.asserted)


def empty_response(status: int, headers: dict[str, str] | None = None) -> Response:
    """A bodiless response with the CORS headers (204 preflight, 405)."""
    return Response(b"", status, headers={**CORS_HEADERS, **(headers or {})})
