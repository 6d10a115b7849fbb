"""The desktop app's composition root: wiring, the frame loop and the entry point (``python -m
ui``, ``openchat ui``). Nothing imports this module.

``App`` builds the parts — the view model, the composer, the controller (``ui/controller.py``),
the workspace (``ui/workspace.py``: what the panes ask for, with the account flow, the image
loader and the small state machines of ``ui/state/``), the desktop hooks — and, once there is a
window, the panes (``ui/view/``), built from the workspace as their port. What is left here is
the lifecycle (connection, cache, preferences), the controller's effects on the panes and the
frame loop. See docs/ui.md.

Threads: the adapter runs the bus on its own asyncio thread; everything here runs on the main
thread. Each frame drains the local and the adapter's queues, renders the dirty areas, and sleeps
to the frame cap (Xvfb does not throttle).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.core.contracts.notify import Notification
from services.core.members import ConnectionFile
from services.core.version import package_version
from ui.adapter import StackAdapter
from ui.controller import Controller
from ui.desktop import Click, DesktopHooks, OsNotifier, X11Window
from ui.ports import WorkspaceView
from ui.renderer import gl_renderer
from ui.state import intents as it
from ui.state import prefs
from ui.state.composer import Composer
from ui.state.model import Banner, ViewModel
from ui.state.settings import Settings
from ui.state.updater import UpdateChecker, UpdateSchedule
from ui.storage import Prefs, Storage, candidate_connections, default_connection
from ui.voice import VoiceController
from ui.workspace import Workspace

log = logging.getLogger("openchat.ui")

FPS_CAP = 60.0
IDLE_FPS = 20.0  # after IDLE_AFTER_S without input, events or changes: less CPU, input still prompt
IDLE_AFTER_S = 1.0
CACHE_EVERY_S = 30.0
FOCUS_EVERY_S = 30.0  # the notification service forgets a focus report after 90 s (FOCUS_TTL_S)
WINDOW_POLL_S = 0.25  # how often the X11 focus/visibility is read
DEFAULT_BACKEND = "https://chat.pennylabs.com"


class App:
    def __init__(
        self,
        connection: Path | None = None,
        *,
        storage: Storage | None = None,
        adapter_factory: Callable[[ConnectionFile, int], StackAdapter] | None = None,
        scale: float | None = None,
        font_size: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        os_notifications: bool = True,
        watch_window: bool = True,
        client_version: str | None = None,
        update_schedule: UpdateSchedule | None = None,
    ) -> None:
        self.storage = storage or Storage()
        self.prefs: Prefs = self.storage.load_prefs()
        self.connection = connection
        self.adapter_factory = adapter_factory or (lambda cf, seq: StackAdapter(cf, last_seq=seq))
        self.model = ViewModel(clock=clock)
        self.composer = Composer(clock=clock)
        self.cf: ConnectionFile | None = None
        self.client_id = f"desktop-{uuid.uuid4().hex[:12]}"
        updater = UpdateChecker(
            client_version or package_version(), clock=clock, now=self.model.now, schedule=update_schedule
        )
        self.controller = Controller(
            self.model,
            self.composer,
            client_id=self.client_id,
            effects=self._on_effect,
            updater=updater,
            voice=VoiceController(self.model, lambda: self.adapter, config_dir=self.storage.root),
        )
        if updater.banner:  # 13.3: checks disabled in a development build
            self.model.banners["updater"] = Banner("updater", updater.banner, "info")
        self.settings = Settings(scale or self.prefs.ui_scale, font_size or self.prefs.font_size)
        self.workspace = Workspace(
            self.model,
            self.composer,
            self.controller,
            self.prefs,
            settings=self.settings,
            save_prefs=self.save_prefs,
            choose_connection=self.choose_connection,
            poke=self.poke,
        )
        # the parts the wiring and the tests hold on to (the workspace built them)
        self.voice = self.controller.voice
        self.account = self.workspace.account
        self.images = self.workspace.images
        self._cache_at = 0.0
        self.hooks = DesktopHooks(
            OsNotifier() if os_notifications else None,
            toast=lambda text: self.model.toast(text),
            on_click=self.open_notification,
            on_focus=self.controller.set_window_focus,
            poll_s=WINDOW_POLL_S,
        )
        self.watch_window = watch_window
        self.frame_times: list[float] = []
        self.model.on_channel_opened = self._on_channel_opened  # the controller's, then prefs saved
        self.active_at = clock()  # the last input, event or change (see ``frame_interval``)
        self._restore_prefs()

    @property
    def panes(self) -> WorkspaceView | None:
        """The built workspace as the wiring drives it (typed by ``ui.ports.WorkspaceView``)."""
        return self.workspace.panes

    @property
    def view(self) -> Any:
        """The built panes (``ui.view.shell.View``) once the window exists; tests reach into them."""
        return self.workspace.view

    @property
    def screen(self) -> str:
        return self.workspace.screen

    @screen.setter
    def screen(self, value: str) -> None:
        self.workspace.screen = value

    @property
    def member(self) -> str:
        return self.workspace.member

    @member.setter
    def member(self, value: str) -> None:
        self.workspace.member = value

    # -- the stack the controller talks to -----------------------------------------------------------
    @property
    def adapter(self) -> StackAdapter | None:
        stack = self.controller.stack
        return stack if isinstance(stack, StackAdapter) else None

    @adapter.setter
    def adapter(self, value: StackAdapter | None) -> None:
        self.controller.stack = value

    def _on_effect(self, effect: it.Effect) -> None:
        """The controller's effects: a notification to the desktop hooks, the rest to the panes."""
        if isinstance(effect, it.Notify):
            self._notify(effect.notification)
        else:
            self.workspace.apply_effect(effect)

    # -- lifecycle ------------------------------------------------------------------------------
    def _restore_prefs(self) -> None:
        prefs.restore(self.model, self.prefs)

    def save_prefs(self) -> None:
        p = self.prefs
        prefs.remember(self.model, self.settings, p)
        if self.connection is not None:
            p.connection_file = str(self.connection)
        try:
            self.storage.save_prefs(p)
        except OSError as exc:
            log.warning("cannot save preferences", extra={"error": type(exc).__name__})

    def resolve_connection(self) -> Path | None:
        if self.connection is not None:
            return self.connection
        env = default_connection()
        if env is not None:
            return env
        if self.prefs.connection_file and Path(self.prefs.connection_file).is_file():
            return Path(self.prefs.connection_file)
        return None

    def start(self) -> None:
        """Resolve the connection file and attach (or show the first-run screen)."""
        path = self.resolve_connection()
        if path is None:
            self.screen = "firstrun"
            if self.panes is not None:
                self.panes.show_connection_choices([str(p) for p in candidate_connections()])
            return
        self.choose_connection(str(path))

    def choose_connection(self, path_text: str) -> bool:
        path = Path(path_text.strip()).expanduser()
        try:
            cf = ConnectionFile.read(path)
        except (OSError, ValueError, ValidationError):
            self._firstrun_error(f"Cannot read a connection file at {path}.")
            return False
        self.connection = path
        self.cf = cf
        self.member = cf.member
        self.screen = "workspace"
        cached = self.storage.load_snapshot(cf.member)
        if cached is not None:
            self.model.apply_snapshot(cached, from_cache=True)
        self.model.set_stack_online(False, "connecting")
        self.adapter = self.adapter_factory(cf, self.model.last_seq)
        self.adapter.start()
        self.save_prefs()
        if self.panes is not None:
            self.panes.layout(self.panes.width, self.panes.height)
        return True

    def _firstrun_error(self, text: str) -> None:
        if self.panes is not None:
            self.panes.show_connection_error(text)

    def stop(self) -> None:
        self.controller.voice.close()  # leave the call, stop the audio threads
        if self.adapter is not None:
            self.controller.focus_report(False)
            self.save_cache(blocking=True)
            self.adapter.stop()
        self.save_prefs()
        self.hooks.close()

    # -- per frame ------------------------------------------------------------------------------
    def poke(self) -> None:
        """Something happened (input, an event, a change on screen): render at the full rate."""
        self.active_at = self.model.clock()

    def frame_interval(self) -> float:
        """Seconds per frame: ``FPS_CAP`` while anything happens, ``IDLE_FPS`` once idle."""
        idle = self.model.clock() - self.active_at > IDLE_AFTER_S
        return 1 / (IDLE_FPS if idle else FPS_CAP)

    def frame(self) -> None:
        if self.controller.process_ops():
            self.poke()
        self.controller.controls.tick()  # the scheduled update check (13.1)
        ws = self.workspace
        if ws.tick():  # local worker threads' results (clipboard), update info, Add Server answers
            self.poke()
        if self.panes is not None:
            self.panes.flush_composer()  # text set from code lands once the widget lets it
            self.panes.render()
            if ws.search_view is not None:
                ws.search_view.render()
        now = time.monotonic()
        if now - self._cache_at > CACHE_EVERY_S and self.model.snapshot_loaded and not self.model.from_cache:
            self._cache_at = now
            self.save_cache()
        self.hooks.tick(now)  # window focus (X11) and OS notifications' results
        if now - self.controller.focus_at > FOCUS_EVERY_S:
            self.controller.focus_report(self.model.focused)  # heartbeat (also sent on every change)

    def save_cache(self, blocking: bool = False) -> None:
        if self.cf is None or not self.model.snapshot_loaded:
            return
        snap = self.model.to_snapshot()
        member = self.cf.member

        def write() -> None:
            try:
                self.storage.save_snapshot_json(member, snap.model_dump_json())
            except OSError as exc:
                log.warning("cannot save the view cache", extra={"error": type(exc).__name__})

        if blocking:
            write()
        else:
            threading.Thread(target=write, name="openchat-cache", daemon=True).start()

    # -- desktop hooks: OS notifications, window focus ------------------------------------------------
    def _notify(self, n: Notification) -> None:
        """A ``notification`` event the view model kept (features 7.6, decided by the notification
        service; the model drops a non-mention about the channel on screen in the focused window):
        an OS notification (``ui/desktop.py``), or the in-app toast where none can be shown."""
        self.hooks.notify(n)

    def open_notification(self, click: Click) -> None:
        """A click on an OS notification: bring the window forward and open that channel."""
        if click.server_id not in self.model.servers:
            return
        if self.panes is not None:
            self.panes.hide_overlays()
        if self.model.active_server != click.server_id:
            self.model.select_server(click.server_id)
        if self.model.channel_id != click.channel_id:
            self.model.select_channel(click.channel_id)
        if not self.hooks.raise_window():  # else the focus change is read from X11
            self.controller.set_window_focus(True)  # focus back on the channel clears it (rule D4)

    # -- preferences ------------------------------------------------------------------------------
    def _on_channel_opened(self, sid: str, ch: str) -> None:
        self.controller.on_channel_opened(sid, ch)
        self.save_prefs()

    # -- run --------------------------------------------------------------------------------------------
    def build_view(self) -> None:
        import dearpygui.dearpygui as dpg

        from ui.view import View
        from ui.view.search import SearchView

        ws = self.workspace
        view: WorkspaceView = View(ws, self.settings.scale, self.settings.font_size)
        ws.view = view
        view.build()
        self.account.dialog = view.onboarding  # the account flow renders into its dialog
        ws.search_view = SearchView(view, self.controller.dispatch, self.controller.search.panel)
        ws.search_view.build()
        self.images.dpg = dpg
        if self.watch_window and self.hooks.window is None:
            self.hooks.window = X11Window.open(lambda: str(dpg.get_viewport_title()))


