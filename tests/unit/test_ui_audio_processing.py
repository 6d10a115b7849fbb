"""The desktop's audio processing switches (ADR 0019) with the real WebRTC module, and the
call-media preferences file. Each switch must change the signal the way it is named for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ui.audio import prefs as media_prefs
from ui.audio.engine import make_processor
from ui.audio.prefs import PREFS_KEY, MediaPrefs

RATE = 48_000
Arr = np.ndarray[Any, np.dtype[Any]]


def run(prefs: MediaPrefs, near: Arr, far: Arr) -> Arr:
    apm = make_processor(prefs)
    if apm is None:
        return near.astype(np.float64)
    out = [apm.process(near[i : i + 960], far[i : i + 960]) for i in range(0, len(near) - 959, 960)]
    return np.concatenate(out).astype(np.float64)


def level(x: Arr) -> float:
    return float(np.mean(np.abs(x[-RATE:]))) / 32768.0


def tone(hz: float, seconds: float, amp: float) -> Arr:
    n = np.arange(int(RATE * seconds))
    return (np.sin(2 * np.pi * hz * n / RATE) * amp * 32767).astype(np.int16)


OFF = MediaPrefs(echo_cancellation=False, noise_suppression=False, auto_gain=False)


def test_everything_off_is_no_processing() -> None:
    assert make_processor(OFF) is None


def test_echo_cancellation_removes_the_far_end_from_the_microphone() -> None:
    far = (np.random.default_rng(1).normal(0, 0.2, RATE * 4) * 32767).clip(-32768, 32767).astype(np.int16)
    echo = np.concatenate([np.zeros(480, np.int16), (far[:-480] * 0.5).astype(np.int16)])  # 10 ms later
    raw = level(run(OFF, echo, far))
    cancelled = level(run(OFF.model_copy(update={"echo_cancellation": True}), echo, far))
    assert cancelled < raw * 0.25, (raw, cancelled)


def test_noise_suppression_lowers_steady_noise() -> None:
    noise = (np.random.default_rng(2).normal(0, 0.05, RATE * 4) * 32767).astype(np.int16)
    silent = np.zeros_like(noise)
    raw = level(run(OFF, noise, silent))
    suppressed = level(run(OFF.model_copy(update={"noise_suppression": True}), noise, silent))
    assert suppressed < raw * 0.5, (raw, suppressed)


def voice_like(seconds: float, amp: float) -> Arr:
    """A voiced sound: harmonics of a gliding 120 Hz pitch in 3 syllables a second (the gain
    control's voice detector ignores a pure tone)."""
    t = np.arange(int(RATE * seconds)) / RATE
    phase = 2 * np.pi * np.cumsum(120 + 20 * np.sin(2 * np.pi * 0.5 * t)) / RATE
    sig = sum(np.sin(k * phase) / k for k in range(1, 25)) * np.clip(np.sin(2 * np.pi * 3 * t), 0, 1)
    out: Arr = (sig / np.max(np.abs(sig)) * amp * 32767).astype(np.int16)
    return out


def test_automatic_gain_raises_a_quiet_voice() -> None:
    quiet = voice_like(8.0, 0.01)
    silent = np.zeros_like(quiet)
    raw = level(run(OFF, quiet, silent))
    gained = level(run(OFF.model_copy(update={"auto_gain": True}), quiet, silent))
    assert gained > raw * 4, (raw, gained)


def test_prefs_file_round_trip_and_bad_files(tmp_path: Path) -> None:
    assert media_prefs.load(tmp_path) == MediaPrefs()
    p = MediaPrefs(input_device="mic.monitor", output_volume=20, input_volume=150, auto_gain=False)
    media_prefs.save(tmp_path, p)
    assert PREFS_KEY in (tmp_path / media_prefs.FILE_NAME).read_text()
    assert media_prefs.load(tmp_path) == p
    (tmp_path / media_prefs.FILE_NAME).write_text(
        json.dumps({"key": PREFS_KEY, "value": {"output_volume": 900}})
    )
    assert media_prefs.load(tmp_path) == MediaPrefs()  # out of bounds: defaults, nothing crashes
    (tmp_path / media_prefs.FILE_NAME).write_text("not json")
    assert media_prefs.load(tmp_path) == MediaPrefs()
