"""Audio plumbing bounds (ADR 0011): buffers, the peer track, the mixer; PCM and participant bounds."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime
from typing import Any

import httpx
import numpy as np

from services.core.contracts.chat import ServerRecord
from services.core.contracts.media import MAX_PARTICIPANTS, VoicePrefs
from services.media.audio import FRAME_SAMPLES, MixerTrack, PeerOutTrack, SourceBuffer
from services.media.call import PCM_MAX_FRAMES_PER_S, Call


def frame_of(value: int) -> np.ndarray[Any, np.dtype[np.int16]]:
    return np.full(FRAME_SAMPLES, value, dtype=np.int16)


def test_source_buffer_is_bounded_and_trims_a_standing_queue() -> None:
    buf = SourceBuffer(max_frames=10, depth=2)
    for i in range(15):
        buf.push(frame_of(i))
    assert len(buf.frames) == 10 and buf.dropped == 5
    first = buf.pop()
    assert first is not None and int(first[0]) == 12  # trimmed to depth + 1 before taking one
    assert len(buf.frames) == 2


async def test_peer_track_is_bounded_and_silent_when_idle() -> None:
    track = PeerOutTrack(max_frames=3, idle_s=0.01)
    for i in range(5):
        track.push(frame_of(i + 1))
    assert track.dropped == 2
    got = [int((await track.recv()).to_ndarray()[0][0]) for _ in range(3)]
    assert got == [3, 4, 5]
    silent = await track.recv()
    assert not silent.to_ndarray().any() and silent.pts == 3 * FRAME_SAMPLES


async def test_mixer_sums_with_clipping_and_deafen_silences() -> None:
    a, b = SourceBuffer(), SourceBuffer()
    deaf = [False]
    mixer = MixerTrack(sources=lambda: [a, b], deafened=lambda: deaf[0])
    a.push(frame_of(30000))
    b.push(frame_of(10000))
    assert int(mixer.mix()[0]) == 32767
    a.push(frame_of(100))
    assert int(mixer.mix()[0]) == 100  # b had nothing: a alone
    a.push(frame_of(100))
    deaf[0] = True
    assert not mixer.mix().any()
    deaf[0] = False
    wake = asyncio.Event()
    a.wake = wake
    mixer = MixerTrack(sources=lambda: [a], deafened=lambda: False, wake=lambda: wake)
    first = await mixer.recv()  # nothing buffered: silence after the frame time
    assert not first.to_ndarray().any()

    async def later() -> None:
        await asyncio.sleep(0.005)
        a.push(frame_of(7))

    task = asyncio.create_task(later())
    second = await mixer.recv()  # arrival-driven: the frame, not another silence
    await task
    assert int(second.to_ndarray()[0][0]) == 7 and second.pts == FRAME_SAMPLES


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
