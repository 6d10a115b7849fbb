"""Audio devices through PulseAudio (``libpulse`` via ``pulsectl``; PipeWire's pulse server too).

Lists inputs (sources) and outputs (sinks) with a label split into primary/secondary text
(8.9), says which are the defaults, and resolves a stored device id: a device that no longer
exists falls back to the system default (8.3/8.9), and the caller shows the notice.
Without a reachable PulseAudio server the lists hold only "System Default" and audio I/O is
off (the call still works: silence up, nothing played).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

log = logging.getLogger("openchat.ui.audio")

Kind = Literal["input", "output"]
DEFAULT_INPUT_LABEL = "System Default (Microphone)"
DEFAULT_OUTPUT_LABEL = "System Default"


@dataclass(frozen=True)
class Device:
    id: str  # the PulseAudio name; "" = the system default
    primary: str
    secondary: str = ""

    @property
    def label(self) -> str:
        return f"{self.primary} · {self.secondary}" if self.secondary else self.primary


@dataclass(frozen=True)
class DeviceList:
    inputs: list[Device]
    outputs: list[Device]
    default_input: str = ""
    default_output: str = ""
    available: bool = True  # a PulseAudio server answered
    error: str = ""

    def has(self, kind: Kind, device_id: str) -> bool:
        devs = self.inputs if kind == "input" else self.outputs
        return device_id == "" or any(d.id == device_id for d in devs)

    def resolve(self, kind: Kind, wanted: str) -> tuple[str, bool]:
        """(device to open, fell back): a missing device → the system default."""
        if self.has(kind, wanted):
            return wanted, False
        return "", True


def _split(description: str, name: str) -> tuple[str, str]:
    return (description or name), name


def list_devices() -> DeviceList:
    """Ask the PulseAudio server for its sources and sinks (a short blocking call)."""
    defaults_in = [Device("", DEFAULT_INPUT_LABEL)]
    defaults_out = [Device("", DEFAULT_OUTPUT_LABEL)]
    try:
        import pulsectl

        with pulsectl.Pulse("openchat-devices", connect=True) as pulse:
            info = pulse.server_info()
            sources = pulse.source_list()
            sinks = pulse.sink_list()
    except Exception as exc:  # no server, no libpulse: audio off, the app still runs
        log.info("no PulseAudio server", extra={"error": type(exc).__name__})
        return DeviceList(defaults_in, defaults_out, available=False, error=type(exc).__name__)
    inputs = defaults_in + [Device(s.name, *_split(s.description, s.name)) for s in sources]
    outputs = defaults_out + [Device(s.name, *_split(s.description, s.name)) for s in sinks]
    return DeviceList(
        inputs,
        outputs,
        default_input=str(info.default_source_name or ""),
        default_output=str(info.default_sink_name or ""),
    )
