"""A DELIBERATELY HOSTILE OpenChat backend (fault tests and ``bench/bench_hostile.py``).

This is not a reference server (that is ``services/devserver``): it is a small HTTP + WebSocket
peer that speaks just enough of the wire protocol for the connector to join it (directory,
capabilities, channels, members, history, ``/v1/realtime``) and then misbehaves on command:

- history answers that ignore ``limit`` (``ignore_limit``: a 100,000-message history);
- hostile history items mixed into the channel (``add_raw``): wrong field types, ids longer than
  the contracts allow, invalid UTF-8 bytes, lone surrogate escapes, 100,000-deep nesting;
- realtime frames pushed raw (``push``): malformed JSON, frames over the size limit, deep
  nesting, invalid UTF-8 in a *text* frame, unknown and oversized event kinds, wrong types.

Items are kept as raw JSON bytes, so the server can send anything, valid or not. One port serves
both: plain GETs are answered from ``process_request`` (``Connection: close``), ``/v1/realtime``
is upgraded. Everything runs in the caller's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def message_doc(channel_id: str, n: int, body: str, author: str = "uid_hostile") -> dict[str, Any]:
    at = (EPOCH + timedelta(milliseconds=n)).isoformat().replace("+00:00", "Z")
    return {
        "id": f"hm_{n:07d}",
        "channel_id": channel_id,
        "author_uid": author,
        "body": body,
        "created_at": at,
    }


class HostileBackend:
    def __init__(self, server_id: str = "srv_evil", channels: tuple[str, ...] = ("ch_h",)) -> None:
        self.server_id = server_id
        self.channels = channels
        self.items: dict[str, list[bytes]] = {c: [] for c in channels}
        self.ids: dict[str, list[str]] = {c: [] for c in channels}  # the valid ones, in order
        self.ignore_limit = False
        self.extra_channels: list[dict[str, Any]] = []  # added to the channel tree as they are
        self.sockets: set[ServerConnection] = set()
        self.history_requests = 0
        self._n = 0
        self._server: Server | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- content ---------------------------------------------------------------------------------
    def add(self, channel_id: str, count: int, body: str = "hello") -> list[str]:
        """Valid messages (stored; ``push_new`` also sends them live)."""
        added = []
        for _ in range(count):
            self._n += 1
            doc = message_doc(channel_id, self._n, f"{body} {self._n}")
            self.items[channel_id].append(json.dumps(doc).encode())
            self.ids[channel_id].append(doc["id"])
            added.append(doc["id"])
        return added

    def add_raw(self, channel_id: str, raw: bytes) -> None:
        """A hostile history item, sent exactly as given (it takes a place in the order)."""
        self._n += 1
        self.items[channel_id].append(raw)

    def next_n(self) -> int:
        self._n += 1
        return self._n

    async def push_new(self, channel_id: str, count: int, body: str = "live") -> list[str]:
        """Add valid messages and send each as ``chat.message.created`` to every socket."""
        ids = []
        for _ in range(count):
            self._n += 1
            doc = message_doc(channel_id, self._n, f"{body} {self._n}")
            raw = json.dumps(doc).encode()
            self.items[channel_id].append(raw)
            self.ids[channel_id].append(doc["id"])
            ids.append(doc["id"])
            await self.push(b'{"type":"chat.message.created","payload":{"message":' + raw + b"}}")
        return ids

    async def push(self, frame: str | bytes, *, text: bool = True) -> int:
        """Send one frame as is to every socket; ``bytes`` with ``text`` is a *text* frame with
        whatever bytes it holds (invalid UTF-8 included)."""
        sent = 0
        for ws in list(self.sockets):
            with contextlib.suppress(ConnectionClosed):
                if isinstance(frame, bytes):
                    await ws.send(frame, text=text)
                else:
                    await ws.send(frame)
                sent += 1
        return sent

    async def drop_sockets(self) -> None:
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(1011, "hostile drop")

    # -- HTTP ------------------------------------------------------------------------------------
    def _json(self, doc: Any) -> Response:
        return self._raw(json.dumps(doc).encode())

    def _raw(self, body: bytes, status: HTTPStatus = HTTPStatus.OK) -> Response:
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Connection", "close"),
            ]
        )
        return Response(status.value, status.phrase, headers, body)

    def history_body(self, channel_id: str, limit: int) -> bytes:
        items = self.items.get(channel_id, [])
        if not self.ignore_limit:
            items = items[-limit:] if limit > 0 else items[-100:]
        return (
            b'{"channel_id":' + json.dumps(channel_id).encode() + b',"messages":[' + b",".join(items) + b"]}"
        )

    def _answer(self, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        path, query = parts.path, parse_qs(parts.query)
        if path == "/v1/realtime":
            return None  # the WebSocket handshake goes on
        if path == "/v1/servers":
            return self._json({"servers": [{"server_id": self.server_id, "display_name": "Hostile"}]})
        if path in ("/v1/client/capabilities", "/client/capabilities"):
            return self._json(
                {
                    "server_name": "Hostile",
                    "server_id": self.server_id,
                    "api_version": "2026-02-14",
                    "build_version": "hostile",
                    "build_commit": "0",
                    "features": {"messaging": True, "presence": True, "attachments": False},
                    "limits": {"max_message_bytes": 65536, "rate_limit_per_minute": 180},
                }
            )
        if path == f"/v1/servers/{self.server_id}/channels":
            channels = [{"id": c, "name": c, "type": "text"} for c in self.channels]
            return self._json(
                {
                    "groups": [
                        {"id": "grp_text", "label": "Text", "kind": "text", "channels": channels},
                        *self.extra_channels,
                    ],
                    "server_id": self.server_id,
                }
            )
        if path == f"/v1/servers/{self.server_id}/members":
            return self._json({"members": [], "server_id": self.server_id})
        if path.startswith("/v1/channels/") and path.endswith("/messages"):
            self.history_requests += 1
            channel_id = path.split("/")[3]
            try:
                limit = int(query.get("limit", ["100"])[0])
            except ValueError:
                limit = 100
            return self._raw(self.history_body(channel_id, limit))
        return self._raw(b'{"code":"not_found","message":"no such route"}', HTTPStatus.NOT_FOUND)

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        return self._answer(request)

    # -- realtime --------------------------------------------------------------------------------
    async def _handler(self, ws: ServerConnection) -> None:
        self.sockets.add(ws)
        try:
            async for raw in ws:
                try:
                    frame = json.loads(raw)
                except ValueError:
                    continue
                kind = frame.get("type")
                if kind == "chat.subscribe":
                    channel_id = (frame.get("payload") or {}).get("channel_id", "")
                    await ws.send(
                        json.dumps({"type": "chat.subscribed", "payload": {"channel_id": channel_id}})
                    )
                elif kind == "chat.ping":
                    await ws.send(json.dumps({"type": "chat.pong", "payload": {}}))
        except ConnectionClosed:
            pass
        finally:
            self.sockets.discard(ws)

    async def start(self, port: int = 0) -> None:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            port,
            process_request=self._process_request,
            max_size=1024 * 1024,
            ping_interval=None,
        )
        sock = next(iter(self._server.sockets))
        self.port = sock.getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        self.sockets.clear()


@contextlib.asynccontextmanager
async def running_hostile(**kwargs: Any) -> AsyncIterator[HostileBackend]:
    backend = HostileBackend(**kwargs)
    await backend.start()
    try:
        yield backend
    finally:
        await backend.stop()


async def wait_sockets(backend: HostileBackend, count: int = 1, timeout: float = 20.0) -> None:
    """The connector's realtime socket is open (no event exists for it on this side)."""

    async def loop() -> None:
        while len(backend.sockets) < count:  # noqa: ASYNC110 - a peer's state: nothing to await
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout)
