"""Bearer tokens of the state HTTP API: short-lived, HMAC-SHA256 signed, naming one member.

Format: ``v1.<member>.<expires unix s>.<base64url signature>``; the signature covers the version,
member and expiry. ``verify`` raises ``InvalidToken`` for anything forged, malformed or expired.
Pure functions of (secret, token, now): testable without any server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

from services.core.contracts import subjects

MAX_TOKEN_CHARS = 256
_CANONICAL_EXPIRY = re.compile(r"[1-9][0-9]{0,11}")  # unix seconds as ``str(int)`` writes them
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
    # Exactly the spelling ``issue`` writes: ASCII digits, no sign, no leading zero, no ``_``,
    # no whitespace. ``int()`` alone would read ``0…``, ``+…``, ``1_7…`` and `` 17…`` as the same
    # expiry, so one signature would verify in many spellings of its token.
    if not _CANONICAL_EXPIRY.fullmatch(expires_s):
        raise InvalidToken("malformed token")
    try:
        subjects.check_member(member)
    except ValueError as exc:
        raise InvalidToken("malformed token") from exc
    expires = int(expires_s)
    if str(expires) != expires_s:  # belt and braces: the canonical decimal form only
        raise InvalidToken("malformed token")
    if not hmac.compare_digest(signature, _sign(secret, member, expires)):
        raise InvalidToken("bad signature")
    if expires <= now:
        raise InvalidToken("expired token")
    return member
