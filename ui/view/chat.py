"""The chat pane (ux.md 2.5) around the timeline: toolbar, connection chip, banners, composer, attachments, mentions list, emoji picker, message menu. Owns ``oc_toolbar*``, ``oc_chip``, ``oc_banner*``, ``oc_composer*``, ``oc_att*``, ``oc_mention*``, ``oc_emoji*`` tags."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import dearpygui.dearpygui as dpg

from ui import fonts
from ui.ports import ChatPort
from ui.state.model import format_bytes
from ui.view.base import THUMB_SIDE, PaneBase


class ChatPane(PaneBase):
    app: ChatPort

    def _render_toolbar(self) -> None:
        self._clear("oc_toolbar")
        m = self.model
        sm = m.server
        ch = sm.channel(m.channel_id) if sm and m.channel_id else None
        s = self.s
        with dpg.group(parent="oc_toolbar", horizontal=True):
            dpg.add_spacer(width=s(8))
            with dpg.group():
                dpg.add_spacer(height=s(8))
                with dpg.group(horizontal=True):
                    t = dpg.add_text(f"# {ch.name}" if ch else "", tag="oc_channel_title")
                    dpg.bind_item_font(t, self.fonts.bold)
                    dpg.add_text("|", color=fonts.MUTED)
                    dpg.add_text(sm.record.display_name if sm else "", color=fonts.MUTED)
                    dpg.add_button(label="Live", tag="oc_chip", small=True)
                    with dpg.tooltip("oc_chip"):
                        dpg.add_text("", tag="oc_chip_tooltip")
                    dpg.add_spacer(width=s(24))
                    dpg.add_button(
                        label="Members",
                        tag="oc_members_toggle",
                        small=True,
                        callback=lambda: self.app.toggle_members(),
                    )
                    if m.members_open:
                        dpg.bind_item_theme("oc_members_toggle", self.themes["brand"])
                    gear = dpg.add_button(
                        label="⚙",
                        tag="oc_settings_btn",
                        small=True,
                        callback=lambda: self.app.open_settings(),
                    )
                    dpg.bind_item_font(gear, self.fonts.emoji)
        self._chip_at = 0.0

    def _render_chip(self) -> None:
        if not dpg.does_item_exist("oc_chip"):
            return
        chip = self.model.chip()
        # no server yet (first run): no realtime to speak of, unless the stack itself is away
        dpg.configure_item(
            "oc_chip", label=chip.label, show=self.model.server is not None or not self.model.stack_online
        )
        kind = "Live" if chip.label == "Live" else "Offline" if chip.label == "Offline" else "Reconnecting"
        dpg.bind_item_theme("oc_chip", self.themes[f"chip_{kind}"])
        dpg.set_value("oc_chip_tooltip", chip.tooltip)
        for key in [k for k in self.model.banners if k.startswith("offline:")]:
            self.model._refresh_banners()
            tag = f"oc_banner_{key}"
            if dpg.does_item_exist(tag):
                dpg.set_value(tag, self.model.banners[key].text if key in self.model.banners else "")
            break

    def _render_banners(self) -> None:
        self._clear("oc_banners")
        for b in self.model.visible_banners():
            color = fonts.RED if b.level == "error" else fonts.AMBER if b.level == "warning" else fonts.MUTED
            with dpg.group(parent="oc_banners", horizontal=True):
                dpg.add_text(
                    b.text, tag=f"oc_banner_{b.key}", color=color, wrap=max(200, self.width - self.s(760))
                )
                if b.dismissible:
                    dpg.add_button(
                        label="Dismiss",
                        small=True,
                        callback=lambda s_, a, u: self.app.dismiss_banner(u),
                        user_data=b.key,
                    )

    def _render_composer_state(self) -> None:
        c = self.app.composer
        m = self.model
        sm = m.server
        ch = sm.channel(m.channel_id) if sm and m.channel_id else None
        read_only = m.read_only or ch is None
        hint = f"Message #{ch.name}" if ch else "Message"
        if m.read_only:
            hint = "Read-only: the home stack is unreachable"
        dpg.configure_item("oc_composer", hint=hint, enabled=not read_only and not c.sending)
        dpg.configure_item(
            "oc_send", label="Sending..." if c.sending else "Send", enabled=not read_only and not c.sending
        )
        dpg.configure_item("oc_attach", enabled=not read_only and m.attachments_enabled())
        if dpg.get_value("oc_composer") != c.draft and not dpg.is_item_active("oc_composer"):
            dpg.set_value("oc_composer", c.draft)
        show_reply = c.reply_to is not None
        if dpg.is_item_shown("oc_reply_banner") != show_reply:
            dpg.configure_item("oc_reply_banner", show=show_reply)
            self._timeline_height()
        if show_reply:
            dpg.set_value("oc_reply_name", c.reply_author)
            dpg.configure_item("oc_reply_ping", label="@ ON" if c.reply_ping else "@ OFF")
        err = c.error
        if dpg.get_value("oc_composer_error") != err:
            dpg.set_value("oc_composer_error", err)
            dpg.configure_item("oc_composer_error", show=bool(err))
            self._timeline_height()
        sig = tuple((a.name, a.size) for a in c.attachments)
        if getattr(self, "_att_sig", None) != sig:
            self._att_sig = sig
            self._render_attachments()
            self._timeline_height()

    def _render_attachments(self) -> None:
        """Preview cards (ux.md 3.8): thumbnail, 👁 view, ✎ replace, 🗑 remove, name and size."""
        self._clear("oc_attachments")
        s = self.s
        for i, a in enumerate(self.app.composer.attachments):
            thumb = self._draft_texture(a.data, THUMB_SIDE)
            with dpg.group(parent="oc_attachments"):
                if thumb is not None:
                    tag, w, h = thumb
                    sc = min(1.0, s(72) / max(w, h))
                    dpg.add_image_button(
                        tag,
                        width=max(1, int(w * sc)),
                        height=max(1, int(h * sc)),
                        callback=lambda s_, a_, u: self.view_draft(u),
                        user_data=i,
                    )
                name = dpg.add_text(a.name if len(a.name) <= 24 else a.name[:23] + "…", color=fonts.TEXT)
                dpg.bind_item_font(name, self.fonts.small)
                size = dpg.add_text(format_bytes(a.size), color=fonts.MUTED)
                dpg.bind_item_font(size, self.fonts.small)
                with dpg.group(horizontal=True):
                    for label, tip, fn in (
                        ("👁", "View", self.view_draft),
                        ("✎", "Replace", self.app.replace_attachment),
                        ("🗑", "Remove", self.app.remove_attachment),
                    ):
                        b = dpg.add_button(
                            label=label, small=True, callback=lambda s_, a_, u: u[0](u[1]), user_data=(fn, i)
                        )
                        dpg.bind_item_font(b, self.fonts.emoji)
                        with dpg.tooltip(b):
                            dpg.add_text(tip)

    def _draft_texture(self, data: bytes, side: int) -> tuple[int | str, int, int] | None:
        """A texture of an image about to be sent (cached by content)."""
        import hashlib

        key = f"draft:{side}:{hashlib.sha1(data, usedforsecurity=False).hexdigest()}"
        images = self.app.images
        if key not in images.textures and key not in images.failed:
            images.put_bytes(key, data, max_side=side)
        return images.textures.get(key)

    def view_draft(self, index: int) -> None:
        atts = self.app.composer.attachments
        if not 0 <= index < len(atts):
            return
        a = atts[index]
        self._open_lightbox(self._draft_texture(a.data, 1280), f"{a.name} · {format_bytes(a.size)}")

    def toggle_emoji(self) -> None:
        dpg.configure_item("oc_emoji_picker", show=not dpg.is_item_shown("oc_emoji_picker"))
        self._timeline_height()

    def hide_emoji(self) -> None:
        if dpg.does_item_exist("oc_emoji_picker") and dpg.is_item_shown("oc_emoji_picker"):
            dpg.configure_item("oc_emoji_picker", show=False)
            self._timeline_height()

    def render_mentions(self, items: list[tuple[str, str]], index: int) -> None:
        self._clear("oc_mentions")
        for i, (token, label) in enumerate(items):
            dpg.add_selectable(
                label=f"{token}    {label}",
                parent="oc_mentions",
                default_value=i == index,
                callback=lambda s_, a, u: self.app.insert_mention(u),
                user_data=i,
            )
        self._timeline_height()

    def open_message_menu(self, mid: str) -> None:
        sm = self.model.server
        ch = self.model.channel_id
        msg = self.model._find(sm, ch, mid) if sm and ch else None
        if msg is None:
            return
        self._clear("oc_ctx_items")
        with dpg.group(parent="oc_ctx_items"):
            dpg.add_menu_item(
                label="Reply", tag="oc_ctx_reply", callback=lambda: self._menu(self.app.reply_to, mid)
            )
            dpg.add_menu_item(
                label="Copy Text",
                enabled=bool(msg.body),
                callback=lambda: self._menu(self.app.copy_text, mid),
            )
            dpg.add_menu_item(label="Copy Message Link", callback=lambda: self._menu(self.app.copy_link, mid))
            dpg.add_menu_item(
                label="Mark Unread", callback=lambda: self._menu(self.app.mark_unread, msg.channel_id)
            )
            if self.model.can_delete(msg):
                d = dpg.add_menu_item(
                    label="Delete Message",
                    tag="oc_ctx_delete",
                    callback=lambda: self._menu(self.app.delete_message, mid),
                )
                dpg.bind_item_theme(d, self.themes["danger_text"])
        self._show_menu()

    # -- the composer widget (owns ``oc_composer``) -------------------------------------------------
    _composer_pending: str | None = None
    _focus_composer = False

    def set_composer_text(self, text: str, focus: bool = True) -> None:
        """Dear ImGui keeps its own buffer while an input is active, so an active composer is first
        deactivated; the text lands on a later frame (``flush_composer``)."""
        if dpg.is_item_active("oc_composer"):
            dpg.focus_item("oc_send")
            self._composer_pending = text
        else:
            dpg.set_value("oc_composer", text)
        self._focus_composer = focus

    def flush_composer(self) -> None:
        if self._composer_pending is not None:
            if not dpg.is_item_active("oc_composer"):
                dpg.set_value("oc_composer", self._composer_pending)
                self._composer_pending = None
        elif self._focus_composer:
            self._focus_composer = False
            dpg.focus_item("oc_composer")

    def composer_text(self) -> str:
        return str(dpg.get_value("oc_composer") or "")

    def shift_down(self) -> bool:
        return bool(dpg.is_key_down(dpg.mvKey_LShift) or dpg.is_key_down(dpg.mvKey_RShift))

    def copy_to_clipboard(self, text: str) -> None:
        dpg.set_clipboard_text(text)

    def choose_images(self, chosen: Callable[[list[Path]], object], *, many: bool) -> None:
        """Attach (or replace) images: a file dialog (Dear PyGui's own) filtered to png/jpeg/gif."""

        def done(_sender: Any, app_data: dict[str, Any]) -> None:
            chosen([Path(p) for p in (app_data.get("selections") or {}).values()])

        extra: dict[str, Any] = {"file_count": 4} if many else {}
        with dpg.file_dialog(callback=done, width=700, height=420, modal=True, **extra):
            dpg.add_file_extension("Images (*.png *.jpg *.jpeg *.gif){.png,.jpg,.jpeg,.gif}")

    def choose_save_path(self, file_name: str, chosen: Callable[[Path], object]) -> None:
        """Save… in the lightbox: the OS-independent Dear PyGui file dialog."""

        def done(_sender: Any, app_data: dict[str, Any]) -> None:
            target = app_data.get("file_path_name")
            if target:
                chosen(Path(str(target)))

        with dpg.file_dialog(
            callback=done, width=700, height=420, modal=True, default_filename=Path(file_name).stem
        ):
            dpg.add_file_extension(Path(file_name).suffix or ".png")
