"""Shared harness for the devserver RTC tests (no tests in here).

Starts a real devserver with uvicorn on a free 127.0.0.1 port, in its own thread and event loop,
served by the devserver's own WebSocket protocol (``transport.uvicorn_ws_settings()``).  Two app
kinds: ``stub`` (a bare Starlette app with ``install_rtc`` and a seed-shaped lookup, which needs
nothing from the rest of the devserver) and ``real`` (``services.devserver.app.create_app``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import importlib.util
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.devserver.config import DevserverConfig
from services.devserver.rtc import RtcHub, get_rtc_hub, install_rtc
from services.devserver.transport import uvicorn_ws_settings

RECV_TIMEOUT = 5.0

# The public seed (wire §3): harbor + testlab channels, one global channel namespace.
SEED_CHANNELS: dict[str, str] = {
    "ch_general": "text",
    "ch_design": "text",
    "ch_release": "text",
    "ch_outage": "text",
    "vc_general": "voice",
    "vc_party": "voice",
    "tl_ch_general": "text",
    "tl_ch_qa": "text",
    "tl_vc_huddle": "voice",
    "tl_vc_pairing": "voice",
}
SEED_SERVERS = frozenset({"srv_harbor", "srv_testlab"})


class StubLookup:
    def channel_type(self, channel_id: str) -> str | None:
        return SEED_CHANNELS.get(channel_id)

    def has_server(self, server_id: str) -> bool:
        return server_id in SEED_SERVERS


def real_app_available() -> bool:
    try:
        spec = importlib.util.find_spec("services.devserver.app")
    except ImportError:
        return False
    if spec is None:
        return False
    return hasattr(importlib.import_module("services.devserver.app"), "create_app")


APP_KINDS = ("stub", "real")


def build_app(kind: str, cfg: DevserverConfig) -> Starlette:
    if kind == "real":
        module = importlib.import_module("services.devserver.app")
        app = module.create_app(cfg)
        assert isinstance(app, Starlette)
        return app
    app = Starlette()
    install_rtc(app, cfg, StubLookup())
    return app


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets)
        self.ready.set()


@dataclass
class Devserver:
    kind: str
    cfg: DevserverConfig
    app: Starlette
    port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/rtc/signaling"

    @property
    def hub(self) -> RtcHub:
        return get_rtc_hub(self.app)

    async def post_ticket(
        self,
        channel_id: str,
        *,
        uid: str | None = "uid_alice",
        device: str | None = "dev_alice_laptop",
        body: Any = None,
        raw_body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        hdrs: dict[str, str] = {}
        if uid is not None:
            hdrs["X-OpenChat-User-UID"] = uid
        if device is not None:
            hdrs["X-OpenChat-Device-ID"] = device
        hdrs.update(headers or {})
        async with httpx.AsyncClient(base_url=self.base_url, trust_env=False, timeout=RECV_TIMEOUT) as client:
            if raw_body is not None:
                return await client.post(
                    f"/v1/rtc/channels/{channel_id}/join-ticket", content=raw_body, headers=hdrs
                )
            if body is not None:
                return await client.post(
                    f"/v1/rtc/channels/{channel_id}/join-ticket", json=body, headers=hdrs
                )
            return await client.post(f"/v1/rtc/channels/{channel_id}/join-ticket", headers=hdrs)

    async def ticket(
        self, uid: str, device: str, channel_id: str = "vc_general", server_id: str = "srv_harbor"
    ) -> str:
        response = await self.post_ticket(channel_id, uid=uid, device=device, body={"server_id": server_id})
        assert response.status_code == 200, response.text
        ticket = response.json()["ticket"]
        assert isinstance(ticket, str)
        return ticket

    async def connect(self, **kwargs: Any) -> SigClient:
        options: dict[str, Any] = {"compression": None, "proxy": None, "max_size": None, "close_timeout": 2}
        options.update(kwargs)
        ws = await connect(self.ws_url, **options)
        return SigClient(ws)

    async def join(
        self,
        uid: str,
        channel_id: str = "vc_general",
        *,
        device: str | None = None,
        request_id: str = "",
        server_id: str = "srv_harbor",
    ) -> SigClient:
        ticket = await self.ticket(uid, device or f"dev_{uid}", channel_id, server_id)
        client = await self.connect()
        await client.send("rtc.join", {"ticket": ticket}, request_id=request_id or f"join_{uid}")
        joined = await client.recv()
        assert joined["type"] == "rtc.joined", joined
        client.joined = joined
        client.participant_id = joined["payload"]["participant_id"]
        return client


@dataclass
class SigClient:
    ws: ClientConnection
    joined: dict[str, Any] = field(default_factory=dict)
    participant_id: str = ""

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def send(self, kind: str, payload: Any = None, *, request_id: str = "") -> None:
        frame: dict[str, Any] = {"type": kind}
        if request_id:
            frame["request_id"] = request_id
        if payload is not None:
            frame["payload"] = payload
        await self.ws.send(json.dumps(frame))

    async def recv_raw(self, timeout: float = RECV_TIMEOUT) -> str:
        message = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(message, str)
        return message

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        raw = await self.recv_raw(timeout)
        assert raw.endswith("\n") and not raw.endswith("\n\n"), raw
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value

    async def recv_type(self, kind: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """Next frame, which must be of type ``kind``."""
        frame = await self.recv(timeout)
        assert frame["type"] == kind, frame
        return frame

    async def assert_quiet(self, tag: str = "probe") -> None:
        """Nothing is queued for this socket: a ping's pong is the very next frame."""
        await self.send("rtc.ping", request_id=tag)
        frame = await self.recv()
        assert frame["type"] == "rtc.pong" and frame.get("request_id") == tag, frame

    async def wait_closed(self, timeout: float = RECV_TIMEOUT) -> tuple[int | None, list[str]]:
        """Read until the server ends the connection; (close code the server sent or None, frames)."""
        frames: list[str] = []
        with contextlib.suppress(ConnectionClosed):
            while True:
                message = await asyncio.wait_for(self.ws.recv(), timeout)
                frames.append(message if isinstance(message, str) else message.decode())
        received = self.ws.protocol.close_rcvd
        return (received.code if received is not None else None), frames

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


