"""RTC part of the devserver: join tickets and the signaling relay (wire §11).

Routes added by ``install_rtc(app, cfg, lookup)``:

* ``POST /v1/rtc/channels/{channel_id}/join-ticket`` — HMAC join tickets (§11.2);
* ``GET → WS /v1/rtc/signaling`` — the signaling relay (§11.3); a plain GET answers
  ``400 Bad Request\\n`` like gorilla/websocket.  ``cfg.signaling_path`` only changes the
  *advertised* URL; the real route stays ``/v1/rtc/signaling`` (§14).

COORDINATION (capabilities): ``http_api.capabilities_document`` deep-merges
``rtc_capabilities_patch(cfg)`` into the capability document.  The patch is ``{}`` unless the
``sfu_events`` feature is on; then it is ``{"rtc": {"features": {"sfu_events": true}}}`` (the
HTTP module also sets the top-level ``features.sfu_events: true`` like every other flag).
``rtc.topologies`` stays ``["p2p"]``: the devserver has no SFU media path, it only *announces*
tracks.  With ``sfu_events`` on, an ``rtc.media.state`` frame with ``action`` ``start``/``stop``
and an ``audio*``/``video*`` ``stream_kind`` is relayed as usual and then announced to the *other*
participants as ``rtc.track.published`` / ``rtc.track.unpublished {media_kind, participant_id,
stream_id, stream_kind, track_id}``; a newcomer gets ``rtc.track.published`` for every track
already published (right after ``rtc.joined``); a leaver's remaining tracks are unpublished before
``rtc.participant.left``.  Clients still cannot send these types (``rtc_unknown_event``).

COORDINATION (transport): sockets must be served by ``transport.OpenChatWSProtocol``
(``transport.uvicorn_ws_settings()``, as ``runner.py`` does): the relay needs it to drop
connections without a close frame (failed joins, ``rtc.leave``, malformed frames) and for its own
20 s ping / 40 s idle keep-alive.  ``ws_max_size`` must stay above 1 MiB so that the relay's own
1 MiB cap answers 1009.

Timings (join timeout, ping interval, idle timeout, queue size, frame cap) come from optional
``cfg.rtc_join_timeout_s`` / ``rtc_ping_interval_s`` / ``rtc_idle_timeout_s`` / ``rtc_queue_size``
/ ``rtc_max_frame_bytes`` attributes when the config has them (``RtcTuning.from_config``), and can
be changed at run time through ``get_rtc_hub(app).tuning`` (tests shorten the 12 s join timeout).
The join-ticket default server is the lookup's ``default_server_id`` when it has one (the store:
the capability document's server), else ``srv_harbor``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from services.devserver.config import DevserverConfig
from services.devserver.gojson import GoDecodeError, GoObject, decode_first, is_missing, str_field
from services.devserver.gojson import field as go_field
from services.devserver.rtc_tickets import TicketAuthority, TicketError
from services.devserver.rtc_wire import envelope, go_dumps, go_time, go_time_nanos, relay_payload, sort_tree
from services.devserver.transport import abort_websocket, keepalive
from services.devserver.wire_http import CORS_HEADERS, error_response, http_identity

log = logging.getLogger("openchat.devserver.rtc")

SIGNALING_ROUTE = "/v1/rtc/signaling"
JOIN_TICKET_ROUTE = "/v1/rtc/channels/{channel_id}/join-ticket"
DEFAULT_SERVER_ID = "srv_harbor"
SFU_EVENTS = "sfu_events"

RELAY_TYPES = frozenset(
    {
        "rtc.offer.publish",
        "rtc.offer.subscribe",
        "rtc.answer.publish",
        "rtc.answer.subscribe",
        "rtc.ice.candidate",
    }
)

JOIN_NOT_FIRST = "first signaling message must be rtc.join"
TURN_CREDENTIAL_TTL_S = 30 * 60
TICKET_BODY_LIMIT = 1 << 20


class ChannelLookup(Protocol):
    def channel_type(self, channel_id: str) -> str | None: ...  # "text" | "voice" | None when unknown

    def has_server(self, server_id: str) -> bool: ...


@dataclass
class RtcTuning:
    """Server-side signaling timings and limits (wire §13); mutable at run time."""

    join_timeout_s: float = 12.0
    ping_interval_s: float = 20.0
    idle_timeout_s: float = 40.0
    queue_size: int = 64
    max_frame_bytes: int = 1 << 20

    @classmethod
    def from_config(cls, cfg: DevserverConfig) -> RtcTuning:
        base = cls()
        return cls(
            join_timeout_s=float(getattr(cfg, "rtc_join_timeout_s", base.join_timeout_s)),
            ping_interval_s=float(getattr(cfg, "rtc_ping_interval_s", base.ping_interval_s)),
            idle_timeout_s=float(getattr(cfg, "rtc_idle_timeout_s", base.idle_timeout_s)),
            queue_size=int(getattr(cfg, "rtc_queue_size", base.queue_size)),
            max_frame_bytes=int(getattr(cfg, "rtc_max_frame_bytes", base.max_frame_bytes)),
        )


def rtc_capabilities_patch(cfg: DevserverConfig) -> dict[str, Any]:
    """What the RTC module adds to the capability document (deep merge; ``{}`` = nothing)."""
    if SFU_EVENTS in cfg.features:
        return {"rtc": {"features": {SFU_EVENTS: True}}}
    return {}


def ice_servers(now: float) -> list[dict[str, Any]]:
    """The ticket's ICE list (maps, so keys sorted); the TURN entry is a ``.invalid`` placeholder."""
    return [
        {"urls": ["stun:stun.l.google.com:19302"]},
        {
            "credential": "dev-secret",
            "credential_type": "ephemeral",
            "expires_at": go_time(now + TURN_CREDENTIAL_TTL_S),
            "urls": ["turns:turn.example.invalid:5349"],
            "username": "dev-user",
        },
    ]


