"""Remote voice participants for the voice tests and benchmarks, written against the wire protocol
only (wire §11.4): an aiortc peer of the p2p mesh (also one that trickles ICE like a browser) and a
PCM peer that speaks like the backend's ``openchat-rtc-joiner`` tool; tone analysis by FFT.

Not part of the product (testkit): imported by tests/ and bench/, never by services/.
"""

from __future__ import annotations

import asyncio
import base64
import fractions
import json
import time
import uuid
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import AudioFrame
from websockets.asyncio.client import ClientConnection, connect

from services.core.audio import mono_frames

SAMPLE_RATE = 48_000
FRAME = 960
Floats = np.ndarray[Any, np.dtype[np.float64]]


# -- analysis ------------------------------------------------------------------------------------
def band_share(samples: Floats, hz: float, width: float = 20.0) -> float:
    """Share of the signal's power within ``hz`` ± ``width`` (0..1)."""
    if len(samples) < 2048:
        return 0.0
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / SAMPLE_RATE)
    total = float(spectrum[(freqs > 50)].sum()) or 1.0
    return float(spectrum[(freqs > hz - width) & (freqs < hz + width)].sum()) / total


def mean_abs(samples: Floats) -> float:
    return float(np.mean(np.abs(samples))) / 32768.0 if len(samples) else 0.0


def tone(hz: float, seconds: float, amplitude: float = 0.3) -> np.ndarray[Any, np.dtype[np.int16]]:
    n = np.arange(int(SAMPLE_RATE * seconds))
    return (np.sin(2 * np.pi * hz * n / SAMPLE_RATE) * amplitude * 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray[Any, np.dtype[np.int16]]) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())
    return path


def read_wav(path: Path) -> Floats:
    with wave.open(str(path), "rb") as w:
        assert w.getframerate() == SAMPLE_RATE and w.getnchannels() == 1
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    return data.astype(np.float64)


# -- a live tone that can be switched on and off -------------------------------------------------
class ToneTrack(MediaStreamTrack):
    """A sine tone paced in real time.  ``fork()`` gives another track of the same tone for another
    peer connection (one track read by several senders would split its frames between them),
    switched on and off with this one (``sounding``)."""

    kind = "audio"

    def __init__(self, hz: float, amplitude: float = 0.3, control: ToneTrack | None = None) -> None:
        super().__init__()
        self.hz = hz
        self.amplitude = amplitude
        self._control = control
        self._sounding = True
        self._sent = 0
        self._t0: float | None = None

    @property
    def sounding(self) -> bool:
        return self._control.sounding if self._control is not None else self._sounding

    @sounding.setter
    def sounding(self, value: bool) -> None:
        self._sounding = value

    @property
    def sent_frames(self) -> int:
        return self._sent // FRAME

    def fork(self) -> ToneTrack:
        return ToneTrack(self.hz, self.amplitude, control=self)

    async def recv(self) -> AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        delay = self._t0 + self._sent / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)  # real-time pacing of a media source
        t = (np.arange(FRAME) + self._sent) / SAMPLE_RATE
        amp = self.amplitude if self.sounding else 0.0
        samples = (np.sin(2 * np.pi * self.hz * t) * amp * 32767).astype(np.int16)
        frame = AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._sent
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._sent += FRAME
        return frame


# -- signaling -----------------------------------------------------------------------------------
@dataclass
class Signaling:
    ws: ClientConnection
    participant_id: str
    others: list[dict[str, Any]]

    @classmethod
    async def join(cls, base_url: str, uid: str, channel: str, server_id: str = "srv_harbor") -> Signaling:
        headers = {"X-OpenChat-User-UID": uid, "X-OpenChat-Device-ID": f"dev_{uid}"}
        async with httpx.AsyncClient(timeout=10) as http:
            resp = await http.post(
                f"{base_url}/v1/rtc/channels/{channel}/join-ticket",
                headers=headers,
                json={"server_id": server_id},
            )
            resp.raise_for_status()
            ticket = resp.json()
        url = base_url.replace("http://", "ws://") + "/v1/rtc/signaling"
        ws = await connect(url, close_timeout=0.5, max_size=2 << 20)
        await ws.send(json.dumps({"type": "rtc.join", "payload": {"ticket": ticket["ticket"]}}))
        while True:
            doc = json.loads(await asyncio.wait_for(ws.recv(), 10))
            if doc["type"] == "rtc.joined":
                return cls(ws, doc["payload"]["participant_id"], doc["payload"]["participants"])

    async def send(self, kind: str, payload: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"type": kind, "request_id": uuid.uuid4().hex[:8], "payload": payload}))


