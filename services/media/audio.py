"""Audio plumbing of the media service (aiortc/PyAV at the edge, numpy inside; ADR 0011, ADR 0016).

Everything inside is 48 kHz mono s16 in 20 ms frames (960 samples), each optionally with the Opus
packet it was decoded from (``Chunk``):

- ``install_payload_decoders``: the media service's receivers decode Opus to mono and keep each
  frame's Opus payload, so a frame that needs no processing can be forwarded without re-encoding;
- ``PayloadConverter``: decoded ``AudioFrame`` → ``Chunk`` (samples + forwardable payload);
- ``OpusPacketEncoder``: one Opus encoder run in the event loop (no executor hop), mono;
- ``SourceBuffer``: a bounded jitter buffer per remote participant (oldest frames dropped);
- ``PacketTrack``: encoded packets towards one peer (the member's microphone, encoded once for
  every peer or forwarded as the client sent it), silence while nothing comes, bounded queue;
- ``MixerTrack``: the track towards the member's client: arrival-driven mix of every source
  (never the member's own audio), a lone source forwarded as it was encoded, silence while deafened.
"""

from __future__ import annotations

import asyncio
import fractions
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from aiortc import RTCPeerConnection
from aiortc import rtcrtpreceiver as _rtcrtpreceiver
from aiortc.codecs.base import Decoder
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import AudioFrame, CodecContext, Packet
from av.frame import Frame

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
    "SILENCE",
    "Chunk",
    "MixerTrack",
    "MonoConverter",
    "OpusPacketEncoder",
    "PacketTrack",
    "PayloadConverter",
    "Samples",
    "SourceBuffer",
    "Wake",
    "abs_sum",
    "apply_gain",
    "install_payload_decoders",
    "low_latency_receivers",
    "silence_packet",
]

TIME_BASE = fractions.Fraction(1, SAMPLE_RATE)
OPUS_BITRATE = 48_000  # mono voice (aiortc's own encoder: 96 kbit/s stereo)
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


# -- decoding: mono, with the Opus payload of each frame ----------------------------------------
class PayloadOpusDecoder(Decoder):
    """aiortc's Opus decoder, but mono (the media service mixes mono: no stereo down-mix per frame)
    and keeping the packet: a packet that decodes to exactly one 20 ms frame puts its payload in
    ``frame.opaque``, so that frame can be forwarded as it was encoded (ADR 0016)."""

    def __init__(self) -> None:
        self.codec = CodecContext.create("libopus", "r")
        self.codec.format = "s16"
        self.codec.layout = "mono"
        self.codec.sample_rate = SAMPLE_RATE

    def decode(self, encoded_frame: JitterFrame) -> list[Frame]:
        packet = Packet(encoded_frame.data)
        packet.pts = encoded_frame.timestamp
        packet.time_base = TIME_BASE
        frames: list[Frame] = list(self.codec.decode(packet))
        if len(frames) == 1 and isinstance(frames[0], AudioFrame) and frames[0].samples == FRAME_SAMPLES:
            frames[0].opaque = encoded_frame.data
        return frames


_original_get_decoder: Callable[[RTCRtpCodecParameters], Decoder] = _rtcrtpreceiver.get_decoder  # type: ignore[attr-defined]


def _get_decoder(codec: RTCRtpCodecParameters) -> Decoder:
    if codec.mimeType.lower() == "audio/opus":
        return PayloadOpusDecoder()
    return _original_get_decoder(codec)


def install_payload_decoders() -> None:
    """Make this process's aiortc receivers use ``PayloadOpusDecoder`` (the media service process:
    every receiver there feeds the mixer or the mesh; aiortc picks its decoder through this module
    attribute in its decoder thread).  Idempotent."""
    _rtcrtpreceiver.get_decoder = _get_decoder  # type: ignore[attr-defined]


@dataclass(slots=True)
class Chunk:
    """20 ms of mono audio and, when it is exactly what one Opus packet decoded to, that packet."""

    samples: Samples
    opus: bytes | None = None


class PayloadConverter:
    """Decoded frames → ``Chunk``s.  The fast path (a 960-sample mono s16 frame at 48 kHz, what
    ``PayloadOpusDecoder`` delivers) costs no copy and keeps the payload; anything else goes
    through ``MonoConverter`` (payload dropped: its frames no longer match packets)."""

    def __init__(self) -> None:
        self._slow = MonoConverter()
        self._misaligned = False

    def push(self, frame: AudioFrame) -> list[Chunk]:
        if (
            not self._misaligned
            and frame.samples == FRAME_SAMPLES
            and frame.sample_rate == SAMPLE_RATE
            and frame.format.name == "s16"
            and frame.layout.name == "mono"
        ):
            samples: Samples = frame.to_ndarray().reshape(-1)  # type: ignore[assignment]
            opus = frame.opaque if isinstance(frame.opaque, bytes) else None
            return [Chunk(samples, opus)]
        chunks = [Chunk(samples) for samples in self._slow.push(frame)]
        self._misaligned = self._slow.pending > 0
        return chunks


