"""Dialogs and overlays (ux.md 2.8): Add Server, leave, consent, settings, quick switcher, keyboard map, lightbox. Owns their tags (``oc_add*``, ``oc_leave*``, ``oc_consent*``, ``oc_set*``, ``oc_switch*``, ``oc_keys*``, ``oc_lightbox*``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dearpygui.dearpygui as dpg

from services.core.contracts.chat import AttachmentRef, ChatMessage
from ui import fonts
from ui.ports import DialogsPort
from ui.state.account import disclosure_sentence, other_mode
from ui.state.add_server import AddServerFlow, entry_label
from ui.state.model import SwitchItem, format_bytes
from ui.view.base import KEYMAP, PaneBase
from ui.view.dialogs.onboarding import OnboardingDialog


class Dialogs(PaneBase):
    app: DialogsPort
    onboarding: OnboardingDialog  # the Welcome / Edit profile dialog (built with the others)

    def _build_dialogs(self) -> None:
        s = self.s
        # one shared context menu (server tiles and message rows)
        with dpg.window(tag="oc_ctx", popup=True, show=False, no_title_bar=True, autosize=True):
            dpg.add_group(tag="oc_ctx_items")
        # Add server
        with dpg.window(
            tag="oc_add",
            label="Add Server",
            modal=True,
            show=False,
            width=s(560),
            height=s(520),
            no_resize=True,
            on_close=lambda: self.app.close_overlays(),
        ):
            dpg.add_text("Backend URL")
            dpg.add_input_text(tag="oc_add_url", width=-1, callback=lambda: self.app.add_url_changed())
            with dpg.group(horizontal=True):
                dpg.add_button(
                    label="Discover Servers", tag="oc_add_discover", callback=lambda: self.app.discover()
                )
                dpg.add_button(label="Probe Backend", tag="oc_add_probe", callback=lambda: self.app.probe())
            dpg.add_listbox(
                tag="oc_add_list",
                items=[],
                num_items=5,
                width=-1,
                callback=lambda s_, a: self.app.pick_discovered(a),
            )
            dpg.add_text("", tag="oc_add_summary", wrap=s(520))
            dpg.add_text("", tag="oc_add_warning", color=fonts.AMBER, wrap=s(520))
            dpg.add_text("", tag="oc_add_disclosure", color=fonts.MUTED, wrap=s(520))
            with dpg.group(horizontal=True, tag="oc_add_local_row", show=False):  # issue #14
                dpg.add_text("Local server id")
                dpg.add_input_text(
                    tag="oc_add_local",
                    width=-1,
                    hint="the id this server gets here",
                    callback=lambda s_, a: self.app.add_local_id_changed(str(a)),
                )
            dpg.add_text("", tag="oc_add_error", color=fonts.RED, wrap=s(520))
            with dpg.group(horizontal=True):
                b = dpg.add_button(
                    label="Add Server", tag="oc_add_confirm", callback=lambda: self.app.add_server()
                )
                dpg.bind_item_theme(b, self.themes["brand"])
                dpg.add_button(label="Cancel", callback=lambda: self.app.close_overlays())
        # Leave confirmation
        with dpg.window(
            tag="oc_leave",
            label="Leave server",
            modal=True,
            show=False,
            width=s(420),
            height=s(170),
            no_resize=True,
        ):
            dpg.add_text("", tag="oc_leave_text", wrap=s(400))
            dpg.add_text(
                "Its channels, messages and counts are cleared for you on this stack.",
                color=fonts.MUTED,
                wrap=s(400),
            )
            with dpg.group(horizontal=True):
                b = dpg.add_button(
                    label="Leave", tag="oc_leave_confirm", callback=lambda: self.app.confirm_leave()
                )
                dpg.bind_item_theme(b, self.themes["danger"])
                dpg.add_button(label="Cancel", callback=lambda: self.app.close_overlays())
        # Consent: ask before the profile goes to a server, per server (rule D18)
        with dpg.window(
            tag="oc_consent",
            label="Profile",
            modal=True,
            show=False,
            width=s(440),
            height=s(150),
            no_resize=True,
        ):
            dpg.add_text("", tag="oc_consent_text", wrap=s(420))
            with dpg.group(horizontal=True):
                b = dpg.add_button(label="Share", callback=lambda: self.app.answer_consent(True))
                dpg.bind_item_theme(b, self.themes["brand"])
                dpg.add_button(label="Keep private", callback=lambda: self.app.answer_consent(False))
        # Quick switcher
        with dpg.window(
            tag="oc_switcher",
            label="Quick switcher",
            modal=True,
            show=False,
            width=s(520),
            height=s(380),
            no_resize=True,
            no_title_bar=True,
        ):
            dpg.add_input_text(
                tag="oc_switch_query",
                hint="Where would you like to go?",
                width=-1,
                callback=lambda s_, a: self.app.quick_query(a),
            )
            dpg.add_group(tag="oc_switch_list")
        # Settings
        with (
            dpg.window(
                tag="oc_settings", label="User Settings", modal=True, show=False, width=s(640), height=s(520)
            ),
            dpg.tab_bar(tag="oc_set_tabs"),
        ):
            with dpg.tab(label="My Account"):
                h = dpg.add_text("Identity Disclosure")
                dpg.bind_item_font(h, self.fonts.bold)
                dpg.add_text("", tag="oc_set_disclosure", wrap=s(600))
                dpg.add_text("", tag="oc_set_uid")
                dpg.add_button(
                    label="Switch UID mode (server_scoped)",
                    tag="oc_set_uidmode",
                    enabled=False,
                    callback=lambda: self.app.account.switch_uid_mode(),
                )
                with dpg.tooltip("oc_set_uidmode"):
                    dpg.add_text("", tag="oc_set_uidmode_tip")
                dpg.add_button(
                    label="Show my identity root",
                    tag="oc_set_reveal",
                    callback=lambda: self.app.account.reveal_root(),
                )
                with dpg.group(tag="oc_set_root_row", show=False):
                    dpg.add_input_text(tag="oc_set_root", readonly=True, width=s(300))
                    dpg.add_text(
                        "Anyone with this root can appear as you. Import it only on your own devices.",
                        color=fonts.AMBER,
                        wrap=s(600),
                    )
                self._build_backup_section()  # identity backup (issue 18)
                dpg.add_separator()
                h3 = dpg.add_text("Profile")
                dpg.bind_item_font(h3, self.fonts.bold)
                with dpg.group(horizontal=True):
                    dpg.add_text("", tag="oc_set_profile")
                    dpg.add_button(
                        label="Edit profile…",
                        tag="oc_set_edit_profile",
                        callback=lambda: self._edit_profile(),
                    )
                dpg.add_separator()
                hp = dpg.add_text("Link previews")
                dpg.bind_item_font(hp, self.fonts.bold)
                dpg.add_checkbox(
                    label="Show link previews",
                    tag="oc_set_previews",
                    default_value=True,
                    enabled=False,
                    callback=lambda s_, a: self.app.set_previews(bool(a)),
                )
                dpg.add_text(
                    "Your home stack fetches the linked pages (never this computer), for verified servers "
                    "only; the sites see your home's address.",
                    color=fonts.MUTED,
                    wrap=s(600),
                )
                dpg.add_separator()
                h2 = dpg.add_text("Profile sharing per server")
                dpg.bind_item_font(h2, self.fonts.bold)
                dpg.add_group(tag="oc_set_consent")
                dpg.add_separator()
                dpg.add_text("Recent status", color=fonts.MUTED)
                dpg.add_group(tag="oc_set_history")
            with dpg.tab(label="Voice & Video", tag="oc_set_voice_tab"):
                self._build_voice_settings()  # ui/view/voice.py
            with dpg.tab(label="Notifications", tag="oc_set_tab_notify"):
                self._build_notify_tab()
            with dpg.tab(label="Appearance"):
                dpg.add_text("UI scale")
                dpg.add_radio_button(
                    ["100%", "125%", "150%", "200%"],
                    tag="oc_set_scale",
                    horizontal=True,
                    default_value=f"{round(self.scale * 100)}%",
                    callback=lambda s_, a: self.app.set_appearance(scale=int(a.rstrip("%")) / 100),
                )
                dpg.add_text("Font size")
                dpg.add_slider_int(
                    tag="oc_set_font",
                    min_value=12,
                    max_value=24,
                    default_value=self.font_size,
                    callback=lambda s_, a: self.app.set_appearance(font_size=a),
                )
                dpg.add_text("Scale and font size apply at the next start.", color=fonts.MUTED)
            with dpg.tab(label="Keyboard"), dpg.table(header_row=True):
                dpg.add_table_column(label="Key")
                dpg.add_table_column(label="Where")
                dpg.add_table_column(label="Effect")
                for key, where, effect in KEYMAP:
                    with dpg.table_row():
                        dpg.add_text(key)
                        dpg.add_text(where)
                        dpg.add_text(effect)
        self.onboarding = OnboardingDialog(self.app.account, self)
        self.onboarding.build(s, self.fonts.bold)
        # Lightbox
        with dpg.window(tag="oc_lightbox", label="Image", modal=True, show=False, no_title_bar=True):
            with dpg.group(horizontal=True):
                dpg.add_text("", tag="oc_lightbox_caption")
                dpg.add_group(tag="oc_lightbox_actions", horizontal=True)
            dpg.add_group(tag="oc_lightbox_body")

    def render_switch_list(self, items: Sequence[SwitchItem], index: int) -> None:
        self._clear("oc_switch_list")
        for i, it in enumerate(items):
            dpg.add_selectable(
                label=f"{it.label}    {it.detail}",
                parent="oc_switch_list",
                default_value=i == index,
                callback=lambda s_, a, u: self.app.choose_switch(u),
                user_data=i,
            )

    def open_lightbox(self, m: ChatMessage, att: AttachmentRef) -> None:
        images = self.app.images
        tex = images.texture_for(m, att)
        if tex is not None:
            tex = images.full_texture(images.key(m, att)) or tex
        caption = f"{att.file_name} · {format_bytes(att.bytes)}" + (
            f" · {att.width}x{att.height}" if att.width and att.height else ""
        )
        self._open_lightbox(tex, caption, (m, att))

    def _open_lightbox(
        self,
        tex: tuple[int | str, int, int] | None,
        caption: str,
        source: tuple[ChatMessage, AttachmentRef] | None = None,
    ) -> None:
        self._clear("oc_lightbox_body")
        self._clear("oc_lightbox_actions")
        dpg.set_value("oc_lightbox_caption", caption)
        if source is not None:  # a received image: Save… and Copy Link (features 5.6)
            m, att = source
            dpg.add_button(
                label="Save…",
                tag="oc_lightbox_save",
                parent="oc_lightbox_actions",
                callback=lambda: self.app.save_image_dialog(m, att),
            )
            dpg.add_button(
                label="Copy Link",
                parent="oc_lightbox_actions",
                callback=lambda: self.app.copy_image_link(att),
            )
        w = int(self.width * 0.8)
        h = int(self.height * 0.8)
        dpg.configure_item("oc_lightbox", width=w, height=h)
        self.lightbox = {"zoom": 1.0, "cx": 0.5, "cy": 0.5, "tex": tex, "w": w, "h": h}
        if tex is None:
            dpg.add_text("Loading image...", parent="oc_lightbox_body", color=fonts.MUTED)
        else:
            tag, tw, th = tex
            sc = min((w - 24) / tw, (h - 60) / th, 4.0)
            dpg.add_image(
                tag,
                tag="oc_lightbox_image",
                width=int(tw * sc),
                height=int(th * sc),
                parent="oc_lightbox_body",
                indent=max(0, int((w - 16 - tw * sc) / 2)),
            )
        self.show("oc_lightbox")

    def _on_drag(self, data: Any) -> None:
        """Drag to pan the zoomed lightbox image (``data``: button, dx, dy since the press)."""
        if not self.lightbox or not dpg.is_item_shown("oc_lightbox"):
            return
        dx, dy = float(data[1]), float(data[2])
        last = self._drag_last or (0.0, 0.0)
        self._drag_last = (dx, dy)
        self.lightbox_pan(dx - last[0], dy - last[1])

    def _drag_end(self) -> None:
        self._drag_last = None

    def lightbox_pan(self, dx_px: float, dy_px: float) -> tuple[float, float]:
        lb = self.lightbox
        if not lb or not dpg.does_item_exist("oc_lightbox_image"):
            return (0.5, 0.5)
        w = max(1.0, float(dpg.get_item_width("oc_lightbox_image") or 1))
        h = max(1.0, float(dpg.get_item_height("oc_lightbox_image") or 1))
        lb["cx"] -= dx_px / w / lb["zoom"]
        lb["cy"] -= dy_px / h / lb["zoom"]
        self.lightbox_zoom(0)
        return (float(lb["cx"]), float(lb["cy"]))

    def lightbox_zoom(self, notches: float) -> float:
        lb = self.lightbox
        if not lb or not dpg.does_item_exist("oc_lightbox_image"):
            return 1.0
        lb["zoom"] = max(1.0, min(6.0, lb["zoom"] + 0.18 * notches))
        z = lb["zoom"]
        half = 0.5 / z
        cx = lb["cx"] = min(max(lb["cx"], half), 1 - half)
        cy = lb["cy"] = min(max(lb["cy"], half), 1 - half)
        dpg.configure_item("oc_lightbox_image", uv_min=(cx - half, cy - half), uv_max=(cx + half, cy + half))
        return float(z)

    # -- Add Server (owns ``oc_add*``) ------------------------------------------------------------
    def add_url(self) -> str:
        return str(dpg.get_value("oc_add_url") or "").strip()

    def set_add_url(self, url: str) -> None:
        dpg.set_value("oc_add_url", url)

    def render_add_server(self, flow: AddServerFlow) -> None:
        dpg.configure_item("oc_add_list", items=flow.labels)
        entry = flow.picked_entry
        if entry is not None:
            dpg.set_value("oc_add_list", entry_label(entry))
        summary, warning, disclosure = flow.summary()
        dpg.set_value("oc_add_summary", summary)
        dpg.set_value("oc_add_warning", warning)
        dpg.set_value("oc_add_disclosure", disclosure)
        dpg.set_value("oc_add_error", flow.error)
        dpg.configure_item("oc_add_local_row", show=flow.probe is not None)
        if dpg.get_value("oc_add_local") != flow.local_id and not (
            flow.local_edited and dpg.is_item_active("oc_add_local")
        ):
            dpg.set_value("oc_add_local", flow.local_id)
        dpg.configure_item("oc_add_confirm", enabled=flow.probe is not None)

    # -- Settings → My Account (owns ``oc_set*``) ----------------------------------------------------
    def render_settings(self) -> None:
        acc = self.app.account
        model = self.model
        sm = model.server
        origin = sm.record.base_url if sm is not None and sm.record.uid_scope else None
        dpg.set_value("oc_set_disclosure", disclosure_sentence(acc.uid_mode, origin))
        dpg.set_value("oc_set_uid", f"current UID: {sm.record.user_uid}" if sm else "current UID: -")
        dpg.configure_item(
            "oc_set_uidmode", label=f"Switch UID mode ({acc.uid_mode})", enabled=acc.info is not None
        )
        dpg.set_value(
            "oc_set_uidmode_tip",
            f"Every server will see a {other_mode(acc.uid_mode).replace('_', '-')} uid instead; "
            "the sessions reconnect with it.",
        )
        dpg.set_value("oc_set_root", acc.revealed or "")
        dpg.configure_item("oc_set_root_row", show=acc.revealed is not None)
        prof = acc.profile
        dpg.set_value(
            "oc_set_profile",
            f"{prof.display_name} · avatar: {prof.avatar_mode}"
            if prof
            else "No profile yet: servers see only your uid.",
        )
        dpg.delete_item("oc_set_consent", children_only=True)
        for sid in model.order:
            s = model.servers[sid]
            dpg.add_text(f"{s.record.display_name}: @{s.record.user_uid}", parent="oc_set_consent")
            dpg.add_checkbox(
                label=f"Share my display name and avatar with {s.record.display_name}",
                parent="oc_set_consent",
                default_value=bool(s.record.profile_consent),
                callback=lambda s_, a, u: self.app.answer_consent(bool(a), u),
                user_data=sid,
            )
        self.render_notify_settings()
        self._render_backup()
        dpg.delete_item("oc_set_history", children_only=True)
        for line in model.status_history[-8:] or ["(nothing yet)"]:
            dpg.add_text(line, parent="oc_set_history", wrap=560)

    def render_previews_switch(self, enabled: bool) -> None:
        dpg.configure_item("oc_set_previews", enabled=True)
        dpg.set_value("oc_set_previews", enabled)

    # -- first run, leave, consent, quick switcher --------------------------------------------------
    def show_connection_error(self, text: str) -> None:
        dpg.set_value("oc_conn_error", text)

    def show_leave(self, server_name: str) -> None:
        dpg.set_value("oc_leave_text", f"Leave {server_name}?")
        self.show("oc_leave")

    def show_consent(self, server_name: str) -> None:
        dpg.set_value("oc_consent_text", f"Share your display name and avatar with {server_name}?")
        self.show("oc_consent")

    def clear_switch_query(self) -> None:
        dpg.set_value("oc_switch_query", "")

    def focus_switch_query(self) -> None:
        dpg.focus_item("oc_switch_query")

    def show_connection_choices(self, paths: list[str]) -> None:
        dpg.configure_item("oc_conn_list", items=paths)
