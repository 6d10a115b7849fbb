"""Bearer tokens of the state HTTP API: short-lived, HMAC-SHA256 signed, naming one member.

Format: ``v1.<member>.<expires unix s>.<base64url signature>``; the signature covers the version,
member and expiry. ``verify`` raises ``InvalidToken`` for anything forged, malformed or expired.
Pure functions of (secret, token, now): testable without any server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from services.core.contracts import subjects

MAX_TOKEN_CHARS = 256
VERSION = "v1"


class InvalidToken(ValueError):
    pass


def _sign(secret: bytes, member: str, expires: int) -> str:
    mac = hmac.new(secret, f"openchat-state|{VERSION}|{member}|{expires}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def issue(secret: bytes, member: str, now: float, ttl_s: float) -> tuple[str, int]:
    """A token for ``member`` and its expiry (unix seconds)."""
    subjects.check_member(member)
    expires = int(now + ttl_s)
    return f"{VERSION}.{member}.{expires}.{_sign(secret, member, expires)}", expires


def verify(secret: bytes, token: str, now: float) -> str:
    """The member the token names, if it is genuine and not expired."""
    if len(token) > MAX_TOKEN_CHARS:
        raise InvalidToken("token too long")
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != VERSION:
        raise InvalidToken("malformed token")
    _, member, expires_s, signature = parts
    try:
        subjects.check_member(member)
        expires = int(expires_s)
    except ValueError as exc:
        raise InvalidToken("malformed token") from exc
    if not hmac.compare_digest(signature, _sign(secret, member, expires)):
        raise InvalidToken("bad signature")
    if expires <= now:
        raise InvalidToken("expired token")
    return member
