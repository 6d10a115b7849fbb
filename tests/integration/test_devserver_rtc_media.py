"""Voice through the devserver's signaling (wire §11.4).

A. Two aiortc peers form a P2P mesh: the devserver only relays offer/answer (newcomer offers,
   every frame targeted); each peer sends a sine tone and must receive the other's tone (RMS well
   above silence, dominant frequency at the sent pitch).
B. PCM frames inside ``rtc.media.state`` (openchat-rtc-joiner "pcm-frames" mode) round-trip
   byte-exactly; the sender skips its own echoes.
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError, MediaStreamTrack
from av import AudioFrame

from tests.integration.test_devserver_rtc_harness import (
    APP_KINDS,
    Devserver,
    SigClient,
    real_app_available,
    run_devserver,
)

SAMPLE_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms


@pytest.fixture(scope="module", params=APP_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Devserver]:
    if request.param == "real" and not real_app_available():
        pytest.skip("services.devserver.app.create_app does not exist yet")
    with run_devserver(request.param) as devserver:
        yield devserver


class SineTrack(AudioStreamTrack):
    """A live 20 ms-paced mono sine tone (no audio device needed)."""

    def __init__(self, frequency: float, amplitude: float = 0.5) -> None:
        super().__init__()
        self.frequency = frequency
        self.amplitude = amplitude
        self._sent = 0
        self._t0: float | None = None

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        else:
            # Real-time pacing of a media source, not a wait for an event.
            delay = self._t0 + self._sent / SAMPLE_RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        t = (np.arange(FRAME_SAMPLES) + self._sent) / SAMPLE_RATE
        samples = (np.sin(2 * np.pi * self.frequency * t) * self.amplitude * 32767).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sent += FRAME_SAMPLES
        return frame


def mono(frame: AudioFrame) -> np.ndarray[Any, np.dtype[np.float64]]:
    data = frame.to_ndarray().astype(np.float64).reshape(-1)
    channels = len(frame.layout.channels)
    if channels > 1 and not frame.format.is_planar:
        data = data.reshape(-1, channels)[:, 0]
    elif channels > 1:
        data = frame.to_ndarray().astype(np.float64)[0]
    return data


async def collect_tone(
    track: MediaStreamTrack, frames_wanted: int = 25, rms_floor: float = 2000.0
) -> np.ndarray[Any, np.dtype[np.float64]]:
    """Receive until ``frames_wanted`` consecutive non-silent frames arrived; return their samples."""
    loud: list[np.ndarray[Any, np.dtype[np.float64]]] = []
    while len(loud) < frames_wanted:
        frame = await asyncio.wait_for(track.recv(), 10)
        assert isinstance(frame, AudioFrame)
        samples = mono(frame)
        rms = float(np.sqrt(np.mean(samples**2)))
        if rms > rms_floor:
            loud.append(samples)
        else:
            loud.clear()
    return np.concatenate(loud)


def dominant_hz(samples: np.ndarray[Any, np.dtype[np.float64]]) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    return float(freqs[int(np.argmax(spectrum))])


def new_peer() -> RTCPeerConnection:
    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def test_two_aiortc_peers_exchange_audio(server: Devserver) -> None:
    alice = await server.join("uid_alice", "vc_general", device="dev_alice_laptop")
    bob = await server.join("uid_bob", "vc_general", device="dev_bob_phone")  # the newcomer
    pc_alice, pc_bob = new_peer(), new_peer()
    received: dict[str, asyncio.Future[MediaStreamTrack]] = {
        "alice": asyncio.get_running_loop().create_future(),
        "bob": asyncio.get_running_loop().create_future(),
    }

    def on_track(who: str) -> Any:
        def handler(track: MediaStreamTrack) -> None:
            if track.kind == "audio" and not received[who].done():
                received[who].set_result(track)

        return handler

    pc_alice.on("track", on_track("alice"))
    pc_bob.on("track", on_track("bob"))
    try:
        joined = await alice.recv_type("rtc.participant.joined")
        assert joined["payload"]["participant"]["participant_id"] == bob.participant_id
        existing = [p["participant_id"] for p in bob.joined["payload"]["participants"]]
        assert existing == [alice.participant_id]

        # The newcomer offers to every participant already in the room, targeted.
        pc_bob.addTrack(SineTrack(440.0))
        await pc_bob.setLocalDescription(await pc_bob.createOffer())
        await bob.send(
            "rtc.offer.publish",
            {
                "type": "offer",
                "sdp": pc_bob.localDescription.sdp,
                "direction": "publish",
                "target_participant_id": existing[0],
            },
            request_id="offer_bob_1",
        )
        offer = await alice.recv_type("rtc.offer.publish")
        assert offer["payload"]["from_participant_id"] == bob.participant_id
        assert offer["payload"]["sdp"] == pc_bob.localDescription.sdp

        pc_alice.addTrack(SineTrack(660.0))
        await pc_alice.setRemoteDescription(RTCSessionDescription(sdp=offer["payload"]["sdp"], type="offer"))
        await pc_alice.setLocalDescription(await pc_alice.createAnswer())
        await alice.send(
            "rtc.answer.publish",
            {
                "type": "answer",
                "sdp": pc_alice.localDescription.sdp,
                "direction": "publish",
                "target_participant_id": offer["payload"]["from_participant_id"],
            },
            request_id="answer_alice_1",
        )
        answer = await bob.recv_type("rtc.answer.publish")
        assert answer["payload"]["from_participant_id"] == alice.participant_id
        await pc_bob.setRemoteDescription(RTCSessionDescription(sdp=answer["payload"]["sdp"], type="answer"))

        track_at_alice = await asyncio.wait_for(received["alice"], 10)
        track_at_bob = await asyncio.wait_for(received["bob"], 10)
        heard_by_alice, heard_by_bob = await asyncio.gather(
            collect_tone(track_at_alice), collect_tone(track_at_bob)
        )
        assert abs(dominant_hz(heard_by_alice) - 440.0) < 15.0
        assert abs(dominant_hz(heard_by_bob) - 660.0) < 15.0
        assert float(np.sqrt(np.mean(heard_by_alice**2))) > 5000.0
        assert pc_alice.connectionState == "connected" and pc_bob.connectionState == "connected"
    finally:
        await pc_alice.close()
        await pc_bob.close()
        await bob.close()
        left = await alice.recv_type("rtc.participant.left")
        assert left["payload"]["participant"] == {"participant_id": bob.participant_id, "user_uid": "uid_bob"}
        await alice.close()


def pcm_signal(frames: int) -> bytes:
    """A deterministic, non-trivial s16le mono signal: chirp plus a sample counter pattern."""
    n = np.arange(frames * FRAME_SAMPLES)
    chirp = np.sin(2 * np.pi * (200 + n / 40) * n / SAMPLE_RATE) * 20000
    samples = (chirp + (n % 97) - 48).astype("<i2")
    return samples.tobytes()


async def test_pcm_frames_in_media_state_round_trip(server: Devserver) -> None:
    frames = 40  # 0.8 s; below the 64-frame outbound queue, so nothing can be dropped
    signal = pcm_signal(frames)
    chunk = FRAME_SAMPLES * 2
    alice = await server.join("uid_alice", "vc_party")
    bob = await server.join("uid_bob", "vc_party")
    try:
        await alice.recv_type("rtc.participant.joined")
        for seq in range(frames):
            await alice.send(
                "rtc.media.state",
                {
                    "stream_id": "stream_demo",
                    "stream_kind": "audio_pcm_s16le_48k_mono",
                    "file_name": "tone.wav",
                    "file_type": "pcm_s16le",
                    "source_file_type": "wav",
                    "loop_iteration": 1,
                    "seq": seq,
                    "total_seq": frames,
                    "chunk_b64": base64.b64encode(signal[seq * chunk : (seq + 1) * chunk]).decode(),
                    "sample_rate_hz": SAMPLE_RATE,
                    "channels": 1,
                    "frame_duration_ms": 20,
                    "eof": seq == frames - 1,
                    "transmitted_at": "2026-11-26T00:23:41Z",
                    "transmitter_uid": "uid_alice",
                },
                request_id=f"pcm_1_{seq}",
            )

        async def reassemble(me: SigClient) -> tuple[dict[tuple[str, str], bytes], int]:
            """Receiver logic of §11.4 B: key by participant + stream, order by seq, stop at eof."""
            streams: dict[tuple[str, str], dict[int, bytes]] = {}
            finished: dict[tuple[str, str], bytes] = {}
            own_echoes = 0
            eof_seen = False
            while not eof_seen:
                frame = await me.recv_type("rtc.media.state")
                payload = frame["payload"]
                assert payload["user_uid"] == "uid_alice" and frame["channel_id"] == "vc_party"
                eof_seen = bool(payload["eof"])
                if payload["participant_id"] == me.participant_id:
                    own_echoes += 1
                    continue
                key = (payload["participant_id"], payload["stream_id"])
                streams.setdefault(key, {})[int(payload["seq"])] = base64.b64decode(payload["chunk_b64"])
                if payload["eof"]:
                    parts = streams.pop(key)
                    assert sorted(parts) == list(range(int(payload["total_seq"])))
                    finished[key] = b"".join(parts[i] for i in sorted(parts))
            return finished, own_echoes

        (at_bob, bob_echoes), (at_alice, alice_echoes) = await asyncio.gather(
            reassemble(bob), reassemble(alice)
        )
        assert at_bob == {(alice.participant_id, "stream_demo"): signal}
        assert bob_echoes == 0
        assert at_alice == {} and alice_echoes == frames  # the sender skipped all its own echoes
        await alice.assert_quiet()
        await bob.assert_quiet()
    finally:
        await alice.close()
        await bob.close()
