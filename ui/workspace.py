"""The workspace's interactions: what the panes ask for, handed to the state machines and the
controller. No Dear PyGui, no asyncio: it drives the panes only through ``ui.ports.WorkspaceView``.

``Workspace`` is the one object the panes (``ui/view/``) are built from — it implements their ports
(``ui.ports.AppPort`` is the sum) — and the account flow's host. Each method is a few lines: an
intent to the controller (``ui/controller.py``), a step of a small state machine (``ui/state/``:
keys, switcher, autocomplete, prompts, settings, the Add Server flow), or a call into a pane.
``ui/app.py`` wires it to the stack, the desktop hooks and the frame loop. See docs/ui.md.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from services.core.contracts.chat import AttachmentRef, ChatMessage, PreviewsResult
from ui.account import Account
from ui.adapter import StackAdapter, error_text
from ui.controller import Controller
from ui.image_loader import ImageLoader
from ui.images import ImageCache
from ui.ports import WorkspaceView
from ui.state import control_intents as ci
from ui.state import intents as it
from ui.state import keys
from ui.state.add_server import AddServerFlow
from ui.state.autocomplete import Autocomplete
from ui.state.backup import BackupFlow
from ui.state.composer import Composer
from ui.state.model import ViewModel
from ui.state.prompts import Prompts
from ui.state.settings import Settings
from ui.state.switcher import Switcher
from ui.state.updater import UpdateChecker
from ui.storage import Prefs
from ui.voice import VoiceController

log = logging.getLogger("openchat.ui")

DEFAULT_BACKEND = "https://chat.pennylabs.com"


class Workspace:
    """The panes' port and the account flow's host (one per window)."""

    def __init__(
        self,
        model: ViewModel,
        composer: Composer,
        controller: Controller,
        prefs: Prefs,
        *,
        settings: Settings,
        save_prefs: Callable[[], None],
        choose_connection: Callable[[str], bool],
        poke: Callable[[], None],
    ) -> None:
        self.model = model
        self.composer = composer
        self.controller = controller
        self.prefs = prefs
        self.settings = settings
        self.save_prefs = save_prefs
        self.choose_connection = choose_connection  # the first-run screen (ui/app.py attaches)
        self.poke = poke  # input happened: the frame loop renders at the full rate
        self.screen = "firstrun"
        self.member = ""
        self.view: Any = None  # the built panes (ui.view.shell.View); tests reach into them
        self.search_view: Any = None  # ui.view.search.SearchView once the window exists
        self.switcher = Switcher()
        self.mentions = Autocomplete()
        self.prompts = Prompts()
        self.images = ImageCache(None, lambda m, att: None)
        self.account = Account(self)
        self.loader = ImageLoader(
            self.model,
            self.images,
            lambda: self.controller.stack,
            lambda: (self.account.avatar_image, self.account.avatar_key),
            self._drawn_messages,
        )
        self.local: queue.Queue[Callable[[], None]] = queue.Queue()  # worker threads' results (clipboard)
        self._pasting = False
        self._add_rendered = -1

    @property
    def panes(self) -> WorkspaceView | None:
        """The built workspace (typed by ``ui.ports.WorkspaceView``), or None before the window."""
        view: WorkspaceView | None = self.view
        return view

    @property
    def adapter(self) -> StackAdapter | None:
        stack = self.controller.stack
        return stack if isinstance(stack, StackAdapter) else None

    def tick(self) -> bool:
        """Per frame, before the panes render: results of local worker threads, the first update
        check's info, an Add Server answer. True when something happened."""
        busy = False
        while not self.local.empty():
            self.local.get_nowait()()
            busy = True
        if self.updater.take_auto_info() and self.panes is not None:
            self.panes.show_client_info()  # 13.4: once, after the first check without an update
        if self.add_flow.version != self._add_rendered:
            self._add_render()  # a discover/probe/join answer moved the flow
        return busy

    def apply_effect(self, effect: it.Effect) -> None:
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
            case it.RevealMessage(message_id=mid):
                if tl is not None:
                    tl.reveal(mid)

    # -- the controller's and the settings' state, as the panes read it ----------------------------
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

    # -- the account flow's host (ui/account.py) ---------------------------------------------------
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

    # -- navigation ------------------------------------------------------------------------------
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
            self.local.put(lambda: self._pasted(got, max_up))

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
