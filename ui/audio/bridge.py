"""The desktop's end of the voice bridge (ADR 0011), on the adapter's bus thread.

``DesktopBridge`` reuses the headless client's bridge logic (``services.core.voice_bridge``):
the microphone track it sends is fed by the audio engine's capture thread, the mixed call it
receives goes to the engine's speaker. It also listens to ``voice.speaking`` (published on core
NATS only, without a stream sequence, so the adapter's ordered event path skips it) and hands
each one to the main thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import queue
import time
from typing import Any

from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from nats.aio.msg import Msg
from pydantic import BaseModel, ValidationError

from services.core.audio import FRAME_S, SILENCE, Samples, mono_frames, to_frame
from services.core.contracts import commands as cmd
from services.core.contracts import subjects
from services.core.contracts.media import SERVICE, BridgeTarget, VoiceSpeaking
from services.core.rpc import StackCommands
from services.core.voice_bridge import BridgeClient
from ui.audio.engine import AudioEngine

log = logging.getLogger("openchat.ui.voice")
MAX_SPEAKING_BYTES = 4096


class MicTrack(MediaStreamTrack):
    """The microphone as an aiortc track: frames pushed by the capture thread; paced silence
    while nothing is captured (no device, or before it starts), so the track never stalls."""

    kind = "audio"

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._feed_loop = loop
        self._queue: asyncio.Queue[Samples] = asyncio.Queue(maxsize=10)
        self._pts = 0
        self._start: float | None = None

    def feed(self, samples: Samples) -> None:
        """From the capture thread."""
        with contextlib.suppress(RuntimeError):  # the loop closed: the call is over
            self._feed_loop.call_soon_threadsafe(self._put, samples)

    def _put(self, samples: Samples) -> None:
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(samples)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        now = time.monotonic()
        if self._start is None or now - (self._start + self._pts / 48_000) > 0.2:
            self._start = now - self._pts / 48_000  # (re)anchor after a stall
        due = self._start + self._pts / 48_000
        try:
            samples = await asyncio.wait_for(self._queue.get(), max(0.0, due - now) + 2 * FRAME_S)
        except TimeoutError:
            samples = SILENCE
        frame = to_frame(samples, self._pts)
        self._pts += len(samples)
        return frame


class DesktopBridge:
    """The bridge, the speaking subscription and the keepalive of one desktop (bus thread)."""

    def __init__(self, client: StackCommands, member: str, client_id: str, engine: AudioEngine) -> None:
        self.client = client
        self.member = member
        self.engine = engine
        self.speaking: queue.SimpleQueue[tuple[str, VoiceSpeaking]] = queue.SimpleQueue()
        self.mic: MicTrack | None = None
        self.link = BridgeClient(self._call, client_id, self._source, self._on_track)
        self._tasks: list[asyncio.Task[Any]] = []
        self._keepalive: asyncio.Task[None] | None = None
        self._sub: Any = None
        self.taken_over = False

    async def _call(self, verb: str, args: BaseModel, result: type[Any], timeout: float) -> Any:
        return await self.client.call(cmd.COMMANDS[(SERVICE, verb)], args, timeout=timeout)

    def _source(self) -> MediaStreamTrack:
        self.mic = MicTrack(asyncio.get_running_loop())
        return self.mic

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._speaker(track)))

    async def _speaker(self, track: MediaStreamTrack) -> None:
        async for samples in mono_frames(track):
            self.engine.play(samples)

    def mic_sink(self, samples: Samples) -> None:
        """The engine's capture thread → the current microphone track."""
        mic = self.mic
        if mic is not None:
            mic.feed(samples)

    async def ensure(self, server_id: str, channel_id: str) -> None:
        """Speaking subscription, bridge and keepalive up (idempotent); the call to resume after a
        media-service restart is the one being joined."""
        self.link.target = BridgeTarget(server_id=server_id, channel_id=channel_id)
        if self._sub is None:
            subject = f"oc.{subjects.check_member(self.member)}.evt.*.voice.speaking"
            self._sub = await self.client.bus.nc.subscribe(subject, cb=self._on_speaking)
        if self.link.pc is None or self.link.pc.connectionState in ("failed", "closed"):
            await self.link.offer(resume=False)
        if self._keepalive is None or self._keepalive.done():
            self._keepalive = asyncio.create_task(self.link.keepalive(self._taken_over))

    def _taken_over(self) -> None:
        self.taken_over = True

    async def _on_speaking(self, msg: Msg) -> None:
        if len(msg.data) > MAX_SPEAKING_BYTES:
            return
        try:
            doc = json.loads(msg.data)
            sid = str(doc["server_id"])
            payload = VoiceSpeaking.model_validate(doc["payload"])
        except (ValueError, KeyError, TypeError, ValidationError):
            log.info("voice.speaking skipped: invalid")
            return
        self.speaking.put((sid, payload))

    async def close(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keepalive
            self._keepalive = None
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        await self.link.close()
        self.mic = None
