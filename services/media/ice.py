"""ICE servers that never delay a join (features 8.1).

The public backend's ticket names ``stun:stun.l.google.com:19302`` (needs internet access) and a
``turns:turn.example.invalid`` placeholder (dropped by ``usable_ice_servers``).  aiortc gathers
candidates inside ``setLocalDescription``: an unreachable STUN server there costs seconds per peer
connection.  So a STUN/TURN server is used only once a background probe has shown it answers
(UDP: a STUN binding request; TCP/TLS: a TCP connect), and the probe's result is cached for a while;
until then peer connections use host candidates only, which is all a LAN or loopback call needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from services.core.contracts.wire import IceServer

log = logging.getLogger("openchat.media.ice")

MAGIC_COOKIE = 0x2112A442
PROBE_TIMEOUT_S = 1.5
RESULT_TTL_S = 600.0
MAX_PROBES = 16


@dataclass(frozen=True)
class IceUrl:
    scheme: str  # stun | stuns | turn | turns
    host: str
    port: int
    transport: str  # udp | tcp

    @classmethod
    def parse(cls, url: str) -> IceUrl | None:
        scheme, sep, rest = url.partition(":")
        scheme = scheme.lower()
        if not sep or scheme not in ("stun", "stuns", "turn", "turns"):
            return None
        rest, _, query = rest.partition("?")
        transport = "tcp" if scheme.endswith("s") else "udp"
        if "transport=tcp" in query.lower():
            transport = "tcp"
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            port_text = tail.lstrip(":")
        else:
            host, _, port_text = rest.rpartition(":") if rest.count(":") == 1 else (rest, "", "")
        default = 5349 if scheme.endswith("s") else 3478
        try:
            port = int(port_text) if port_text else default
        except ValueError:
            return None
        if not host or not 0 < port < 65536:
            return None
        return cls(scheme, host, port, transport)


def binding_request() -> tuple[bytes, bytes]:
    """A STUN binding request (RFC 5389) and its transaction id."""
    tid = os.urandom(12)
    return struct.pack("!HHI", 0x0001, 0, MAGIC_COOKIE) + tid, tid


def is_binding_response(data: bytes, tid: bytes) -> bool:
    if len(data) < 20:
        return False
    kind, _, cookie = struct.unpack("!HHI", data[:8])
    return cookie == MAGIC_COOKIE and data[8:20] == tid and kind in (0x0101, 0x0111)


class _Reply(asyncio.DatagramProtocol):
    def __init__(self, tid: bytes, done: asyncio.Future[bool]) -> None:
        self.tid = tid
        self.done = done

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if is_binding_response(data, self.tid) and not self.done.done():
            self.done.set_result(True)


async def probe(url: IceUrl, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when the server answers within ``timeout`` (DNS included)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            if url.transport == "tcp":
                _, writer = await asyncio.open_connection(url.host, url.port)
                writer.close()
                return True
            infos = await loop.getaddrinfo(url.host, url.port, type=2)  # SOCK_DGRAM
            if not infos:
                return False
            family, _, _, _, addr = infos[0]
            request, tid = binding_request()
            done: asyncio.Future[bool] = loop.create_future()
            transport, _ = await loop.create_datagram_endpoint(lambda: _Reply(tid, done), family=family)
            try:
                for _ in range(3):
                    transport.sendto(request, addr)
                    with contextlib.suppress(TimeoutError):
                        return await asyncio.wait_for(asyncio.shield(done), timeout / 3)
                return False
            finally:
                transport.close()
    except (TimeoutError, OSError):
        return False


@dataclass
class IceProbe:
    """``usable(servers)`` returns at once what is known to answer and probes the rest."""

    timeout_s: float = PROBE_TIMEOUT_S
    ttl_s: float = RESULT_TTL_S
    results: dict[str, tuple[bool, float]] = field(default_factory=dict)
    _running: dict[str, asyncio.Task[None]] = field(default_factory=dict)

    def usable(self, servers: list[IceServer]) -> list[IceServer]:
        now = time.monotonic()
        out: list[IceServer] = []
        for server in servers:
            urls: list[str] = []
            for url in server.urls:
                known = self.results.get(url)
                if known is not None and now - known[1] < self.ttl_s:
                    if known[0]:
                        urls.append(url)
                    continue
                self._start(url)
            if urls:
                out.append(server.model_copy(update={"urls": urls}))
        return out

    def _start(self, url: str) -> None:
        if url in self._running or len(self._running) >= MAX_PROBES:
            return
        parsed = IceUrl.parse(url)
        if parsed is None:
            self.results[url] = (False, time.monotonic())
            return

        async def run() -> None:
            try:
                ok = await probe(parsed, self.timeout_s)
                self.results[url] = (ok, time.monotonic())
                log.info("ice server probed", extra={"url": url[:200], "reachable": ok})
            finally:
                self._running.pop(url, None)

        self._running[url] = asyncio.create_task(run())

    async def settle(self) -> None:
        """Wait for the probes in flight (tests)."""
        while self._running:
            await asyncio.gather(*list(self._running.values()), return_exceptions=True)
