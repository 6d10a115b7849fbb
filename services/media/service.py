"""The media service's adapters: commands on ``oc.<member>.cmd.media.*``, the bridge to the
member's client (one WebRTC connection negotiated over NATS, ADR 0011), voice events, and the
grace period after which a call without a client is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aioice import ice as aioice_ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.bus import Bus, CommandError
from services.core.contracts import commands as cmd
from services.core.contracts import subjects
from services.core.contracts.bus import Empty, EventEnvelope
from services.core.contracts.chat import ServerRecord
from services.core.contracts.media import (
    BridgeAlive,
    BridgeAnswer,
    BridgeKeepaliveArgs,
    BridgeOfferArgs,
    BridgeTarget,
    VoiceJoinArgs,
    VoicePrefs,
    VoicePrefsArgs,
    VoiceSpeaking,
    VoiceStatus,
)
from services.core.rpc import serve
from services.media.audio import (
    MixerTrack,
    PayloadConverter,
    SourceBuffer,
    Wake,
    apply_gain,
    install_payload_decoders,
    low_latency_receivers,
)
from services.media.call import Call
from services.media.domain import apply_prefs, input_gain
from services.media.ice import IceProbe

log = logging.getLogger("openchat.media")


class MediaSettings(BaseSettings):
    """``OPENCHAT_MEDIA_*``: how long a call outlives its vanished client, and join waits."""

    model_config = SettingsConfigDict(env_prefix="OPENCHAT_MEDIA_", extra="ignore")

    client_grace_s: float = Field(default=15.0, gt=0, le=3600)
    join_wait_s: float = Field(default=30.0, gt=0, le=300)
    # aiortc's audio receivers prefetch 4 frames (80 ms); the media service's receivers wait for
    # this many 20 ms frames instead (ADR 0011). 0 = none (LAN, loopback); raise it on lossy networks.
    jitter_prefetch_frames: int = Field(default=0, ge=0, le=8)
    # ICE consent freshness (RFC 7675) with each peer: a check every ~N s, the path declared failed
    # after 6 missed checks (aioice's defaults: 5 s, so ~30 s); then the ICE restart of D12.
    ice_consent_interval_s: float = Field(default=5.0, ge=0.2, le=60)


@dataclass
class Bridge:
    """The member's client: one peer connection; its microphone in, the mix out."""

    member: str
    client_id: str
    pc: RTCPeerConnection
    last_seen: float = field(default_factory=time.monotonic)
    connected: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    target: BridgeTarget | None = None

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.pc.close()


