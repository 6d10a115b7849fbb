"""Audio frames shared by the media service and the headless voice client: 48 kHz mono s16 in
20 ms frames (960 samples), converted from whatever PyAV decoded."""

from __future__ import annotations

import fractions
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import numpy as np
from av import AudioFrame, AudioResampler

if TYPE_CHECKING:  # aiortc only where a track is received (the desktop imports this module at start)
    from aiortc.mediastreams import MediaStreamTrack

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960
FRAME_S = FRAME_SAMPLES / SAMPLE_RATE
TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
Samples = np.ndarray[Any, np.dtype[np.int16]]
SILENCE: Samples = np.zeros(FRAME_SAMPLES, dtype=np.int16)


def abs_sum(samples: Samples) -> float:
    """Sum of |samples| in full-scale units (1.0 = 32768) for the speaking detector."""
    return float(np.abs(samples.astype(np.int32)).sum()) / 32768.0


def apply_gain(samples: Samples, gain: float) -> Samples:
    if gain == 1.0:
        return samples
    if gain == 0.0:
        return SILENCE
    out: Samples = np.clip(samples.astype(np.float32) * gain, -32768, 32767).astype(np.int16)
    return out


def to_frame(samples: Samples, pts: int) -> AudioFrame:
    frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    frame.pts = pts
    frame.time_base = TIME_BASE
    return frame


class MonoConverter:
    """Decoded frames (any rate/layout/format) → 20 ms mono s16 frames at 48 kHz."""

    def __init__(self) -> None:
        self._resampler = AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
        self._pending: Samples = np.zeros(0, dtype=np.int16)

    @property
    def pending(self) -> int:
        """Samples held for the next frame (0: the output is aligned with the input frames)."""
        return len(self._pending)

    def push(self, frame: AudioFrame) -> list[Samples]:
        parts = [self._pending]
        fast = (
            frame.sample_rate == SAMPLE_RATE
            and frame.format.name == "s16"
            and frame.layout.name in ("mono", "stereo")
        )
        if fast:
            # what aiortc's Opus decoder delivers (48 kHz packed s16): no resampler needed
            data = frame.to_ndarray().reshape(-1)
            if frame.layout.name == "stereo":
                data = ((data[0::2].astype(np.int32) + data[1::2]) // 2).astype(np.int16)
            parts.append(data.astype(np.int16, copy=False))
        else:
            for out in self._resampler.resample(frame):
                parts.append(out.to_ndarray().reshape(-1).astype(np.int16, copy=False))
        data = np.concatenate(parts)
        whole = len(data) // FRAME_SAMPLES
        frames = [data[i * FRAME_SAMPLES : (i + 1) * FRAME_SAMPLES] for i in range(whole)]
        self._pending = data[whole * FRAME_SAMPLES :]
        return frames


async def mono_frames(track: MediaStreamTrack) -> AsyncIterator[Samples]:
    """Every 20 ms mono frame a received track carries, until the track ends."""
    from aiortc.mediastreams import MediaStreamError

    conv = MonoConverter()
    while True:
        try:
            frame = await track.recv()
        except MediaStreamError:
            return
        for samples in conv.push(frame):  # type: ignore[arg-type]
            yield samples
