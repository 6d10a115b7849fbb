"""The server rail (ux.md 2.1): tiles with badges and chips, the server menu. Owns ``oc_rail*`` tags."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from ui import fonts
from ui.ports import RailPort
from ui.view.base import PaneBase


class RailPane(PaneBase):
    app: RailPort

    def _render_rail(self) -> None:
        """Tiles at fixed positions so each badge can sit on its tile's top-right corner."""
        self._clear("oc_rail")
        s = self.s
        m = self.model
        x, tile, step = s(12), s(48), s(56)
        home = dpg.add_button(
            label="OC", width=tile, height=tile, tag="oc_home_tile", parent="oc_rail", pos=(x, s(8))
        )
        dpg.bind_item_theme(home, self.themes["brand"])
        dpg.add_separator(parent="oc_rail", pos=(s(20), s(62)))
        y = s(70)
        for sid in m.order:
            sm = m.servers[sid]
            active = sid == m.active_server
            offline = sm.connection.state == "offline" or not m.stack_online
            theme = (
                "tile_active"
                if active
                else "tile_offline"
                if offline
                else ("tile_unverified" if sm.record.trust_state != "verified" else "tile")
            )
            label = (sm.record.icon_text or sm.record.display_name[:2]).upper()[:2]
            b = dpg.add_button(
                label=label,
                tag=f"oc_tile_{sid}",
                width=tile,
                height=tile,
                parent="oc_rail",
                pos=(x, y),
                callback=lambda s_, a, u: self.app.select_server(u),
                user_data=sid,
            )
            dpg.bind_item_theme(b, self.themes[theme])
            with dpg.tooltip(b):
                dpg.add_text(sm.record.display_name)
                if sid != sm.record.backend_id:  # two backends may use one id (ADR 0018): say which
                    dpg.add_text(f"{sid} · {sm.record.base_url}", color=fonts.MUTED)
                if offline:
                    dpg.add_text(sm.connection.reason or "offline", color=fonts.RED)
            if offline:
                mark = dpg.add_text(
                    "⊘", parent="oc_rail", pos=(x + tile - s(14), y + tile - s(20)), color=fonts.RED
                )
                dpg.bind_item_font(mark, self.fonts.emoji)
            text, mention = m.rail_badge(sid)
            badge = dpg.add_button(
                label=text,
                tag=f"oc_tile_badge_{sid}",
                show=bool(text),
                parent="oc_rail",
                pos=(x + tile - s(16), max(0, y - s(4))),
                small=True,
            )
            dpg.bind_item_theme(badge, self.themes["badge_mention" if mention else "badge"])
            dpg.bind_item_font(badge, self.fonts.small)
            y += step
        dpg.add_button(
            label="+",
            tag="oc_add_tile",
            width=tile,
            height=tile,
            parent="oc_rail",
            pos=(x, y),
            callback=lambda: self.app.open_add_server(),
        )

    def open_server_menu(self, sid: str) -> None:
        sm = self.model.servers.get(sid)
        if sm is None:
            return
        self._clear("oc_ctx_items")
        with dpg.group(parent="oc_ctx_items"):
            dpg.add_menu_item(
                label="Mark As Read",
                tag="oc_ctx_markread",
                callback=lambda: self._menu(self.app.mark_server_read, sid),
            )
            dpg.add_menu_item(
                label="Unmute Server" if sm.muted else "Mute Server",
                tag="oc_ctx_mute",
                check=True,
                default_value=sm.muted,
                callback=lambda s_, a: self._menu(self.app.set_mute, sid, bool(a)),
            )
            self.server_notify_items(sid)  # mute for a while, level, Hide Muted Channels (issue 18)
            dpg.add_separator()
            leave = dpg.add_menu_item(
                label="Leave Server", tag="oc_ctx_leave", callback=lambda: self._menu(self.app.ask_leave, sid)
            )
            dpg.bind_item_theme(leave, self.themes["danger_text"])
            dpg.add_separator()
            cap = dpg.add_text(sm.record.display_name, color=fonts.MUTED)
            dpg.bind_item_font(cap, self.fonts.small)
        self._show_menu()
