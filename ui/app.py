"""The desktop app's composition root: wiring, the frame loop and the entry point (``python -m
ui``, ``openchat ui``). Nothing imports this module.

``App`` builds the parts — the view model and the small state machines (``ui/state/``), the
controller (``ui/controller.py``), the account flow (``ui/account.py``), the image loader — and,
once there is a window, the panes (``ui/view/``, driven through ``ui.ports.WorkspaceView``). Its
methods are the entry points the panes (through their ports in ``ui/ports.py``) and tests call;
each hands over to a state machine, the controller or a pane. See docs/ui.md.

Threads: the adapter runs the bus on its own asyncio thread; everything here runs on the main
thread. Each frame drains the local and the adapter's queues, renders the dirty areas, and sleeps
to the frame cap (Xvfb does not throttle).
"""

from __future__ import annotations

import argparse
import logging
import os
import queue
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from services.core.contracts.chat import (
    AttachmentRef,
    ChatMessage,
    PreviewsResult,
)
from services.core.contracts.notify import FocusArgs, Notification
from services.core.members import ConnectionFile
from services.core.version import package_version
from ui.account import Account
from ui.adapter import StackAdapter, error_text
from ui.controller import Controller
from ui.desktop import Click, DesktopHooks, OsNotifier, X11Window
from ui.image_loader import ImageLoader
from ui.images import ImageCache
from ui.ports import WorkspaceView
from ui.state import control_intents as ci
from ui.state import intents as it
from ui.state import keys, prefs
from ui.state.add_server import AddServerFlow
from ui.state.autocomplete import Autocomplete
from ui.state.backup import BackupFlow
from ui.state.composer import Composer
from ui.state.model import Banner, ViewModel
from ui.state.prompts import Prompts
from ui.state.settings import Settings
from ui.state.switcher import Switcher
from ui.state.updater import UpdateChecker, UpdateSchedule
from ui.storage import Prefs, Storage, candidate_connections, default_connection
from ui.voice import VoiceController

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
        self.member = ""
        self.screen = "firstrun"
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
        self._add_rendered = -1
        self.settings = Settings(scale or self.prefs.ui_scale, font_size or self.prefs.font_size)
        self.switcher = Switcher()
        self.mentions = Autocomplete()
        self.prompts = Prompts()
        self.view: Any = None  # the built panes (ui.view.shell.View); tests reach into them
        self.search_view: Any = None  # ui.view.search.SearchView once the window exists
        self.images = ImageCache(None, lambda m, att: None)
        self.loader = ImageLoader(
            self.model,
            self.images,
            lambda: self.controller.stack,
            lambda: (self.account.avatar_image, self.account.avatar_key),
            self._drawn_messages,
        )
        self._cache_at = 0.0
        self.hooks = DesktopHooks(
            OsNotifier() if os_notifications else None,
            toast=lambda text: self.model.toast(text),
            on_click=self.open_notification,
            on_focus=self.set_window_focus,
            poll_s=WINDOW_POLL_S,
        )
        self.watch_window = watch_window
        self.frame_times: list[float] = []
        self.model.on_channel_opened = self._on_channel_opened  # the controller's, then prefs saved
        self.account = Account(self)
        self._local: queue.Queue[Callable[[], None]] = queue.Queue()
        self.active_at = clock()  # the last input, event or change (see ``frame_interval``)
        self._pasting = False
        self._restore_prefs()

    @property
    def panes(self) -> WorkspaceView | None:
        """The built workspace as the wiring drives it (typed by ``ui.ports.WorkspaceView``)."""
        view: WorkspaceView | None = self.view
        return view

    # -- the controller's state, as the panes and tests read it ------------------------------------
    @property
    def adapter(self) -> StackAdapter | None:
        stack = self.controller.stack
        return stack if isinstance(stack, StackAdapter) else None

    @adapter.setter
    def adapter(self, value: StackAdapter | None) -> None:
        self.controller.stack = value

    @property
    def updater(self) -> UpdateChecker:
        return self.controller.controls.updater

    @property
    def backup(self) -> BackupFlow:
        return self.controller.controls.backup

    def dispatch(self, intent: it.Intent | ci.ControlIntent) -> None:
        """An intent of the member from a pane (status, notification settings, backup, updates)."""
        self.controller.dispatch(intent)

    @property
    def add_flow(self) -> AddServerFlow:
        return self.controller.add

    @property
    def focus_sent(self) -> FocusArgs | None:
        return self.controller.focus_sent

    @focus_sent.setter
    def focus_sent(self, value: FocusArgs | None) -> None:
        self.controller.focus_sent = value

    @property
    def notifier(self) -> OsNotifier | None:
        return self.hooks.notifier

    @notifier.setter
    def notifier(self, value: OsNotifier | None) -> None:
        self.hooks.notifier = value

    @property
    def window(self) -> X11Window | None:
        return self.hooks.window

    @window.setter
    def window(self, value: X11Window | None) -> None:
        self.hooks.window = value

    @property
    def window_state(self) -> tuple[bool, bool] | None:
        """(focused, visible) as last read from X11."""
        return self.hooks.window_state

    @property
    def scale(self) -> float:
        return self.settings.scale

    @property
    def font_size(self) -> int:
        return self.settings.font_size

    @property
    def previews_enabled(self) -> bool | None:
        return self.settings.previews_enabled

    @property
    def mention_items(self) -> list[tuple[str, str]]:
        return self.mentions.items

    @property
    def mention_index(self) -> int:
        return self.mentions.index

    @property
    def visible(self) -> bool:
        return self.controller.visible

    @property
    def _focus_at(self) -> float:
        return self.controller.focus_at

    @_focus_at.setter
    def _focus_at(self, value: float) -> None:
        self.controller.focus_at = value

    def _on_effect(self, effect: it.Effect) -> None:
        """What only the panes can do, asked by the controller (applied at once, in order)."""
        tl = self.panes.timeline if self.panes is not None else None
        match effect:
            case it.TimelinePrepended(added=added):
                if tl is not None:
                    tl.on_prepended(added)
            case it.TimelineReset():
                if tl is not None:
                    tl.key = None  # re-opened: back to the newest rows (5.10)
            case it.FollowTimeline():
                if tl is not None:
                    tl.following = True
            case it.ComposerText(text=text):
                self.set_composer(text)
            case it.CloseOverlays():
                self.close_overlays()
            case it.ShowAddServer():
                self.open_add_server()
            case it.AskConsent():
                self._maybe_ask_consent()
            case it.SnapshotApplied():
                self._maybe_ask_consent()
                if (
                    self.panes is not None
                    and not self.model.order
                    and self.account.settled
                    and self.account.step is None
                ):
                    self.open_add_server()  # else once the Welcome dialog is done (after_onboarding)
            case it.StackBack():
                self.account.refresh()
            case it.Notify(notification=n):
                self._notify(n)
            case it.RevealMessage(message_id=mid):
                if tl is not None:
                    tl.reveal(mid)

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
            self.focus_report(False)
            self.save_cache(blocking=True)
            self.adapter.stop()
        self.save_prefs()
        self.hooks.close()

    # -- per frame ------------------------------------------------------------------------------
    def process_ops(self) -> int:
        return self.controller.process_ops()

    def after_onboarding(self) -> None:
        """The Welcome dialog closed: a member without servers goes on to Add Server; then the
        per-server profile questions (rule D18) come, now that there is a profile to share."""
        if self.panes is not None and self.model.snapshot_loaded and not self.model.order:
            self.open_add_server()
        self._maybe_ask_consent()

    def after_account(self) -> None:
        """The identity and profile were read (or could not be): prompts held back may show."""
        if self.account.step is None:
            self.after_onboarding()

    def prefs_skipped(self) -> bool:
        return self.member in self.prefs.onboarding_skipped

    def skip_onboarding(self) -> None:
        if self.member and self.member not in self.prefs.onboarding_skipped:
            self.prefs.onboarding_skipped.append(self.member)
            self.save_prefs()

    def poke(self) -> None:
        """Something happened (input, an event, a change on screen): render at the full rate."""
        self.active_at = self.model.clock()

    def frame_interval(self) -> float:
        """Seconds per frame: ``FPS_CAP`` while anything happens, ``IDLE_FPS`` once idle."""
        idle = self.model.clock() - self.active_at > IDLE_AFTER_S
        return 1 / (IDLE_FPS if idle else FPS_CAP)

    def frame(self) -> None:
        while not self._local.empty():  # results of local worker threads (clipboard)
            self._local.get_nowait()()
            self.poke()
        if self.process_ops():
            self.poke()
        self.controller.controls.tick()  # the scheduled update check (13.1)
        if self.updater.take_auto_info() and self.panes is not None:
            self.panes.show_client_info()  # 13.4: once, after the first check without an update
        if self.add_flow.version != self._add_rendered:
            self._add_render()  # a discover/probe/join answer moved the flow
        if self.panes is not None:
            self.panes.flush_composer()  # text set from code lands once the widget lets it
            self.panes.render()
            if self.search_view is not None:
                self.search_view.render()
        now = time.monotonic()
        if now - self._cache_at > CACHE_EVERY_S and self.model.snapshot_loaded and not self.model.from_cache:
            self._cache_at = now
            self.save_cache()
        self.hooks.tick(now)  # window focus (X11) and OS notifications' results
        if now - self._focus_at > FOCUS_EVERY_S:
            self.focus_report(self.model.focused)  # heartbeat (also sent on every change)

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

    # -- counts (notification service) ------------------------------------------------------------
    def refresh_counts(self) -> None:
        self.controller.refresh_counts()

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
            self.set_window_focus(True)  # focus back on the channel clears it (rule D4)

    def refresh_prefs(self) -> None:
        self.controller.refresh_prefs()

    def focus_report(self, focused: bool) -> None:
        self.controller.focus_report(focused)

    def set_window_focus(self, focused: bool, visible: bool = True) -> None:
        self.controller.set_window_focus(focused, visible)

    def poll_window(self) -> None:
        self.hooks.poll_window()

    # -- navigation ------------------------------------------------------------------------------
    def _on_channel_opened(self, sid: str, ch: str) -> None:
        self.controller.on_channel_opened(sid, ch)
        self.save_prefs()

    def load_older(self, sid: str, ch: str, before: str) -> None:
        self.controller.dispatch(it.LoadOlder(sid, ch, before))

    def jump_to_present(self) -> None:
        """The "Jump to present" button: back to the newest messages, following again."""
        if self.panes is not None and self.panes.timeline is not None:
            self.panes.timeline.jump_to_present()

    def select_server(self, sid: str) -> None:
        if self.panes is not None:
            self.panes.hide_overlays()
        self.model.select_server(sid)

    def select_channel(self, ch: str) -> None:
        self.controller.dispatch(it.SelectChannel(ch))  # a voice row joins (ui/voice.py)

    @property
    def voice(self) -> VoiceController:
        return self.controller.voice

    def toggle_group(self, gid: str) -> None:
        self.model.toggle_collapsed(gid)
        self.save_prefs()

    def set_filter(self, text: str) -> None:
        self.model.set_filter(text)

    def toggle_members(self) -> None:
        self.model.members_open = not self.model.members_open
        if self.panes is not None:
            self.panes.layout(self.panes.width, self.panes.height)
        self.save_prefs()

    def dismiss_banner(self, key: str) -> None:
        self.model.dismiss_banner(key)
        self.save_prefs()

    # -- keyboard (the map: ui/state/keys.py) -------------------------------------------------------
    def on_key(
        self,
        name: str,
        *,
        ctrl: bool = False,
        alt: bool = False,
        shift: bool = False,
        text_active: bool = False,
    ) -> bool:
        view = self.panes
        overlay = view is not None and view.overlay_open()
        ctx = keys.KeyContext(
            screen=self.screen,
            onboarding_open=self.account.step is not None,
            mentions_open=self.mentions.open,
            overlay_open=overlay,
            switcher_items=bool(self.switcher.items),
            read_only=self.model.read_only,
        )
        action = keys.route_key(name, ctx, ctrl=ctrl, alt=alt, shift=shift, text_active=text_active)
        if isinstance(action, keys.Ignore):  # most keys: checked first
            return action.consumed
        m = self.model
        match action:
            case keys.SkipOnboarding():
                self.account.skip()
            case keys.CloseAll():
                if self.mentions.close() and view is not None:
                    view.render_mentions([], 0)
                if view is not None:
                    view.hide_overlays()
                    view.hide_emoji()
            case keys.OpenSwitcher():
                self.open_switcher()
            case keys.OpenSearch():
                self.open_search()
            case keys.PasteImage():
                self.paste_image()  # an image; text still pastes into the focused field as usual
                return False
            case keys.InsertMention():
                return self.insert_mention()
            case keys.MoveMention(step=step):
                self.mentions.move(step)
                if view is not None:
                    view.render_mentions(self.mentions.items, self.mentions.index)
            case keys.MoveSwitch(step=step):
                self.move_switch(step)
            case keys.ChooseSwitch():
                self.choose_switch(self.switcher.index)
            case keys.MoveServer(step=step):
                return m.move_server(step)
            case keys.MoveChannel(step=step, unread_only=unread_only):
                return m.move_channel(step, unread_only=unread_only)
            case keys.TypeChar(char=char):
                self.on_draft(self.composer.draft + char)
                if view is not None:
                    self.set_composer(self.composer.draft)
        return True

    # -- quick switcher (ui/state/switcher.py) ----------------------------------------------------
    def open_switcher(self) -> None:
        if self.panes is None:
            return
        self.panes.hide_overlays()
        self.panes.clear_switch_query()
        self.quick_query("")
        self.panes.show("oc_switcher")
        self.panes.focus_switch_query()

    def quick_query(self, text: str) -> list[Any]:
        items = self.switcher.query(self.model, text)
        if self.panes is not None:
            self.panes.render_switch_list(items, 0)
        return items

    def move_switch(self, step: int) -> None:
        if self.panes is None or not self.switcher.move(step):
            return
        self.panes.render_switch_list(self.switcher.items, self.switcher.index)

    def choose_switch(self, index: int) -> None:
        if self.panes is None:
            return
        item = self.switcher.take(index)
        if item is None:
            return
        self.panes.hide_overlays()
        self.model.choose(item)

    # -- message search (Ctrl+F) -------------------------------------------------------------------
    def open_search(self) -> None:
        if self.view is None or self.search_view is None:
            return
        self.view.hide_overlays()
        self.controller.dispatch(it.OpenSearch())
        self.search_view.open()

    def close_overlays(self) -> None:
        if self.panes is not None:
            self.panes.hide_overlays()

    # -- composer ----------------------------------------------------------------------------------
    def on_draft(self, text: str) -> None:
        self._update_mentions(text)
        self.controller.typing(self.composer.on_draft(text))

    def set_composer(self, text: str, focus: bool = True) -> None:
        """Set the composer's text from code. Dear ImGui keeps its own buffer while an input is
        active, so an active composer is first deactivated; the text lands on a later frame."""
        self.composer.draft = text
        if self.panes is not None:
            self.panes.set_composer_text(text, focus)

    def on_composer_blur(self) -> None:
        self.controller.composer_blur()

    # -- mention autocomplete (ui/state/autocomplete.py) and emoji picker ---------------------------
    def _update_mentions(self, text: str) -> None:
        if self.mentions.update(self.model, text) and self.panes is not None:
            self.panes.render_mentions(self.mentions.items, 0)

    def insert_mention(self, index: int | None = None) -> bool:
        draft = self.mentions.complete(self.composer.draft, index)
        if draft is None:
            return False
        self.set_composer(draft)
        self._update_mentions(self.composer.draft)
        return True

    def insert_emoji(self, emoji: str) -> None:
        draft = self.composer.draft
        sep = "" if not draft or draft.endswith(" ") else " "
        self.set_composer(f"{draft}{sep}{emoji} ")
        if self.panes is not None:
            self.panes.hide_emoji()

    def on_composer_enter(self, force: bool = False, shift: bool | None = None) -> bool:
        """Enter sends; Shift+Enter inserts a new line (5.4); with the mention list open, Enter
        inserts the selected mention (7.3)."""
        if self.mentions.open and not force and not shift:
            if self.panes is not None:
                self.composer.draft = str(self.panes.composer_text() or self.composer.draft)
            return not self.insert_mention()
        if self.panes is not None:
            if shift is None:
                shift = bool(self.panes.shift_down())
            self.composer.draft = self.panes.composer_text() or self.composer.draft
        if shift and not force:
            self.composer.draft += "\n"
            if self.panes is not None:
                self.set_composer(self.composer.draft)
            return False
        return self.send()

    def send(self) -> bool:
        return self.controller.send()

    def reply_to(self, message_id: str) -> None:
        self.controller.dispatch(it.ReplyTo(message_id))

    def cancel_reply(self) -> None:
        self.controller.dispatch(it.CancelReply())

    def toggle_reply_ping(self) -> None:
        self.composer.reply_ping = not self.composer.reply_ping

    def copy_text(self, message_id: str) -> None:
        msg = self.model.find_on_screen(message_id)
        if msg is not None and self.panes is not None:
            self.panes.copy_to_clipboard(msg.body)
            self.model.toast("Message text copied.")

    def delete_message(self, message_id: str) -> None:
        self.controller.dispatch(it.DeleteMessage(message_id))

    def message_link(self, message_id: str) -> str | None:
        return self.model.message_link(message_id)

    def copy_link(self, message_id: str) -> None:
        link = self.message_link(message_id)
        if link is not None and self.panes is not None:
            self.panes.copy_to_clipboard(link)
            self.model.toast("Message link copied.")

    def mark_unread(self, channel_id: str) -> None:
        if self.model.active_server:
            self.model.mark_unread(self.model.active_server, channel_id)

    def open_file_dialog(self) -> None:
        """Attach images: a file dialog (Dear PyGui's own) filtered to png/jpeg/gif."""
        if self.panes is not None:
            self.panes.choose_images(self.attach_files, many=True)

    def paste_image(self) -> None:
        """Ctrl+V with an image on the system clipboard attaches it (ux.md 3.8). The clipboard is
        read on a worker thread while frames go on: when this very window owns the clipboard
        (text copied in the app), its answer to the clipboard tool comes from the render loop."""
        from ui import clipboard

        if self.model.read_only or self._pasting:
            return
        _, max_up = self.model.limits()
        self._pasting = True

        def work() -> None:
            got: tuple[str, bytes] | str | None
            try:
                got = clipboard.read_image(max_up)
            except clipboard.ClipboardError as exc:
                got = str(exc)
            self._local.put(lambda: self._pasted(got, max_up))

        threading.Thread(target=work, name="openchat-paste", daemon=True).start()

    def _pasted(self, got: tuple[str, bytes] | str | None, max_up: int) -> None:
        self._pasting = False
        self.composer.pasted(got, max_up)

    def attach_files(self, paths: list[Path]) -> str:
        _, max_up = self.model.limits()
        return self.composer.add_files(paths, max_up)

    def replace_attachment(self, index: int) -> None:
        """✎ on a preview card: choose another image for that place."""

        def chosen(paths: list[Path]) -> None:
            if paths:
                self.replace_attachment_with(index, paths[0])

        if self.panes is not None:
            self.panes.choose_images(chosen, many=False)

    def replace_attachment_with(self, index: int, path: Path) -> str:
        _, max_up = self.model.limits()
        return self.composer.replace_file(index, path, max_up)

    def remove_attachment(self, index: int) -> None:
        self.composer.remove_attachment(index)

    # -- images (ui/image_loader.py, keys in ui/state/images.py) --------------------------------------
    def save_image_dialog(self, m: ChatMessage, att: AttachmentRef) -> None:
        """Save… in the lightbox: the OS-independent Dear PyGui file dialog, then the bytes again
        over the member's bus connection (textures keep no original bytes)."""
        if self.panes is not None:
            self.panes.choose_save_path(
                att.file_name or "image.png", lambda target: self.save_image(m, att, target)
            )

    def save_image(self, m: ChatMessage, att: AttachmentRef, target: Path) -> None:
        self.loader.save(m, att, target)

    def copy_image_link(self, att: AttachmentRef) -> None:
        if self.panes is not None:
            self.panes.copy_to_clipboard(att.url)
            self.model.toast("Image link copied.")

    def _drawn_messages(self) -> list[ChatMessage]:
        """The messages whose rows the timeline draws now (their images stay pinned)."""
        tl = self.panes.timeline if self.panes is not None else None
        sm = self.model.server
        if tl is None or sm is None:
            return []
        log = sm.logs.get(self.model.channel_id or "")
        if log is None:
            return []
        return [m for m in (log.find(mid) for mid in tl.order) if m is not None]

    def avatar_texture(self, sid: str, uid: str) -> tuple[int | str, int, int] | None:
        return self.loader.avatar_texture(sid, uid)

    def preview_texture(self, m: ChatMessage, index: int) -> tuple[int | str, int, int] | None:
        return self.loader.preview_texture(m, index)

    # -- rail menu ---------------------------------------------------------------------------------
    def mark_server_read(self, sid: str) -> None:
        self.controller.dispatch(it.MarkServerRead(sid))

    def set_mute(self, sid: str, muted: bool) -> None:
        self.controller.dispatch(it.SetMute(sid, muted))

    def ask_leave(self, sid: str) -> None:
        name = self.prompts.ask_leave(self.model, sid)
        if name is not None and self.panes is not None:
            self.panes.hide_overlays()
            self.panes.show_leave(name)

    def confirm_leave(self) -> None:
        sid = self.prompts.take_leave()
        self.close_overlays()
        if sid is not None:
            self.controller.dispatch(it.Leave(sid))

    # -- add server -------------------------------------------------------------------------------
    def open_add_server(self) -> None:
        self.controller.dispatch(
            it.OpenAddServer(os.environ.get("OPENCHAT_DEFAULT_BACKEND", DEFAULT_BACKEND))
        )
        if self.panes is None:
            return
        self.panes.hide_overlays()
        self.panes.set_add_url(self.add_flow.url)
        self._add_render()
        self.panes.show("oc_add")

    def add_url_changed(self) -> None:
        self.controller.dispatch(it.SetAddUrl(self._add_url()))
        self._add_render()

    def _add_url(self) -> str:
        if self.panes is not None:
            return str(self.panes.add_url())
        return self.add_flow.url.strip()

    def set_add_url(self, url: str) -> None:
        if self.panes is not None:
            self.panes.set_add_url(url)
        self.controller.dispatch(it.SetAddUrl(url))
        self._add_render()

    def discover(self) -> None:
        self.controller.dispatch(it.Discover(self._add_url()))
        self._add_render()

    def pick_discovered(self, label: str) -> None:
        self.controller.dispatch(it.PickServer(label))
        self._add_render()

    def probe(self) -> None:
        self.controller.dispatch(it.Probe(self._add_url()))
        self._add_render()

    def add_local_id_changed(self, text: str) -> None:
        """The Add Server dialog's local id field (issue #14)."""
        self.controller.dispatch(it.SetAddLocalId(text))
        self._add_render()

    def add_server(self) -> None:
        self.controller.dispatch(it.Join(self._add_url()))
        self._add_render()

    def _add_render(self) -> None:
        self._add_rendered = self.add_flow.version
        if self.panes is not None:
            self.panes.render_add_server(self.add_flow)

    def _maybe_ask_consent(self) -> None:
        if self.panes is None or self.panes.overlay_open() or self.model.read_only:
            return
        if not self.account.settled or self.account.step is not None:
            return  # after the Welcome dialog: sharing a profile needs one first
        ask = self.prompts.next_consent(self.model)
        if ask is not None:
            self.panes.show_consent(ask[1])

    def answer_consent(self, share: bool, sid: str | None = None) -> None:
        sid = self.prompts.take_consent(sid)
        self.close_overlays()
        if sid is None or self.adapter is None:
            return
        self.controller.dispatch(it.AnswerConsent(sid, share))
        self._maybe_ask_consent()  # the next server waiting for an answer, if any

    # -- settings (ui/state/settings.py) ------------------------------------------------------------------
    def open_settings(self) -> None:
        if self.panes is None:
            return
        self.panes.hide_overlays()
        self.account.revealed = None
        self.set_previews(None)
        self.refresh_settings()
        self.panes.show("oc_settings")

    def set_previews(self, enabled: bool | None) -> None:
        """Settings: the member's link-preview switch (kept by the connector); None reads it."""
        if self.adapter is None:
            return

        def done(result: PreviewsResult | None, error: BaseException | None) -> None:
            if error is not None or result is None:
                toast = self.settings.previews_answered(enabled, None, error_text(error) if error else "")
            else:
                toast = self.settings.previews_answered(enabled, result.enabled, None)
                if self.panes is not None:
                    self.panes.render_previews_switch(result.enabled)
            if toast is not None:
                self.model.toast(toast[0], error=toast[1])

        self.adapter.submit(lambda c: c.previews(enabled), done)

    def refresh_settings(self) -> None:
        """Fill Settings → My Account from the model and the account (also while it is open)."""
        if self.panes is not None:
            self.panes.render_settings()

    def set_appearance(self, scale: float | None = None, font_size: int | None = None) -> None:
        text = self.settings.set_appearance(scale, font_size)
        self.save_prefs()
        self.model.toast(text)

    # -- run --------------------------------------------------------------------------------------------
    def build_view(self) -> None:
        import dearpygui.dearpygui as dpg

        from ui.view import View
        from ui.view.search import SearchView

        view: WorkspaceView = View(self, self.scale, self.font_size)
        self.view = view
        view.build()
        self.account.dialog = view.onboarding  # the account flow renders into its dialog
        self.search_view = SearchView(view, self.controller.dispatch, self.controller.search.panel)
        self.search_view.build()
        self.images.dpg = dpg
        if self.watch_window and self.window is None:
            self.window = X11Window.open(lambda: str(dpg.get_viewport_title()))


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
