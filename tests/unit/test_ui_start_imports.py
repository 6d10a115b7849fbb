"""What the desktop's start pays for (issue 13: the UI bench not worse than before the voice UI).

The voice stack, the identity backup's cipher and the WebRTC stack are used only by a call, the mic
test, the Voice settings or a backup; importing the app (what ``python -m ui`` does before the first
frame) must not load them. Checked in a fresh interpreter, so nothing another test imported counts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# heavy packages only a call, the mic test, the Voice settings or an identity backup needs
NOT_AT_START = ("numpy", "av", "aiortc", "pulsectl", "pasimple", "pywebrtc_audio", "cryptography")


def loaded_after(code: str) -> set[str]:
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    ).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_the_desktop_starts_without_the_voice_stack() -> None:
    # what ``python -m ui`` imports before the first frame: the app, and the panes ``build_view`` builds
    loaded = loaded_after("import ui.app\nimport dearpygui.dearpygui\nimport ui.view\nimport ui.view.search")
    assert {"ui", "dearpygui", "pydantic", "nats"} <= loaded  # the probe imported the app
    assert loaded.isdisjoint(NOT_AT_START), sorted(loaded & set(NOT_AT_START))


def test_the_audio_engine_loads_its_heavy_parts_with_a_call() -> None:
    """The lazy imports still resolve: the engine's threads and the bridge import what they use."""
    loaded = loaded_after(
        "from ui.audio import engine\nimport ui.audio.bridge\n"
        "from services.core.identity_backup import encrypt_backup, decrypt_backup\n"
        "encrypt_backup('identity_abcdefgh', 'server_scoped', 'passphrase!', n=2)"
    )
    assert {"numpy", "av", "aiortc", "cryptography"} <= loaded
