"""Shared pieces of the backend's RTC protocol (wire §11) used by more than one process.

- ``identity_headers``: the member's identity headers for one server (wire §2; sent on every
  request, reads included, D7);
- ``usable_ice_servers``: the ticket's ICE list without placeholders (``example.invalid``);
- ``frame`` / ``parse_frame``: signaling envelopes out and in (size-bounded, validated);
- ``PcmFrame``: one 20 ms PCM frame inside ``rtc.media.state`` (§11.4 B, ``openchat-rtc-joiner``);
- ``MicState``: the reference client's ``rtc.media.state`` for the microphone (8.3).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from services.core.contracts.wire import IceServer, SignalingEnvelope, WireModel

MAX_SIGNALING_FRAME_BYTES = 1 << 20  # the backend's own inbound cap (§11.3)
PCM_STREAM_KIND = "audio_pcm_s16le_48k_mono"
MIC_STREAM_KIND = "audio_microphone"
PCM_SAMPLE_RATE = 48_000
PCM_FRAME_SAMPLES = 960  # 20 ms
PCM_FRAME_BYTES = PCM_FRAME_SAMPLES * 2
MAX_PCM_TOTAL_SEQ = 1 << 20

RELAY_TYPES = frozenset(
    {
        "rtc.offer.publish",
        "rtc.offer.subscribe",
        "rtc.answer.publish",
        "rtc.answer.subscribe",
        "rtc.ice.candidate",
    }
)


class SignalingFrameError(ValueError):
    """A signaling frame that is not a usable envelope (logged and skipped)."""


def identity_headers(user_uid: str, device_id: str) -> dict[str, str]:
    """Headers every HTTP request to a backend carries (wire §2, §16)."""
    return {"X-OpenChat-User-UID": user_uid, "X-OpenChat-Device-ID": device_id}


def usable_ice_servers(servers: list[IceServer]) -> list[IceServer]:
    """Drop URLs containing ``example.invalid`` (the backend's placeholder TURN entry), like the
    Electron client; entries left without URLs disappear."""
    out: list[IceServer] = []
    for server in servers:
        urls = [u for u in server.urls if "example.invalid" not in u.lower()]
        if urls:
            out.append(server.model_copy(update={"urls": urls}))
    return out


def frame(kind: str, payload: dict[str, Any], request_id: str = "") -> str:
    """One client → server signaling frame (compact JSON)."""
    doc: dict[str, Any] = {"type": kind}
    if request_id:
        doc["request_id"] = request_id
    doc["payload"] = payload
    return json.dumps(doc, separators=(",", ":"))


def parse_frame(data: str | bytes) -> SignalingEnvelope:
    """A server → client frame; raises ``SignalingFrameError`` for anything unusable."""
    if len(data) > MAX_SIGNALING_FRAME_BYTES:
        raise SignalingFrameError(f"signaling frame of {len(data)} bytes is over the 1 MiB bound")
    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise SignalingFrameError("signaling frame is not JSON") from exc
    if not isinstance(doc, dict):
        raise SignalingFrameError("signaling frame is not a JSON object")
    try:
        env = SignalingEnvelope.model_validate(doc)
    except ValidationError as exc:
        raise SignalingFrameError(
            f"signaling frame does not fit the envelope: {exc.error_count()} error(s)"
        ) from exc
    if not env.type:
        raise SignalingFrameError("signaling frame without a type")
    return env


class PcmFrame(WireModel):
    """``rtc.media.state`` with ``stream_kind: audio_pcm_s16le_48k_mono`` (§11.4 B)."""

    model_config = ConfigDict(extra="ignore")

    stream_id: str = Field(min_length=1, max_length=128)
    stream_kind: Literal["audio_pcm_s16le_48k_mono"]
    seq: int = Field(ge=0, lt=MAX_PCM_TOTAL_SEQ)
    total_seq: int | None = Field(default=None, ge=0, le=MAX_PCM_TOTAL_SEQ)
    chunk_b64: str = Field(max_length=4 * PCM_FRAME_BYTES)
    sample_rate_hz: int = PCM_SAMPLE_RATE
    channels: int = 1
    eof: bool = False
    participant_id: str = Field(default="", max_length=128)
    user_uid: str = Field(default="", max_length=256)

    @field_validator("sample_rate_hz")
    @classmethod
    def _rate(cls, value: int) -> int:
        if value != PCM_SAMPLE_RATE:
            raise ValueError("only 48 kHz PCM frames are supported")
        return value

    @field_validator("channels")
    @classmethod
    def _mono(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only mono PCM frames are supported")
        return value

    def samples(self) -> bytes:
        """The s16le bytes of this frame (a whole number of samples, at most 20 ms)."""
        try:
            raw = base64.b64decode(self.chunk_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("chunk_b64 is not base64") from exc
        if len(raw) % 2 or len(raw) > PCM_FRAME_BYTES:
            raise ValueError(f"PCM chunk of {len(raw)} bytes is not up to 960 s16 samples")
        return raw


def pcm_payload(
    *,
    stream_id: str,
    file_name: str,
    seq: int,
    total_seq: int,
    chunk: bytes,
    eof: bool,
    transmitted_at: str,
    transmitter_uid: str,
    loop_iteration: int = 1,
) -> dict[str, Any]:
    """The payload the ``openchat-rtc-joiner`` tool sends and reassembles (§11.4 B)."""
    return {
        "stream_id": stream_id,
        "stream_kind": PCM_STREAM_KIND,
        "file_name": file_name,
        "file_type": "pcm_s16le",
        "source_file_type": "pcm_s16le",
        "loop_iteration": loop_iteration,
        "seq": seq,
        "total_seq": total_seq,
        "chunk_b64": base64.b64encode(chunk).decode("ascii"),
        "sample_rate_hz": PCM_SAMPLE_RATE,
        "channels": 1,
        "frame_duration_ms": 20,
        "eof": eof,
        "transmitted_at": transmitted_at,
        "transmitter_uid": transmitter_uid,
    }


class MicState(WireModel):
    """The microphone's ``rtc.media.state`` (features 8.3); other participants' copies are parsed
    with this too (unknown keys ignored)."""

    model_config = ConfigDict(extra="ignore")

    stream_kind: str = Field(default=MIC_STREAM_KIND, max_length=64)
    action: str = Field(default="", max_length=16)
    mic_muted: bool | None = None
    deafened: bool | None = None
    stream_id: str | None = Field(default=None, max_length=128)
    track_id: str | None = Field(default=None, max_length=128)
    participant_id: str = Field(default="", max_length=128)
    user_uid: str = Field(default="", max_length=256)
