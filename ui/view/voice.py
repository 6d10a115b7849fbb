"""Voice in the workspace (ux.md 2.2 voice rows, 2.3 dock, 2.6 Call Stage, 8.9 menus, 8.10
settings). Owns ``oc_voice*``, ``oc_vrows_*``, ``oc_stage*`` and ``oc_set_v*`` tags.

Reads ``app.voice`` (``ui.voice.VoiceController``: its ``state`` is ``ui.state.voice.VoiceState``)
and re-renders its areas only when the state's version moved. Speaking rings change several times
a second during a call: such a change (the state's ``rings`` counter alone) only shows or hides
the rings of the call's participants, nothing is re-rendered then.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import dearpygui.dearpygui as dpg

from ui import fonts
from ui.ports import VoicePort
from ui.state.voice import NO_VIDEO_YET, OUTPUT_UNSUPPORTED, Participant
from ui.view.base import CHEVRON_DOWN, PaneBase
from ui.view.timeline import round_image

CARD_H = 96
MIC, HEADPHONES, HANGUP, MUTED_ICON = "🎤", "🎧", "📞", "🔇"
STAGE_TILE = 168


class VoicePanes(PaneBase):
    app: VoicePort
    _voice_seen: int = -1
    _voice_rows_seen: int = -1
    _rings_seen: int = -1
    _card_shown: bool = False
    _stage_shown: bool = False
    _voice_devices_seen: int = -1
    _row_keys: dict[str, Any]
    _stage_key: Any = None

    def layout(self, width: int, height: int) -> None:
        raise NotImplementedError  # ui.view.shell.View

    def avatar_colors(self, uid: str) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        raise NotImplementedError  # ui.view.dock.DockPane

    @property
    def voice(self) -> Any:
        return self.app.voice

    # -- build (called once from View.build) ------------------------------------------------------------
    def _build_voice(self) -> None:
        s = self.s
        self._row_keys = {}
        self._stage_key = None
        with dpg.child_window(tag="oc_voice_card", border=False, no_scrollbar=True, show=False):
            with dpg.group(horizontal=True):
                dpg.add_spacer(width=s(6))
                with dpg.group():
                    t = dpg.add_text("", tag="oc_voice_title", color=fonts.GREEN)
                    dpg.bind_item_font(t, self.fonts.bold)
                    sub = dpg.add_text("", tag="oc_voice_sub", color=fonts.MUTED)
                    dpg.bind_item_font(sub, self.fonts.small)
                    err = dpg.add_text("", tag="oc_voice_error", color=fonts.RED, wrap=s(230))
                    dpg.bind_item_font(err, self.fonts.small)
            hang = dpg.add_button(
                label=HANGUP,
                tag="oc_voice_hangup",
                width=s(40),
                height=s(32),
                pos=(s(250), s(14)),
                callback=lambda: self.app.voice.hang_up(),
            )
            dpg.bind_item_font(hang, self.fonts.emoji)
            dpg.bind_item_theme(hang, self.themes["danger"])
        with dpg.child_window(tag="oc_stage", border=False, show=False):
            with dpg.group(horizontal=True):
                icon = dpg.add_text("🔊", color=fonts.MUTED)
                dpg.bind_item_font(icon, self.fonts.emoji)
                h = dpg.add_text("", tag="oc_stage_channel")
                dpg.bind_item_font(h, self.fonts.heading)
                dpg.add_text("", tag="oc_stage_server", color=fonts.MUTED)
                dpg.add_button(label="Idle", tag="oc_stage_chip", small=True)
                dpg.add_text("", tag="oc_stage_count", color=fonts.MUTED)
            dpg.add_separator()
            dpg.add_group(tag="oc_stage_tiles", horizontal=True)
            dpg.add_spacer(height=s(12))
            e = dpg.add_text(NO_VIDEO_YET, tag="oc_stage_empty", color=fonts.MUTED)
            dpg.bind_item_font(e, self.fonts.bold)
            dpg.add_text("", tag="oc_stage_hint", color=fonts.MUTED, wrap=s(600))
            dpg.add_spacer(height=s(12))
            dpg.add_text("", tag="oc_stage_toast", color=fonts.MUTED, wrap=s(600))  # the chat's toast line
        for kind in ("in", "out"):
            with dpg.window(
                tag=f"oc_voice_{kind}_menu",
                show=False,
                no_title_bar=True,
                no_resize=True,
                no_move=True,
                autosize=True,
                no_saved_settings=True,
            ):
                title = dpg.add_text("Input Options" if kind == "in" else "Output Options")
                dpg.bind_item_font(title, self.fonts.bold)
                dpg.add_text("", tag=f"oc_voice_{kind}_note", color=fonts.MUTED, wrap=s(300))
                dpg.add_listbox(
                    [],
                    tag=f"oc_voice_{kind}_devices",
                    width=s(300),
                    num_items=4,
                    callback=lambda s_, a, u: self._pick_device(u, a),
                    user_data=kind,
                )
                dpg.add_button(
                    label="Show more...", small=True, callback=lambda: self._refresh_voice_devices()
                )
                if kind == "in":
                    dpg.add_slider_int(
                        label="Input volume",
                        tag="oc_voice_in_volume",
                        min_value=0,
                        max_value=200,
                        width=s(200),
                        callback=lambda s_, a: self.app.voice.update_prefs(input_volume=int(a)),
                    )
                else:
                    dpg.add_slider_int(
                        label="Output volume",
                        tag="oc_voice_out_volume",
                        min_value=0,
                        max_value=100,
                        width=s(200),
                        callback=lambda s_, a: self.app.voice.update_prefs(output_volume=int(a)),
                    )
                dpg.add_button(label="Voice Settings", callback=lambda: self.open_voice_settings())

    def _build_voice_settings(self) -> None:
        """The "Voice & Video" tab's contents (inside the settings tab bar)."""
        s = self.s
        dpg.add_text("Input device")
        dpg.add_combo([], tag="oc_set_vin", width=s(420), callback=lambda s_, a: self._pick_device("in", a))
        dpg.add_text("Output device")
        dpg.add_combo([], tag="oc_set_vout", width=s(420), callback=lambda s_, a: self._pick_device("out", a))
        dpg.add_text("", tag="oc_set_vout_note", color=fonts.MUTED)
        dpg.add_slider_int(
            label="Input volume",
            tag="oc_set_vin_volume",
            min_value=0,
            max_value=200,
            width=s(300),
            callback=lambda s_, a: self.app.voice.update_prefs(input_volume=int(a)),
        )
        dpg.add_slider_int(
            label="Output volume",
            tag="oc_set_vout_volume",
            min_value=0,
            max_value=100,
            width=s(300),
            callback=lambda s_, a: self.app.voice.update_prefs(output_volume=int(a)),
        )
        dpg.add_separator()
        with dpg.group(horizontal=True):
            dpg.add_button(
                label="Start Mic Test", tag="oc_set_vtest", callback=lambda: self._toggle_mic_test()
            )
            dpg.add_progress_bar(tag="oc_set_vlevel", default_value=0.0, width=s(260))
        dpg.add_text(
            "Your voice is played back through the selected output while the test runs.",
            color=fonts.MUTED,
            wrap=s(600),
        )
        dpg.add_separator()
        for tag, label, key in (
            ("oc_set_vaec", "Echo cancellation", "echo_cancellation"),
            ("oc_set_vns", "Noise suppression", "noise_suppression"),
            ("oc_set_vagc", "Automatic gain control", "auto_gain"),
        ):
            dpg.add_checkbox(
                label=label,
                tag=tag,
                default_value=True,
                callback=lambda s_, a, u: self.app.voice.update_prefs(**{u: bool(a)}),
                user_data=key,
            )
        dpg.add_button(label="Refresh Devices", callback=lambda: self._refresh_voice_devices())

    # -- layout (called from View.layout) ---------------------------------------------------------------
    def _layout_voice(self, chan_x: int, chan_w: int, top: int, chan_h: int, narrow: bool) -> int:
        """Place the voice card above the dock; returns the height it takes from the channels."""
        shown = self.voice.state.card_title() is not None and not narrow
        self._card_shown = shown
        card_h = self.s(CARD_H) if shown else 0
        dpg.configure_item(
            "oc_voice_card",
            show=shown,
            pos=(chan_x, top + chan_h - card_h),
            width=max(1, chan_w),
            height=max(1, card_h),
        )
        dpg.configure_item("oc_voice_hangup", pos=(max(self.s(200), chan_w - self.s(56)), self.s(20)))
        return card_h

    def _layout_stage(self, x: int, y: int, w: int, h: int) -> None:
        dpg.configure_item("oc_stage", pos=(x, y), width=max(1, w), height=max(1, h))

    # -- render (every frame, from View.render) --------------------------------------------------------
    def _render_voice(self, dirty: set[str]) -> None:
        v = self.voice
        st = v.state
        want_card = st.card_title() is not None
        if want_card != self._card_shown:
            self.layout(self.width, self.height)  # the card takes room from the channel list
        stage = self._stage_target()
        if (stage is not None) != self._stage_shown:
            self._stage_shown = stage is not None
            dpg.configure_item("oc_stage", show=self._stage_shown)
            dpg.configure_item("oc_chat", show=not self._stage_shown)
            self._voice_seen = -1
        force_rows = "channels" in dirty  # the channel list was rebuilt: its row groups are new
        if force_rows:
            self._voice_rows_seen = -1
        if st.version != self._voice_seen or "dock" in dirty or "header" in dirty:
            self._voice_seen = st.version
            self._render_voice_card()
            if stage is not None:
                self._render_stage(*stage)
        if st.version != self._voice_rows_seen:
            self._voice_rows_seen = st.version
            self._rings_seen = st.rings
            self._render_voice_rows(force_rows)
            self._render_dock_ring()
        elif st.rings != self._rings_seen:
            self._rings_seen = st.rings
            self._render_rings()
        if self._stage_shown:  # the chat pane (and its toast line) is hidden behind the stage
            toast = self.model.toasts[-1] if self.model.toasts else None
            text = toast.text if toast else ""
            if dpg.get_value("oc_stage_toast") != text:
                dpg.set_value("oc_stage_toast", text)
                dpg.configure_item(
                    "oc_stage_toast", color=fonts.RED if toast and toast.error else fonts.MUTED
                )
        if v.engine.testing:
            if not dpg.is_item_shown("oc_settings"):
                v.stop_mic_test()  # the mic test stops when settings close (8.10)
                dpg.configure_item("oc_set_vtest", label="Start Mic Test")
                dpg.set_value("oc_set_vlevel", 0.0)
            else:
                dpg.set_value("oc_set_vlevel", float(v.engine.level))

    def _stage_target(self) -> tuple[str, str] | None:
        st = self.voice.state
        stage: tuple[str, str] | None = st.stage
        if stage is None or stage[0] != self.model.active_server:
            return None
        return stage

    def _render_voice_card(self) -> None:
        st = self.voice.state
        title = st.card_title()
        if title is None:
            return
        ch, server = self.voice._names(st.call_server or "", st.status.channel_id)
        dpg.set_value("oc_voice_title", title)
        color = {"active": fonts.GREEN, "error": fonts.RED}.get(st.state, fonts.AMBER)
        dpg.configure_item("oc_voice_title", color=color)
        dpg.set_value("oc_voice_sub", st.sub_line(ch, server))
        err = st.card_error()
        dpg.set_value("oc_voice_error", err)
        dpg.configure_item("oc_voice_error", show=bool(err))

    def _render_voice_rows(self, force: bool) -> None:
        """The participants under the voice channel the member is in (4.5). Rebuilt only when
        who is there (or their flags) changed; a speaking change only shows or hides rings."""
        st = self.voice.state
        sm = self.model.server
        if sm is None:
            return
        own_uid = sm.record.user_uid
        own_name = self.model.display_name or self.app.member
        s = self.s
        for g in sm.groups:
            for c in g.channels:
                tag = f"oc_vrows_{c.id}"
                if c.type != "voice" or not dpg.does_item_exist(tag):
                    continue
                people = st.participants(sm.server_id, c.id, own_uid, own_name)
                key = (sm.server_id, tuple(replace(p, speaking=False) for p in people))
                if force or self._row_keys.get(c.id) != key:
                    self._row_keys[c.id] = key
                    dpg.delete_item(tag, children_only=True)
                    for p in people:
                        with dpg.group(horizontal=True, parent=tag):
                            dpg.add_spacer(width=s(22))
                            self._avatar(p, s(22), f"oc_vp_{c.id}_{p.participant_id}")
                            name = dpg.add_text(p.name, color=fonts.TEXT)
                            dpg.bind_item_font(name, self.fonts.small)
                            self._flags(p)
                            b = dpg.add_text(p.badge)
                            dpg.bind_item_font(b, self.fonts.emoji)
                for p in people:
                    ring = f"oc_vp_{c.id}_{p.participant_id}_ring"
                    if dpg.does_item_exist(ring):
                        dpg.configure_item(ring, show=p.speaking)

    def _avatar(self, p: Participant, size: int, tag: str) -> None:
        sm = self.model.server
        with dpg.drawlist(width=size, height=size, tag=tag):
            tex = self.app.avatar_texture(sm.server_id, p.user_uid) if sm is not None and p.user_uid else None
            if tex is not None:
                round_image(tex[0], size, fonts.PANEL)
            else:
                top, rim = self.avatar_colors(p.user_uid or p.participant_id)
                dpg.draw_circle((size / 2, size / 2), size / 2 - 2, fill=(*top, 255), color=(*rim, 255))
            dpg.draw_circle(  # the speaking ring (8.5), shown while they speak
                (size / 2, size / 2),
                size / 2 - 1,
                color=(*fonts.GREEN, 255),
                thickness=max(2, size // 10),
                tag=f"{tag}_ring",
                show=p.speaking,
            )

    def _flags(self, p: Participant) -> None:
        if p.deafened:
            d = dpg.add_text(HEADPHONES, color=fonts.RED)
            dpg.bind_item_font(d, self.fonts.emoji)
        if p.mic_muted:
            m = dpg.add_text(MUTED_ICON, color=fonts.RED)
            dpg.bind_item_font(m, self.fonts.emoji)

    def _render_rings(self) -> None:
        """Only who speaks changed: the rings of the call's participants under its channel row,
        on its stage tiles and on the member's own avatar."""
        st = self.voice.state
        sid, ch = st.call_server, st.status.channel_id
        self._render_dock_ring()
        if sid is None or ch is None:
            return
        sm = self.model.servers.get(sid)
        own_uid = sm.record.user_uid if sm is not None else ""
        people = st.participants(sid, ch, own_uid, self.model.display_name or self.app.member)
        rows = self.model.server is not None and self.model.server.server_id == sid
        stage = self._stage_shown and self._stage_target() == (sid, ch)
        for p in people:
            if rows:
                ring = f"oc_vp_{ch}_{p.participant_id}_ring"
                if dpg.does_item_exist(ring):
                    dpg.configure_item(ring, show=p.speaking)
            if stage:
                ring = f"oc_stage_tile_{p.participant_id}_ring"
                if dpg.does_item_exist(ring):
                    dpg.configure_item(ring, show=p.speaking)

    def _render_dock_ring(self) -> None:
        if dpg.does_item_exist("oc_dock_ring"):
            dpg.configure_item("oc_dock_ring", show=self.voice.state.self_speaking())

    def _render_stage(self, sid: str, ch: str) -> None:
        st = self.voice.state
        name, server = self.voice._names(sid, ch)
        chip = st.stage_chip(sid, ch)
        dpg.set_value("oc_stage_channel", name)
        dpg.set_value("oc_stage_server", server)
        dpg.configure_item("oc_stage_chip", label=chip)
        theme = {
            "Connected": "chip_Live",
            "Connecting": "chip_Reconnecting",
            "Reconnecting": "chip_Reconnecting",
        }
        dpg.bind_item_theme("oc_stage_chip", self.themes.get(theme.get(chip, ""), self.themes["badge"]))
        sm = self.model.servers.get(sid)
        own_uid = sm.record.user_uid if sm is not None else ""
        own_name = self.model.display_name or self.app.member
        people = st.participants(sid, ch, own_uid, own_name)
        dpg.set_value("oc_stage_count", f"{len(people)} participant{'s' if len(people) != 1 else ''}")
        hint = st.stage_hint(sid, ch, name, self._other_call_name())
        dpg.set_value("oc_stage_hint", hint)
        dpg.configure_item("oc_stage_hint", show=bool(hint))
        width = dpg.get_item_width("oc_stage")
        key = (sid, ch, width, tuple(replace(p, speaking=False) for p in people))
        if key == self._stage_key:
            for p in people:  # only the rings
                ring = f"oc_stage_tile_{p.participant_id}_ring"
                if dpg.does_item_exist(ring):
                    dpg.configure_item(ring, show=p.speaking)
            return
        self._stage_key = key
        dpg.delete_item("oc_stage_tiles", children_only=True)
        s = self.s
        side = s(STAGE_TILE)
        per_row = max(1, (dpg.get_item_width("oc_stage") or side * 3) // (side + s(12)))
        row: int | str | None = None
        for i, p in enumerate(people):
            if i % per_row == 0:
                row = dpg.add_group(horizontal=True, parent="oc_stage_tiles")
            with dpg.child_window(width=side, height=side, parent=row or "oc_stage_tiles", border=True):
                dpg.add_spacer(height=s(10))
                with dpg.group(horizontal=True):
                    dpg.add_spacer(width=(side - s(84)) // 2)
                    self._avatar(p, s(72), f"oc_stage_tile_{p.participant_id}")
                with dpg.group(horizontal=True):
                    n = dpg.add_text(p.name[:18])
                    dpg.bind_item_font(n, self.fonts.bold)
                    self._flags(p)
                nv = dpg.add_text("No video", color=fonts.MUTED)
                dpg.bind_item_font(nv, self.fonts.small)

    def _other_call_name(self) -> str | None:
        st = self.voice.state
        if st.call_server is None or st.status.channel_id is None:
            return None
        return str(self.voice._names(st.call_server, st.status.channel_id)[0])

    # -- the dock's mic and headphones (called from DockPane._render_dock) --------------------------------
    def _dock_voice_buttons(self) -> None:
        v = self.voice
        sid = v._prefs_target()
        p = v.state.prefs_of(sid) if sid else None
        mic = dpg.add_button(label=MIC, tag="oc_voice_mic", callback=lambda: self._voice_toggle("mic"))
        dpg.bind_item_font(mic, self.fonts.emoji)
        if p is not None and p.mic_muted:
            dpg.bind_item_theme(mic, self.themes["danger"])
        c1 = dpg.add_button(
            label=CHEVRON_DOWN,
            tag="oc_voice_mic_caret",
            small=True,
            callback=lambda: self.open_voice_menu("in"),
        )
        dpg.bind_item_font(c1, self.fonts.emoji)
        deaf = dpg.add_button(
            label=HEADPHONES, tag="oc_voice_deafen", callback=lambda: self._voice_toggle("deafen")
        )
        dpg.bind_item_font(deaf, self.fonts.emoji)
        if p is not None and p.deafened:
            dpg.bind_item_theme(deaf, self.themes["danger"])
        c2 = dpg.add_button(
            label=CHEVRON_DOWN,
            tag="oc_voice_out_caret",
            small=True,
            callback=lambda: self.open_voice_menu("out"),
        )
        dpg.bind_item_font(c2, self.fonts.emoji)

    def _voice_toggle(self, which: str) -> None:
        if which == "mic":
            self.voice.toggle_mic()
        else:
            self.voice.toggle_deafen()
        self.model.touch("dock")

    # -- device menus and settings --------------------------------------------------------------------
    def _device_labels(self, kind: str) -> tuple[list[str], str]:
        v = self.voice
        devs = v.engine.devices
        items = devs.inputs if kind == "in" else devs.outputs
        wanted = v.prefs.input_device if kind == "in" else v.prefs.output_device
        labels = [d.label for d in items]
        current = next((d.label for d in items if d.id == wanted), labels[0] if labels else "")
        return labels, current

    def _fill_device_widgets(self) -> None:
        v = self.voice
        for kind in ("in", "out"):
            labels, current = self._device_labels(kind)
            dpg.configure_item(f"oc_voice_{kind}_devices", items=labels)
            dpg.set_value(f"oc_voice_{kind}_devices", current)
            dpg.configure_item(f"oc_set_v{kind}", items=labels)
            dpg.set_value(f"oc_set_v{kind}", current)
        switchable = v.engine.devices.available
        note = "" if switchable else OUTPUT_UNSUPPORTED
        dpg.set_value("oc_voice_out_note", note)
        dpg.set_value("oc_set_vout_note", note)
        dpg.configure_item("oc_voice_out_devices", enabled=switchable)
        dpg.configure_item("oc_set_vout", enabled=switchable)
        dpg.set_value("oc_voice_in_volume", v.prefs.input_volume)
        dpg.set_value("oc_voice_out_volume", v.prefs.output_volume)
        dpg.set_value("oc_set_vin_volume", v.prefs.input_volume)
        dpg.set_value("oc_set_vout_volume", v.prefs.output_volume)
        dpg.set_value("oc_set_vaec", v.prefs.echo_cancellation)
        dpg.set_value("oc_set_vns", v.prefs.noise_suppression)
        dpg.set_value("oc_set_vagc", v.prefs.auto_gain)

    def _refresh_voice_devices(self) -> None:
        self.voice.refresh_devices()
        self._fill_device_widgets()

    def _pick_device(self, kind: str, label: str) -> None:
        devs = self.voice.engine.devices
        items = devs.inputs if kind == "in" else devs.outputs
        dev = next((d for d in items if d.label == label), None)
        if dev is None:
            return
        if kind == "in":
            self.voice.update_prefs(input_device=dev.id)
        else:
            self.voice.update_prefs(output_device=dev.id)
        self._fill_device_widgets()

    def open_voice_menu(self, kind: str) -> None:
        self.hide_overlays()
        self._refresh_voice_devices()
        tag = f"oc_voice_{kind}_menu"
        x = self.s(40)
        y = max(8, self.height - self.s(64) - self.s(260))
        dpg.configure_item(tag, show=True, pos=(x, y))
        dpg.focus_item(tag)

    def open_voice_settings(self) -> None:
        """ "Voice Settings" in a device menu: User Settings on the Voice & Video tab (9.1)."""
        self.app.open_settings()
        self._refresh_voice_devices()
        if dpg.does_item_exist("oc_set_tabs") and dpg.does_item_exist("oc_set_voice_tab"):
            dpg.set_value("oc_set_tabs", "oc_set_voice_tab")

    def _toggle_mic_test(self) -> None:
        v = self.voice
        if v.engine.testing:
            v.stop_mic_test()
            dpg.configure_item("oc_set_vtest", label="Start Mic Test")
            dpg.set_value("oc_set_vlevel", 0.0)
        else:
            v.start_mic_test()
            dpg.configure_item("oc_set_vtest", label="Stop Mic Test")
