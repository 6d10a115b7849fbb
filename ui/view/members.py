"""The members pane (ux.md 2.7). Owns ``oc_members*`` tags."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from ui import fonts
from ui.ports import MembersPort
from ui.view.base import CHEVRON_RIGHT, PaneBase


class MembersPane(PaneBase):
    app: MembersPort

    def _render_members(self) -> None:
        self._clear("oc_members")
        title, sub, names, empty = self.model.members()
        with dpg.group(parent="oc_members"):
            with dpg.group(horizontal=True):
                t = dpg.add_text(title, tag="oc_members_title")
                dpg.bind_item_font(t, self.fonts.bold)
                close = dpg.add_button(
                    label=CHEVRON_RIGHT, small=True, callback=lambda: self.app.toggle_members()
                )
                dpg.bind_item_font(close, self.fonts.emoji)
            st = dpg.add_text(sub, color=fonts.MUTED)
            dpg.bind_item_font(st, self.fonts.small)
            if empty:
                dpg.add_text(empty, tag="oc_members_empty", color=fonts.MUTED, wrap=self.s(220))
            for n in names:
                with dpg.group(horizontal=True):
                    dot = dpg.add_text("●", color=fonts.GREEN)
                    dpg.bind_item_font(dot, self.fonts.emoji)
                    dpg.add_text(n)
