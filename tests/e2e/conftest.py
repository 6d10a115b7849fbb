"""UI end-to-end fixtures: Xvfb, one Dear PyGui context per session, the app, screenshots.

- ``xvfb``: starts ``Xvfb :N -screen 0 1480x920x24`` on a free display number and sets
  ``DISPLAY`` (Dear PyGui's ``show_viewport`` aborts the process without a display);
- ``dpg_session``: ONE context and viewport for the whole session (Dear PyGui 2.3 crashes when
  a context is destroyed and created again in one process);
- ``ui``: a fresh ``App`` with its view built into that context, torn down after the test;
- ``Shooter``: renders real frames, saves ``artifacts/screenshots/<name>.png`` and fails a test
  whose screenshot is blank, or unchanged when it should have changed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ui.state.updater import UpdateSchedule
from ui.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "artifacts" / "screenshots"
WIDTH, HEIGHT = 1480, 920


def _free_display() -> int:
    for n in range(90, 190):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display number")


@pytest.fixture(scope="session")
def xvfb() -> Iterator[str]:
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (scripts/test installs the xvfb package)")
    n = _free_display()
    proc = subprocess.Popen(
        ["Xvfb", f":{n}", "-screen", "0", f"{WIDTH}x{HEIGHT}x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{n}").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("Xvfb did not start")
        time.sleep(0.05)
    old = os.environ.get("DISPLAY")
    os.environ["DISPLAY"] = f":{n}"
    try:
        yield f":{n}"
    finally:
        if old is None:
            os.environ.pop("DISPLAY", None)
        else:
            os.environ["DISPLAY"] = old
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def dpg_session(xvfb: str) -> Iterator[Any]:
    import dearpygui.dearpygui as dpg

    dpg.create_context()
    dpg.create_viewport(title="OpenChat e2e", width=WIDTH, height=HEIGHT, clear_color=(16, 20, 28, 255))
    dpg.set_viewport_vsync(False)
    dpg.setup_dearpygui()
    dpg.show_viewport()
    for _ in range(2):
        dpg.render_dearpygui_frame()
    yield dpg
    dpg.destroy_context()


def render(app: Any, frames: int = 3) -> None:
    import dearpygui.dearpygui as dpg

    for _ in range(frames):
        app.frame()
        dpg.render_dearpygui_frame()


class Shooter:
    def __init__(self, test_name: str) -> None:
        self.test = test_name
        self.last: Any = None
        SHOTS.mkdir(parents=True, exist_ok=True)

    def capture(self) -> Any:
        import dearpygui.dearpygui as dpg
        import numpy as np

        box: dict[str, Any] = {}
        done = threading.Event()

        def got(_sender: Any, buf: Any) -> None:
            # Dear PyGui runs this on its callback thread: the main thread waits for ``done``.
            try:
                box["w"], box["h"] = buf.get_width(), buf.get_height()
                box["data"] = np.array(buf, dtype=np.float32)
            finally:
                done.set()

        dpg.output_frame_buffer(callback=got)
        for _ in range(6):
            dpg.render_dearpygui_frame()
            if done.wait(0.5):
                break
        assert "data" in box, "the frame buffer callback did not run"
        arr = box["data"].reshape(box["h"], box["w"], 4)
        return (np.clip(arr, 0, 1) * 255).astype(np.uint8)

    def shot(self, app: Any, name: str, *, changed: bool = True, frames: int = 4) -> Path:
        """Render, save ``<test>__<name>.png``, check it is not blank (and changed since the
        previous shot of this test, unless ``changed=False``)."""
        import numpy as np
        from PIL import Image

        render(app, frames)
        img = self.capture()
        path = SHOTS / f"{self.test}__{name}.png"
        Image.fromarray(img[:, :, :3]).save(path)
        rgb = img[:, :, :3].astype(np.int16)
        assert rgb.std() > 4.0, f"blank screenshot {path.name}"
        distinct = len(np.unique(rgb.reshape(-1, 3)[::97], axis=0))
        assert distinct > 8, f"screenshot {path.name} has almost no content ({distinct} colours)"
        if self.last is not None and changed:
            diff = np.abs(rgb - self.last).max(axis=2) > 24
            assert int(diff.sum()) > 120, f"screenshot {path.name} did not change ({int(diff.sum())} pixels)"
        self.last = rgb
        return path


@pytest.fixture
def shooter(request: pytest.FixtureRequest) -> Shooter:
    return Shooter(request.node.name.replace("[", "_").replace("]", ""))


@pytest.fixture
def ui_factory(
    dpg_session: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Any]]:
    """Build an ``App`` with its view in the session's context (one at a time)."""
    from ui.app import App

    monkeypatch.delenv("OPENCHAT_HOME", raising=False)
    monkeypatch.delenv("OPENCHAT_MEMBER", raising=False)
    apps: list[Any] = []

    def make(
        *, connection: Path | None = None, scale: float = 1.0, storage: Storage | None = None, **kw: Any
    ) -> Any:
        # the desktop hooks (OS notifications, X11 focus) only where a test asks for them: the
        # session's shared Xvfb has no notification daemon and focus moves between tests
        kw.setdefault("os_notifications", False)
        kw.setdefault("watch_window", False)
        # the update check (13.1) runs 30-60 s after start and may open the client information
        # dialog by itself: only where a test asks for it (tests/e2e/test_controls_real_stack.py)
        kw.setdefault("update_schedule", UpdateSchedule(first_min_s=1e9, first_max_s=1e9))
        app = App(connection, storage=storage or Storage(tmp_path / "config"), scale=scale, **kw)
        app.build_view()
        apps.append(app)
        app.view.layout(WIDTH, HEIGHT)
        return app

    yield make
    for app in apps:
        if app.adapter is not None:
            if app.model.stack_online:  # as App.stop does: a stale focus report would suppress
                app.controller.focus_sent = None  # the next test's notifications for up to 90 s
                app.controller.focus_report(False)
                deadline = time.monotonic() + 3
                while app.controller.focus_sent is None and time.monotonic() < deadline:
                    app.controller.process_ops()
                    time.sleep(0.02)
            app.adapter.stop()
        if app.hooks.notifier is not None:
            app.hooks.notifier.close()
        if app.hooks.window is not None:
            app.hooks.window.close()
        app.view.destroy()


def text_of(tag: str) -> str:
    import dearpygui.dearpygui as dpg

    return str(dpg.get_value(tag))


def label_of(tag: str) -> str:
    import dearpygui.dearpygui as dpg

    return str(dpg.get_item_label(tag))
