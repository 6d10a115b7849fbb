"""Audio plumbing bounds (ADR 0011): buffers, the peer track, the mixer; PCM and participant bounds."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np
from aiortc.jitterbuffer import JitterFrame
from av import AudioFrame

from services.core.contracts.chat import ServerRecord
from services.core.contracts.media import MAX_PARTICIPANTS, VoicePrefs
from services.media.audio import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    MixerTrack,
    OpusPacketEncoder,
    PacketTrack,
    PayloadConverter,
    PayloadOpusDecoder,
    SourceBuffer,
    Wake,
    silence_packet,
)
from services.media.call import PCM_MAX_FRAMES_PER_S, Call


def frame_of(value: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


def tone(hz: float, frames: int, amplitude: float = 0.3) -> np.ndarray[Any, np.dtype[np.int16]]:
    n = np.arange(FRAME_SAMPLES * frames)
    return (np.sin(2 * np.pi * hz * n / SAMPLE_RATE) * amplitude * 32767).astype(np.int16)


def decode_all(packets: list[bytes]) -> np.ndarray[Any, np.dtype[np.int16]]:
    decoder = PayloadOpusDecoder()
    out = []
    for i, payload in enumerate(packets):
        for frame in decoder.decode(JitterFrame(data=payload, timestamp=i * FRAME_SAMPLES)):
            out.append(frame.to_ndarray().reshape(-1))  # type: ignore[attr-defined]
    return np.concatenate(out)


def dominant_hz(samples: np.ndarray[Any, np.dtype[Any]]) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64) * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)[int(np.argmax(spectrum))])


def test_source_buffer_is_bounded_and_trims_a_standing_queue() -> None:
    buf = SourceBuffer(max_frames=10, depth=2)
    for i in range(15):
        buf.push(frame_of(i))
    assert len(buf.frames) == 10 and buf.dropped == 5
    first = buf.pop()
    assert first is not None and int(first.samples[0]) == 12  # trimmed to depth + 1 before taking one
    assert len(buf.frames) == 2


async def test_packet_track_is_bounded_and_sends_silence_when_idle() -> None:
    track = PacketTrack(max_frames=3, idle_s=0.01)
    for i in range(5):
        track.push(bytes([i + 1]))
    assert track.dropped == 2
    got = [bytes(await track.recv()) for _ in range(3)]
    assert got == [b"\x03", b"\x04", b"\x05"]
    silent = await track.recv()
    assert bytes(silent) == silence_packet() and silent.pts == 3 * FRAME_SAMPLES
    assert not decode_all([silence_packet()] * 5).any()  # the silence packet decodes to silence


def test_opus_round_trip_keeps_the_payload_of_each_frame() -> None:
    """The media service's decoder keeps each 20 ms frame's packet (to forward it unchanged); the
    converter passes it on only while its frames are aligned with the packets."""
    encoder = OpusPacketEncoder()
    signal = tone(440, 50)
    packets = [p for p in (encoder.encode(signal[i * 960 : (i + 1) * 960]) for i in range(50)) if p]
    assert len(packets) >= 48
    decoder, conv = PayloadOpusDecoder(), PayloadConverter()
    chunks = []
    for i, payload in enumerate(packets):
        for frame in decoder.decode(JitterFrame(data=payload, timestamp=i * FRAME_SAMPLES)):
            chunks.extend(conv.push(frame))  # type: ignore[arg-type]
    assert [c.opus for c in chunks] == packets
    decoded = np.concatenate([c.samples for c in chunks])
    assert abs(dominant_hz(decoded[4800:]) - 440) < 10
    # a frame of another size (10 ms) goes through the slow path and drops the payloads from then on
    odd = AudioFrame.from_ndarray(tone(440, 1)[:480].reshape(1, -1), format="s16", layout="mono")
    odd.sample_rate = SAMPLE_RATE
    assert conv.push(odd) == []
    after = conv.push(decoder.decode(JitterFrame(data=packets[0], timestamp=0))[0])  # type: ignore[arg-type]
    assert len(after) == 1 and after[0].opus is None


def test_mixer_sums_with_clipping_and_deafen_silences() -> None:
    a, b = SourceBuffer(), SourceBuffer()
    deaf = [False]
    mixer = MixerTrack(sources=lambda: [a, b], deafened=lambda: deaf[0])
    a.push(frame_of(30000), b"A")
    b.push(frame_of(10000), b"B")
    both = mixer.mix()
    assert int(both.samples[0]) == 32767 and both.opus is None  # a mix is encoded
    a.push(frame_of(100), b"A")
    alone = mixer.mix()
    # b had nothing: a alone, but re-encoded (b's and a's packets must not interleave in one stream)
    assert int(alone.samples[0]) == 100 and alone.opus is None
    a.push(frame_of(100), b"A")
    deaf[0] = True
    deafened = mixer.mix()
    assert not deafened.samples.any() and deafened.opus is None


def test_mixer_forwards_the_only_participant_and_settles_silence() -> None:
    a = SourceBuffer()
    mixer = MixerTrack(sources=lambda: [a], deafened=lambda: False)
    a.push(frame_of(100), b"A")
    assert mixer.encode(mixer.mix()) == b"A" and mixer.forwarded == 1  # a 1:1 call: no encode
    # its gaps: the constant silence frame (the client's decoder follows a's own stream)
    assert mixer.encode(mixer.mix()) == silence_packet() and mixer.encoder.encoded == 0

    b = SourceBuffer()
    mixer = MixerTrack(sources=lambda: [a, b], deafened=lambda: False)
    a.push(frame_of(100), b"A")
    b.push(frame_of(200), b"B")
    assert mixer.encode(mixer.mix()) != b"A" and mixer.encoder.encoded == 1
    packets = [mixer.encode(mixer.mix()) for _ in range(8)]  # nobody speaks any more
    # the first silent frames go through the encoder (its state and the client's decoder settle on
    # silence), then the constant silence frame
    assert mixer.encoder.encoded == 1 + 5
    assert packets[5:] == [silence_packet()] * 3


async def test_mixer_track_is_arrival_driven_and_encodes_the_mix() -> None:
    a, b = SourceBuffer(), SourceBuffer()
    wake = Wake()
    a.wake = b.wake = wake
    mixer = MixerTrack(sources=lambda: [a, b], deafened=lambda: False, wake=lambda: wake)
    first = await mixer.recv()  # nothing buffered: silence after the frame time
    assert bytes(first) == silence_packet()

    async def later() -> None:
        await asyncio.sleep(0.005)
        a.push(frame_of(7), b"seven")

    task = asyncio.create_task(later())
    second = await mixer.recv()  # arrival-driven: the frame, not another silence
    await task
    assert second.pts == FRAME_SAMPLES and mixer.forwarded == 0
    assert bytes(second) != silence_packet()  # encoded: b is a source of this call too
    # two sources: the mix is encoded by the mixer's own encoder and holds both tones
    sent: list[bytes] = []
    t440, t880 = tone(440, 30, 0.2), tone(880, 30, 0.2)
    for i in range(30):
        a.push(t440[i * 960 : (i + 1) * 960])
        b.push(t880[i * 960 : (i + 1) * 960])
        sent.append(bytes(await mixer.recv()))
    assert mixer.encoder.encoded >= 29
    spectrum = np.abs(np.fft.rfft(decode_all(sent)[4800:].astype(np.float64)))
    freqs = np.fft.rfftfreq(len(decode_all(sent)[4800:]), 1 / SAMPLE_RATE)
    peaks = sorted(float(freqs[i]) for i in np.argsort(spectrum)[-2:])
    assert abs(peaks[0] - 440) < 10 and abs(peaks[1] - 880) < 10


def record() -> ServerRecord:
    return ServerRecord(
        server_id="s",
        base_url="http://backend.test",
        display_name="S",
        icon_text="S",
        user_uid="uid_me",
        device_id="d",
        joined_at=datetime.now(UTC),
    )


async def test_participants_and_pcm_rates_are_bounded() -> None:
    async with httpx.AsyncClient() as http:
        call = Call(
            member="alice",
            server_id="s",
            channel_id="vc",
            record=record,
            http=http,
            prefs=VoicePrefs,
            on_change=lambda c: None,
            on_speaking=lambda *a: None,
        )
        for i in range(MAX_PARTICIPANTS + 10):
            call._add_person({"participant_id": f"p{i}", "user_uid": f"u{i}"})
        assert len(call.people) == MAX_PARTICIPANTS
        person = call.people["p0"]
        chunk = base64.b64encode(bytes(1920)).decode()
        for seq in range(PCM_MAX_FRAMES_PER_S + 50):  # far faster than real time, within one second
            call._on_media_state(
                {
                    "participant_id": "p0",
                    "stream_kind": "audio_pcm_s16le_48k_mono",
                    "stream_id": "s1",
                    "seq": seq,
                    "chunk_b64": chunk,
                    "sample_rate_hz": 48000,
                    "channels": 1,
                }
            )
        assert person.transport == "pcm"
        assert person.source.dropped + len(person.source.frames) <= PCM_MAX_FRAMES_PER_S
        # a frame bigger than 20 ms is refused, not played
        before = len(person.source.frames) + person.source.dropped
        person.pcm_window_start = 0.0
        call._on_media_state(
            {
                "participant_id": "p0",
                "stream_kind": "audio_pcm_s16le_48k_mono",
                "stream_id": "s2",
                "seq": 0,
                "chunk_b64": base64.b64encode(bytes(4000)).decode(),
            }
        )
        assert len(person.source.frames) + person.source.dropped == before


async def test_mixer_sums_sources_of_different_phases_at_one_frame_per_20_ms() -> None:
    """Two sources 10 ms apart: the mixer sends one frame per slot holding both (not a frame per
    arrival, which would play them one after the other, faster than real time)."""
    a, b = SourceBuffer(), SourceBuffer()
    wake = Wake()
    a.wake = b.wake = wake
    mixer = MixerTrack(sources=lambda: [a, b], deafened=lambda: False, wake=lambda: wake)
    frames = 25

    async def source(buf: SourceBuffer, value: int, offset: float) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + offset
        for i in range(frames):
            await asyncio.sleep(max(0.0, t0 + i * 0.02 - loop.time()))
            buf.push(frame_of(value))

    feeders = [asyncio.create_task(source(a, 100, 0.0)), asyncio.create_task(source(b, 1000, 0.01))]
    sent = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    while not all(f.done() for f in feeders) or a.frames or b.frames:
        await mixer.recv()
        sent += 1
    elapsed = loop.time() - start
    await asyncio.gather(*feeders)
    assert sent <= elapsed / 0.02 + 3  # one frame per 20 ms slot (plus the silences at the edges)
    # frames of both sources went out together (one after the other: ~2 x frames sent)
    assert sent <= frames + 5


def test_the_media_service_installs_its_opus_decoder_in_aiortc() -> None:
    """aiortc picks a receiver's decoder through ``aiortc.rtcrtpreceiver.get_decoder`` (a module
    attribute): an aiortc upgrade that moves it fails here, not silently in the bench."""
    from aiortc import rtcrtpreceiver
    from aiortc.codecs.g711 import PcmuDecoder
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from services.media.audio import install_payload_decoders

    install_payload_decoders()
    opus = RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2)
    pcmu = RTCRtpCodecParameters(mimeType="audio/PCMU", clockRate=8000, channels=1)
    assert isinstance(rtcrtpreceiver.get_decoder(opus), PayloadOpusDecoder)  # type: ignore[attr-defined]
    assert isinstance(rtcrtpreceiver.get_decoder(pcmu), PcmuDecoder)  # type: ignore[attr-defined]
