"""The realtime hub: ``GET /v1/realtime`` (wire §10).

One global hub for every server of the instance; scoping is purely by channel subscription.

* Identity: ``X-OpenChat-User-UID`` header, else query ``user_uid``, else ``uid_dev_local`` (device
  likewise with ``dev_local``); never rejected; ``server_id`` in the query is ignored except for
  Profile B management events.
* Frames are decoded like gorilla's ``ReadJSON`` into ``{type, request_id, payload}``: anything that
  is not such an envelope drops the TCP connection without a close frame.
* ``chat.subscribe`` → ``chat.subscribed`` + ``chat.presence.snapshot`` (every time) and, on the
  first subscription, ``chat.presence.joined`` to the others; ``chat.unsubscribe`` →
  ``chat.unsubscribed`` (+ ``chat.presence.left`` to the others if it was subscribed);
  ``chat.typing.update`` → ``chat.typing.updated`` to the others; ``chat.ping`` → ``chat.pong``;
  anything else → ``chat.error chat_unknown_event``.
* Presence is per socket (``client_id`` = UUID of the socket); closing sends
  ``chat.presence.left`` once per subscribed channel.
* Each socket has an outbound queue of ``cfg.realtime_queue_size`` (64) envelopes; a full queue
  drops further envelopes silently.  Keep-alive: a ping control frame every 25 s, the socket is
  dropped after 60 s without inbound traffic (both configurable for tests).
* Payload keys follow the Go server: maps are serialised with sorted keys, structs in field order.

Profile B ``event_ids`` (``features.py`` switches it on): broadcast events also carry
``event_id`` (monotonic integer), ``event_type``, ``server_id`` and ``timestamp``; durable events
(messages, deletions, read-acks, profile and management events) are kept in a bounded log, and a
socket opened with ``?resume_from=<event_id>`` gets the missed ones replayed — global events right
after connecting, channel events right after it subscribes to that channel.  When the log no longer
reaches back to ``resume_from`` the socket first gets
``chat.replay.truncated {resume_from, oldest_event_id}`` so the client knows to re-fetch history.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from services.devserver.config import DevserverConfig
from services.devserver.gojson import GoDecodeError, decode_first, header_text, is_missing
from services.devserver.gojson import field as go_field
from services.devserver.store import Store
from services.devserver.wire_http import DEV_DEVICE, DEV_UID, abort_websocket, dumps_text, keepalive, rfc3339

QueueItem = str | bytes


def go_rfc3339_nano(ns: int | None = None) -> str:
    """``time.RFC3339Nano`` in UTC: nanoseconds with trailing zeros trimmed."""
    ns = time.time_ns() if ns is None else ns
    seconds, frac = divmod(ns, 1_000_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    digits = f"{frac:09d}".rstrip("0")
    return f"{base}.{digits}Z" if digits else f"{base}Z"


def envelope(etype: str, payload: Any, request_id: str = "") -> dict[str, Any]:
    """``{type, request_id?, payload}`` — ``request_id`` omitted when empty (Go ``omitempty``)."""
    env: dict[str, Any] = {"type": etype}
    if request_id:
        env["request_id"] = request_id
    env["payload"] = payload
    return env


def error_envelope(request_id: str, code: str, message: str) -> dict[str, Any]:
    return envelope("chat.error", {"code": code, "message": message, "retryable": False}, request_id)


@dataclass
class Client:
    """One realtime socket."""

    websocket: WebSocket
    user_uid: str
    device_id: str
    server_id: str
    queue: asyncio.Queue[QueueItem]
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    subscriptions: set[str] = field(default_factory=set)
    resume_from: int | None = None
    replayed_channels: set[str] = field(default_factory=set)
    dropped: int = 0

    def member(self) -> dict[str, str]:
        return {"client_id": self.id, "user_uid": self.user_uid, "device_id": self.device_id}


@dataclass
class LoggedEvent:
    event_id: int
    channel_id: str | None  # None: delivered to every socket (or by server_id/uid below)
    server_id: str | None
    user_uid: str | None  # read-acks: only that uid's sockets
    frame: str


class Hub:
    """Connected realtime sockets and their channel rooms."""

    def __init__(self, cfg: DevserverConfig, store: Store) -> None:
        self.cfg = cfg
        self.store = store
        self.clients: dict[str, Client] = {}
        self.rooms: dict[str, dict[str, Client]] = {}
        self.log: deque[LoggedEvent] = deque(maxlen=max(1, cfg.event_log_size))
        self.event_ids = cfg.has("event_ids")
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ delivery

    def enqueue(self, client: Client, item: QueueItem | dict[str, Any]) -> None:
        """Queue one frame; a full queue drops it silently (the backend's behaviour)."""
        frame = item if isinstance(item, str | bytes) else dumps_text(item)
        try:
            client.queue.put_nowait(frame)
        except asyncio.QueueFull:
            client.dropped += 1

    def _stamp(self, env: dict[str, Any], server_id: str | None) -> dict[str, Any]:
        """Profile B envelope fields (``event_ids``)."""
        if not self.event_ids:
            return env
        stamped = dict(env)
        stamped["event_id"] = self.store.next_event_id()
        stamped["event_type"] = env["type"]
        stamped["server_id"] = server_id or self.store.default_server_id
        stamped["timestamp"] = rfc3339(datetime.now(UTC))
        return stamped

    def _publish(
        self,
        env: dict[str, Any],
        targets: Iterable[Client],
        *,
        channel_id: str | None = None,
        server_id: str | None = None,
        user_uid: str | None = None,
        durable: bool = False,
    ) -> None:
        sid = server_id or (self.store.server_for_channel(channel_id) if channel_id else None)
        stamped = self._stamp(env, sid)
        frame = dumps_text(stamped)
        if self.event_ids and durable:
            self.log.append(LoggedEvent(int(stamped["event_id"]), channel_id, server_id, user_uid, frame))
        for client in list(targets):
            self.enqueue(client, frame)

    def room(self, channel_id: str) -> list[Client]:
        return list(self.rooms.get(channel_id, {}).values())

    def broadcast_message(self, message: dict[str, Any]) -> None:
        channel_id = message["channel_id"]
        self._publish(
            envelope("chat.message.created", {"message": message}),
            self.room(channel_id),
            channel_id=channel_id,
            durable=True,
        )

    def broadcast_message_deleted(self, payload: dict[str, Any]) -> None:
        channel_id = payload["channel_id"]
        self._publish(
            envelope("chat.message.deleted", payload),
            self.room(channel_id),
            channel_id=channel_id,
            durable=True,
        )

    def broadcast_profile_updated(self, profile: dict[str, Any]) -> None:
        payload = dict(sorted(profile.items()))
        self._publish(envelope("profile_updated", payload), self.clients.values(), durable=True)

    def broadcast_read_ack(self, ack: dict[str, Any]) -> None:
        uid = ack["user_uid"]
        self._publish(
            envelope("chat.read_ack.updated", ack),
            [c for c in self.clients.values() if c.user_uid == uid],
            channel_id=ack["channel_id"],
            user_uid=uid,
            durable=True,
        )

    def broadcast_server_event(self, etype: str, server_id: str, payload: dict[str, Any]) -> None:
        """Profile B management events, to sockets opened for that server (or for no server)."""
        targets = [c for c in self.clients.values() if c.server_id in ("", server_id)]
        self._publish(envelope(etype, payload), targets, server_id=server_id, durable=True)

    # ------------------------------------------------------------------ admin helpers

    async def drop_all(self) -> int:
        clients = list(self.clients.values())
        for client in clients:
            await abort_websocket(client.websocket)
        return len(clients)

    def select(self, user_uid: str | None = None, client_id: str | None = None) -> list[Client]:
        return [
            c
            for c in self.clients.values()
            if (user_uid is None or c.user_uid == user_uid) and (client_id is None or c.id == client_id)
        ]

    # ------------------------------------------------------------------ connection

    async def serve(self, websocket: WebSocket) -> None:
        headers = websocket.headers
        query = websocket.query_params
        uid = (
            header_text(headers.get("x-openchat-user-uid", "")).strip()
            or query.get("user_uid", "").strip()
            or DEV_UID
        )
        device = (
            header_text(headers.get("x-openchat-device-id", "")).strip()
            or query.get("device_id", "").strip()
            or DEV_DEVICE
        )
        server_id = (
            header_text(headers.get("x-openchat-server-id", "")).strip() or query.get("server_id", "").strip()
        )
        await websocket.accept()
        client = Client(
            websocket, uid, device, server_id, asyncio.Queue(maxsize=max(1, self.cfg.realtime_queue_size))
        )
        if self.event_ids:
            raw_resume = query.get("resume_from", "").strip()
            if raw_resume.isdigit():
                client.resume_from = int(raw_resume)
        self.clients[client.id] = client
        writer = asyncio.create_task(self._write_loop(client))
        pinger = asyncio.create_task(
            keepalive(websocket, self.cfg.realtime_ping_interval_s, self.cfg.realtime_idle_timeout_s)
        )
        try:
            if client.resume_from is not None:
                self._replay(client, None)
            await self._read_loop(client)
        finally:
            self._unregister(client)
            pinger.cancel()
            writer.cancel()
            for task in (pinger, writer):
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _write_loop(self, client: Client) -> None:
        websocket = client.websocket
        try:
            while True:
                frame = await client.queue.get()
                if isinstance(frame, bytes):
                    await websocket.send_bytes(frame)
                else:
                    await websocket.send_text(frame)
        except (WebSocketDisconnect, RuntimeError, OSError):
            # the peer is gone (uvicorn raises ClientDisconnected, an OSError); the reader cleans up
            return

    async def _read_loop(self, client: Client) -> None:
        websocket = client.websocket
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
            raw: bytes
            if message.get("text") is not None:
                raw = message["text"].encode("utf-8", "surrogatepass")
            elif message.get("bytes") is not None:
                raw = message["bytes"]
            else:
                continue
            parsed = parse_envelope(raw)
            if parsed is None:
                # not a valid envelope: drop the TCP connection without a close frame
                await abort_websocket(websocket)
                return
            self.handle(client, *parsed)

    # ------------------------------------------------------------------ frames

    def handle(self, client: Client, etype: str, request_id: str, payload: dict[str, Any]) -> None:
        if etype == "chat.subscribe":
            channel_id = _str_or_empty(payload, "channel_id").strip()
            if not channel_id:
                self.enqueue(
                    client, error_envelope(request_id, "chat_channel_required", "channel_id is required")
                )
                return
            room = self.rooms.setdefault(channel_id, {})
            first = channel_id not in client.subscriptions
            room[client.id] = client
            client.subscriptions.add(channel_id)
            snapshot = [c.member() for c in room.values()]
            self.enqueue(client, envelope("chat.subscribed", {"channel_id": channel_id}, request_id))
            self.enqueue(
                client, envelope("chat.presence.snapshot", {"channel_id": channel_id, "members": snapshot})
            )
            if first:
                peers = [c for c in room.values() if c.id != client.id]
                self._publish(
                    envelope("chat.presence.joined", {"channel_id": channel_id, "member": client.member()}),
                    peers,
                    channel_id=channel_id,
                )
            if client.resume_from is not None and channel_id not in client.replayed_channels:
                self._replay(client, channel_id)
        elif etype == "chat.unsubscribe":
            channel_id = _str_or_empty(payload, "channel_id").strip()
            if not channel_id:
                return
            was_subscribed = channel_id in client.subscriptions
            peers = self._leave_room(client, channel_id) if was_subscribed else []
            self.enqueue(client, envelope("chat.unsubscribed", {"channel_id": channel_id}, request_id))
            if was_subscribed:
                self._publish(
                    envelope("chat.presence.left", {"channel_id": channel_id, "member": client.member()}),
                    peers,
                    channel_id=channel_id,
                )
        elif etype == "chat.typing.update":
            channel_id = _str_or_empty(payload, "channel_id").strip()
            if not channel_id:
                self.enqueue(
                    client, error_envelope(request_id, "chat_channel_required", "channel_id is required")
                )
                return
            if channel_id not in client.subscriptions:
                self.enqueue(
                    client,
                    error_envelope(request_id, "chat_not_subscribed", "channel subscription is required"),
                )
                return
            is_typing = go_field(payload, "is_typing")
            peers = [c for c in self.room(channel_id) if c.id != client.id]
            self._publish(
                envelope(
                    "chat.typing.updated",
                    {"channel_id": channel_id, "is_typing": is_typing is True, "member": client.member()},
                ),
                peers,
                channel_id=channel_id,
            )
        elif etype == "chat.ping":
            self.enqueue(client, envelope("chat.pong", {"ts": go_rfc3339_nano()}, request_id))
        else:
            self.enqueue(
                client, error_envelope(request_id, "chat_unknown_event", "unsupported realtime event")
            )

    def _leave_room(self, client: Client, channel_id: str) -> list[Client]:
        client.subscriptions.discard(channel_id)
        room = self.rooms.get(channel_id)
        if room is None:
            return []
        room.pop(client.id, None)
        if not room:
            del self.rooms[channel_id]
        return list(room.values())

    def _unregister(self, client: Client) -> None:
        self.clients.pop(client.id, None)
        for channel_id in list(client.subscriptions):
            peers = self._leave_room(client, channel_id)
            self._publish(
                envelope("chat.presence.left", {"channel_id": channel_id, "member": client.member()}),
                peers,
                channel_id=channel_id,
            )

    def _replay(self, client: Client, channel_id: str | None) -> None:
        """Send logged events newer than the socket's ``resume_from`` (global or for one channel)."""
        resume = client.resume_from
        if resume is None:
            return
        if channel_id is None:
            oldest = self.log[0].event_id if self.log else self.store.state.event_seq + 1
            if resume + 1 < oldest:
                self.enqueue(
                    client,
                    envelope("chat.replay.truncated", {"oldest_event_id": oldest, "resume_from": resume}),
                )
        else:
            client.replayed_channels.add(channel_id)
        for event in list(self.log):
            if event.event_id <= resume or event.channel_id != channel_id:
                continue
            if event.user_uid is not None and event.user_uid != client.user_uid:
                continue
            if (
                channel_id is None
                and event.server_id is not None
                and client.server_id not in ("", event.server_id)
            ):
                continue
            self.enqueue(client, event.frame)


def _str_or_empty(payload: dict[str, Any], name: str) -> str:
    """A payload string field decoded leniently (``json.Unmarshal`` errors are ignored)."""
    value = go_field(payload, name)
    return value if isinstance(value, str) else ""


def parse_envelope(raw: bytes) -> tuple[str, str, dict[str, Any]] | None:
    """``(type, request_id, payload)`` as gorilla's ``ReadJSON`` into the backend's Envelope, or
    ``None`` when that would fail (which drops the connection)."""
    try:
        value = decode_first(raw)
    except GoDecodeError:
        return None
    if value is None:
        return "", "", {}
    if not isinstance(value, dict):
        return None
    etype = go_field(value, "type")
    request_id = go_field(value, "request_id")
    payload = go_field(value, "payload")
    if not (is_missing(etype) or etype is None or isinstance(etype, str)):
        return None
    if not (is_missing(request_id) or request_id is None or isinstance(request_id, str)):
        return None
    return (
        etype if isinstance(etype, str) else "",
        request_id if isinstance(request_id, str) else "",
        payload if isinstance(payload, dict) else {},
    )
