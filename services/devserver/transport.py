"""WebSocket transport control the ASGI interface does not offer.

The public backend (gorilla/websocket) does three things an ASGI app cannot express:

* it drops a TCP connection **without** a close frame (malformed realtime frame, ``rtc.leave``,
  failed signaling join) — the client sees 1006;
* it sends WebSocket **ping control frames** on its own schedule per socket kind (realtime 25 s,
  signaling 20 s) and closes sockets that were silent for too long (60 s / 40 s);
* it counts *any* inbound traffic (frames and pongs) as liveness.

``OpenChatWSProtocol`` is uvicorn's sans-I/O websockets protocol with a ``WSControl`` object placed
in ``scope["extensions"]["openchat.ws"]``; handlers reach it with ``ws_control(websocket)``.  The
devserver runs uvicorn with this protocol class and ``ws_ping_interval=None`` so that every socket
kind keeps its own keep-alive (``keepalive()``).  Under any other server the helpers degrade:
``abort`` becomes a 1011 close, pings are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Any

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.frames import Frame

EXTENSION_KEY = "openchat.ws"


class WSControl:
    """Per-connection handle: abort the TCP connection, send pings, read the liveness clock."""

    def __init__(self, protocol: OpenChatWSProtocol) -> None:
        self._protocol = protocol

    @property
    def last_inbound(self) -> float:
        """Loop time of the last inbound byte (frame, ping or pong)."""
        return self._protocol.last_inbound

    @property
    def closed(self) -> bool:
        return self._protocol.disconnected or self._protocol.transport.is_closing()

    def abort(self) -> None:
        """Drop the TCP connection at once, without a close frame (the peer sees 1006)."""
        transport = self._protocol.transport
        if transport is not None and not transport.is_closing():
            transport.abort()

    def ping(self, payload: bytes = b"ping") -> None:
        """Send one ping control frame (gorilla sends the payload ``ping``)."""
        protocol = self._protocol
        if protocol.close_sent or protocol.disconnected or protocol.transport.is_closing():
            return
        protocol.conn.send_ping(payload)
        protocol.transport.write(b"".join(protocol.conn.data_to_send()))

    def inject_raw(self, data: bytes) -> None:
        """Write raw bytes to the socket (admin: a malformed frame)."""
        if not self._protocol.transport.is_closing():
            self._protocol.transport.write(data)


class OpenChatWSProtocol(WebSocketsSansIOProtocol):
    """uvicorn's websockets-sansio protocol plus a ``WSControl`` in the ASGI scope."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.last_inbound = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.last_inbound = self.loop.time()

    def data_received(self, data: bytes) -> None:
        self.last_inbound = self.loop.time()
        super().data_received(data)

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION_KEY] = WSControl(self)

    def handle_pong(self, event: Frame) -> None:
        # Pongs for our own pings are not tracked by uvicorn (ping_interval=None); liveness is
        # already recorded in data_received.
        if self.pending_ping_payload is not None:
            super().handle_pong(event)


def ws_control(websocket: WebSocket) -> WSControl | None:
    """The connection's ``WSControl`` when served by ``OpenChatWSProtocol``, else ``None``."""
    control = websocket.scope.get("extensions", {}).get(EXTENSION_KEY)
    return control if isinstance(control, WSControl) else None


async def abort_websocket(websocket: WebSocket) -> None:
    """Drop the connection without a close frame (fallback: close with 1011)."""
    control = ws_control(websocket)
    if control is not None:
        control.abort()
        return
    with contextlib.suppress(Exception):
        await websocket.close(code=1011)


async def keepalive(websocket: WebSocket, interval_s: float, idle_timeout_s: float) -> None:
    """Ping every ``interval_s`` and abort the socket after ``idle_timeout_s`` without inbound data.

    Runs until cancelled or until it aborts the socket.  Without a ``WSControl`` it only waits.
    """
    control = ws_control(websocket)
    if control is None:
        await asyncio.Event().wait()
        return
    loop = asyncio.get_running_loop()
    next_ping = loop.time() + interval_s
    while not control.closed:
        deadline = control.last_inbound + idle_timeout_s
        now = loop.time()
        if now >= deadline:
            control.abort()
            return
        if now >= next_ping:
            control.ping()
            next_ping = now + interval_s
        await asyncio.sleep(max(0.01, min(next_ping, deadline) - loop.time()))


def uvicorn_ws_settings() -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments every devserver instance uses."""
    return {
        "ws": OpenChatWSProtocol,
        "ws_ping_interval": None,
        "ws_ping_timeout": None,
        # The realtime socket has no inbound size limit on the public backend (a 3 MiB frame was
        # accepted); signaling enforces its own 1 MiB cap.
        "ws_max_size": int(os.environ.get("OPENCHAT_DEVSERVER_WS_MAX_SIZE", str(64 * 1024 * 1024))),
        "ws_per_message_deflate": False,
    }
