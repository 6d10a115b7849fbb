"""A real PulseAudio server for the desktop's voice tests, private to the test run.

``pulseaudio -n`` with only the native protocol and two null sinks: ``spk`` (the default sink:
what the app plays) and ``mic`` (the test plays a tone into it; its monitor ``mic.monitor`` is the
default source: the app's microphone). Its own ``PULSE_RUNTIME_PATH`` and ``HOME`` (never the
machine's or another engineer's server); ``PULSE_SERVER`` points libpulse in this process at it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

RATE = 48_000


class Pulse:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.runtime = root / "run"
        self.home = root / "home"
        self.runtime.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "PULSE_RUNTIME_PATH": str(self.runtime),
            "HOME": str(self.home),
            "PULSE_SERVER": f"unix:{self.runtime}/native",
        }
        self.proc = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--load=module-native-protocol-unix",
                "--load=module-null-sink sink_name=spk",
                "--load=module-null-sink sink_name=mic",
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=open(root / "pulseaudio.log", "w"),  # noqa: SIM115 - closed with the process
        )
        self._children: list[subprocess.Popen[bytes]] = []
        deadline = time.monotonic() + 20
        while self.ctl("info", check=False) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "pulseaudio did not start: " + (root / "pulseaudio.log").read_text()[-800:]
                )
            time.sleep(0.1)
        self.ctl("set-default-sink", "spk")
        self.ctl("set-default-source", "mic.monitor")

    def ctl(self, *args: str, check: bool = True) -> str | None:
        done = subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)
        if done.returncode != 0:
            if check:
                raise RuntimeError(f"pactl {args}: {done.stderr}")
            return None
        return done.stdout

    def play_tone(self, hz: float, seconds: float = 120.0, amplitude: float = 0.3) -> subprocess.Popen[bytes]:
        """``paplay`` a tone into the ``mic`` sink (the app's microphone hears it)."""
        import wave

        path = self.root / f"tone{int(hz)}.wav"
        n = np.arange(int(RATE * seconds))
        samples = (np.sin(2 * np.pi * hz * n / RATE) * amplitude * 32767).astype("<i2")
        with wave.open(str(path), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(RATE)
            w.writeframes(samples.tobytes())
        proc = subprocess.Popen(["paplay", "--device=mic", str(path)], env=self.env)
        self._children.append(proc)
        return proc

    def record_speaker(self) -> Recorder:
        """``parec`` from ``spk.monitor``: what the app plays."""
        path = self.root / f"spk-{len(self._children)}.raw"
        out = open(path, "wb")  # noqa: SIM115 - closed in Recorder.stop
        proc = subprocess.Popen(
            [
                "parec",
                "--device=spk.monitor",
                f"--rate={RATE}",
                "--channels=1",
                "--format=s16le",
                "--raw",
                "--latency-msec=20",
            ],
            env=self.env,
            stdout=out,
        )
        self._children.append(proc)
        return Recorder(proc, path, out)

    def stop(self) -> None:
        for child in self._children:
            if child.poll() is None:
                child.terminate()
                child.wait(5)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Recorder:
    def __init__(self, proc: subprocess.Popen[bytes], path: Path, out: Any) -> None:
        self.proc = proc
        self.path = path
        self._out = out

    def last(self, seconds: float) -> np.ndarray[Any, np.dtype[np.float64]]:
        self._out.flush()
        data = self.path.read_bytes()
        n = int(seconds * RATE) * 2
        tail = data[-n:] if len(data) >= n else data
        tail = tail[: len(tail) // 2 * 2]
        return np.frombuffer(tail, dtype="<i2").astype(np.float64)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self._out.close()


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pulse]:
    if shutil.which("pulseaudio") is None or shutil.which("paplay") is None:
        pytest.skip("pulseaudio/pulseaudio-utils are not installed (scripts/test installs them)")
    server = Pulse(tmp_path_factory.mktemp("pulse"))
    old = os.environ.get("PULSE_SERVER")
    os.environ["PULSE_SERVER"] = server.env["PULSE_SERVER"]
    try:
        yield server
    finally:
        if old is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = old
        server.stop()
