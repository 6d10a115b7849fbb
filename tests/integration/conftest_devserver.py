"""Helpers for the devserver integration tests (imported explicitly; no fixtures are auto-loaded).

``serve(**cfg)`` runs a real devserver (uvicorn on a free 127.0.0.1 port, in-process thread);
``RealtimeClient`` wraps a ``websockets`` connection to ``/v1/realtime`` with JSON helpers.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect

from services.devserver.config import DevserverConfig
from services.devserver.runner import DevserverHandle, running_devserver

RECV_TIMEOUT = 5.0
ALICE = {"X-OpenChat-User-UID": "uid_alice", "X-OpenChat-Device-ID": "dev_alice"}
BOB = {"X-OpenChat-User-UID": "uid_bob", "X-OpenChat-Device-ID": "dev_bob"}


@contextmanager
def serve(cfg: DevserverConfig | None = None, **overrides: Any) -> Iterator[DevserverHandle]:
    base = cfg or DevserverConfig()
    with running_devserver(replace(base, **overrides) if overrides else base) as server:
        yield server


def client(server: DevserverHandle) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=30)


def aclient(server: DevserverHandle) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.base_url, timeout=30)


class RealtimeClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    @classmethod
    async def open(
        cls, server: DevserverHandle, query: str = "", headers: dict[str, str] | None = None
    ) -> RealtimeClient:
        url = server.ws_url + "/v1/realtime" + (f"?{query}" if query else "")
        return cls(await connect(url, additional_headers=headers or {}, close_timeout=1))

    async def send(self, frame: dict[str, Any] | str) -> None:
        await self.ws.send(frame if isinstance(frame, str) else json.dumps(frame))

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        value = json.loads(raw)
        assert isinstance(value, dict)
        return value

    async def recv_type(self, etype: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """Next frame of ``etype`` (frames of other types before it are skipped)."""
        while True:
            frame = await self.recv(timeout)
            if frame.get("type") == etype:
                return frame

    async def subscribe(self, channel_id: str) -> list[dict[str, Any]]:
        await self.send(
            {
                "type": "chat.subscribe",
                "request_id": f"sub_{channel_id}",
                "payload": {"channel_id": channel_id},
            }
        )
        return [await self.recv_type("chat.subscribed"), await self.recv_type("chat.presence.snapshot")]

    async def ping(self) -> dict[str, Any]:
        """A ``chat.ping`` round trip: everything queued before it has been delivered afterwards."""
        await self.send({"type": "chat.ping", "request_id": "sync"})
        return await self.recv_type("chat.pong")

    async def close(self) -> None:
        await self.ws.close()