@dataclass
class Heard:
    """Audio received from one remote participant, with arrival times."""

    chunks: list[tuple[float, np.ndarray[Any, np.dtype[np.int16]]]] = field(default_factory=list)

    def since(self, t0: float) -> Floats:
        parts = [c for t, c in self.chunks if t >= t0]
        return np.concatenate(parts).astype(np.float64) if parts else np.zeros(0)

    def last(self, seconds: float) -> Floats:
        return self.since(time.monotonic() - seconds)


class MeshPeer:
    """An aiortc participant of the p2p mesh (wire §11.4 A), sending a tone (its own track per
    connection).  ``only_uids``: connect only with these users (a benchmark's peers talk to the
    member alone, not to each other)."""

    def __init__(self, uid: str, hz: float, only_uids: set[str] | None = None) -> None:
        self.uid = uid
        self.tone = ToneTrack(hz)
        self.only_uids = only_uids
        self.ignore_offers = False  # a peer that no longer answers anything (tests of D12)
        self._tone_used = False
        self.sig: Signaling | None = None
        self.pcs: dict[str, RTCPeerConnection] = {}
        self.uids: dict[str, str] = {}
        self.heard: dict[str, Heard] = {}
        self.media_states: list[dict[str, Any]] = []
        self.left: list[str] = []
        self._task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def join(self, base_url: str, channel: str) -> None:
        self.sig = await Signaling.join(base_url, self.uid, channel)
        for other in self.sig.others:
            self.uids[other["participant_id"]] = other["user_uid"]
        self._task = asyncio.create_task(self._read())
        for other in self.sig.others:  # the newcomer offers
            if not self._wanted(other["participant_id"]):
                continue
            pc = self._pc(other["participant_id"])
            await pc.setLocalDescription(await pc.createOffer())
            await self.sig.send(
                "rtc.offer.publish",
                {
                    "type": "offer",
                    "sdp": pc.localDescription.sdp,
                    "target_participant_id": other["participant_id"],
                },
            )

    def pid_of(self, uid: str) -> str | None:
        """The participant id ``uid`` has now (its latest: a re-join gets a new one)."""
        return next(
            (pid for pid, u in reversed(self.uids.items()) if u == uid and pid not in self.left), None
        )

    def _wanted(self, remote: str) -> bool:
        return self.only_uids is None or self.uids.get(remote) in self.only_uids

    def _track(self) -> MediaStreamTrack:
        fork = getattr(self.tone, "fork", None)
        if self._tone_used and callable(fork):
            track: MediaStreamTrack = fork()
            return track
        self._tone_used = True
        return self.tone

    def _pc(self, remote: str) -> RTCPeerConnection:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(self._track())
        self.pcs[remote] = pc
        heard = self.heard.setdefault(remote, Heard())

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._record(track, heard)))

        return pc

    async def _record(self, track: MediaStreamTrack, heard: Heard) -> None:
        async for samples in mono_frames(track):
            heard.chunks.append((time.monotonic(), samples))

    async def _read(self) -> None:
        assert self.sig is not None
        async for raw in self.sig.ws:
            doc = json.loads(raw)
            kind, payload = doc["type"], doc.get("payload", {})
            if kind == "rtc.participant.joined":
                self.uids[payload["participant"]["participant_id"]] = payload["participant"]["user_uid"]
            elif kind == "rtc.participant.left":
                self.left.append(payload["participant"]["participant_id"])
            elif (
                kind == "rtc.offer.publish"
                and payload.get("target_participant_id") == self.sig.participant_id
                and self._wanted(payload["from_participant_id"])
                and not self.ignore_offers
            ):
                pc = self._pc(payload["from_participant_id"])
                await pc.setRemoteDescription(RTCSessionDescription(sdp=payload["sdp"], type="offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await self.sig.send(
                    "rtc.answer.publish",
                    {
                        "type": "answer",
                        "sdp": pc.localDescription.sdp,
                        "target_participant_id": payload["from_participant_id"],
                    },
                )
            elif (
                kind == "rtc.answer.publish"
                and payload.get("target_participant_id") == self.sig.participant_id
            ):
                offered = self.pcs.get(payload["from_participant_id"])
                if offered is not None:
                    await offered.setRemoteDescription(
                        RTCSessionDescription(sdp=payload["sdp"], type="answer")
                    )
            elif kind == "rtc.media.state" and payload.get("stream_kind") != "audio_pcm_s16le_48k_mono":
                self.media_states.append(payload)

    def vanish(self, remote: str) -> int:
        """The network path to ``remote`` breaks: this peer's ICE sockets of that connection close
        without a word (no DTLS close, no signaling), so ``remote`` sees its consent checks go
        unanswered and the connection fail.  Returns the sockets closed."""
        closed = 0
        pc = self.pcs[remote]
        for transceiver in pc.getTransceivers():
            connection = transceiver.sender.transport.transport._connection  # aioice, private
            for protocol in list(connection._protocols):
                if protocol.transport is not None:
                    protocol.transport.close()
                    closed += 1
        return closed

    async def close(self) -> None:
        for task in [self._task, *self._tasks]:
            if task is not None:
                task.cancel()
        for pc in self.pcs.values():
            await pc.close()
        if self.sig is not None:
            await self.sig.ws.close()


class TricklePeer(MeshPeer):
    """Offers like a browser peer: the SDP without candidates, then every candidate trickled as
    ``rtc.ice.candidate {candidate, sdp_mid, sdp_mline_index, target_participant_id}``."""

    async def join(self, base_url: str, channel: str) -> None:
        self.sig = await Signaling.join(base_url, self.uid, channel)
        for other in self.sig.others:
            self.uids[other["participant_id"]] = other["user_uid"]
        self._task = asyncio.create_task(self._read())
        for other in self.sig.others:
            target = other["participant_id"]
            pc = self._pc(target)
            await pc.setLocalDescription(await pc.createOffer())
            lines = pc.localDescription.sdp.splitlines()
            candidates = [ln[2:] for ln in lines if ln.startswith("a=candidate:")]
            bare = [ln for ln in lines if not ln.startswith(("a=candidate:", "a=end-of-candidates"))]
            assert candidates, "aiortc gathered no candidates"
            await self.sig.send(
                "rtc.offer.publish",
                {"type": "offer", "sdp": "\r\n".join(bare) + "\r\n", "target_participant_id": target},
            )
            for candidate in candidates:
                await self.sig.send(
                    "rtc.ice.candidate",
                    {
                        "candidate": candidate,
                        "sdp_mid": "0",
                        "sdp_mline_index": 0,
                        "target_participant_id": target,
                    },
                )
            self.trickled = len(candidates)


class PcmPeer:
    """Speaks like ``openchat-rtc-joiner`` in pcm-frames mode: 20 ms s16le frames inside
    ``rtc.media.state``, in ~1 s streams; reassembles what others send, a stream once complete."""

    def __init__(self, uid: str, hz: float) -> None:
        self.uid = uid
        self.hz = hz
        self.sig: Signaling | None = None
        self.partial: dict[tuple[str, str], dict[int, bytes]] = {}
        self.files: list[tuple[str, str, str, bytes]] = []  # (participant, stream, file name, bytes)
        self._tasks: list[asyncio.Task[None]] = []

    async def join(self, base_url: str, channel: str) -> None:
        self.sig = await Signaling.join(base_url, self.uid, channel)
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._speak())]

    async def _speak(self) -> None:
        assert self.sig is not None
        signal = tone(self.hz, 1.0).astype("<i2").tobytes()
        t0, sent, iteration = time.monotonic(), 0, 0
        while True:
            iteration += 1
            stream = f"joiner_{uuid.uuid4().hex[:8]}"
            for seq in range(50):
                delay = t0 + sent * 0.02 - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)  # real-time pacing, like the tool
                await self.sig.send(
                    "rtc.media.state",
                    {
                        "stream_id": stream,
                        "stream_kind": "audio_pcm_s16le_48k_mono",
                        "file_name": "tone.wav",
                        "file_type": "pcm_s16le",
                        "source_file_type": "wav",
                        "loop_iteration": iteration,
                        "seq": seq,
                        "total_seq": 50,
                        "chunk_b64": base64.b64encode(signal[seq * 1920 : (seq + 1) * 1920]).decode(),
                        "sample_rate_hz": SAMPLE_RATE,
                        "channels": 1,
                        "frame_duration_ms": 20,
                        "eof": seq == 49,
                        "transmitted_at": "2026-12-04T00:00:00Z",
                        "transmitter_uid": self.uid,
                    },
                )
                sent += 1

    async def _read(self) -> None:
        assert self.sig is not None
        async for raw in self.sig.ws:
            doc = json.loads(raw)
            payload = doc.get("payload", {})
            if doc["type"] != "rtc.media.state" or payload.get("stream_kind") != "audio_pcm_s16le_48k_mono":
                continue
            if payload["participant_id"] == self.sig.participant_id:
                continue  # own echoes
            key = (payload["participant_id"], payload["stream_id"])
            parts = self.partial.setdefault(key, {})
            parts[int(payload["seq"])] = base64.b64decode(payload["chunk_b64"])
            if payload.get("eof"):
                parts = self.partial.pop(key)
                if sorted(parts) == list(
                    range(int(payload["total_seq"]))
                ):  # the tool writes only whole streams
                    data = b"".join(parts[i] for i in sorted(parts))
                    self.files.append((key[0], key[1], str(payload["file_name"]), data))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.sig is not None:
            await self.sig.ws.close()
