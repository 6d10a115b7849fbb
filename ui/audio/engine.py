"""The desktop's audio engine: the microphone and the speaker of a call and of the mic test.

Capture (a thread): the selected input through PulseAudio (``pasimple``: libpulse-simple), mono
48 kHz s16 in 20 ms frames → echo cancellation, noise suppression and automatic gain (WebRTC's
audio processing module through ``pywebrtc-audio``, each switchable; ADR 0019) → the call's
microphone track (the media service applies the input volume to what is sent, D11) and, during
the mic test, the input volume here and a loopback to the speaker with a level meter
(``level = clamp(meanAbs · 3.6)`` every 90 ms, 8.10).

Playback (a thread): the call's mix (from the bridge) plus the mic-test loopback, times the
output volume (0-100), to the selected output; what is played is the echo canceller's far-end
reference. A selected device that is missing — at open or vanished while open — falls back to
the system default and says so once (``notices``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ui.audio.devices import DeviceList, list_devices
from ui.audio.prefs import MediaPrefs
from ui.state.voice import INPUT_FALLBACK, OUTPUT_FALLBACK, meter_level

if TYPE_CHECKING:  # NumPy and PyAV (services.core.audio) load with the first audio thread, not at start
    from services.core.audio import Samples

log = logging.getLogger("openchat.ui.audio")

METER_S = 0.090
MAX_QUEUED = 10  # frames (200 ms) waiting for the speaker; older ones are dropped
STANDING = 4  # a standing queue deeper than this is trimmed (latency)
Opener = Callable[[Literal["record", "playback"], str], Any]  # (direction, device or "") → stream


def pulse_open(direction: Literal["record", "playback"], device: str) -> Any:
    """A libpulse-simple stream, 48 kHz mono s16, 20 ms fragments (small buffers: low latency)."""
    import pasimple

    from services.core.audio import FRAME_SAMPLES, SAMPLE_RATE

    frame_bytes = FRAME_SAMPLES * 2

    if direction == "record":
        return pasimple.PaSimple(
            pasimple.PA_STREAM_RECORD,
            pasimple.PA_SAMPLE_S16LE,
            1,
            SAMPLE_RATE,
            "OpenChat",
            "microphone",
            device_name=device or None,
            fragsize=frame_bytes,
        )
    return pasimple.PaSimple(
        pasimple.PA_STREAM_PLAYBACK,
        pasimple.PA_SAMPLE_S16LE,
        1,
        SAMPLE_RATE,
        "OpenChat",
        "call",
        device_name=device or None,
        tlength=frame_bytes * 4,
        prebuf=frame_bytes,
        minreq=frame_bytes,
    )


def make_processor(prefs: MediaPrefs) -> Any:
    """WebRTC's audio processing module (AEC3, NS, AGC2), or None when everything is off."""
    if not (prefs.echo_cancellation or prefs.noise_suppression or prefs.auto_gain):
        return None
    from pywebrtc_audio import AudioProcessor

    from services.core.audio import SAMPLE_RATE

    return AudioProcessor(
        SAMPLE_RATE,
        1,
        echo_cancellation=prefs.echo_cancellation,
        noise_suppression=prefs.noise_suppression,
        auto_gain_control=prefs.auto_gain,
        high_pass_filter=prefs.echo_cancellation or prefs.noise_suppression,
        stream_delay_ms=60,
    )


