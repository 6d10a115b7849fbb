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
]

FRAME_S = FRAME_SAMPLES / SAMPLE_RATE


class SourceBuffer:
    """One remote participant's frames waiting for the mixer; at most ``max_frames`` (oldest
    dropped, so latency stays bounded when the mixer and the source clocks drift)."""

    def __init__(self, max_frames: int = 6) -> None:
        self.frames: deque[Samples] = deque(maxlen=max_frames)
        self.dropped = 0

    def push(self, samples: Samples) -> None:
        if len(self.frames) == self.frames.maxlen:
            self.dropped += 1
        self.frames.append(samples)

    def pop(self) -> Samples | None:
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
    """Remote participants mixed into one track for the member's client (ADR 0011)."""

    kind = "audio"

    def __init__(self, sources: Callable[[], list[SourceBuffer]], deafened: Callable[[], bool]) -> None:
        super().__init__()
        self._sources = sources
        self._deafened = deafened
        self._t0: float | None = None
        self._n = 0
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
        now = time.monotonic()
        if self._t0 is None or now - (self._t0 + self._n * FRAME_S) > 0.2:
            self._t0, self._n = now, 0  # first frame, or the consumer stalled: restart the clock
        else:
            delay = self._t0 + self._n * FRAME_S - now
            if delay > 0:
                await asyncio.sleep(delay)  # the mixer's 20 ms clock
        frame = to_frame(self.mix(), self._pts)
        self._n += 1
        self._pts += FRAME_SAMPLES
        return frame
