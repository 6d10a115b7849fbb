"""One member's call: the backend's signaling socket and the p2p mesh (wire §11.3, §11.4 A and B).

``Call`` runs the join (capability probe, join ticket with the member's identity headers,
``rtc.join`` at once), keeps one ``RTCPeerConnection`` per remote participant (the newcomer offers,
every relay frame targeted, untargeted SFU-style offers ignored), takes PCM participants' audio
from ``rtc.media.state`` frames and sends the member's audio to them the same way, and drives the
pure ``CallMachine`` (reconnect ladder, kick, room full).  Audio in: ``push_mic`` (the member's
processed microphone from the bridge).  Audio out: ``sources()`` for the bridge's mixer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.sdp import candidate_from_sdp
from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from services.core.contracts.chat import ServerRecord
from services.core.contracts.media import (
    KICKED_MESSAGE,
    MAX_PARTICIPANTS,
    NO_P2P_MESSAGE,
    NO_RTC_MESSAGE,
    ROOM_FULL_MESSAGE,
    SELF,
    VoiceParticipant,
    VoicePrefs,
    VoiceStatus,
)
from services.core.contracts.wire import Capabilities, IceServer, JoinTicket
from services.core.rtc import (
    MAX_SIGNALING_FRAME_BYTES,
    MIC_STREAM_KIND,
    PCM_FRAME_SAMPLES,
    PCM_STREAM_KIND,
    MicState,
    PcmFrame,
    SignalingFrameError,
    frame,
    identity_headers,
    parse_frame,
    pcm_payload,
    usable_ice_servers,
)
from services.media.audio import (
    FRAME_SAMPLES,
    SILENCE,
    OpusPacketEncoder,
    PacketTrack,
    PayloadConverter,
    Samples,
    SourceBuffer,
    Wake,
    abs_sum,
    low_latency_receivers,
    silence_packet,
)
from services.media.domain import (
    CallMachine,
    CallPolicy,
    PcmStreamOrder,
    Reconnect,
    SpeakingDetector,
    peer_failure_action,
    room_full,
    rtc_error_action,
    rtc_error_reason,
)

log = logging.getLogger("openchat.media.call")

HTTP_TIMEOUT_S = 8.0
CLOSE_TIMEOUT_S = 0.5  # the backend drops the socket without a close frame after rtc.leave
PCM_STREAM_FRAMES = 50  # the member's audio to PCM participants: ~1 s streams (§11.4 B)
PCM_MAX_FRAMES_PER_S = 100  # per PCM participant; more is dropped (a sender at twice real time)
PCM_OUT_QUEUE = 50
MAX_ICE_CANDIDATE_CHARS = 2048
MAX_SDP_CHARS = 64 * 1024
RESTART_WAIT_S = 5.0  # after an ICE failure, the higher participant id waits this long for the other's offer


class JoinFailed(Exception):
    """A join attempt failed; ``fatal`` ones (room full) are never retried."""

    def __init__(self, code: str, reason: str, fatal: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.fatal = fatal


class CallEnded(Exception):
    """The signaling said this session is over (raised out of the read loop)."""


class Kicked(CallEnded):
    pass


class RtcFatal(CallEnded):
    """A fatal ``rtc.error`` (features 8.2): error state with the server's message, no retry."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Resync(CallEnded):
    """A full re-join was asked for (a retryable "connection closed" ``rtc.error``, a peer whose
    ICE restart failed): the reconnect ladder takes over."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Person:
    """A remote participant of the call."""

    participant_id: str
    user_uid: str
    order: int
    display_name: str = ""
    mic_muted: bool = False
    deafened: bool = False
    transport: str = "pending"  # webrtc | pcm | pending | none
    speaking: bool = False
    source: SourceBuffer = field(default_factory=SourceBuffer)
    detector: SpeakingDetector = field(default_factory=SpeakingDetector)
    pcm: PcmStreamOrder = field(default_factory=PcmStreamOrder)
    pcm_seen: bool = False
    pcm_window_start: float = 0.0
    pcm_window_count: int = 0
    pc: RTCPeerConnection | None = None
    out: PacketTrack | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    restarted: bool = False
    trickled: int = 0  # remote ICE candidates applied (browser/Electron peers trickle)

    def public(self) -> VoiceParticipant:
        transport = self.transport if self.transport in ("webrtc", "pcm", "pending", "none") else "none"
        return VoiceParticipant(
            participant_id=self.participant_id,
            user_uid=self.user_uid,
            display_name=self.display_name[:128],
            mic_muted=self.mic_muted,
            deafened=self.deafened,
            transport=transport,
            speaking=self.speaking,
        )


def signaling_url_for(ticket_url: str, base_url: str) -> str:
    """The ticket's ``signaling_url``, with its origin rewritten to the server's base URL when the
    ticket names a loopback host the stack does not use to reach that server (a backend configured
    with the default ``OPENCHAT_PUBLIC_BASE_URL``; wire §14, §16)."""
    sig, base = urlsplit(ticket_url), urlsplit(base_url)
    loopback = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
    if sig.hostname in loopback and sig.netloc != base.netloc:
        scheme = "wss" if base.scheme == "https" else "ws"
        return urlunsplit((scheme, base.netloc, sig.path, sig.query, ""))
    return ticket_url


def _rtc_ice(servers: list[IceServer]) -> list[RTCIceServer]:
    return [RTCIceServer(urls=s.urls, username=s.username, credential=s.credential) for s in servers]


class Call:
    """One call of one member (at most one per member: the service leaves the old one first)."""

    def __init__(
        self,
        *,
        member: str,
        server_id: str,
        channel_id: str,
        record: Callable[[], ServerRecord],
        http: httpx.AsyncClient,
        prefs: Callable[[], VoicePrefs],
        on_change: Callable[[Call], None],
        on_speaking: Callable[[Call, str, str, bool], None],
        ice_filter: Callable[[list[IceServer]], list[IceServer]] | None = None,
        jitter_prefetch: int = 0,
    ) -> None:
        self.jitter_prefetch = jitter_prefetch
        self.audio_wake = Wake()  # set whenever any participant's audio arrives
        self.mic_encoder = OpusPacketEncoder()  # the member's processed microphone, once for all peers
        self.member = member
        self.server_id = server_id
        self.channel_id = channel_id
        self._record = record
        self._http = http
        self._prefs = prefs
        self._on_change = on_change
        self._on_speaking = on_speaking
        self._ice_filter = ice_filter or (lambda servers: servers)
        self.machine = CallMachine()
        self.policy = CallPolicy()
        self.participant_id: str | None = None
        self.people: dict[str, Person] = {}
        self._order = 0
        self._ws: ClientConnection | None = None
        self._ice: list[IceServer] = []
        self._task: asyncio.Task[None] | None = None
        self._first: asyncio.Future[VoiceStatus] = asyncio.get_running_loop().create_future()
        self._leaving = False
        self._uid = ""
        self.self_detector = SpeakingDetector()
        self.self_speaking = False
        self.bridge_connected = False
        self._pcm_out: asyncio.Queue[str] = asyncio.Queue(maxsize=PCM_OUT_QUEUE)
        self._pcm_stream = ""
        self._pcm_seq = 0
        self._pcm_streams = 0
        self.pcm_dropped = 0
        self._housekeeping: asyncio.Task[None] | None = None
        self._mic_stream_id = f"mic_{uuid.uuid4().hex[:12]}"
        self._base = ""
        self._headers: dict[str, str] = {}
        self._error_code = "voice_error"
        self._background: asyncio.Task[None] | None = None
        self._rejoin_reason = ""
        self._closer: asyncio.Task[None] | None = None

    # -- public ------------------------------------------------------------------------------
    async def start(self, wait_s: float = 30.0) -> VoiceStatus:
        """Start joining; return once the first attempt is active or failed (or ``wait_s``)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"call-{self.member}")
            self._housekeeping = asyncio.create_task(self._tick(), name=f"call-tick-{self.member}")
        try:
            return await asyncio.wait_for(asyncio.shield(self._first), wait_s)
        except TimeoutError:
            return self.status()

    async def leave(self) -> None:
        self._leaving = True
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.send(frame("rtc.leave", {}, request_id="leave"))
        await self._close_socket()
        for task in (self._task, self._housekeeping):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        await self._teardown_peers()
        self.machine.handle("left")
        self._resolve_first()
        self._changed()

    def status(self) -> VoiceStatus:
        people = sorted(self.people.values(), key=lambda p: p.order)[:MAX_PARTICIPANTS]
        return VoiceStatus(
            state=self.machine.state,
            server_id=self.server_id,
            channel_id=self.channel_id,
            participant_id=self.participant_id,
            participants=[p.public() for p in people],
            prefs=self._prefs(),
            reason=self.machine.reason[:500],
            attempt=self.machine.attempt,
            bridge_connected=self.bridge_connected,
            speaking=self.self_speaking,
        )

    def sources(self) -> list[SourceBuffer]:
        return [p.source for p in self.people.values()]

    def push_mic(self, samples: Samples, now: float, opus: bytes | None = None) -> None:
        """The member's processed microphone (gain and mute applied): to every peer, to PCM
        participants, and through the member's own speaking detector.  ``opus`` is the client's
        own packet for exactly these samples (unprocessed audio): forwarded to the peers as it is;
        otherwise the frame is encoded once here for all of them (ADR 0016)."""
        prefs = self._prefs()
        if prefs.mic_muted or prefs.deafened:
            self._set_self_speaking(self.self_detector.reset())
        else:
            self._set_self_speaking(self.self_detector.feed(abs_sum(samples), len(samples), now))
        if self.machine.state != "active":
            return
        outs = [person.out for person in self.people.values() if person.out is not None]
        if outs:
            if opus is None:
                opus = silence_packet() if samples is SILENCE else self.mic_encoder.encode(samples)
            if opus is not None:
                for out in outs:
                    out.push(opus)
        if self._pcm_wanted():
            self._queue_pcm(samples)

    async def prefs_changed(self) -> None:
        prefs = self._prefs()
        if prefs.mic_muted or prefs.deafened:
            self._set_self_speaking(self.self_detector.reset())
        await self._send_mic_state("start")
        self._changed()

    # -- the run loop ------------------------------------------------------------------------
    async def _run(self) -> None:
        self.machine.handle("join_requested")
        self._changed()
        while not self._leaving:
            self._rejoin_reason = ""
            try:
                await self._attempt()
                reason, self._rejoin_reason = self._rejoin_reason or "signaling socket closed", ""
                effects = self.machine.handle("signal_disconnected", reason)
            except Kicked:
                effects = self.machine.handle("kicked", KICKED_MESSAGE)
            except RtcFatal as exc:
                log.info("voice error from the server", extra={"member": self.member, "code": exc.code})
                effects = self.machine.handle("fatal_error", exc.reason)
                self._error_code = exc.code or "rtc_error"
            except Resync as exc:
                effects = self.machine.handle("signal_disconnected", exc.reason)
            except JoinFailed as exc:
                log.info(
                    "voice join failed",
                    extra={"member": self.member, "server_id": self.server_id, "reason": exc.reason},
                )
                effects = self.machine.handle("fatal_error" if exc.fatal else "join_failed", exc.reason)
                self._error_code = exc.code
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let one bad call take the service down
                log.exception("voice call failed", extra={"member": self.member})
                effects = self.machine.handle("join_failed", f"voice call failed: {type(exc).__name__}")
            await self._close_socket()
            await self._teardown_peers()
            self._resolve_first()
            self._changed()
            retry = [e for e in effects if isinstance(e, Reconnect)]
            if not retry or self._leaving:
                return
            # the reconnect ladder: the server's reconnect_backoff_ms, else 1, 2, 4, 8 s (8.2, D12)
            await asyncio.sleep(retry[0].delay_s)
            self.machine.handle("join_requested")
            self._changed()

    @property
    def error_code(self) -> str:
        return self._error_code

    async def _attempt(self) -> None:
        try:
            record = self._record()
        except Exception as exc:
            raise JoinFailed(
                "server_not_joined", f"server {self.server_id} is not joined", fatal=True
            ) from exc
        self._uid = record.user_uid
        headers = identity_headers(record.user_uid, record.device_id)
        base = record.base_url.rstrip("/")
        self._base, self._headers = base, headers
        caps = await self._capabilities(base, headers)
        if caps.rtc is None:
            raise JoinFailed("rtc_unsupported", NO_RTC_MESSAGE)
        if "p2p" not in caps.rtc.topologies:
            raise JoinFailed("p2p_unsupported", NO_P2P_MESSAGE)
        self.policy = CallPolicy.from_server(caps.rtc.connection_policy, caps.limits.max_call_participants)
        self.machine.policy = self.policy
        ticket = await self._ticket(base, headers, record.backend_id)  # the backend's id (#14)
        self._ice = self._ice_filter(usable_ice_servers(ticket.ice_servers))
        url = signaling_url_for(ticket.signaling_url, base)
        joined = await self._join_socket(url, ticket.ticket)
        others = joined.get("participants")
        others = [p for p in others if isinstance(p, dict)] if isinstance(others, list) else []
        if room_full(len(others), self.policy.max_participants):
            await self._close_socket()
            raise JoinFailed(
                "room_full",
                f"{ROOM_FULL_MESSAGE} ({self.policy.max_participants} participants at most)",
                fatal=True,
            )
        pid = joined.get("participant_id")
        self.participant_id = pid if isinstance(pid, str) else None
        self.machine.handle("join_succeeded")
        log.info(
            "voice joined", extra={"member": self.member, "server_id": self.server_id, "others": len(others)}
        )
        for entry in others[:MAX_PARTICIPANTS]:
            person = self._add_person(entry)
            if person is not None:
                self._spawn(person, self._offer_to(person))
        self._resolve_first()
        self._changed()
        await self._send_mic_state("start")
        self._background = asyncio.create_task(self._resolve_names(base, headers))
        await self._read_loop()

    async def _capabilities(self, base: str, headers: dict[str, str]) -> Capabilities:
        try:
            resp = await self._http.get(
                f"{base}/v1/client/capabilities", headers=headers, timeout=HTTP_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            raise JoinFailed("server_unreachable", f"server unreachable: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            raise JoinFailed("rtc_unsupported", f"{NO_RTC_MESSAGE} (capabilities: HTTP {resp.status_code})")
        try:
            return Capabilities.model_validate_json(resp.content[: 1 << 20])
        except ValidationError as exc:
            raise JoinFailed("rtc_unsupported", f"{NO_RTC_MESSAGE} (invalid capability document)") from exc

    async def _ticket(self, base: str, headers: dict[str, str], backend_id: str) -> JoinTicket:
        url = f"{base}/v1/rtc/channels/{self.channel_id}/join-ticket"
        try:
            resp = await self._http.post(
                url, headers=headers, json={"server_id": backend_id}, timeout=HTTP_TIMEOUT_S
            )
        except httpx.HTTPError as exc:
            raise JoinFailed("server_unreachable", f"server unreachable: {type(exc).__name__}") from exc
        if resp.status_code != 200:
            message = ""
            with contextlib.suppress(ValueError, AttributeError):
                message = str(resp.json().get("message", ""))[:200]
            raise JoinFailed(
                "ticket_refused",
                f"join ticket refused (HTTP {resp.status_code}{': ' + message if message else ''})",
            )
        try:
            return JoinTicket.model_validate_json(resp.content[: 1 << 20])
        except ValidationError as exc:
            raise JoinFailed("ticket_refused", "join ticket refused (invalid ticket document)") from exc

    async def _join_socket(self, url: str, ticket: str) -> dict[str, Any]:
        """Connect, send ``rtc.join`` at once, wait for ``rtc.joined`` (a close first = failed)."""
        timeout = self.policy.join_timeout_s
        try:
            self._ws = await asyncio.wait_for(
                connect(
                    url,
                    close_timeout=CLOSE_TIMEOUT_S,
                    max_size=MAX_SIGNALING_FRAME_BYTES,
                    open_timeout=timeout,
                    ping_interval=15,
                    ping_timeout=30,
                ),
                timeout,
            )
            await self._ws.send(
                frame("rtc.join", {"ticket": ticket}, request_id=f"join_{uuid.uuid4().hex[:8]}")
            )
            async with asyncio.timeout(timeout):
                while True:
                    raw = await self._ws.recv()
                    try:
                        env = parse_frame(raw)
                    except SignalingFrameError as exc:
                        log.warning("bad signaling frame skipped", extra={"error": str(exc)})
                        continue
                    if env.type == "rtc.joined":
                        return env.payload
                    if env.type == "rtc.error":
                        raise JoinFailed(
                            "join_denied", f"join denied: {str(env.payload.get('message', ''))[:200]}"
                        )
        except (ConnectionClosed, OSError, WebSocketException) as exc:
            raise JoinFailed("join_failed", "signaling socket closed before rtc.joined") from exc
        except TimeoutError as exc:
            raise JoinFailed("join_timeout", f"no rtc.joined within {timeout:g} s") from exc

    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        writer = asyncio.create_task(self._pcm_writer(ws), name="pcm-writer")
        try:
            async for raw in ws:
                try:
                    env = parse_frame(raw)
                except SignalingFrameError as exc:
                    log.warning("bad signaling frame skipped", extra={"error": str(exc)})
                    continue
                try:
                    await self._handle(env.type, env.payload)
                except CallEnded:
                    raise
                except Exception as exc:  # one bad frame never ends the call
                    log.warning(
                        "signaling frame failed",
                        extra={"type": env.type[:64], "error": f"{type(exc).__name__}"},
                    )
        except ConnectionClosed:
            pass
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer

    async def _close_socket(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), CLOSE_TIMEOUT_S * 2)

    # -- frames --------------------------------------------------------------------------------
    async def _handle(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "rtc.participant.joined":
            entry = payload.get("participant")
            if isinstance(entry, dict):
                person = self._add_person(entry)
                if person is not None:
                    self._spawn(person, self._await_offer(person))
                    self._spawn(person, self._resolve_names(self._base, self._headers))
                    self._changed()
        elif kind == "rtc.participant.left":
            entry = payload.get("participant")
            pid = entry.get("participant_id") if isinstance(entry, dict) else None
            if isinstance(pid, str) and pid in self.people:
                await self._drop_person(self.people.pop(pid))
                self._changed()
        elif kind.startswith("rtc.offer."):
            await self._on_offer(payload)
        elif kind.startswith("rtc.answer."):
            await self._on_answer(payload)
        elif kind == "rtc.ice.candidate":
            await self._on_candidate(payload)
        elif kind == "rtc.media.state":
            self._on_media_state(payload)
        elif kind == "rtc.kicked":
            raise Kicked
        elif kind == "rtc.error":
            code, message = str(payload.get("code", ""))[:64], str(payload.get("message", ""))[:500]
            retryable = payload.get("retryable") is True
            action = rtc_error_action(code, message, retryable)
            log.info("signaling error", extra={"code": code, "retryable": retryable, "action": action})
            if action == "fatal":
                raise RtcFatal(code, rtc_error_reason(code, message))
            if action == "resync":
                raise Resync(rtc_error_reason(code, message))

    def _add_person(self, entry: dict[str, Any]) -> Person | None:
        pid, uid = entry.get("participant_id"), entry.get("user_uid")
        if not isinstance(pid, str) or not pid or len(pid) > 128 or pid == self.participant_id:
            return None
        if pid in self.people:
            return self.people[pid]
        if len(self.people) >= MAX_PARTICIPANTS:
            log.warning("participant bound reached; ignoring one", extra={"member": self.member})
            return None
        self._order += 1
        person = Person(pid, uid[:256] if isinstance(uid, str) else "", self._order)
        person.source.wake = self.audio_wake
        self.people[pid] = person
        return person

    def _spawn(self, person: Person, coro: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("peer task failed", extra={"error": f"{type(exc).__name__}: {str(exc)[:200]}"})

        task = asyncio.create_task(guarded())
        person.tasks.append(task)
        person.tasks = [t for t in person.tasks if not t.done() or t is task]

    def _new_pc(self, person: Person) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=_rtc_ice(self._ice)))
        out = PacketTrack()
        pc.addTrack(out)
        low_latency_receivers(pc, self.jitter_prefetch)
        person.pc, person.out = pc, out

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._spawn(person, self._read_remote(person, track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if person.pc is not pc:
                return
            if pc.connectionState == "connected":
                person.restarted = False  # a later failure may restart again
            if pc.connectionState == "connected" and person.transport != "webrtc":
                person.transport = "webrtc"
                if person.trickled:
                    log.info("peer connected with trickled ICE", extra={"candidates": person.trickled})
                self._changed()
            elif pc.connectionState in ("failed", "closed"):
                # aiortc reports an expired ICE consent (the path broke) as "closed"; a connection
                # the service closes itself is no longer ``person.pc`` here
                await self._peer_failed(person)

        return pc

    async def _offer_to(self, person: Person, restart: bool = False) -> None:
        """The newcomer offers to everyone already in the room (targeted); also the offer of an
        ICE restart (``restart``: no answer in time → a full re-join, not "no WebRTC")."""
        pc = self._new_pc(person)
        await pc.setLocalDescription(await pc.createOffer())
        await self._send(
            "rtc.offer.publish",
            {
                "type": "offer",
                "sdp": pc.localDescription.sdp,
                "direction": "publish",
                "target_participant_id": person.participant_id,
            },
        )
        await asyncio.sleep(self.policy.answer_timeout_s)
        if person.pc is pc and pc.remoteDescription is None:
            if restart:
                self._request_rejoin("ICE restart got no answer")
            else:
                await self._no_webrtc(person, "no answer")

    async def _await_offer(self, person: Person) -> None:
        """An existing participant waits for the newcomer's offer; none in time → no WebRTC."""
        await asyncio.sleep(self.policy.answer_timeout_s)
        if person.pc is None and person.participant_id in self.people:
            await self._no_webrtc(person, "no offer")

    async def _no_webrtc(self, person: Person, why: str) -> None:
        """A participant without WebRTC (the PCM joiner tool) times out alone (§11.4 B)."""
        await self._close_pc(person)
        person.transport = "pcm" if person.pcm_seen else "none"
        log.info("participant has no WebRTC", extra={"member": self.member, "why": why})
        self._changed()

    async def _on_offer(self, payload: dict[str, Any]) -> None:
        target, sender, sdp = (
            payload.get("target_participant_id"),
            payload.get("from_participant_id"),
            payload.get("sdp"),
        )
        if not target or target != self.participant_id:
            return  # untargeted SFU-style offers (the Electron client's) and others' offers
        if not isinstance(sender, str) or not isinstance(sdp, str) or len(sdp) > MAX_SDP_CHARS:
            return
        person = self.people.get(sender) or self._add_person({"participant_id": sender, "user_uid": ""})
        if person is None:
            return
        await self._close_pc(person)  # a renegotiation or a restarted peer: start clean
        pc = self._new_pc(person)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        low_latency_receivers(pc, self.jitter_prefetch)
        await pc.setLocalDescription(await pc.createAnswer())
        await self._send(
            "rtc.answer.publish",
            {
                "type": "answer",
                "sdp": pc.localDescription.sdp,
                "direction": "publish",
                "target_participant_id": sender,
            },
        )

    async def _on_answer(self, payload: dict[str, Any]) -> None:
        target, sender, sdp = (
            payload.get("target_participant_id"),
            payload.get("from_participant_id"),
            payload.get("sdp"),
        )
        if target != self.participant_id or not isinstance(sender, str) or not isinstance(sdp, str):
            return
        person = self.people.get(sender)
        if person is None or person.pc is None or person.pc.signalingState != "have-local-offer":
            return
        await person.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp[:MAX_SDP_CHARS], type="answer"))

    async def _on_candidate(self, payload: dict[str, Any]) -> None:
        """Trickled ICE from browser/Electron peers (aiortc peers put candidates in the SDP)."""
        sender, text = payload.get("from_participant_id"), payload.get("candidate")
        target = payload.get("target_participant_id")
        if target and target != self.participant_id:
            return
        person = self.people.get(sender) if isinstance(sender, str) else None
        if person is None or person.pc is None or not isinstance(text, str) or not text:
            return
        if len(text) > MAX_ICE_CANDIDATE_CHARS:
            return
        candidate = candidate_from_sdp(text.split(":", 1)[1] if text.startswith("candidate:") else text)
        mid, index = payload.get("sdp_mid"), payload.get("sdp_mline_index")
        candidate.sdpMid = mid if isinstance(mid, str) else None
        candidate.sdpMLineIndex = int(index) if isinstance(index, int | float) else None
        await person.pc.addIceCandidate(candidate)
        person.trickled += 1

    def _on_media_state(self, payload: dict[str, Any]) -> None:
        pid = payload.get("participant_id")
        if not isinstance(pid, str) or pid == self.participant_id:
            return  # own echoes (the backend sends media state back to the sender too)
        person = self.people.get(pid)
        if person is None:
            return
        if payload.get("stream_kind") == PCM_STREAM_KIND:
            self._on_pcm(person, payload)
            return
        try:
            state = MicState.model_validate(payload)
        except ValidationError:
            return
        changed = False
        if state.mic_muted is not None and state.mic_muted != person.mic_muted:
            person.mic_muted, changed = state.mic_muted, True
        if state.deafened is not None and state.deafened != person.deafened:
            person.deafened, changed = state.deafened, True
        if changed:
            self._changed()

    def _on_pcm(self, person: Person, payload: dict[str, Any]) -> None:
        if person.transport == "webrtc":
            return  # the same audio arrives over WebRTC: never twice
        now = time.monotonic()
        if now - person.pcm_window_start >= 1.0:
            person.pcm_window_start, person.pcm_window_count = now, 0
        person.pcm_window_count += 1
        if person.pcm_window_count > PCM_MAX_FRAMES_PER_S:
            return  # bounded PCM rate
        try:
            pcm = PcmFrame.model_validate(payload)
            chunk = pcm.samples()
        except (ValidationError, ValueError) as exc:
            log.info("bad PCM frame skipped", extra={"error": str(exc)[:200]})
            return
        if not person.pcm_seen or person.transport != "pcm":
            person.pcm_seen = True
            person.source.depth = 5  # frames over TCP through the backend arrive in bursts
            if person.transport in ("pending", "none"):
                person.transport = "pcm"
                self._changed()
        for ready in person.pcm.push(pcm.stream_id, pcm.seq, chunk, pcm.eof):
            samples = np.frombuffer(ready, dtype="<i2").astype(np.int16)
            if len(samples) < PCM_FRAME_SAMPLES:
                samples = np.concatenate(
                    [samples, np.zeros(PCM_FRAME_SAMPLES - len(samples), dtype=np.int16)]
                )
            self._heard(person, samples, now)

    # -- audio ---------------------------------------------------------------------------------
    async def _read_remote(self, person: Person, track: MediaStreamTrack) -> None:
        conv = PayloadConverter()
        while True:
            try:
                decoded = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            for chunk in conv.push(decoded):  # type: ignore[arg-type]
                self._heard(person, chunk.samples, now, chunk.opus)

    def _heard(self, person: Person, samples: Samples, now: float, opus: bytes | None = None) -> None:
        person.source.push(samples, opus)
        change = person.detector.feed(abs_sum(samples), len(samples), now)
        if change is not None:
            person.speaking = change
            self._on_speaking(self, person.participant_id, person.user_uid, change)

    def _set_self_speaking(self, change: bool | None) -> None:
        if change is not None and change != self.self_speaking:
            self.self_speaking = change
            self._on_speaking(self, SELF, self._uid, change)

    async def _tick(self) -> None:
        """Speaking of sources that went quiet (no more frames) expires too."""
        while True:
            await asyncio.sleep(0.1)
            now = time.monotonic()
            for person in list(self.people.values()):
                change = person.detector.tick(now)
                if change is not None:
                    person.speaking = change
                    self._on_speaking(self, person.participant_id, person.user_uid, change)
            self._set_self_speaking(self.self_detector.tick(now))

    # -- PCM towards participants without WebRTC (§11.4 B) -------------------------------------
    def _pcm_wanted(self) -> bool:
        return any(p.transport in ("pcm", "none") for p in self.people.values())

    def _queue_pcm(self, samples: Samples) -> None:
        if self._pcm_seq == 0:
            self._pcm_streams += 1
            self._pcm_stream = f"oc_{uuid.uuid4().hex[:16]}"
        seq = self._pcm_seq
        eof = seq == PCM_STREAM_FRAMES - 1
        payload = pcm_payload(
            stream_id=self._pcm_stream,
            file_name=f"openchat-{self._pcm_stream}.pcm",
            seq=seq,
            total_seq=PCM_STREAM_FRAMES,
            chunk=samples.astype("<i2").tobytes(),
            eof=eof,
            transmitted_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            transmitter_uid=self._uid,
            loop_iteration=self._pcm_streams,
        )
        self._pcm_seq = 0 if eof else seq + 1
        try:
            self._pcm_out.put_nowait(frame("rtc.media.state", payload))
        except asyncio.QueueFull:
            self.pcm_dropped += 1  # dropped under backpressure (a stream with a hole is discarded)

    async def _pcm_writer(self, ws: ClientConnection) -> None:
        while True:
            text = await self._pcm_out.get()
            await ws.send(text)

    # -- helpers -------------------------------------------------------------------------------
    async def _send(self, kind: str, payload: dict[str, Any]) -> None:
        ws = self._ws
        if ws is None:
            return
        with contextlib.suppress(ConnectionClosed):
            await ws.send(
                frame(kind, payload, request_id=f"{kind.rsplit('.', 1)[-1]}_{uuid.uuid4().hex[:8]}")
            )

    async def _send_mic_state(self, action: str) -> None:
        prefs = self._prefs()
        await self._send(
            "rtc.media.state",
            {
                "mic_muted": prefs.mic_muted,
                "deafened": prefs.deafened,
                "stream_kind": MIC_STREAM_KIND,
                "stream_id": self._mic_stream_id,
                "track_id": f"{self._mic_stream_id}_audio",
                "action": action,
            },
        )

    async def _peer_failed(self, person: Person) -> None:
        """ICE failed with one peer (D12): with ``ice_restart_enabled`` that peer is renegotiated
        once before anything else (aiortc has no in-place ICE restart: a fresh connection); when
        the restart fails too, or the policy does not allow one, the call re-joins in full."""
        if peer_failure_action(self.policy.ice_restart, person.restarted) == "restart":
            person.restarted = True
            log.info("peer connection failed: ICE restart", extra={"member": self.member})
            self._spawn(person, self._restart_ice(person))
        else:
            self._request_rejoin("peer connection failed")

    async def _restart_ice(self, person: Person) -> None:
        """The lower participant id offers at once; the higher one waits a little for that offer
        (both sides see the failure), then offers itself (a peer that never restarts)."""
        failed = person.pc
        if self.participant_id is None or self.participant_id > person.participant_id:
            await asyncio.sleep(min(self.policy.answer_timeout_s, RESTART_WAIT_S))
            if person.pc is not failed:
                return  # their offer came and was answered (_on_offer)
        await self._close_pc(person)
        await self._offer_to(person, restart=True)

    def _request_rejoin(self, reason: str) -> None:
        """A full re-join through the reconnect ladder: close the signaling socket; the read loop
        ends and ``_run`` takes it as a disconnect with ``reason``."""
        if self._leaving or self._ws is None or self._rejoin_reason:
            return
        log.info("full re-join", extra={"member": self.member, "reason": reason})
        self._rejoin_reason = reason
        self._closer = asyncio.create_task(self._close_socket())

    async def _close_pc(self, person: Person) -> None:
        pc, person.pc = person.pc, None
        if person.out is not None:
            person.out.stop()
            person.out = None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    async def _drop_person(self, person: Person) -> None:
        for task in person.tasks:
            if task is not asyncio.current_task():
                task.cancel()
        await self._close_pc(person)
        if person.speaking:
            person.speaking = False
            self._on_speaking(self, person.participant_id, person.user_uid, False)

    async def _teardown_peers(self) -> None:
        people, self.people = list(self.people.values()), {}
        for person in people:
            await self._drop_person(person)
        self.participant_id = None
        while not self._pcm_out.empty():
            self._pcm_out.get_nowait()
        self._pcm_seq = 0

    async def _resolve_names(self, base: str, headers: dict[str, str]) -> None:
        """Display names of the participants from ``profiles:batch`` (best effort)."""
        uids = sorted({p.user_uid for p in self.people.values() if p.user_uid and not p.display_name})[:100]
        if not uids:
            return
        try:
            resp = await self._http.get(
                f"{base}/v1/profiles:batch",
                params=[("user_uid", u) for u in uids],
                headers=headers,
                timeout=5,
            )
            profiles = resp.json().get("profiles", []) if resp.status_code == 200 else []
        except (httpx.HTTPError, ValueError, AttributeError):
            return
        names = {
            str(p.get("user_uid")): str(p.get("display_name", ""))[:128]
            for p in profiles
            if isinstance(p, dict)
        }
        for person in self.people.values():
            if person.user_uid in names:
                person.display_name = names[person.user_uid]
        self._changed()

    def _resolve_first(self) -> None:
        if not self._first.done() and self.machine.state in ("active", "error", "idle"):
            self._first.set_result(self.status())

    def _changed(self) -> None:
        try:
            self._on_change(self)
        except Exception:
            log.exception("voice state callback failed")


__all__ = ["FRAME_SAMPLES", "Call", "JoinFailed", "signaling_url_for"]