class MediaService:
    def __init__(
        self,
        bus: Bus,
        servers: Callable[[str, str], ServerRecord],
        settings: MediaSettings | None = None,
    ) -> None:
        install_payload_decoders()  # mono decoding that keeps each frame's Opus packet (ADR 0016)
        self.bus = bus
        self.servers = servers
        self.settings = settings or MediaSettings()
        # aioice reads this module attribute before every consent check (float seconds are fine)
        aioice_ice.CONSENT_INTERVAL = self.settings.ice_consent_interval_s  # type: ignore[assignment]
        self.http = httpx.AsyncClient(follow_redirects=False)
        self.ice = IceProbe()
        self.calls: dict[str, Call] = {}
        self.bridges: dict[str, Bridge] = {}
        self.prefs: dict[tuple[str, str], VoicePrefs] = {}
        self.client_seen: dict[str, float] = {}
        self._dirty: dict[str, Call] = {}
        self._publish_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[Any]] = set()

    # -- lifecycle ---------------------------------------------------------------------------
    def register(self) -> None:
        bus = self.bus
        serve(bus, cmd.VOICE_JOIN, self.join)
        serve(bus, cmd.VOICE_LEAVE, self.leave)
        serve(bus, cmd.VOICE_STATUS, self.status)
        serve(bus, cmd.VOICE_PREFS, self.set_prefs)
        serve(bus, cmd.BRIDGE_OFFER, self.bridge_offer)
        serve(bus, cmd.BRIDGE_KEEPALIVE, self.bridge_keepalive)
        serve(bus, cmd.BRIDGE_CLOSE, self.bridge_close)
        self._tasks.append(asyncio.create_task(self._publisher(), name="voice-publisher"))
        self._tasks.append(asyncio.create_task(self._watchdog(), name="voice-watchdog"))

    async def close(self) -> None:
        for member in list(self.calls):
            with contextlib.suppress(Exception):
                await self._leave(member)
        for bridge in list(self.bridges.values()):
            await bridge.close()
        self.bridges.clear()
        await self._flush_events()
        for task in self._tasks:
            task.cancel()
        await self.http.aclose()

    def _keep(self, task: asyncio.Task[Any]) -> None:
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _lock(self, member: str) -> asyncio.Lock:
        return self._locks.setdefault(member, asyncio.Lock())

    # -- commands ------------------------------------------------------------------------------
    async def join(self, member: str, args: VoiceJoinArgs) -> VoiceStatus:
        self.client_seen[member] = time.monotonic()
        async with self._lock(member):
            call = await self._start_call(member, args.server_id, args.channel_id)
        status = await call.start(self.settings.join_wait_s)
        if status.state == "error":
            raise CommandError(call.error_code, status.reason or "voice join failed")
        return status

    async def _start_call(self, member: str, server_id: str, channel_id: str) -> Call:
        """One call per member: joining another channel leaves the first (8.1)."""
        current = self.calls.get(member)
        if current is not None:
            if (
                current.server_id == server_id
                and current.channel_id == channel_id
                and current.machine.wants_call
            ):
                return current
            await self._leave(member)
        subjects.check_token(server_id, "server id")

        def record() -> ServerRecord:
            return self.servers(member, server_id)

        call = Call(
            member=member,
            server_id=server_id,
            channel_id=channel_id,
            record=record,
            http=self.http,
            prefs=lambda: self.prefs.get((member, server_id), VoicePrefs()),
            on_change=self._changed,
            on_speaking=self._speaking,
            ice_filter=self.ice.usable,
            jitter_prefetch=self.settings.jitter_prefetch_frames,
        )
        call.bridge_connected = bool(self.bridges.get(member) and self.bridges[member].connected)
        self.calls[member] = call
        return call

    async def leave(self, member: str, args: Empty) -> VoiceStatus:
        async with self._lock(member):
            await self._leave(member)
        return self._status(member)

    async def _leave(self, member: str) -> None:
        call = self.calls.pop(member, None)
        if call is not None:
            await call.leave()
            log.info("voice left", extra={"member": member, "server_id": call.server_id})

    async def status(self, member: str, args: Empty) -> VoiceStatus:
        return self._status(member)

    def _status(self, member: str, server_id: str | None = None) -> VoiceStatus:
        call = self.calls.get(member)
        if call is not None and (server_id is None or call.server_id == server_id):
            return call.status()
        bridge = self.bridges.get(member)
        prefs = self.prefs.get((member, server_id), VoicePrefs()) if server_id else VoicePrefs()
        return VoiceStatus(
            server_id=server_id, prefs=prefs, bridge_connected=bool(bridge and bridge.connected)
        )

    async def set_prefs(self, member: str, args: VoicePrefsArgs) -> VoiceStatus:
        subjects.check_token(args.server_id, "server id")
        key = (member, args.server_id)
        self.prefs[key] = apply_prefs(self.prefs.get(key, VoicePrefs()), args)
        call = self.calls.get(member)
        if call is not None and call.server_id == args.server_id:
            await call.prefs_changed()
        return self._status(member, args.server_id)

    # -- the bridge ----------------------------------------------------------------------------
    async def bridge_offer(self, member: str, args: BridgeOfferArgs) -> BridgeAnswer:
        self.client_seen[member] = time.monotonic()
        old = self.bridges.pop(member, None)
        if old is not None:
            log.info(
                "bridge replaced",
                extra={"member": member, "same_client": old.client_id == args.client_id},
            )
            await old.close()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))  # LAN host candidates (ADR 0012)
        bridge = Bridge(member, args.client_id, pc, target=args.resume)
        self.bridges[member] = bridge
        mixer = MixerTrack(
            sources=lambda: self._sources(member),
            deafened=lambda: self._deafened(member),
            wake=lambda: self._wake(member),
        )

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                bridge.tasks.append(asyncio.create_task(self._mic(member, bridge, track), name="bridge-mic"))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            connected = pc.connectionState == "connected"
            if bridge.connected != connected:
                bridge.connected = connected
                call = self.calls.get(member)
                if call is not None and self.bridges.get(member) is bridge:
                    call.bridge_connected = connected
                    self._changed(call)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=args.sdp, type="offer"))
            low_latency_receivers(pc, self.settings.jitter_prefetch_frames)
            pc.addTrack(mixer)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            self.bridges.pop(member, None)
            await bridge.close()
            raise CommandError(
                "invalid_offer", f"the bridge offer was refused: {type(exc).__name__}"
            ) from exc
        if args.resume is not None:
            call = self.calls.get(member)
            if call is None or not call.machine.wants_call:
                # the media service restarted (or the call failed): the client's call resumes by itself
                async with self._lock(member):
                    resumed = await self._start_call(member, args.resume.server_id, args.resume.channel_id)
                self._keep(asyncio.create_task(resumed.start(self.settings.join_wait_s)))
        return BridgeAnswer(sdp=pc.localDescription.sdp, status=self._status(member))

    async def bridge_keepalive(self, member: str, args: BridgeKeepaliveArgs) -> BridgeAlive:
        bridge = self.bridges.get(member)
        current = bridge is not None and bridge.client_id == args.client_id
        if current:
            self.client_seen[member] = time.monotonic()
        taken_over = bridge is not None and not current
        return BridgeAlive(current=current, taken_over=taken_over, status=self._status(member))

    async def bridge_close(self, member: str, args: BridgeKeepaliveArgs) -> BridgeAlive:
        bridge = self.bridges.get(member)
        if bridge is not None and bridge.client_id == args.client_id:
            self.bridges.pop(member, None)
            await bridge.close()
        return BridgeAlive(current=False, status=self._status(member))

    def _sources(self, member: str) -> list[SourceBuffer]:
        call = self.calls.get(member)
        return call.sources() if call is not None else []

    def _wake(self, member: str) -> Wake | None:
        call = self.calls.get(member)
        return call.audio_wake if call is not None else None

    def _deafened(self, member: str) -> bool:
        call = self.calls.get(member)
        return call is not None and self.prefs.get((member, call.server_id), VoicePrefs()).deafened

    async def _mic(self, member: str, bridge: Bridge, track: MediaStreamTrack) -> None:
        """The client's microphone: decoded once, gain/mute applied (D11), to the call."""
        conv = PayloadConverter()
        while True:
            try:
                decoded = await track.recv()
            except MediaStreamError:
                return
            if self.bridges.get(member) is not bridge:
                return
            call = self.calls.get(member)
            if call is None:
                continue
            gain = input_gain(self.prefs.get((member, call.server_id), VoicePrefs()))
            now = time.monotonic()
            for chunk in conv.push(decoded):  # type: ignore[arg-type]
                # unprocessed audio (gain 1) goes to the peers as the client encoded it
                call.push_mic(apply_gain(chunk.samples, gain), now, chunk.opus if gain == 1.0 else None)

    # -- events --------------------------------------------------------------------------------
    def _changed(self, call: Call) -> None:
        if self.calls.get(call.member) is call or not call.machine.wants_call:
            self._dirty[call.member] = call
            self._publish_wake.set()

    def _speaking(self, call: Call, participant_id: str, user_uid: str, speaking: bool) -> None:
        envelope = EventEnvelope[VoiceSpeaking](
            event_id=f"vspeak:{uuid.uuid4().hex}",
            server_id=call.server_id,
            channel_id=call.channel_id,
            type="voice.speaking",
            payload=VoiceSpeaking(
                channel_id=call.channel_id,
                participant_id=participant_id,
                user_uid=user_uid,
                speaking=speaking,
            ),
        )
        subject = subjects.event(call.member, call.server_id, "voice.speaking")
        self._keep(asyncio.create_task(self._publish_core(subject, envelope)))

    async def _publish_core(self, subject: str, envelope: EventEnvelope[VoiceSpeaking]) -> None:
        with contextlib.suppress(Exception):
            await self.bus.publish(subject, envelope)

    async def _publisher(self) -> None:
        """Publish the latest ``voice.state`` of every changed call (coalesced, in order)."""
        while True:
            await self._publish_wake.wait()
            self._publish_wake.clear()
            await self._flush_events()

    async def _flush_events(self) -> None:
        while self._dirty:
            member, call = self._dirty.popitem()
            envelope = EventEnvelope[VoiceStatus](
                event_id=f"vstate:{uuid.uuid4().hex}",
                server_id=call.server_id,
                channel_id=call.channel_id,
                type="voice.state",
                payload=call.status(),
            )
            try:
                await self.bus.publish_event(member, envelope)
            except Exception as exc:
                log.warning("voice state not published", extra={"member": member, "error": repr(exc)})

    async def _watchdog(self) -> None:
        """A client that vanished without leaving: leave its call after the grace period."""
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            for member in list(self.calls):
                seen = self.client_seen.get(member, 0.0)
                bridge = self.bridges.get(member)
                if bridge is not None and bridge.connected and now - seen < self.settings.client_grace_s:
                    continue
                if now - seen >= self.settings.client_grace_s:
                    log.info("client gone: leaving its call", extra={"member": member})
                    async with self._lock(member):
                        await self._leave(member)
