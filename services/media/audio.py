"""Audio plumbing of the media service (aiortc/PyAV at the edge, numpy inside; ADR 0011).

Everything inside is 48 kHz mono s16 in 20 ms frames (960 samples):

- ``MonoConverter``: any decoded ``AudioFrame`` → 960-sample int16 frames;
- ``SourceBuffer``: a bounded jitter buffer per remote participant (oldest frames dropped);
- ``PeerOutTrack``: a track fed frame by frame (the member's processed microphone), silence while
  nothing comes, bounded queue;
- ``MixerTrack``: the track towards the member's client: a 20 ms clock that mixes one frame of
  every source (never the member's own audio), silence while deafened.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame

from services.core.audio import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    SILENCE,
    MonoConverter,
    Samples,
    abs_sum,
    apply_gain,
    to_frame,
)

__all__ = [
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "MixerTrack",
    "MonoConverter",
    "PeerOutTrack",
    "Samples",
    "SourceBuffer",
    "abs_sum",
    "apply_gain",
    "low_latency_receivers",
]

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


def low_latency_receivers(pc: RTCPeerConnection, prefetch_frames: int) -> None:
    """Shrink aiortc's audio jitter-buffer prefetch (4 frames = 80 ms, fixed in aiortc) on the
    media service's receivers: the bridge is a LAN/loopback hop and the mesh peers are on the same
    kind of path, and every hop's prefetch adds to mouth-to-ear latency (ADR 0011, bench_voice).
    Must run before RTP flows (right after the transceivers exist)."""
    for transceiver in pc.getTransceivers():
        if transceiver.kind == "audio":
            receiver = transceiver.receiver
            if hasattr(receiver, "_RTCRtpReceiver__jitter_buffer"):
                receiver._RTCRtpReceiver__jitter_buffer = JitterBuffer(capacity=16, prefetch=prefetch_frames)


class SourceBuffer:
    """One remote participant's frames waiting for the mixer; at most ``max_frames`` (oldest
    dropped, so latency stays bounded when the mixer and the source clocks drift).  A standing
    queue deeper than ``depth`` frames (a burst at start, clock drift) is trimmed when the mixer
    takes a frame: it would otherwise add its length to the latency for the rest of the call."""

    def __init__(self, max_frames: int = 10, depth: int = 2, wake: asyncio.Event | None = None) -> None:
        self.frames: deque[Samples] = deque(maxlen=max_frames)
        self.depth = depth
        self.dropped = 0
        self.wake = wake  # the mixer waiting for any source

    def push(self, samples: Samples) -> None:
        if len(self.frames) == self.frames.maxlen:
            self.dropped += 1
        self.frames.append(samples)
        if self.wake is not None:
            self.wake.set()

    def pop(self) -> Samples | None:
        while len(self.frames) > self.depth + 1:
            self.frames.popleft()
            self.dropped += 1
        return self.frames.popleft() if self.frames else None


class PeerOutTrack(MediaStreamTrack):
    """The member's processed microphone towards one remote peer (or the bridge's test tone)."""

    kind = "audio"

    def __init__(self, max_frames: int = 5, idle_s: float = 0.04) -> None:
        super().__init__()
        self._queue: asyncio.Queue[Samples] = asyncio.Queue(maxsize=max_frames)
        self._pts = 0
        self._idle_s = idle_s
        self.dropped = 0

    def push(self, samples: Samples) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait(samples)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        try:
            samples = await asyncio.wait_for(self._queue.get(), self._idle_s)
        except TimeoutError:
            samples = SILENCE
        frame = to_frame(samples, self._pts)
        self._pts += FRAME_SAMPLES
        return frame


class MixerTrack(MediaStreamTrack):
    """Remote participants mixed into one track for the member's client (ADR 0011).

    Arrival-driven: a frame is mixed as soon as any source has one (whatever the other sources
    hold at that moment goes in too), so a frame waits for no clock tick; when no source has
    anything for 20 ms (+5 ms slack), a silence frame keeps the track alive."""

    kind = "audio"

    def __init__(
        self,
        sources: Callable[[], list[SourceBuffer]],
        deafened: Callable[[], bool],
        wake: Callable[[], asyncio.Event | None] = lambda: None,
    ) -> None:
        super().__init__()
        self._sources = sources
        self._deafened = deafened
        self._wake = wake
        self._due: float | None = None
        self._pts = 0

    def mix(self) -> Samples:
        acc: np.ndarray[Any, np.dtype[np.int32]] | None = None
        for source in self._sources():
            samples = source.pop()
            if samples is None:
                continue
            acc = samples.astype(np.int32) if acc is None else acc + samples
        if acc is None or self._deafened():
            return SILENCE
        mixed: Samples = np.clip(acc, -32768, 32767).astype(np.int16)
        return mixed

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._due is None:
            self._due = time.monotonic()
        while not any(source.frames for source in self._sources()):
            delay = self._due - time.monotonic()
            if delay <= 0:
                break
            wake = self._wake()
            if wake is None:
                await asyncio.sleep(min(delay, FRAME_S))  # no call yet: silence at the frame rate
                continue
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), delay)
            except TimeoutError:
                break
        frame = to_frame(self.mix(), self._pts)
        self._pts += FRAME_SAMPLES
        self._due = time.monotonic() + FRAME_S + 0.005
        return frame
