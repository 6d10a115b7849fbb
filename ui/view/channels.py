"""The channel pane (ux.md 2.2): groups, channels, badges, the filter. Owns ``oc_channels*`` tags."""

from __future__ import annotations

import dearpygui.dearpygui as dpg

from ui import fonts
from ui.ports import ChannelsPort
from ui.view.base import CHEVRON_DOWN, CHEVRON_RIGHT, PaneBase


class ChannelsPane(PaneBase):
    app: ChannelsPort

    def _render_channels(self) -> None:
        self._clear("oc_channels")
        m = self.model
        sm = m.server
        s = self.s
        if sm is None:
            dpg.add_text("Join or create your first server", parent="oc_channels", wrap=s(260))
            return
        sid = sm.server_id
        with dpg.group(parent="oc_channels"):
            dpg.add_spacer(height=s(4))
            name = dpg.add_text(sm.record.display_name, tag="oc_server_name")
            dpg.bind_item_font(name, self.fonts.bold)
            bl = dpg.add_text(m.build_label(), tag="oc_build_label", color=fonts.MUTED)
            dpg.bind_item_font(bl, self.fonts.italic)
            dpg.add_input_text(
                tag="oc_filter",
                hint="Filter channels",
                width=-1,
                default_value=m.filters.get(sid, ""),
                callback=lambda s_, a: self.app.set_filter(a),
            )
            dpg.add_spacer(height=s(4))
            active = m.channel_id
            for group, chans in m.visible_channels():
                collapsed = (sid, group.id) in m.collapsed
                with dpg.group(horizontal=True):
                    chev = dpg.add_text(CHEVRON_RIGHT if collapsed else CHEVRON_DOWN, color=fonts.MUTED)
                    dpg.bind_item_font(chev, self.fonts.emoji)
                    hdr = dpg.add_selectable(
                        label=group.label.upper(),
                        tag=f"oc_group_{group.id}",
                        callback=lambda s_, a, u: self.app.toggle_group(u),
                        user_data=group.id,
                    )
                    dpg.bind_item_font(hdr, self.fonts.small)
                for ch in chans:
                    text, mention = m.channel_badge(sid, ch.id)
                    with dpg.group(horizontal=True):
                        icon = "#" if ch.type == "text" else "🔊"
                        ic = dpg.add_text(icon, color=fonts.MUTED)
                        if ch.type == "voice":
                            dpg.bind_item_font(ic, self.fonts.emoji)
                        row = dpg.add_selectable(
                            label=ch.name,
                            tag=f"oc_chan_{ch.id}",
                            default_value=ch.id == active,
                            width=s(190),
                            callback=lambda s_, a, u: self.app.select_channel(u),
                            user_data=ch.id,
                        )
                        if ch.id == active or text or self.app.voice.state.connected_to(sid, ch.id):
                            dpg.bind_item_theme(row, self.themes["active_row"])  # voice: "connected" style
                        if self.channel_muted(sid, ch.id, m.now()):
                            dpg.bind_item_theme(row, self.themes["muted_row"])
                        if text:
                            badge = dpg.add_button(label=text, tag=f"oc_chan_badge_{ch.id}", small=True)
                            dpg.bind_item_theme(badge, self.themes["badge_mention" if mention else "badge"])
                            dpg.bind_item_font(badge, self.fonts.small)
                    if ch.type == "voice":
                        dpg.add_group(tag=f"oc_vrows_{ch.id}")  # participants (ui/view/voice.py)