# -- encoding: once, in the event loop --------------------------------------------------------
class OpusPacketEncoder:
    """A mono Opus encoder (VoIP, 48 kbit/s).  Encoding 20 ms costs ~0.1 ms: done in the event
    loop, which is cheaper than aiortc's executor hop per frame (ADR 0016)."""

    def __init__(self, bitrate: int = OPUS_BITRATE) -> None:
        self.codec = CodecContext.create("libopus", "w")
        self.codec.bit_rate = bitrate
        self.codec.format = "s16"
        self.codec.layout = "mono"
        self.codec.sample_rate = SAMPLE_RATE
        self.codec.time_base = TIME_BASE
        self.codec.options = {"application": "voip"}
        self._pts = 0
        self.encoded = 0

    def encode(self, samples: Samples) -> bytes | None:
        """One 20 ms frame in, one packet out (``None`` while the encoder's look-ahead fills)."""
        frame = to_frame(samples, self._pts)
        self._pts += FRAME_SAMPLES
        self.encoded += 1
        packets = self.codec.encode(frame)
        return bytes(packets[-1]) if packets else None


# 20 ms of silence in 3 bytes: TOC 0xF8 (CELT-only, fullband, 20 ms, mono, one frame) and a
# range-coded frame whose silence flag is set; it decodes to exact zeros.
SILENCE_PACKET = b"\xf8\xff\xfe"


def silence_packet() -> bytes:
    """The Opus packet of 20 ms of digital silence (sent while muted, deafened or idle)."""
    return SILENCE_PACKET


def opus_packet(payload: bytes, pts: int) -> Packet[Any]:
    """What aiortc's sender sends as it is (``Encoder.pack``): no encode, no audio-level pass."""
    packet = Packet(payload)
    packet.pts = pts
    packet.time_base = TIME_BASE
    return packet


class Wake:
    """A cheap one-waiter wake-up (``asyncio.Event`` + ``wait_for`` costs a task and a timer
    handle per 20 ms frame): ``set`` from producers, ``wait(timeout)`` from one consumer."""

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        timer = loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            if self._waiter is waiter:  # a newer waiter (a replaced bridge's mixer) keeps its own
                self._waiter = None


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


# -- buffers and tracks -----------------------------------------------------------------------
class SourceBuffer:
    """One remote participant's frames waiting for the mixer; at most ``max_frames`` (oldest
    dropped, so latency stays bounded when the mixer and the source clocks drift).  A standing
    queue deeper than ``depth`` frames (a burst at start, clock drift) is trimmed when the mixer
    takes a frame: it would otherwise add its length to the latency for the rest of the call."""

    def __init__(self, max_frames: int = 10, depth: int = 2, wake: Wake | None = None) -> None:
        self.frames: deque[Chunk] = deque(maxlen=max_frames)
        self.depth = depth
        self.dropped = 0
        self.wake = wake  # the mixer waiting for any source

    def push(self, samples: Samples, opus: bytes | None = None) -> None:
        if len(self.frames) == self.frames.maxlen:
            self.dropped += 1
        self.frames.append(Chunk(samples, opus))
        if self.wake is not None:
            self.wake.set()

    def pop(self) -> Chunk | None:
        while len(self.frames) > self.depth + 1:
            self.frames.popleft()
            self.dropped += 1
        return self.frames.popleft() if self.frames else None


class PacketTrack(MediaStreamTrack):
    """Opus packets towards one remote peer: the member's microphone encoded once for all peers
    (or forwarded as the client encoded it); the silence packet while nothing comes (so the peer's
    receiver keeps its clock); at most ``max_frames`` queued (oldest dropped)."""

    kind = "audio"

    def __init__(self, max_frames: int = 5, idle_s: float = 0.04) -> None:
        super().__init__()
        self._queue: deque[bytes] = deque()
        self._max = max_frames
        self._wake = Wake()
        self._pts = 0
        self._idle_s = idle_s
        self.dropped = 0

    def push(self, payload: bytes) -> None:
        if len(self._queue) >= self._max:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(payload)
        self._wake.set()

    async def recv(self) -> Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if not self._queue:
            await self._wake.wait(self._idle_s)
            if self.readyState != "live":
                raise MediaStreamError
        payload = self._queue.popleft() if self._queue else silence_packet()
        packet = opus_packet(payload, self._pts)
        self._pts += FRAME_SAMPLES
        return packet


