"""The user dock (ux.md 2.3): the member's name, avatar and status. Owns ``oc_dock*`` tags."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from ui import fonts
from ui.ports import DockPort
from ui.state.account import PRESET_COLORS
from ui.view.base import PaneBase
from ui.view.timeline import round_image


class DockPane(PaneBase):
    app: DockPort

    def _render_dock(self) -> None:
        self._clear("oc_dock")
        sm = self.model.server
        s = self.s
        with dpg.group(parent="oc_dock", horizontal=True):
            dpg.add_spacer(width=s(8))
            size = s(36)
            uid = sm.record.user_uid if sm else ""
            name = sm.name_of(uid) if sm else (self.model.display_name or self.app.member)
            with dpg.drawlist(width=size, height=size):
                tex = self.app.avatar_texture(sm.server_id, uid) if sm is not None else None
                if tex is not None:
                    round_image(tex[0], size, fonts.PANEL_2)
                else:
                    top, rim = self.avatar_colors(uid or "x")
                    dpg.draw_circle(
                        (size / 2, size / 2), size / 2 - 1, fill=(*top, 255), color=(*rim, 255), thickness=2
                    )
                dot = self.status_dot()  # the member's status (issue 18)
                dpg.draw_circle(
                    (size / 2, size / 2),
                    size / 2 - 1,
                    color=(*fonts.GREEN, 255),
                    thickness=3,
                    tag="oc_dock_ring",
                )  # the speaking ring (8.5), shown by ui/view/voice.py
                dpg.configure_item("oc_dock_ring", show=self.app.voice.state.self_speaking())
                dpg.draw_circle(
                    (size - s(6), size - s(6)), s(5), fill=(*dot, 255), color=(*fonts.PANEL_2, 255)
                )
            with dpg.group():
                n = dpg.add_text(self.model.display_name or self.app.member, tag="oc_dock_name")
                dpg.bind_item_font(n, self.fonts.bold)
                u = dpg.add_text(f"@{uid}" if uid else "", tag="oc_dock_uid", color=fonts.MUTED)
                dpg.bind_item_font(u, self.fonts.small)
            del name
            self._dock_voice_buttons()  # mic, deafen and their device menus (ui/view/voice.py)
            st = dpg.add_button(
                label=self.model.notify.status_line()[0],
                tag="oc_dock_status",
                callback=lambda: self.open_status_menu(),
            )
            dpg.bind_item_font(st, self.fonts.small)
            gear = dpg.add_button(label="⚙", tag="oc_dock_gear", callback=lambda: self.app.open_settings())
            dpg.bind_item_font(gear, self.fonts.emoji)

    def _edit_profile(self) -> None:
        self.hide_overlays()
        self.app.account.open("profile", editing=True)

    def avatar_colors(self, uid: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """(fill, rim) of a generated avatar (ux.md 5.1): the member's own preset, a profile's
        preset, else a colour hashed from the uid."""
        sm = self.model.server
        if sm is not None and uid == sm.record.user_uid:
            own = self.app.account.avatar_colors()
            if own is not None:
                return own
        prof = sm.profiles.get(uid) if sm is not None else None
        if prof is not None and prof.avatar_mode == "generated" and prof.avatar_preset_id in PRESET_COLORS:
            return PRESET_COLORS[prof.avatar_preset_id]
        color = fonts.uid_color(uid)
        return color, color