class AudioEngine:
    """Owns the capture and playback threads; every method is called from the main thread
    except ``play`` (the bridge's thread) and the sinks it calls (the capture thread)."""

    def __init__(
        self,
        prefs: MediaPrefs,
        *,
        opener: Opener = pulse_open,
        lister: Callable[[], DeviceList] = list_devices,
    ) -> None:
        self.prefs = prefs
        self._open = opener
        self._list = lister
        self.devices: DeviceList = DeviceList([], [], available=False)
        self.notices: queue.SimpleQueue[str] = queue.SimpleQueue()
        self.mic_sink: Callable[[Samples], None] | None = None  # the call's microphone track
        self.in_call = False
        self.testing = False
        self.level = 0.0  # the mic test's meter, 0..1
        self.captured = 0  # frames read from the input (tests, bench)
        self.played = 0  # frames written to the output
        self.input_open = ""  # the device the capture thread has open ("" = default), or None
        self.output_open = ""
        self.capture_error = ""
        self._remote: deque[Samples] = deque(maxlen=MAX_QUEUED)
        self._loopback: deque[Samples] = deque(maxlen=MAX_QUEUED)
        self._far: deque[Samples] = deque(maxlen=MAX_QUEUED)
        self._wake = threading.Condition()
        self._capture: tuple[threading.Thread, threading.Event] | None = None
        self._playback: tuple[threading.Thread, threading.Event] | None = None

    # -- control (main thread) ------------------------------------------------------------------
    def refresh_devices(self) -> DeviceList:
        self.devices = self._list()
        return self.devices

    def start_call(self, mic_sink: Callable[[Samples], None]) -> None:
        self.mic_sink = mic_sink
        self.in_call = True
        self._update()

    def stop_call(self) -> None:
        self.mic_sink = None
        self.in_call = False
        self._remote.clear()
        self._update()

    def start_test(self) -> None:
        self.testing = True
        self.level = 0.0
        self._update()

    def stop_test(self) -> None:
        self.testing = False
        self.level = 0.0
        self._loopback.clear()
        self._update()

    def apply_prefs(self, prefs: MediaPrefs) -> None:
        """New devices or processing switches: the threads reopen; volumes apply at once."""
        old, self.prefs = self.prefs, prefs
        reopen_in = (old.input_device, old.echo_cancellation, old.noise_suppression, old.auto_gain) != (
            prefs.input_device,
            prefs.echo_cancellation,
            prefs.noise_suppression,
            prefs.auto_gain,
        )
        if reopen_in and self._capture is not None:
            self._stop(self._capture)
            self._capture = None
        if old.output_device != prefs.output_device and self._playback is not None:
            self._stop(self._playback)
            self._playback = None
        self._update()

    def close(self) -> None:
        self.in_call = self.testing = False
        self._update()

    def _update(self) -> None:
        want = self.in_call or self.testing
        if want and self._capture is None:
            self.refresh_devices()
            self._capture = self._spawn(self._capture_main, "openchat-mic")
        if want and self._playback is None:
            self._playback = self._spawn(self._playback_main, "openchat-speaker")
        if not want:
            for worker in (self._capture, self._playback):
                if worker is not None:
                    self._stop(worker)
            self._capture = self._playback = None

    def _spawn(
        self, target: Callable[[threading.Event], None], name: str
    ) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        t = threading.Thread(target=target, args=(stop,), name=name, daemon=True)
        t.start()
        return t, stop

    def _stop(self, worker: tuple[threading.Thread, threading.Event]) -> None:
        t, stop = worker
        stop.set()
        with self._wake:
            self._wake.notify_all()
        t.join(3)

    # -- the call's speaker (the bridge's thread) ---------------------------------------------------
    def play(self, samples: Samples) -> None:
        if not self.in_call:
            return
        with self._wake:
            self._remote.append(samples)
            if len(self._remote) > STANDING:
                self._remote.popleft()  # a standing queue is latency: trimmed
            self._wake.notify()

    # -- threads ------------------------------------------------------------------------------------
    def _open_device(self, direction: Literal["record", "playback"], wanted: str) -> tuple[Any, str] | None:
        kind: Literal["input", "output"] = "input" if direction == "record" else "output"
        device, fell_back = self.devices.resolve(kind, wanted) if self.devices.available else (wanted, False)
        notice = INPUT_FALLBACK if direction == "record" else OUTPUT_FALLBACK
        if fell_back:
            self.notices.put(notice)
        try:
            return self._open(direction, device), device
        except Exception as exc:
            if device:
                log.info("audio device unavailable, using the default", extra={"error": type(exc).__name__})
                self.notices.put(notice)
                try:
                    return self._open(direction, ""), ""
                except Exception as exc2:
                    exc = exc2
            log.warning("no audio device", extra={"direction": direction, "error": type(exc).__name__})
            if direction == "record":
                self.capture_error = type(exc).__name__
            return None

    def _capture_main(self, stop: threading.Event) -> None:
        import numpy as np

        from services.core.audio import FRAME_SAMPLES, SILENCE, apply_gain

        frame_bytes = FRAME_SAMPLES * 2
        opened = self._open_device("record", self.prefs.input_device)
        if opened is None:
            return
        stream, self.input_open = opened
        self.capture_error = ""
        apm = make_processor(self.prefs)
        meter_sum, meter_n, meter_at = 0.0, 0, time.monotonic()
        try:
            while not stop.is_set():
                try:
                    data = stream.read(frame_bytes)
                except Exception as exc:  # the device vanished while open → the default
                    log.info("input device lost", extra={"error": type(exc).__name__})
                    _close(stream)
                    if not self.input_open:
                        return
                    self.notices.put(INPUT_FALLBACK)
                    reopened = self._open_device("record", "")
                    if reopened is None:
                        return
                    stream, self.input_open = reopened
                    continue
                samples: Samples = np.frombuffer(data, dtype="<i2").copy()
                if len(samples) != FRAME_SAMPLES:
                    continue
                self.captured += 1
                raw = samples
                if apm is not None:
                    far = self._far.popleft() if self._far else SILENCE  # nothing played: silence
                    samples = apm.process(samples, far)
                sink = self.mic_sink
                if sink is not None:
                    sink(samples)
                if self.testing:
                    gain = self.prefs.input_volume / 100.0
                    # the meter reads the microphone (times the input volume), before the echo
                    # canceller: the loopback it plays is its own far end and would be cancelled
                    heard = apply_gain(raw, gain)
                    meter_sum += float(np.abs(heard.astype(np.int32)).sum()) / 32768.0
                    meter_n += len(heard)
                    now = time.monotonic()
                    if now - meter_at >= METER_S:
                        self.level = meter_level(meter_sum / max(1, meter_n))
                        meter_sum, meter_n, meter_at = 0.0, 0, now
                    tested = apply_gain(samples, gain)
                    with self._wake:
                        self._loopback.append(tested)
                        self._wake.notify()
        finally:
            _close(stream)

    def _playback_main(self, stop: threading.Event) -> None:
        import numpy as np

        from services.core.audio import apply_gain

        opened = self._open_device("playback", self.prefs.output_device)
        if opened is None:
            return
        stream, self.output_open = opened
        try:
            while not stop.is_set():
                with self._wake:
                    if not self._remote and not self._loopback:
                        self._wake.wait(0.1)
                    remote = self._remote.popleft() if self._remote else None
                    loop = self._loopback.popleft() if self._loopback else None
                if remote is None and loop is None:
                    continue
                if remote is not None and loop is not None:
                    mixed: Samples = np.clip(
                        remote.astype(np.int32) + loop.astype(np.int32), -32768, 32767
                    ).astype(np.int16)
                else:
                    mixed = remote if remote is not None else loop  # type: ignore[assignment]
                out = apply_gain(mixed, self.prefs.output_volume / 100.0)
                try:
                    stream.write(out.astype("<i2").tobytes())
                except Exception as exc:
                    log.info("output device lost", extra={"error": type(exc).__name__})
                    _close(stream)
                    if not self.output_open:
                        return
                    self.notices.put(OUTPUT_FALLBACK)
                    reopened = self._open_device("playback", "")
                    if reopened is None:
                        return
                    stream, self.output_open = reopened
                    continue
                self.played += 1
                self._far.append(out)
        finally:
            _close(stream)


def _close(stream: Any) -> None:
    try:
        stream.close()
    except Exception as exc:
        log.debug("audio stream close failed", extra={"error": type(exc).__name__})
