"""Shared by the panes of the workspace: sizes, constants and ``PaneBase``."""

from __future__ import annotations

from typing import Any

import dearpygui.dearpygui as dpg

from services.core.contracts.chat import AttachmentRef, ChatMessage
from ui.fonts import FontSet
from ui.ports import PanePort
from ui.state.model import ViewModel
from ui.view.timeline import Timeline

VERSION = "0.1.0"
THUMB_SIDE = 144  # attachment preview thumbnails are decoded this small
RAIL_W, CHANNELS_W, CHANNELS_W_NARROW, MEMBERS_W = 72, 305, 280, 248
TASKBAR_H, TOOLBAR_H, DOCK_H = 40, 50, 64
WIDE, NARROW = 1240, 900
CHEVRON_RIGHT, CHEVRON_DOWN = "\u203a", "\u2304"
EMOJI_PICKER = [
    "😄",
    "😂",
    "😉",
    "😍",
    "😎",
    "🤔",
    "😢",
    "😭",
    "👍",
    "👎",
    "👏",
    "🙏",
    "👋",
    "👀",
    "🔥",
    "🚀",
    "🎉",
    "💯",
    "✅",
    "❤",
]

KEYMAP = [
    ("Enter", "composer", "send"),
    ("Shift+Enter", "composer", "new line"),
    ("Esc", "anywhere", "close menus, dialogs, lightbox"),
    ("Ctrl+K", "anywhere", "quick switcher (servers and channels)"),
    ("Ctrl+F", "workspace", 'search messages (words, "phrase", prefix*, from:, in:)'),
    ("Alt+↑ / Alt+↓", "anywhere", "previous / next channel"),
    ("Ctrl+Alt+↑ / ↓", "anywhere", "previous / next server"),
    ("Alt+Shift+↑ / ↓", "anywhere", "previous / next unread channel"),
    ("any printable key", "workspace", "type into the composer"),
    ("mouse wheel", "lightbox", "zoom 1x to 6x"),
    ("right-click", "server tile, message", "context menu"),
]


class PaneBase:
    """What every pane of the workspace shares: the app's port, scale, fonts, themes and the
    overlay helpers. The panes are mixed into ``ui.view.shell.View``; none imports the app, and
    each declares the port it uses (``app: RailPort``…), so mypy holds it to that port."""

    app: PanePort  # each pane narrows it to its own port (ui/ports.py)
    scale: float
    font_size: int
    fonts: FontSet
    themes: dict[str, int | str]
    timeline: Timeline | None
    width: int
    height: int
    lightbox: dict[str, Any]
    discovered: list[Any]
    _chip_at: float
    _built: bool
    _hidden_frame: int
    _pending_show: str | None
    _drag_last: tuple[float, float] | None = None

    @property
    def model(self) -> ViewModel:
        return self.app.model

    def s(self, px: float) -> int:
        return round(px * self.scale)

    def _clear(self, tag: str) -> None:
        dpg.delete_item(tag, children_only=True)

    def center(self, tag: str) -> None:
        w = dpg.get_item_width(tag) or 400
        h = dpg.get_item_height(tag) or 300
        dpg.set_item_pos(tag, [max(8, (self.width - w) // 2), max(8, (self.height - h) // 3)])

    def show(self, tag: str) -> None:
        """Open an overlay; if another one closed this frame, open it on the next frames
        (Dear ImGui would otherwise close the new modal together with the old one)."""
        self.center(tag)
        if dpg.get_frame_count() - self._hidden_frame < 2:
            self._pending_show = tag
            return
        dpg.configure_item(tag, show=True)

    def _apply_pending_show(self) -> None:
        if self._pending_show and dpg.get_frame_count() - self._hidden_frame >= 2:
            tag, self._pending_show = self._pending_show, None
            dpg.configure_item(tag, show=True)

    def hide(self, tag: str) -> None:
        """Close one overlay (a modal opened next waits a frame, as after ``hide_overlays``)."""
        if dpg.does_item_exist(tag) and dpg.is_item_shown(tag):
            self._hidden_frame = dpg.get_frame_count()
            dpg.configure_item(tag, show=False)

    def hide_overlays(self) -> None:
        if self.overlay_open():
            self._hidden_frame = dpg.get_frame_count()
        self._pending_show = None
        for tag in (
            "oc_add",
            "oc_leave",
            "oc_switcher",
            "oc_settings",
            "oc_lightbox",
            "oc_consent",
            "oc_ctx",
            "oc_voice_in_menu",
            "oc_voice_out_menu",
            "oc_search",
            "oc_status_menu",
            "oc_update",
        ):
            if dpg.does_item_exist(tag):
                dpg.configure_item(tag, show=False)

    def overlay_open(self) -> bool:
        return self._pending_show is not None or any(
            dpg.does_item_exist(t) and dpg.is_item_shown(t)
            for t in (
                "oc_add",
                "oc_leave",
                "oc_switcher",
                "oc_settings",
                "oc_lightbox",
                "oc_consent",
                "oc_onboard",
                "oc_search",
            )
        )

    def _timeline_height(self) -> None:
        s = self.s
        extra = s(TOOLBAR_H) + s(150)
        extra += s(34) * len(self.model.visible_banners())
        if dpg.is_item_shown("oc_reply_banner"):
            extra += s(30)
        if self.app.composer.attachments:
            extra += s(150)
        if self.app.composer.error:
            extra += s(24)
        extra += s(26) * len(self.app.mention_items)
        if dpg.does_item_exist("oc_emoji_picker") and dpg.is_item_shown("oc_emoji_picker"):
            extra += s(34)
        dpg.configure_item("oc_timeline", height=max(s(80), self.height - s(TASKBAR_H) - extra))

    def _show_menu(self) -> None:
        x, y = dpg.get_mouse_pos(local=False)
        x = min(max(8, int(x)), self.width - self.s(240))
        y = min(max(8, int(y)), self.height - self.s(220))
        dpg.configure_item("oc_ctx", show=True, pos=(x, y))

    def _menu(self, fn: Any, *args: Any) -> None:
        dpg.configure_item("oc_ctx", show=False)
        fn(*args)

    # provided by other panes (``Dialogs``, ``DockPane``), declared for the ones that call them
    def _open_lightbox(
        self,
        tex: tuple[int | str, int, int] | None,
        caption: str,
        source: tuple[ChatMessage, AttachmentRef] | None = None,
    ) -> None:
        raise NotImplementedError

    def _edit_profile(self) -> None:
        raise NotImplementedError

    def _build_voice_settings(self) -> None:
        raise NotImplementedError  # ui.view.voice.VoicePanes

    def _dock_voice_buttons(self) -> None:
        raise NotImplementedError  # ui.view.voice.VoicePanes

    # provided by ``ControlsPane`` (issue 18)
    def _build_backup_section(self) -> None:
        raise NotImplementedError

    def _build_notify_tab(self) -> None:
        raise NotImplementedError

    def render_notify_settings(self) -> None:
        raise NotImplementedError

    def _render_backup(self) -> None:
        raise NotImplementedError

    def status_dot(self) -> tuple[int, int, int]:
        raise NotImplementedError

    def open_status_menu(self) -> None:
        raise NotImplementedError

    def server_notify_items(self, sid: str) -> None:
        raise NotImplementedError

    def channel_muted(self, sid: str, ch: str, now: Any) -> bool:
        raise NotImplementedError