MIX_EARLY_S = 0.002  # a frame may go out this much before its slot
MIX_JITTER_S = 0.008  # a frame this late keeps the mixer's phase
MIX_SILENCE_AFTER_S = 0.005  # nothing for a frame time and this: a silence frame
SILENCE_SETTLE_FRAMES = 5  # silent frames encoded before the constant silence frame takes over


class MixerTrack(MediaStreamTrack):
    """Remote participants mixed into one track for the member's client (ADR 0011, ADR 0016).

    Arrival-driven, one frame per 20 ms slot: a frame is mixed as soon as any source has one and
    its slot has come (whatever the other sources hold then goes in too), so a lone speaker's frame
    waits for no clock tick and several speakers are summed, never played one after the other;
    when no source has anything for 20 ms (+5 ms), a silence packet keeps the track alive and the
    next frame re-phases the slots.  The mix is encoded here, once per frame; the only remote
    participant of a call is forwarded as it encoded itself."""

    kind = "audio"

    def __init__(
        self,
        sources: Callable[[], list[SourceBuffer]],
        deafened: Callable[[], bool],
        wake: Callable[[], Wake | None] = lambda: None,
    ) -> None:
        super().__init__()
        self._sources = sources
        self._deafened = deafened
        self._wake = wake
        self._next: float | None = None  # the earliest time of the next frame
        self._last = 0.0  # when the last frame went out
        self._pts = 0
        self.encoder = OpusPacketEncoder()
        self.forwarded = 0
        self._silent_run = SILENCE_SETTLE_FRAMES

    def mix(self) -> Chunk:
        """One frame of every source that has one, summed with clipping (silence: no source, or
        deafened).  The payload of a frame is kept only when its source is the call's only source:
        an Opus decoder carries state from packet to packet (energy prediction, SILK history), so
        packets of different encoders interleaved frame by frame would be decoded wrongly; one
        participant's own stream (with silence in its gaps) decodes as it was meant."""
        sources = self._sources()
        chunks = [c for c in (source.pop() for source in sources) if c is not None]
        if not chunks or self._deafened():
            return Chunk(SILENCE)
        if len(chunks) == 1:
            lone = chunks[0]
            return lone if len(sources) == 1 else Chunk(lone.samples)
        acc: np.ndarray[Any, np.dtype[np.int32]] = chunks[0].samples.astype(np.int32)
        for chunk in chunks[1:]:
            acc += chunk.samples
        mixed: Samples = np.clip(acc, -32768, 32767).astype(np.int16)
        return Chunk(mixed)

    def encode(self, chunk: Chunk) -> bytes:
        """The packet for one mixed frame: the lone source's own packet, or the mixer's encoder.
        Silence goes through the encoder too for a few frames (so its state, and the client
        decoder's, settle on silence), then as the constant silence frame (no encoding while
        nobody speaks or while deafened)."""
        if chunk.opus is not None:
            self.forwarded += 1
            self._silent_run = SILENCE_SETTLE_FRAMES  # the encoder did not follow: settle again later
            return chunk.opus
        if chunk.samples is SILENCE:
            if self._silent_run >= SILENCE_SETTLE_FRAMES:
                return silence_packet()
            self._silent_run += 1
        else:
            self._silent_run = 0
        return self.encoder.encode(chunk.samples) or silence_packet()

    async def recv(self) -> Packet[Any]:
        if self.readyState != "live":
            raise MediaStreamError
        if self._next is None:
            self._next = self._last = time.monotonic() - FRAME_S
        while True:
            sources = self._sources()
            have = any(source.frames for source in sources)
            now = time.monotonic()
            # one source (a 1:1 call): its frames go out as they come, nothing to sum them with
            slot = self._next - MIX_EARLY_S if len(sources) > 1 else now
            if have and now >= slot:
                break  # a frame, and its slot has come
            deadline = slot if have else max(self._next, self._last + FRAME_S) + MIX_SILENCE_AFTER_S
            if now >= deadline:
                break  # nothing came: silence keeps the track alive
            wake = self._wake()
            if have or wake is None:
                await asyncio.sleep(deadline - now)  # other sources' frames join this one meanwhile
            else:
                await wake.wait(deadline - now)
        packet = opus_packet(self.encode(self.mix()), self._pts)
        self._pts += FRAME_SAMPLES
        if have:
            # the next slot: one frame time later on the sources' clock (never more than one frame
            # per 20 ms on average: frames of several sources are summed, not played one after the
            # other), re-phased only when this frame came more than MIX_JITTER_S late
            self._next = max(self._next + FRAME_S, now + FRAME_S - MIX_JITTER_S)
        else:
            self._next = now  # silence: the next frame of any source goes out as soon as it comes
        self._last = now
        return packet
