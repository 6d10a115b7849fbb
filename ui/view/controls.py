"""The member's controls (issue 18): the dock's status picker, the channel context menu, the
server menu's notification items, Settings → Notifications, the identity backup in Settings → My
Account, and the update check's taskbar button, notice and client information dialog (features
13.2-13.4). Owns the tags ``oc_status*``, ``oc_chctx*``, ``oc_srvn*``, ``oc_setn*``, ``oc_bak*``,
``oc_update*`` and ``oc_info*``.

It renders ``model.notify`` (``ui.state.notify_settings``), ``app.updater`` and ``app.backup``;
every widget sends an intent (``ui.state.control_intents``) through ``app.dispatch``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dearpygui.dearpygui as dpg

from ui import fonts
from ui.ports import ControlsPort
from ui.state import control_intents as ci
from ui.state.notify_settings import (
    FOLLOW_SERVER,
    LEVEL_CHOICES,
    LEVEL_LABELS,
    MUTE_CHOICES,
    STATUS_CHOICES,
    STATUS_COLORS,
    STATUS_SCOPE,
)
from ui.view.base import PaneBase
from ui.view.timeline import open_link

SERVER_MUTE_SHORT = ("15 min", "1 h", "8 h", "24 h")


class ControlsPane(PaneBase):
    app: ControlsPort
    _controls_seen: tuple[int, int, int] = (-1, -1, -1)

    # -- build ---------------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        """Windows of their own (status card, update notice, client information)."""
        s = self.s
        self.themes["muted_row"] = fonts.color_theme(dpg, text=(110, 114, 124))
        with dpg.window(tag="oc_status_menu", popup=True, show=False, no_title_bar=True, autosize=True):
            h = dpg.add_text("Profile", tag="oc_status_title")
            dpg.bind_item_font(h, self.fonts.bold)
            dpg.add_text("", tag="oc_status_active", color=fonts.MUTED)
            dpg.add_separator()
            for key, label, note in STATUS_CHOICES:
                with dpg.group(horizontal=True):
                    dot = dpg.add_text("●", color=STATUS_COLORS[key])
                    dpg.bind_item_font(dot, self.fonts.emoji)
                    dpg.add_selectable(
                        label=label,
                        tag=f"oc_status_{key}",
                        width=s(220),
                        callback=lambda s_, a, u: self._pick_status(u),
                        user_data=key,
                    )
                if note:
                    n = dpg.add_text(note, color=fonts.MUTED, indent=s(24))
                    dpg.bind_item_font(n, self.fonts.small)
            dpg.add_separator()
            sc = dpg.add_text(STATUS_SCOPE, color=fonts.MUTED, wrap=s(260))
            dpg.bind_item_font(sc, self.fonts.small)
        with dpg.window(
            tag="oc_update", label="Update", show=False, width=s(520), height=s(230), no_collapse=True
        ):
            t = dpg.add_text("", tag="oc_update_title")
            dpg.bind_item_font(t, self.fonts.bold)
            dpg.add_text("", tag="oc_update_where", wrap=s(490))
            dpg.add_input_text(tag="oc_update_url", readonly=True, width=-1)
            with dpg.group(horizontal=True):
                dpg.add_button(
                    label="Open release page", tag="oc_update_open", callback=lambda: self._open_release()
                )
                dpg.add_button(label="Close", callback=lambda: self.hide("oc_update"))
        with dpg.window(
            tag="oc_info",
            label="Client information",
            show=False,
            width=s(460),
            height=s(280),
            no_collapse=True,
        ):
            with dpg.table(header_row=False, tag="oc_info_table"):
                dpg.add_table_column()
                dpg.add_table_column()
                for i in range(5):
                    with dpg.table_row():
                        dpg.add_text("", tag=f"oc_info_key_{i}", color=fonts.MUTED)
                        dpg.add_text("", tag=f"oc_info_val_{i}")
            dpg.add_text("", tag="oc_info_where", wrap=s(430), color=fonts.MUTED)
            with dpg.group(horizontal=True):
                dpg.add_button(
                    label="Check again",
                    tag="oc_info_check",
                    callback=lambda: self.app.dispatch(ci.CheckUpdate()),
                )
                dpg.add_button(
                    label="Open release page", tag="oc_info_open", callback=lambda: self._open_release()
                )
                dpg.add_button(label="Close", callback=lambda: self.hide("oc_info"))

    def _build_notify_tab(self) -> None:
        """Settings → Notifications (inside the settings tab bar)."""
        s = self.s
        h = dpg.add_text("Status")
        dpg.bind_item_font(h, self.fonts.bold)
        dpg.add_radio_button(
            [label for _, label, _ in STATUS_CHOICES],
            tag="oc_setn_status",
            horizontal=True,
            callback=lambda s_, a: self._pick_status(next(k for k, label, _ in STATUS_CHOICES if label == a)),
        )
        dpg.add_text(
            "Do Not Disturb silences desktop notifications; badges keep counting. " + STATUS_SCOPE,
            color=fonts.MUTED,
            wrap=s(600),
        )
        dpg.add_separator()
        h = dpg.add_text("Quiet hours")
        dpg.bind_item_font(h, self.fonts.bold)
        dpg.add_checkbox(label="Silence notifications every day between", tag="oc_setn_quiet_on")
        with dpg.group(horizontal=True):
            dpg.add_input_text(tag="oc_setn_quiet_start", width=s(70), hint="22:00")
            dpg.add_text("and")
            dpg.add_input_text(tag="oc_setn_quiet_end", width=s(70), hint="07:00")
            dpg.add_text("time zone")
            dpg.add_input_text(tag="oc_setn_tz", width=s(170), hint="Europe/Berlin")
            dpg.add_button(label="Save", tag="oc_setn_quiet_save", callback=lambda: self._save_quiet())
        dpg.add_text("", tag="oc_setn_quiet_state", color=fonts.MUTED)
        dpg.add_separator()
        dpg.add_checkbox(
            label="Hide Muted Channels",
            tag="oc_setn_hide",
            callback=lambda s_, a: self.app.dispatch(ci.SetHideMuted(bool(a))),
        )
        dpg.add_text("Muted channels leave the channel list.", color=fonts.MUTED)
        dpg.add_separator()
        h = dpg.add_text("Servers")
        dpg.bind_item_font(h, self.fonts.bold)
        dpg.add_group(tag="oc_setn_servers")

    def _build_backup_section(self) -> None:
        """Settings → My Account → identity backup (features 1.8, P5)."""
        s = self.s
        dpg.add_separator()
        h = dpg.add_text("Identity backup")
        dpg.bind_item_font(h, self.fonts.bold)
        dpg.add_text(
            "Export writes your identity root to a file, encrypted with a passphrase you choose. "
            "Importing it on any home stack makes every server see the same uids again. "
            "Keep the file and the passphrase apart.",
            color=fonts.MUTED,
            wrap=s(600),
        )
        dpg.add_input_text(tag="oc_bak_path", hint="/path/to/openchat-identity.json", width=s(420))
        with dpg.group(horizontal=True):
            dpg.add_input_text(tag="oc_bak_pass", password=True, hint="Passphrase", width=s(200))
            dpg.add_input_text(tag="oc_bak_pass2", password=True, hint="Repeat (export)", width=s(200))
        with dpg.group(horizontal=True):
            dpg.add_button(label="Export backup", tag="oc_bak_export", callback=lambda: self._backup(True))
            dpg.add_button(label="Import backup", tag="oc_bak_import", callback=lambda: self._backup(False))
        dpg.add_text("", tag="oc_bak_status", wrap=s(600))

    # -- actions -------------------------------------------------------------------------------------
    def _pick_status(self, status: Any) -> None:
        self.hide("oc_status_menu")
        self.app.dispatch(ci.SetStatus(status))

    def _save_quiet(self) -> None:
        on = bool(dpg.get_value("oc_setn_quiet_on"))
        start = str(dpg.get_value("oc_setn_quiet_start") or "22:00").strip()
        end = str(dpg.get_value("oc_setn_quiet_end") or "07:00").strip()
        tz = str(dpg.get_value("oc_setn_tz") or "").strip() or None
        self.app.dispatch(ci.SetQuietHours(f"{start}-{end}" if on else "off", tz))

    def _backup(self, export: bool) -> None:
        path = str(dpg.get_value("oc_bak_path") or "")
        pw = str(dpg.get_value("oc_bak_pass") or "")
        pw2 = str(dpg.get_value("oc_bak_pass2") or "")
        dpg.set_value("oc_bak_pass", "")  # the passphrase leaves the widgets at once
        dpg.set_value("oc_bak_pass2", "")
        if export:
            self.app.dispatch(ci.ExportIdentity(path, pw, pw2))
        else:
            self.app.dispatch(ci.ImportIdentity(path, pw))
        self._render_backup()

    def _open_release(self) -> None:
        url = self.app.updater.release_url
        if url:
            open_link(url)

    # -- menus -----------------------------------------------------------------------------------------
    def open_status_menu(self) -> None:
        sm = self.model.server
        dpg.set_value("oc_status_active", f"Active on {sm.record.display_name}." if sm else "")
        for key, _, _ in STATUS_CHOICES:
            dpg.set_value(f"oc_status_{key}", key == self.model.notify.status)
        x = self.s(8)
        y = max(8, self.height - self.s(64) - self.s(300))
        dpg.configure_item("oc_status_menu", show=True, pos=(x, y))

    def open_channel_menu(self, sid: str, ch: str) -> None:
        """Right-click on a channel row: mute (for a while or until turned back on), the
        notification level, Hide Muted Channels."""
        sm = self.model.servers.get(sid)
        info = sm.channel(ch) if sm is not None else None
        if sm is None or info is None:
            return
        notify = self.model.notify
        now = self.model.now()
        self._clear("oc_ctx_items")
        with dpg.group(parent="oc_ctx_items"):
            if notify.channel_muted(sid, ch, now):
                dpg.add_menu_item(
                    label="Unmute Channel",
                    tag="oc_chctx_unmute",
                    callback=lambda: self._menu(self.app.dispatch, ci.SetNotifyMute(sid, ch, False)),
                )
                t = dpg.add_text(notify.channel_mute_text(sid, ch, now), color=fonts.MUTED)
                dpg.bind_item_font(t, self.fonts.small)
            else:
                t = dpg.add_text("Mute Channel", color=fonts.MUTED)
                dpg.bind_item_font(t, self.fonts.small)
                for i, (label, dur) in enumerate(MUTE_CHOICES):
                    dpg.add_menu_item(
                        label=label,
                        tag=f"oc_chctx_mute_{i}",
                        indent=self.s(8),
                        callback=lambda s_, a, u: self._menu(
                            self.app.dispatch, ci.SetNotifyMute(sid, ch, True, u)
                        ),
                        user_data=dur,
                    )
            dpg.add_separator()
            t = dpg.add_text("Notification Settings", color=fonts.MUTED)
            dpg.bind_item_font(t, self.fonts.small)
            own = notify.channel_level(sid, ch)
            server_label = LEVEL_LABELS[notify.server_level(sid)]
            dpg.add_menu_item(
                label=f"{FOLLOW_SERVER} ({server_label})",
                tag="oc_chctx_level_default",
                check=True,
                default_value=own is None,
                indent=self.s(8),
                callback=lambda: self._menu(self.app.dispatch, ci.SetNotifyLevel(sid, ch, None)),
            )
            for level, label in LEVEL_CHOICES:
                dpg.add_menu_item(
                    label=label,
                    tag=f"oc_chctx_level_{level}",
                    check=True,
                    default_value=own == level,
                    indent=self.s(8),
                    callback=lambda s_, a, u: self._menu(self.app.dispatch, ci.SetNotifyLevel(sid, ch, u)),
                    user_data=level,
                )
            dpg.add_separator()
            dpg.add_menu_item(
                label="Hide Muted Channels",
                tag="oc_chctx_hide",
                check=True,
                default_value=notify.hide_muted,
                callback=lambda s_, a: self._menu(self.app.dispatch, ci.SetHideMuted(bool(a))),
            )
            dpg.add_separator()
            cap = dpg.add_text(f"#{info.name}", color=fonts.MUTED)
            dpg.bind_item_font(cap, self.fonts.small)
        self._show_menu()

    def server_notify_items(self, sid: str) -> None:
        """The server menu's notification part (under "Mute Server"): mute for a while, the
        server's level, Hide Muted Channels."""
        notify = self.model.notify
        now = self.model.now()
        muted_text = notify.server_mute_text(sid, now)
        if muted_text:
            t = dpg.add_text(muted_text, tag="oc_srvn_muted", color=fonts.MUTED, indent=self.s(8))
            dpg.bind_item_font(t, self.fonts.small)
        else:
            with dpg.group(horizontal=True, indent=self.s(8)):
                t = dpg.add_text("for", color=fonts.MUTED)
                dpg.bind_item_font(t, self.fonts.small)
                for i, label in enumerate(SERVER_MUTE_SHORT):
                    dur = MUTE_CHOICES[i][1]
                    b = dpg.add_button(
                        label=label,
                        tag=f"oc_srvn_mute_{i}",
                        small=True,
                        callback=lambda s_, a, u: self._menu(
                            self.app.dispatch, ci.SetNotifyMute(sid, None, True, u)
                        ),
                        user_data=dur,
                    )
                    dpg.bind_item_font(b, self.fonts.small)
        t = dpg.add_text("Notification Settings", color=fonts.MUTED)
        dpg.bind_item_font(t, self.fonts.small)
        current = notify.server_level(sid)
        for level, label in LEVEL_CHOICES:
            dpg.add_menu_item(
                label=label,
                tag=f"oc_srvn_level_{level}",
                check=True,
                default_value=current == level,
                indent=self.s(8),
                callback=lambda s_, a, u: self._menu(self.app.dispatch, ci.SetNotifyLevel(sid, None, u)),
                user_data=level,
            )
        dpg.add_menu_item(
            label="Hide Muted Channels",
            tag="oc_srvn_hide",
            check=True,
            default_value=notify.hide_muted,
            callback=lambda s_, a: self._menu(self.app.dispatch, ci.SetHideMuted(bool(a))),
        )

    # -- taskbar: update button and ⓘ --------------------------------------------------------------------
    def render_update_controls(self) -> None:
        """Right end of the taskbar (called by ``_render_taskbar``)."""
        up = self.app.updater
        s = self.s
        info_x = self.width - s(44)
        b = dpg.add_button(
            label=up.button_label,
            tag="oc_update_btn",
            parent="oc_taskbar",
            pos=(info_x - s(200), s(7)),
            width=s(190),
            show=up.button_visible,
            enabled=up.button_enabled,
            callback=lambda: self.show_update_notice(),
        )
        dpg.bind_item_theme(b, self.themes["chip_Live" if up.status == "available" else "chip_Offline"])
        with dpg.tooltip(b):
            dpg.add_text(up.tooltip(), tag="oc_update_tip")
        i = dpg.add_button(
            label="ⓘ",
            tag="oc_info_btn",
            parent="oc_taskbar",
            pos=(info_x, s(7)),
            callback=lambda: self.show_client_info(),
        )
        dpg.bind_item_font(i, self.fonts.emoji)

    def show_update_notice(self) -> None:
        up = self.app.updater
        title, where = up.notice()
        dpg.set_value("oc_update_title", title)
        dpg.set_value("oc_update_where", where)
        dpg.set_value("oc_update_url", up.release_url or "")
        dpg.configure_item("oc_update_url", show=bool(up.release_url))
        dpg.configure_item("oc_update_open", show=bool(up.release_url))
        self.show("oc_update")

    def show_client_info(self) -> None:
        self._render_info()
        self.show("oc_info")

    def _render_info(self) -> None:
        up = self.app.updater
        for i, (k, v) in enumerate(up.info_rows()):
            dpg.set_value(f"oc_info_key_{i}", k)
            dpg.set_value(f"oc_info_val_{i}", v)
        dpg.set_value(
            "oc_info_where",
            f"New versions: {up.where()}" if up.status != "available" else up.notice()[1],
        )
        dpg.configure_item("oc_info_check", enabled=not up.in_flight)
        dpg.configure_item("oc_info_open", show=bool(up.release_url))

    # -- per frame ---------------------------------------------------------------------------------------
    def render_controls(self) -> None:
        """Redraw what depends on the settings, the update status or the backup when they change."""
        seen = (self.model.notify.version, self.app.updater.version, self.app.backup.version)
        if seen == self._controls_seen:
            return
        old = self._controls_seen
        self._controls_seen = seen
        if old[1] != seen[1]:
            self.model.touch("header")
            if dpg.is_item_shown("oc_info"):
                self._render_info()
        if old[0] != seen[0]:
            self.model.touch("dock", "channels")
            self.render_notify_settings()
        if old[2] != seen[2]:
            self._render_backup()

    def render_notify_settings(self) -> None:
        if not dpg.does_item_exist("oc_setn_status"):
            return
        n = self.model.notify
        dpg.set_value("oc_setn_status", n.status_line()[0])
        dpg.set_value("oc_setn_hide", n.hide_muted)
        q = n.member.quiet_hours
        editing = any(
            dpg.is_item_active(t) for t in ("oc_setn_quiet_start", "oc_setn_quiet_end", "oc_setn_tz")
        )
        if not editing:
            dpg.set_value("oc_setn_quiet_on", q.enabled)
            dpg.set_value("oc_setn_quiet_start", q.start)
            dpg.set_value("oc_setn_quiet_end", q.end)
            dpg.set_value("oc_setn_tz", n.member.timezone)
        dpg.set_value(
            "oc_setn_quiet_state",
            f"Quiet hours: {n.quiet_text()} ({n.member.timezone})"
            + (" — now in quiet hours" if n.quiet_now(self.model.now()) else ""),
        )
        self._clear("oc_setn_servers")
        now = self.model.now()
        labels = [label for _, label in LEVEL_CHOICES]
        for sid in self.model.order:
            sm = self.model.servers[sid]
            with dpg.group(parent="oc_setn_servers", horizontal=True):
                dpg.add_text(sm.record.display_name)
                dpg.add_combo(
                    labels,
                    tag=f"oc_setn_level_{sid}",
                    default_value=LEVEL_LABELS[n.server_level(sid)],
                    width=self.s(160),
                    callback=lambda s_, a, u: self.app.dispatch(
                        ci.SetNotifyLevel(u, None, next(k for k, label in LEVEL_CHOICES if label == a))
                    ),
                    user_data=sid,
                )
                dpg.add_checkbox(
                    label="Muted",
                    tag=f"oc_setn_mute_{sid}",
                    default_value=n.server_muted(sid, now),
                    callback=lambda s_, a, u: self.app.dispatch(ci.SetNotifyMute(u, None, bool(a))),
                    user_data=sid,
                )
                text = n.server_mute_text(sid, now)
                if text and text != "Muted":
                    dpg.add_text(text, color=fonts.MUTED)

    def _render_backup(self) -> None:
        if not dpg.does_item_exist("oc_bak_status"):
            return
        flow = self.app.backup
        text, error = flow.status()
        dpg.set_value("oc_bak_status", text)
        dpg.configure_item("oc_bak_status", color=fonts.RED if error else fonts.MUTED)
        busy = bool(flow.busy)
        dpg.configure_item("oc_bak_export", enabled=not busy)
        dpg.configure_item("oc_bak_import", enabled=not busy)

    def status_dot(self) -> tuple[int, int, int]:
        return STATUS_COLORS.get(self.model.notify.status, fonts.GREEN)

    def channel_muted(self, sid: str, ch: str, now: datetime) -> bool:
        return self.model.notify.channel_muted(sid, ch, now)
