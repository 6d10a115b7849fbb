"""The client side of the voice bridge (ADR 0011), shared by ``openchat voice`` and the desktop.

A member's client has ONE WebRTC connection to the media service, negotiated over NATS with the
member's own credentials (``oc.<member>.cmd.media.bridge_offer`` → answer). ``BridgeClient``
offers it (the microphone track up, the mixed call down), keeps it alive
(``bridge_keepalive`` every 2 s) and rebuilds it when the media service restarted or the
connection died (the new bridge carries the call to resume). It knows nothing of devices or of a
UI: the caller gives the track to send and a callback for the track received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from pydantic import BaseModel

from services.core.bus import CommandError
from services.core.contracts.media import (
    BridgeAlive,
    BridgeAnswer,
    BridgeKeepaliveArgs,
    BridgeOfferArgs,
    BridgeTarget,
)

log = logging.getLogger("openchat.voice.bridge")

KEEPALIVE_S = 2.0
REBRIDGE_WAIT_S = 1.0
COMMAND_TIMEOUT_S = 45.0
R = TypeVar("R", bound=BaseModel)

# ``call(verb, args, result_type, timeout)``: one ``media.<verb>`` command of the member
Caller = Callable[[str, BaseModel, type[Any], float], Awaitable[Any]]


class BridgeClient:
    """One client's bridge to the media service: offer, keepalive, re-bridge, close."""

    def __init__(
        self,
        call: Caller,
        client_id: str,
        source: Callable[[], MediaStreamTrack],
        on_track: Callable[[MediaStreamTrack], None],
        *,
        out: Callable[[str], None] | None = None,
    ) -> None:
        self._call = call
        self.client_id = client_id
        self._source = source
        self._on_track = on_track
        self._out = out or (lambda line: log.info(line))
        self.pc: RTCPeerConnection | None = None
        self.target: BridgeTarget | None = None  # the call to resume after a media-service restart
        self.lost = asyncio.Event()
        self.taken_over = False
        self.rebridges = 0

    async def call(
        self, verb: str, args: BaseModel, result: type[R], timeout: float = COMMAND_TIMEOUT_S
    ) -> R:
        value: R = await self._call(verb, args, result, timeout)
        return value

    async def offer(self, resume: bool = False) -> BridgeAnswer:
        """Offer a new bridge (closing the old one) and apply the media service's answer."""
        await self.close_pc()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self._source())
        self.pc = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self._on_track(track)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if self.pc is pc and pc.connectionState in ("failed", "closed"):
                self.lost.set()

        await pc.setLocalDescription(await pc.createOffer())
        answer = await self.call(
            "bridge_offer",
            BridgeOfferArgs(
                client_id=self.client_id,
                sdp=pc.localDescription.sdp,
                resume=self.target if resume else None,
            ),
            BridgeAnswer,
        )
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer.sdp, type="answer"))
        return answer

    async def close_pc(self) -> None:
        pc, self.pc = self.pc, None
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()

    async def keepalive(self, on_taken_over: Callable[[], None]) -> None:
        """Keep the bridge; rebuild it when the media service restarted or the connection died.
        Returns when another client of the member took the bridge over (after ``on_taken_over``)."""
        while True:
            lost = False
            try:
                await asyncio.wait_for(self.lost.wait(), KEEPALIVE_S)
                lost = True
            except TimeoutError:
                pass
            alive: BridgeAlive | None
            try:
                alive = await self.call(
                    "bridge_keepalive", BridgeKeepaliveArgs(client_id=self.client_id), BridgeAlive, 3
                )
            except CommandError:
                alive = None
            if alive is not None and alive.taken_over:
                self.taken_over = True
                on_taken_over()
                return
            if alive is not None and alive.current and not lost:
                continue
            self._out("voice: bridge lost; reconnecting to the media service")
            while True:
                self.lost.clear()
                try:
                    await self.offer(resume=self.target is not None)
                    self.rebridges += 1
                    break
                except CommandError:
                    await asyncio.sleep(REBRIDGE_WAIT_S)  # the media service is not back yet

    async def close(self) -> None:
        """Hang up the bridge (the call itself is left with ``media.leave``)."""
        with contextlib.suppress(Exception):
            await self.call("bridge_close", BridgeKeepaliveArgs(client_id=self.client_id), BridgeAlive, 3)
        await self.close_pc()