def media_kind(stream_kind: str) -> str | None:
    """``audio`` / ``video`` from a ``stream_kind`` (``audio_microphone``, ``video_screen`` …)."""
    if stream_kind.startswith("audio"):
        return "audio"
    if stream_kind.startswith("video"):
        return "video"
    return None


def _permission_for(stream_kind: str) -> str | None:
    if stream_kind == "video_camera":
        return "video"
    if stream_kind == "video_screen":
        return "screenshare"
    if stream_kind.startswith("audio"):
        return "speak"
    return None


@dataclass(eq=False)
class Participant:
    participant_id: str
    user_uid: str
    device_id: str
    channel_id: str
    permissions: dict[str, bool]
    joined_at: str
    queue: asyncio.Queue[str]
    tracks: dict[str, dict[str, str]] = field(default_factory=dict)
    dropped: int = 0
    left: bool = False

    def public(self) -> dict[str, Any]:
        """The six fields of ``rtc.joined.participants[]`` / ``rtc.participant.joined``."""
        return {
            "channel_id": self.channel_id,
            "device_id": self.device_id,
            "joined_at": self.joined_at,
            "participant_id": self.participant_id,
            "permissions": dict(self.permissions),
            "user_uid": self.user_uid,
        }

    def send(self, frame: str) -> None:
        """Queue one frame; a full queue (64) silently drops it, like the public backend."""
        try:
            self.queue.put_nowait(frame)
        except asyncio.QueueFull:
            self.dropped += 1


@dataclass(frozen=True)
class _Envelope:
    kind: str
    request_id: str
    payload: Any


_CLIENT_CLOSED = "client_closed"  # the client went away (close frame or TCP)
_TOO_BIG = "too_big"  # frame over the cap: close 1009
_DROP = "drop"  # malformed frame or rtc.leave: drop TCP without a close frame