@contextlib.contextmanager
def run_devserver(kind: str = "stub", **overrides: Any) -> Iterator[Devserver]:
    """A running devserver (``kind`` stub|real) with ``DevserverConfig`` ``overrides``.

    ``real`` goes through the devserver's own in-process runner (``runner.running_devserver``:
    ``create_app`` + uvicorn + the devserver WebSocket protocol); ``stub`` serves a bare Starlette
    app with ``install_rtc`` the same way.
    """
    if kind == "real":
        runner = importlib.import_module("services.devserver.runner")
        with runner.running_devserver(DevserverConfig(), **overrides) as handle:
            yield Devserver(kind, handle.cfg, handle.app, handle.cfg.port)
        return
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    cfg = replace(DevserverConfig(), host="127.0.0.1", port=port, public_base_url=f"http://127.0.0.1:{port}")
    cfg = replace(cfg, **overrides)
    app = build_app(kind, cfg)
    config = uvicorn.Config(
        app, log_level="warning", lifespan="auto", timeout_graceful_shutdown=3, **uvicorn_ws_settings()
    )
    server = _Server(config)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"devserver-stub-{port}", daemon=True
    )
    thread.start()
    try:
        if not server.ready.wait(15):
            raise RuntimeError("devserver did not start")
        yield Devserver(kind, cfg, app, port)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@contextlib.asynccontextmanager
async def clients() -> AsyncIterator[list[SigClient]]:
    """Collects clients and closes them all at the end of a test."""
    opened: list[SigClient] = []
    try:
        yield opened
    finally:
        await asyncio.gather(*(client.close() for client in opened))


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def decode_claims(ticket: str) -> dict[str, Any]:
    claims = json.loads(b64url_decode(ticket.split(".")[0]))
    assert isinstance(claims, dict)
    return claims
