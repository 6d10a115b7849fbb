"""The member's call-media preferences on this computer (8.9): device ids, volumes and the
audio-processing switches, stored as ``openchat:call-media-preferences:v1`` in
``call-media-preferences.json`` of the desktop's config directory (P5: window-side preferences
only; mute/deafen stay per server in memory, 8.3)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

log = logging.getLogger("openchat.ui.audio")

PREFS_KEY = "openchat:call-media-preferences:v1"
FILE_NAME = "call-media-preferences.json"


class MediaPrefs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input_device: str = Field(default="", max_length=512)  # "" = the system default
    output_device: str = Field(default="", max_length=512)
    input_volume: int = Field(default=100, ge=0, le=200)  # D11: a gain on what is sent
    output_volume: int = Field(default=100, ge=0, le=100)
    echo_cancellation: bool = True
    noise_suppression: bool = True
    auto_gain: bool = True


def load(directory: Path) -> MediaPrefs:
    path = directory / FILE_NAME
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(doc, dict) and doc.get("key") == PREFS_KEY:
            return MediaPrefs.model_validate(doc.get("value") or {})
    except FileNotFoundError:
        pass
    except (OSError, ValueError, ValidationError) as exc:
        log.warning("call-media preferences unreadable, using defaults", extra={"error": type(exc).__name__})
    return MediaPrefs()


def save(directory: Path, prefs: MediaPrefs) -> None:
    from ui.storage import _write_atomic

    doc = {"key": PREFS_KEY, "value": prefs.model_dump()}
    _write_atomic(directory / FILE_NAME, json.dumps(doc, indent=1))