class _Drop(Exception):
    """The frame is not a valid envelope: the server drops the connection."""


def _parse_envelope(data: bytes) -> _Envelope:
    try:
        value = decode_first(data)
        if not isinstance(value, dict):
            raise GoDecodeError("envelope is not an object")
        kind = str_field(value, "type")
        request_id = str_field(value, "request_id")
        str_field(value, "channel_id")  # must be a string when present; its value is ignored
    except GoDecodeError as exc:
        raise _Drop(str(exc)) from exc
    payload = go_field(value, "payload")
    return _Envelope(kind, request_id, None if is_missing(payload) else payload)


def _ticket_server_id(body: bytes, default: str) -> str:
    """``server_id`` of an optional ``{"server_id"}`` body; missing/invalid → ``default``."""
    server_id = ""
    try:
        value = decode_first(body)
    except GoDecodeError:
        value = None
    if isinstance(value, GoObject):
        for key, item in value.pairs:
            if key.lower().replace("\u017f", "s") == "server_id" and isinstance(item, str):
                server_id = item
    return server_id or default


class RtcHub:
    """Rooms keyed by ``channel_id`` (isolated), the ticket authority and the two endpoints."""

    def __init__(self, cfg: DevserverConfig, lookup: ChannelLookup, tuning: RtcTuning | None = None) -> None:
        self.cfg = cfg
        self.lookup = lookup
        self.tuning = tuning or RtcTuning.from_config(cfg)
        self.tickets = TicketAuthority(cfg.ticket_secret, cfg.ticket_ttl_s)
        self.rooms: dict[str, dict[str, Participant]] = {}
        self.denials: deque[str] = deque(maxlen=256)  # reasons of refused joins (never delivered)
        self.sockets: dict[str, WebSocket] = {}  # participant id -> socket (admin drop/inject)

    @property
    def sfu_events(self) -> bool:
        return SFU_EVENTS in self.cfg.features

    def default_server_id(self) -> str:
        """The join-ticket default: the capability document's server (``srv_harbor`` on the public seed).

        Uses the lookup's optional ``default_server_id`` (the devserver store has one, so other seeds
        default to their own server), else ``srv_harbor``.
        """
        value = getattr(self.lookup, "default_server_id", None)
        return value if isinstance(value, str) and value else DEFAULT_SERVER_ID

    def signaling_url(self) -> str:
        return self.cfg.signaling_url

    def room(self, channel_id: str) -> list[Participant]:
        return list(self.rooms.get(channel_id, {}).values())

    # ------------------------------------------------------------------ join ticket (HTTP)

    async def join_ticket(self, request: Request) -> Response:
        identity = http_identity(request, self.cfg.production)
        if self.cfg.production and not identity.asserted:
            return error_response(401, "unauthorized", "missing user identity headers")
        channel_id = str(request.path_params["channel_id"])
        body = bytearray()
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > TICKET_BODY_LIMIT:
                break
        server_id = _ticket_server_id(bytes(body), self.default_server_id())
        channel_type = self.lookup.channel_type(channel_id)
        if channel_type is None:
            return error_response(404, "channel_not_found", "unknown voice channel")
        if channel_type != "voice":
            return error_response(
                400, "invalid_channel_type", "join ticket can only be created for voice channels"
            )
        if not self.lookup.has_server(server_id):
            return error_response(404, "server_not_found", "unknown server")
        ticket, claims = self.tickets.issue(server_id, channel_id, identity.user_uid, identity.device_id)
        body_out = {
            "channel_id": claims.channel_id,
            "device_id": claims.device_id,
            "expires_at": go_time(claims.exp),
            "ice_servers": ice_servers(claims.iat),
            "permissions": dict(claims.permissions),
            "server_id": claims.server_id,
            "signaling_url": self.signaling_url(),
            "ticket": ticket,
            "user_uid": claims.user_uid,
        }
        return Response(
            (go_dumps(body_out) + "\n").encode("utf-8"),
            status_code=200,
            media_type="application/json",
            headers=dict(CORS_HEADERS),
        )

    async def plain_get(self, request: Request) -> Response:
        """A non-upgrade GET on the signaling path (gorilla's handshake error)."""
        headers = {**CORS_HEADERS, "Sec-Websocket-Version": "13", "X-Content-Type-Options": "nosniff"}
        return Response(b"Bad Request\n", 400, media_type="text/plain; charset=utf-8", headers=headers)

    # ------------------------------------------------------------------ signaling (WebSocket)

    async def signaling(self, websocket: WebSocket) -> None:
        await websocket.accept()
        alive = asyncio.create_task(
            keepalive(websocket, self.tuning.ping_interval_s, self.tuning.idle_timeout_s),
            name="rtc-keepalive",
        )
        try:
            await self._serve(websocket)
        finally:
            alive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await alive

    async def _next_frame(self, websocket: WebSocket) -> bytes | None:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return None
        raw = message.get("bytes")
        if raw is not None:
            return bytes(raw)
        text = message.get("text")
        return (text or "").encode("utf-8", "surrogatepass")

    def _too_big(self, data: bytes) -> bool:
        return len(data) > self.tuning.max_frame_bytes

    async def _deny(self, websocket: WebSocket, request_id: str, reason: str) -> None:
        """Queue ``rtc_join_denied`` and drop the socket at once: the frame is never delivered."""
        self.denials.append(reason)
        undelivered: asyncio.Queue[str] = asyncio.Queue(maxsize=1)
        undelivered.put_nowait(
            envelope(
                "rtc.error",
                request_id,
                "",
                {"code": "rtc_join_denied", "message": reason, "retryable": False},
            )
        )
        log.info("signaling join denied: %s", reason)
        await abort_websocket(websocket)

    async def _serve(self, websocket: WebSocket) -> None:
        try:
            first = await asyncio.wait_for(self._next_frame(websocket), timeout=self.tuning.join_timeout_s)
        except TimeoutError:
            await self._deny(websocket, "", "i/o timeout")
            return
        if first is None:
            return
        if self._too_big(first):
            self.denials.append("message too big")
            await _close(websocket, 1009)
            return
        try:
            join = _parse_envelope(first)
        except _Drop as exc:
            await self._deny(websocket, "", str(exc))
            return
        if join.kind != "rtc.join":
            await self._deny(websocket, join.request_id, JOIN_NOT_FIRST)
            return
        ticket = str_field(join.payload, "ticket", strict=False) if isinstance(join.payload, dict) else ""
        try:
            claims = self.tickets.redeem(ticket)
        except TicketError as exc:
            await self._deny(websocket, join.request_id, str(exc))
            return
        me = Participant(
            participant_id=str(uuid.uuid4()),
            user_uid=claims.user_uid,
            device_id=claims.device_id,
            channel_id=claims.channel_id,
            permissions=dict(claims.permissions),
            joined_at=go_time(time.time()),
            queue=asyncio.Queue(maxsize=max(1, self.tuning.queue_size)),
        )
        self._join(me, join.request_id)
        self.sockets[me.participant_id] = websocket
        writer = asyncio.create_task(_writer(websocket, me.queue), name="rtc-writer")
        ending = _CLIENT_CLOSED
        try:
            ending = await self._read_loop(websocket, me)
        finally:
            self.sockets.pop(me.participant_id, None)
            self._leave(me)
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
        if ending == _TOO_BIG:
            await _close(websocket, 1009)
        elif ending == _DROP:
            await abort_websocket(websocket)

    async def _read_loop(self, websocket: WebSocket, me: Participant) -> str:
        """Serve frames until the connection must end; returns how it ends."""
        while True:
            data = await self._next_frame(websocket)
            if data is None:
                return _CLIENT_CLOSED
            if self._too_big(data):
                return _TOO_BIG
            try:
                env = _parse_envelope(data)
            except _Drop:
                return _DROP
            try:
                keep_going = self._handle(me, env)
            except Exception:  # a bad frame must never take the server down
                log.exception("signaling frame handling failed")
                continue
            if not keep_going:
                return _DROP

    # ------------------------------------------------------------------ admin (tests)

    def select(self, user_uid: str | None) -> list[Participant]:
        """Joined participants, all or those of one uid."""
        return [
            p
            for room in self.rooms.values()
            for p in room.values()
            if user_uid is None or p.user_uid == user_uid
        ]

    async def drop(self, user_uid: str | None) -> int:
        """Abort the selected signaling sockets (TCP drop, no close frame): a server-side drop."""
        targets = self.select(user_uid)
        for participant in targets:
            websocket = self.sockets.get(participant.participant_id)
            if websocket is not None:
                await abort_websocket(websocket)
        return len(targets)

    def inject(self, user_uid: str | None, kind: str, payload: dict[str, Any]) -> int:
        """Send a server frame the public backend never sends (``rtc.kicked`` …) to the selected."""
        targets = self.select(user_uid)
        for participant in targets:
            participant.send(envelope(kind, "", participant.channel_id, sort_tree(payload)))
        return len(targets)

    # ------------------------------------------------------------------ room state

    def _join(self, me: Participant, request_id: str) -> None:
        room = self.rooms.setdefault(me.channel_id, {})
        others = list(room.values())
        room[me.participant_id] = me
        announce = envelope("rtc.participant.joined", "", me.channel_id, {"participant": me.public()})
        for other in others:
            other.send(announce)
        me.send(
            envelope(
                "rtc.joined",
                request_id,
                me.channel_id,
                {
                    "channel_id": me.channel_id,
                    "joined_at": me.joined_at,
                    "participant_id": me.participant_id,
                    "participants": [other.public() for other in others],
                },
            )
        )
        if self.sfu_events:
            for other in others:
                for track in other.tracks.values():
                    me.send(envelope("rtc.track.published", "", me.channel_id, dict(track)))

    def _leave(self, me: Participant) -> None:
        if me.left:
            return
        me.left = True
        room = self.rooms.get(me.channel_id)
        if room is None or room.get(me.participant_id) is not me:
            return
        del room[me.participant_id]
        if not room:
            del self.rooms[me.channel_id]
        others = list(room.values())
        if self.sfu_events:
            for track in me.tracks.values():
                frame = envelope("rtc.track.unpublished", "", me.channel_id, dict(track))
                for other in others:
                    other.send(frame)
        me.tracks.clear()
        gone = envelope(
            "rtc.participant.left",
            "",
            me.channel_id,
            {"participant": {"participant_id": me.participant_id, "user_uid": me.user_uid}},
        )
        for other in others:
            other.send(gone)

    # ------------------------------------------------------------------ frames after the join

    def _error(self, me: Participant, request_id: str, code: str, message: str, retryable: bool) -> None:
        me.send(
            envelope(
                "rtc.error",
                request_id,
                me.channel_id,
                {"code": code, "message": message, "retryable": retryable},
            )
        )

    def _handle(self, me: Participant, env: _Envelope) -> bool:
        """Process one frame; ``False`` means: drop the connection (``rtc.leave``)."""
        if env.kind in RELAY_TYPES:
            self._relay(me, env)
        elif env.kind == "rtc.media.state":
            self._media_state(me, env)
        elif env.kind == "rtc.ping":
            me.send(envelope("rtc.pong", env.request_id, me.channel_id, {"ts": go_time_nanos()}))
        elif env.kind == "rtc.leave":
            return False
        else:
            self._error(me, env.request_id, "rtc_unknown_event", "unsupported signaling event type", False)
        return True

    def _relay(self, me: Participant, env: _Envelope) -> None:
        payload = relay_payload(env.payload)
        payload["from_participant_id"] = me.participant_id
        frame = envelope(env.kind, env.request_id, me.channel_id, sort_tree(payload))
        target = payload.get("target_participant_id")
        room = self.rooms.get(me.channel_id, {})
        if isinstance(target, str) and target:
            destination = room.get(target)
            if destination is None:
                self._error(
                    me, env.request_id, "rtc_target_not_found", "target participant is not available", True
                )
                return
            destination.send(frame)
            return
        for other in list(room.values()):
            if other is not me:
                other.send(frame)

    def _media_state(self, me: Participant, env: _Envelope) -> None:
        payload = relay_payload(env.payload)
        stream_kind = payload.get("stream_kind")
        stream_kind = stream_kind if isinstance(stream_kind, str) else ""
        permission = _permission_for(stream_kind)
        if permission is not None and not me.permissions.get(permission, False):
            self._error(me, env.request_id, "rtc_media_denied", "media permission denied", False)
            return
        payload["participant_id"] = me.participant_id
        payload["user_uid"] = me.user_uid
        frame = envelope("rtc.media.state", env.request_id, me.channel_id, sort_tree(payload))
        room = list(self.rooms.get(me.channel_id, {}).values())
        for member in room:
            member.send(frame)
        if self.sfu_events:
            self._track_event(me, payload, stream_kind, room)

    def _track_event(
        self, me: Participant, payload: dict[str, Any], stream_kind: str, room: list[Participant]
    ) -> None:
        action = payload.get("action")
        kind = media_kind(stream_kind)
        if action not in ("start", "stop") or kind is None:
            return
        track_id = payload.get("track_id")
        stream_id = payload.get("stream_id")
        track = {
            "media_kind": kind,
            "participant_id": me.participant_id,
            "stream_id": stream_id if isinstance(stream_id, str) else "",
            "stream_kind": stream_kind,
            "track_id": track_id if isinstance(track_id, str) else "",
        }
        key = track["track_id"] or track["stream_id"] or stream_kind
        if action == "start":
            me.tracks[key] = track
            kind_name = "rtc.track.published"
        else:
            me.tracks.pop(key, None)
            kind_name = "rtc.track.unpublished"
        frame = envelope(kind_name, "", me.channel_id, track)
        for other in room:
            if other is not me:
                other.send(frame)


