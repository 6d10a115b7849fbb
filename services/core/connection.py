"""Why a member's connection to the home stack failed, in words a member can act on.

Shared by the CLI (``openchat chat ...`` fails within seconds with this text) and the desktop
(its banner). Three cases matter (issue 11): the home server cannot be reached; its certificate
does not match the CA pinned in the connection file (another machine, or a re-created CA); the
credentials were revoked or replaced (``openchat member remove/rotate``).
"""

from __future__ import annotations

import ssl
from typing import Literal

Reason = Literal["unreachable", "certificate", "revoked", "tls", "other"]

TEXT: dict[Reason, str] = {
    "unreachable": "the home server cannot be reached; is it on, and on this network?",
    "certificate": (
        "the home server's certificate does not match your connection file; "
        "another machine may be answering: ask for a new connection file"
    ),
    "revoked": (
        "the home server refused your credentials: they were revoked or replaced; "
        "ask for a new connection file"
    ),
    "tls": "the secure (TLS) connection to the home server failed",
    "other": "the connection to the home server failed",
}


def classify(exc: BaseException | None) -> Reason:
    """The reason behind a connect error (nats-py, ssl or OS level)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, ssl.SSLCertVerificationError):
            return "certificate"
        text = str(exc).lower()
        if type(exc).__name__ == "AuthorizationError" or any(
            m in text for m in ("authorization violation", "authentication revoked", "authentication expired")
        ):
            return "revoked"
        if "certificate verify failed" in text or "hostname mismatch" in text:
            return "certificate"
        if isinstance(exc, ssl.SSLError):
            return "tls"
        if isinstance(exc, ConnectionRefusedError | TimeoutError | OSError):
            return "unreachable"
        exc = exc.__cause__ or exc.__context__
    return "unreachable" if exc is None else "other"


def describe_connect_error(exc: BaseException | None) -> str:
    return TEXT[classify(exc)]