def run_app(
    app: App, *, frames: int | None = None, screenshot: Path | None = None, max_seconds: float | None = None
) -> None:
    import dearpygui.dearpygui as dpg

    dpg.create_context()
    w, h = app.prefs.window
    dpg.create_viewport(
        title="OpenChat", width=w, height=h, min_width=1080, min_height=680, clear_color=(16, 20, 28, 255)
    )
    dpg.set_viewport_vsync(False)
    dpg.setup_dearpygui()
    app.build_view()
    app.start()
    assert app.view is not None
    app.view.layout(dpg.get_viewport_client_width() or w, dpg.get_viewport_client_height() or h)
    dpg.show_viewport()
    # the window's GL context exists now: a software renderer gets the flat panes (issue 15)
    app.view.use_renderer(gl_renderer())
    start = time.monotonic()
    n = 0
    size = (0, 0)
    try:
        while dpg.is_dearpygui_running():
            t0 = time.perf_counter()
            now_size = (dpg.get_viewport_client_width(), dpg.get_viewport_client_height())
            if now_size != size and now_size[0] > 0 and now_size[1] > 0:
                size = now_size
                app.view.layout(*size)
            app.frame()
            dpg.render_dearpygui_frame()
            n += 1
            if frames is not None and n >= frames:
                break
            if max_seconds is not None and time.monotonic() - start > max_seconds:
                break
            spent = time.perf_counter() - t0
            interval = app.frame_interval()
            if spent < interval:
                time.sleep(interval - spent)
        if screenshot is not None:
            dpg.output_frame_buffer(str(screenshot))
            for _ in range(3):
                dpg.render_dearpygui_frame()
    finally:
        app.prefs.window = (dpg.get_viewport_width() or w, dpg.get_viewport_height() or h)
        app.stop()
        dpg.destroy_context()


def main(argv: list[str] | None = None) -> None:
    """``openchat ui`` / ``python -m ui``."""
    parser = argparse.ArgumentParser(prog="openchat ui", description="The OpenChat desktop app.")
    parser.add_argument("--connection", type=Path, help="the member's connection file")
    parser.add_argument("--scale", type=float, help="UI scale (1.0 = 100 %%, 2.0 = 200 %%)")
    parser.add_argument("--font-size", type=int)
    parser.add_argument("--frames", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--screenshot", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--max-seconds", type=float, help=argparse.SUPPRESS)
    if argv is None:
        argv = sys.argv[1:]
        if argv[:1] == ["ui"]:  # registered as ``openchat ui``
            argv = argv[1:]
    args = parser.parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        raise SystemExit("openchat ui needs a display (DISPLAY is not set); under CI use Xvfb.")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = App(args.connection, scale=args.scale, font_size=args.font_size)
    run_app(app, frames=args.frames, screenshot=args.screenshot, max_seconds=args.max_seconds)