async def _writer(websocket: WebSocket, queue: asyncio.Queue[str]) -> None:
    """Drain one participant's outbound queue into its socket."""
    try:
        while True:
            await websocket.send_text(await queue.get())
    except asyncio.CancelledError:
        raise
    except Exception:  # the socket is gone; the reader sees the disconnect
        return


async def _close(websocket: WebSocket, code: int) -> None:
    with contextlib.suppress(Exception):
        await websocket.close(code=code)


def install_rtc(app: Starlette, cfg: DevserverConfig, lookup: ChannelLookup) -> None:
    """Add the join-ticket route and the signaling socket (plus its plain-GET 400) to ``app``."""
    hub = RtcHub(cfg, lookup)
    app.state.rtc_hub = hub
    routes: list[BaseRoute] = [
        Route(JOIN_TICKET_ROUTE, hub.join_ticket, methods=["POST"], name="rtc_join_ticket"),
        WebSocketRoute(SIGNALING_ROUTE, hub.signaling, name="rtc_signaling"),
        Route(SIGNALING_ROUTE, hub.plain_get, methods=["GET"], name="rtc_signaling_plain_get"),
    ]
    app.router.routes[0:0] = routes


def get_rtc_hub(app: Starlette) -> RtcHub:
    """The hub ``install_rtc`` attached to ``app`` (tests read denials / tune timings)."""
    hub = app.state.rtc_hub
    assert isinstance(hub, RtcHub)
    return hub
