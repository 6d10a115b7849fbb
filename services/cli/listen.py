"""Where ``openchat up`` listens for desktops, and the local URL its own processes dial.

Desktops are told (in their connection file) to connect to ``OPENCHAT_PUBLIC_NATS_URL``; the
embedded nats-server must listen there. ``OPENCHAT_NATS_LISTEN`` overrides the address
(``0.0.0.0``: all interfaces). The stack's processes and the local CLI never dial the public
URL (a name that may resolve differently on this machine, or not at all): they dial a local
address of the same listener — ``127.0.0.1`` when it listens on all interfaces, else the
listen address itself. Beyond loopback, TLS is required on that listener (ADR 0010).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.core.settings import Settings
from services.core.tls import is_loopback_host

ALL_INTERFACES = ("0.0.0.0", "::", "*")


class ListenError(ValueError):
    """The public URL's host cannot be turned into an address to listen on."""


@dataclass(frozen=True)
class NatsListen:
    host: str  # the bind address
    port: int | None  # fixed by the public URL, else None (pick one)
    tls: bool

    @property
    def local_host(self) -> str:
        """The address the stack's own processes dial."""
        if self.host in ALL_INTERFACES:
            return "127.0.0.1"
        return self.host

    def local_url(self, port: int) -> str:
        host = f"[{self.local_host}]" if ":" in self.local_host else self.local_host
        return f"{'tls' if self.tls else 'nats'}://{host}:{port}"


def _resolve(host: str) -> str:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        raise ListenError(
            f"the public NATS host {host!r} does not resolve on this machine ({exc}); set "
            "OPENCHAT_NATS_LISTEN to an address of this machine, or 0.0.0.0 for all interfaces"
        ) from exc
    return str(infos[0][4][0])


def plan(settings: Settings) -> NatsListen:
    public = settings.public_nats_url.split(",", 1)[0].strip() if settings.public_nats_url else None
    parts = urlsplit(public if public is None or "://" in public else f"nats://{public}") if public else None
    port = parts.port if parts is not None else None
    scheme_tls = parts is not None and parts.scheme == "tls"
    if settings.nats_listen:
        host = settings.nats_listen.strip()
        host = "0.0.0.0" if host == "*" else host
    elif parts is not None and parts.hostname:
        host = "127.0.0.1" if parts.hostname == "localhost" else _resolve(parts.hostname)
    else:
        host = "127.0.0.1"
    tls = (
        scheme_tls
        or not is_loopback_host(host)
        or (parts is not None and parts.hostname is not None and not is_loopback_host(parts.hostname))
    )
    return NatsListen(host=host, port=port, tls=tls)
