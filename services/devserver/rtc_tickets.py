"""Join tickets (wire §11.2): ``b64url(claims) + "." + b64url(HMAC-SHA256(secret, first part))``.

Claims are a Go struct, so their key order is fixed: ``server_id, channel_id, user_uid,
device_id, permissions{speak, video, screenshare}, exp, iat, jti``.  A ticket is valid for the TTL
and single use: its ``jti`` is consumed on the first successful signature-and-expiry check.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.devserver.rtc_wire import go_dumps

INVALID = "invalid join ticket"
EXPIRED = "join ticket expired"
REPLAYED = "join ticket replayed"

_B64URL_RAW = re.compile(r"^[A-Za-z0-9_-]*$")


def all_permissions() -> dict[str, bool]:
    """Tickets always grant everything (key order of the Go struct)."""
    return {"speak": True, "video": True, "screenshare": True}


@dataclass(frozen=True)
class TicketClaims:
    server_id: str
    channel_id: str
    user_uid: str
    device_id: str
    permissions: dict[str, bool]
    exp: int
    iat: int
    jti: str

    def as_wire(self) -> dict[str, Any]:
        return {
            "server_id": self.server_id,
            "channel_id": self.channel_id,
            "user_uid": self.user_uid,
            "device_id": self.device_id,
            "permissions": {
                key: bool(self.permissions.get(key, False)) for key in ("speak", "video", "screenshare")
            },
            "exp": self.exp,
            "iat": self.iat,
            "jti": self.jti,
        }


class TicketError(Exception):
    """The join was denied; ``str(exc)`` is the message the server queues (and never delivers)."""


def b64url_nopad(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_nopad_decode(text: str) -> bytes:
    """Go's ``base64.RawURLEncoding.DecodeString``: no padding, URL alphabet only."""
    if not _B64URL_RAW.match(text) or len(text) % 4 == 1:
        raise ValueError("illegal base64 data")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise ValueError("illegal base64 data") from exc


class TicketAuthority:
    """Issues and redeems tickets for one devserver instance (one secret, one consumed-jti set)."""

    def __init__(self, secret: str, ttl_s: int, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret.encode("utf-8")
        self.ttl_s = int(ttl_s)
        self._clock = clock
        self._consumed: dict[str, int] = {}
        self._lock = threading.Lock()

    def _sign(self, first: str) -> str:
        return b64url_nopad(hmac.new(self._secret, first.encode("ascii"), hashlib.sha256).digest())

    def encode(self, claims: TicketClaims) -> str:
        first = b64url_nopad(go_dumps(claims.as_wire()).encode("utf-8"))
        return f"{first}.{self._sign(first)}"

    def issue(
        self, server_id: str, channel_id: str, user_uid: str, device_id: str
    ) -> tuple[str, TicketClaims]:
        now = int(self._clock())
        claims = TicketClaims(
            server_id=server_id,
            channel_id=channel_id,
            user_uid=user_uid,
            device_id=device_id,
            permissions=all_permissions(),
            exp=now + self.ttl_s,
            iat=now,
            jti=str(uuid.uuid4()),
        )
        return self.encode(claims), claims

    def redeem(self, ticket: str) -> TicketClaims:
        """Check signature, then expiry, then single use; consumes the ``jti``."""
        parts = ticket.split(".")
        if len(parts) != 2 or not parts[0]:
            raise TicketError(INVALID)
        first, signature = parts
        try:
            given = b64url_nopad_decode(signature)
            raw_claims = b64url_nopad_decode(first)
        except ValueError as exc:
            raise TicketError(INVALID) from exc
        expected = hmac.new(self._secret, first.encode("ascii"), hashlib.sha256).digest()
        if not hmac.compare_digest(given, expected):
            raise TicketError(INVALID)
        claims = _parse_claims(raw_claims)
        now = int(self._clock())
        if now > claims.exp:
            raise TicketError(EXPIRED)
        with self._lock:
            self._prune(now)
            if claims.jti in self._consumed:
                raise TicketError(REPLAYED)
            self._consumed[claims.jti] = claims.exp
        return claims

    def _prune(self, now: int) -> None:
        if len(self._consumed) < 4096:
            return
        for jti, exp in list(self._consumed.items()):
            if exp < now:
                del self._consumed[jti]


def _parse_claims(raw: bytes) -> TicketClaims:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TicketError(INVALID) from exc
    if not isinstance(data, dict):
        raise TicketError(INVALID)

    def text(name: str) -> str:
        value = data.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise TicketError(INVALID)
        return value

    def number(name: str) -> int:
        value = data.get(name)
        if value is None:
            return 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise TicketError(INVALID)
        return value

    perms_raw = data.get("permissions")
    perms: dict[str, bool] = {}
    if isinstance(perms_raw, dict):
        for key in ("speak", "video", "screenshare"):
            perms[key] = perms_raw.get(key) is True
    elif perms_raw is not None:
        raise TicketError(INVALID)
    return TicketClaims(
        server_id=text("server_id"),
        channel_id=text("channel_id"),
        user_uid=text("user_uid"),
        device_id=text("device_id"),
        permissions={key: perms.get(key, False) for key in ("speak", "video", "screenshare")},
        exp=number("exp"),
        iat=number("iat"),
        jti=text("jti"),
    )
