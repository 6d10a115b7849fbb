"""ICE servers never delay a join: only servers a background probe saw answering are used."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

from services.core.contracts.wire import IceServer
from services.media.ice import IceProbe, IceUrl, binding_request, is_binding_response


class StunResponder(asyncio.DatagramProtocol):
    """A minimal STUN server: answers binding requests with a success response (no attributes)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if len(data) >= 20 and data[:2] == b"\x00\x01":
            self.transport.sendto(b"\x01\x01\x00\x00" + data[4:20], addr)


def silent_udp_port() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))  # bound, never answers
    return sock, sock.getsockname()[1]


def test_ice_url_parsing() -> None:
    assert IceUrl.parse("stun:stun.l.google.com:19302") == IceUrl("stun", "stun.l.google.com", 19302, "udp")
    assert IceUrl.parse("turns:turn.example.org") == IceUrl("turns", "turn.example.org", 5349, "tcp")
    assert IceUrl.parse("turn:[::1]:3478?transport=tcp") == IceUrl("turn", "::1", 3478, "tcp")
    assert IceUrl.parse("http://x") is None and IceUrl.parse("stun:host:notaport") is None


def test_binding_response_matches_its_transaction() -> None:
    request, tid = binding_request()
    assert len(request) == 20
    assert is_binding_response(b"\x01\x01\x00\x00" + request[4:20], tid)
    assert not is_binding_response(b"\x01\x01\x00\x00" + request[4:8] + bytes(12), tid)


async def test_unknown_servers_are_not_used_until_a_probe_saw_them_answer() -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(StunResponder, local_addr=("127.0.0.1", 0))
    live = transport.get_extra_info("sockname")[1]
    silent, dead = silent_udp_port()
    try:
        probe = IceProbe(timeout_s=0.6)
        servers = [IceServer(urls=[f"stun:127.0.0.1:{live}"]), IceServer(urls=[f"stun:127.0.0.1:{dead}"])]
        started = time.monotonic()
        assert probe.usable(servers) == []  # nothing known yet: host candidates only, no waiting
        assert time.monotonic() - started < 0.05
        await probe.settle()
        assert [s.urls for s in probe.usable(servers)] == [[f"stun:127.0.0.1:{live}"]]
        assert probe.results[f"stun:127.0.0.1:{dead}"][0] is False
    finally:
        transport.close()
        silent.close()
