"""The Dear PyGui view: builds the workspace of ux.md §2 and re-renders the areas the view model
marks dirty. Main thread only. Every callback goes through the pane's port (``ui/ports.py``) to
the app's entry points, so tests can call the same methods the widgets call.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import dearpygui.dearpygui as dpg

from services.core.contracts.chat import AVATAR_PRESETS
from ui import fonts, renderer
from ui.fonts import FontSet
from ui.ports import AppPort
from ui.view.base import (
    CHANNELS_W,
    CHANNELS_W_NARROW,
    DOCK_H,
    EMOJI_PICKER,
    MEMBERS_W,
    NARROW,
    RAIL_W,
    TASKBAR_H,
    TOOLBAR_H,
    WIDE,
)
from ui.view.channels import ChannelsPane
from ui.view.chat import ChatPane
from ui.view.controls import ControlsPane
from ui.view.dialogs import Dialogs
from ui.view.dock import DockPane
from ui.view.members import MembersPane
from ui.view.rail import RailPane
from ui.view.timeline import Timeline
from ui.view.voice import VoicePanes

CLEAR = (0, 0, 0, 0)  # a pane without a fill of its own


class View(RailPane, ChannelsPane, ChatPane, MembersPane, DockPane, Dialogs, ControlsPane, VoicePanes):
    """The workspace (ux.md §2): the panes put together, the layout, the render loop and input."""

    def __init__(self, app: AppPort, scale: float = 1.0, font_size: int = 16) -> None:
        self.app: AppPort = app
        self.scale = scale
        self.font_size = font_size
        self.fonts = FontSet()
        self.themes: dict[str, int | str] = {}
        self.timeline: Timeline | None = None
        self.width, self.height = 1480, 920
        self._chip_at = 0.0
        self._built = False
        self.lightbox: dict[str, Any] = {}
        self.discovered: list[Any] = []
        self._hidden_frame = -10
        self._pending_show: str | None = None
        # Flat panes: the panes take the window's background and are separated by 1 px dividers
        # instead of each painting its own colour. Under a software renderer (Mesa llvmpipe)
        # every filled pixel costs ~8 ns of CPU per frame: the panes' fills are ~4.5 ms of the
        # ~9 ms it spends per frame at 1480x920 (bench/RESULTS.md, issue 15). The member's choice
        # (OPENCHAT_UI_FLAT_PANES=1/0) holds from the start; otherwise ``use_renderer`` decides
        # once the window's renderer is known (ui/renderer.py).
        self.flat_panes = renderer.flat_panes_choice() is True

    # -- build ----------------------------------------------------------------------------------
    def build(self) -> None:
        self.fonts = fonts.load_fonts(dpg, self.font_size, self.scale)
        if self.fonts.regular:
            dpg.bind_font(self.fonts.regular)
        dpg.bind_theme(fonts.make_theme(dpg, self.scale))
        dpg.set_viewport_clear_color((*fonts.BG, 255))
        self.themes = {
            "link": fonts.color_theme(dpg, text=fonts.LINK, flat=True, scale=self.scale),
            "flat": fonts.color_theme(dpg, flat=True, scale=self.scale),
            "tile": fonts.color_theme(dpg, button=(54, 57, 63), text=fonts.TEXT),
            "tile_active": fonts.color_theme(dpg, button=fonts.BRAND, text=(255, 255, 255)),
            "tile_offline": fonts.color_theme(dpg, button=(40, 42, 48), text=(110, 114, 124)),
            "tile_unverified": fonts.color_theme(dpg, button=(70, 58, 40), text=fonts.TEXT),
            "chip_Live": fonts.color_theme(dpg, button=fonts.GREEN, text=(255, 255, 255)),
            "chip_Reconnecting": fonts.color_theme(dpg, button=fonts.AMBER, text=(20, 20, 20)),
            "chip_Offline": fonts.color_theme(dpg, button=fonts.RED, text=(255, 255, 255)),
            "danger": fonts.color_theme(dpg, button=fonts.RED, text=(255, 255, 255)),
            "danger_text": fonts.color_theme(dpg, text=fonts.RED),
            "pill": fonts.color_theme(dpg, button=(52, 60, 110), text=(201, 205, 251)),
            "pill_me": fonts.color_theme(dpg, button=(110, 84, 30), text=(255, 222, 160)),
            "brand": fonts.color_theme(dpg, button=fonts.BRAND, text=(255, 255, 255)),
            "rail": fonts.color_theme(dpg, bg=fonts.RAIL, square=True),
            "panel": fonts.color_theme(dpg, bg=fonts.PANEL, square=True),
            "panel2": fonts.color_theme(dpg, bg=fonts.PANEL_2, square=True),
            "pane_flat": fonts.color_theme(dpg, bg=CLEAR, square=True),
            "card": fonts.color_theme(dpg, bg=fonts.PANEL_2),
            "active_row": fonts.color_theme(dpg, text=(255, 255, 255)),
            "badge": fonts.color_theme(dpg, button=(90, 96, 110), text=(255, 255, 255)),
            "badge_mention": fonts.color_theme(dpg, button=fonts.RED, text=(255, 255, 255)),
        }
        s = self.s
        # Not a DPG "primary window": that one paints its background whatever the flags say (a full
        # window of fill per frame); this one is sized to the viewport by ``layout`` instead.
        with dpg.window(
            tag="oc_root",
            pos=(0, 0),
            width=self.width,
            height=self.height,
            no_title_bar=True,
            no_move=True,
            no_resize=True,
            no_collapse=True,
            no_saved_settings=True,
            no_bring_to_front_on_focus=True,
            no_scrollbar=True,
            no_scroll_with_mouse=True,
            no_background=True,
        ):
            # first-run (connection file) screen
            with dpg.child_window(tag="oc_firstrun", show=False, border=False):
                dpg.add_spacer(height=s(80))
                t = dpg.add_text("OpenChat setup", color=fonts.MUTED)
                h = dpg.add_text("Choose your connection file")
                dpg.bind_item_font(h, self.fonts.heading)
                dpg.bind_item_font(t, self.fonts.small)
                dpg.add_text(
                    "The member's connection file comes from `openchat member add NAME` on the home stack.",
                    color=fonts.MUTED,
                    wrap=s(640),
                )
                dpg.add_input_text(tag="oc_conn_path", hint="/path/to/member.json", width=s(560))
                dpg.add_listbox(
                    tag="oc_conn_list",
                    items=[],
                    num_items=4,
                    width=s(560),
                    callback=lambda s_, a: dpg.set_value("oc_conn_path", a),
                )
                dpg.add_button(
                    label="Connect",
                    tag="oc_conn_go",
                    callback=lambda: self.app.choose_connection(dpg.get_value("oc_conn_path")),
                )
                dpg.add_text("", tag="oc_conn_error", color=fonts.RED)
            # workspace
            with dpg.group(tag="oc_workspace"):
                with dpg.child_window(tag="oc_taskbar", border=False, no_scrollbar=True):
                    pass
                with dpg.child_window(tag="oc_rail", border=False, no_scrollbar=True):
                    pass
                with dpg.child_window(tag="oc_channels", border=False):
                    pass
                with dpg.child_window(tag="oc_dock", border=False, no_scrollbar=True):
                    pass
                with dpg.child_window(tag="oc_chat", border=False, no_scrollbar=True):
                    with dpg.child_window(
                        tag="oc_toolbar", border=False, no_scrollbar=True, height=s(TOOLBAR_H)
                    ):
                        pass
                    dpg.add_group(tag="oc_banners")
                    with dpg.child_window(tag="oc_timeline", border=False):
                        dpg.add_text("", tag="oc_timeline_state", color=fonts.MUTED)
                        dpg.add_spacer(tag="oc_rows_top", height=0)
                        dpg.add_group(tag="oc_rows")
                        dpg.add_spacer(height=s(6))
                    with dpg.group(horizontal=True):
                        dpg.add_text("", tag="oc_typing", color=fonts.MUTED)
                        dpg.add_button(
                            label="Viewing older messages · Jump to present",
                            tag="oc_jump",
                            small=True,
                            show=False,
                            callback=lambda: self.app.jump_to_present(),
                        )
                    dpg.add_text("", tag="oc_toast", color=fonts.MUTED)
                    with dpg.group(tag="oc_reply_banner", horizontal=True, show=False):
                        dpg.add_text("Replying to", color=fonts.MUTED)
                        dpg.add_text("", tag="oc_reply_name")
                        dpg.add_button(
                            label="@ ON", tag="oc_reply_ping", callback=lambda: self.app.toggle_reply_ping()
                        )
                        dpg.add_button(label="\u00d7", callback=lambda: self.app.cancel_reply())
                    dpg.add_group(tag="oc_mentions")
                    dpg.add_group(tag="oc_emoji_picker", horizontal=True, show=False)
                    dpg.add_group(tag="oc_attachments", horizontal=True)
                    dpg.add_text("", tag="oc_composer_error", color=fonts.RED, show=False)
                    with dpg.group(horizontal=True, tag="oc_composer_row"):
                        dpg.add_button(
                            label="+",
                            tag="oc_attach",
                            width=s(32),
                            callback=lambda: self.app.open_file_dialog(),
                        )
                        dpg.add_input_text(
                            tag="oc_composer",
                            multiline=True,
                            on_enter=True,
                            height=s(38),
                            hint="Message",
                            callback=lambda s_, a: self.app.on_composer_enter(),
                        )
                        dpg.add_button(
                            label="Send",
                            tag="oc_send",
                            width=s(80),
                            callback=lambda: self.app.on_composer_enter(force=True),
                        )
                        smile = dpg.add_button(
                            label="☺", tag="oc_emoji_btn", width=s(32), callback=lambda: self.toggle_emoji()
                        )
                        self._emoji_btn = smile
                with dpg.child_window(tag="oc_members", border=False):
                    pass
                self._build_voice()  # voice card, Call Stage, device menus (ui/view/voice.py)
        with dpg.item_handler_registry(tag="oc_composer_handlers"):
            dpg.add_item_edited_handler(callback=lambda: self.app.on_draft(dpg.get_value("oc_composer")))
            dpg.add_item_deactivated_handler(callback=lambda: self.app.on_composer_blur())
        dpg.bind_item_handler_registry("oc_composer", "oc_composer_handlers")
        dpg.bind_item_theme("oc_voice_card", self.themes["card"])
        with dpg.viewport_drawlist(tag="oc_dividers", front=False, show=False):
            for i in range(5):
                dpg.draw_line((0, 0), (0, 0), tag=f"oc_divider_{i}", color=(*fonts.DIVIDER, 255))
        self._bind_pane_themes()
        self._build_dialogs()
        self._build_controls()
        with dpg.handler_registry(tag="oc_keys"):
            dpg.add_key_press_handler(key=-1, callback=lambda s_, key: self._on_key(key))
            dpg.add_mouse_wheel_handler(callback=lambda s_, d: self._on_wheel(d))
            # any input keeps the full frame rate (App.frame_interval)
            dpg.add_mouse_move_handler(callback=lambda: self.app.poke())
            dpg.add_mouse_down_handler(button=-1, callback=lambda: self.app.poke())
            dpg.add_mouse_wheel_handler(callback=lambda: self.app.poke())
            dpg.add_mouse_click_handler(
                button=dpg.mvMouseButton_Right, callback=lambda: self._on_right_click()
            )
        dpg.bind_item_font("oc_emoji_btn", self.fonts.emoji)
        for e in EMOJI_PICKER:
            b = dpg.add_button(
                label=e,
                parent="oc_emoji_picker",
                callback=lambda s_, a, u: self.app.insert_emoji(u),
                user_data=e,
            )
            dpg.bind_item_font(b, self.fonts.emoji)
        self.timeline = Timeline(self, "oc_timeline", "oc_rows")
        self.timeline.on_older = self.app.load_older
        self._built = True

    PANE_THEMES = (
        ("oc_rail", "rail"),
        ("oc_channels", "panel"),
        ("oc_dock", "panel2"),
        ("oc_members", "panel"),
        ("oc_taskbar", "rail"),
    )

    def _bind_pane_themes(self) -> None:
        for tag, theme in self.PANE_THEMES:
            dpg.bind_item_theme(tag, self.themes["pane_flat" if self.flat_panes else theme])

    def set_flat_panes(self, flat: bool) -> None:
        """Draw the panes flat (window background, 1 px dividers) or filled; takes effect now."""
        if flat == self.flat_panes:
            return
        self.flat_panes = flat
        if self._built:
            self._bind_pane_themes()
            self.layout(self.width, self.height)  # places (or hides) the dividers

    def use_renderer(self, name: str | None) -> None:
        """The window's renderer is known (``ui.renderer.gl_renderer``): unless the member chose a
        look, a software renderer gets the flat panes (issue 15)."""
        self.set_flat_panes(renderer.flat_panes_for(name))

    TOP_LEVEL = (
        "oc_dividers",
        "oc_onboard",
        *(f"oc_onb_h_{p}" for p in AVATAR_PRESETS),
        "oc_root",
        "oc_add",
        "oc_leave",
        "oc_consent",
        "oc_switcher",
        "oc_settings",
        "oc_lightbox",
        "oc_ctx",
        "oc_voice_in_menu",
        "oc_voice_out_menu",
        "oc_status_menu",
        "oc_update",
        "oc_info",
        "oc_keys",
        "oc_composer_handlers",
        "oc_search",
        "oc_search_handlers",
    )

    def destroy(self) -> None:
        """Delete every widget this view created (tests reuse one Dear PyGui context)."""
        for tag in self.TOP_LEVEL:
            if dpg.does_item_exist(tag):
                dpg.delete_item(tag)
        self._built = False

    # -- layout ---------------------------------------------------------------------------------
    def layout(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        s = self.s
        dpg.configure_item("oc_root", pos=(0, 0), width=width, height=height)
        if self.app.screen == "firstrun":
            dpg.configure_item("oc_workspace", show=False)
            dpg.configure_item("oc_firstrun", show=True, width=width - s(16), height=height - s(16))
            dpg.configure_item("oc_dividers", show=False)  # the workspace's pane edges
            return
        dpg.configure_item("oc_firstrun", show=False)
        dpg.configure_item("oc_dividers", show=self.flat_panes)
        dpg.configure_item("oc_workspace", show=True)
        narrow = width < NARROW * self.scale
        wide = width >= WIDE * self.scale
        rail_w = s(RAIL_W)
        chan_w = 0 if narrow else s(CHANNELS_W if wide else CHANNELS_W_NARROW)
        mem_w = s(MEMBERS_W) if wide and self.model.members_open else 0
        top = s(TASKBAR_H)
        body_h = height - top
        dock_h = 0 if narrow else s(DOCK_H)
        dpg.configure_item("oc_taskbar", pos=(0, 0), width=width, height=top)
        dpg.configure_item("oc_rail", pos=(0, top), width=rail_w, height=body_h - dock_h)
        card_h = self._layout_voice(rail_w, chan_w, top, body_h - dock_h, narrow)
        dpg.configure_item(
            "oc_channels",
            pos=(rail_w, top),
            width=max(1, chan_w),
            height=body_h - dock_h - card_h,
            show=not narrow,
        )
        dpg.configure_item(
            "oc_dock", pos=(0, height - dock_h), width=rail_w + chan_w, height=max(1, dock_h), show=not narrow
        )
        chat_x = rail_w + chan_w
        chat_w = width - chat_x - mem_w
        dpg.configure_item("oc_chat", pos=(chat_x, top), width=chat_w, height=body_h)
        self._layout_stage(chat_x, top, chat_w, body_h)
        dpg.configure_item(
            "oc_members", pos=(width - mem_w, top), width=max(1, mem_w), height=body_h, show=mem_w > 0
        )
        dpg.configure_item("oc_composer", width=chat_w - s(32 + 80 + 32 + 48))
        if self.flat_panes:  # the panes' edges: under the taskbar, right of the rail, of the channels
            # (and above the dock), left of the members
            edges = (
                ((0, top), (width, top)),
                ((rail_w, top), (rail_w, height - dock_h)),
                ((chat_x, top), (chat_x, height)),
                ((0, height - dock_h), (chat_x, height - dock_h)),
                ((width - mem_w, top), (width - mem_w, height)),
            )
            for i, (p1, p2) in enumerate(edges):
                dpg.configure_item(f"oc_divider_{i}", p1=p1, p2=p2, show=not narrow or i in (0, 4))
            dpg.configure_item("oc_divider_4", show=mem_w > 0)
        self._timeline_height()
        if self.timeline is not None:
            self.timeline.width = chat_w - s(30)
        self.model.touch()

    # -- render ---------------------------------------------------------------------------------
    def render(self) -> None:
        m = self.model
        m.tick()
        self._apply_pending_show()
        self.render_controls()  # settings, update status, backup (issue 18)
        dirty = m.take_dirty()
        if dirty:
            self.app.poke()
        if self.app.screen == "firstrun":
            return
        if dirty & {"rail"}:
            self._render_rail()
        if dirty & {"channels"}:
            self._render_channels()
        if dirty & {"header", "banner", "rail"}:
            self._render_taskbar()
            self._render_toolbar()
        now = time.monotonic()
        if now - self._chip_at > 0.5:
            self._chip_at = now
            self._render_chip()
        if dirty & {"banner", "header"}:
            self._render_banners()
            self._timeline_height()
        if dirty & {"members"}:
            self._render_members()
        if dirty & {"dock"}:
            self._render_dock()
        self._render_voice(dirty)
        self._render_composer_state()
        typing = m.typing_text()
        if dpg.get_value("oc_typing") != typing:
            dpg.set_value("oc_typing", typing)
        toast = m.toasts[-1] if m.toasts else None
        dpg.set_value("oc_toast", toast.text if toast else "")
        dpg.configure_item("oc_toast", color=fonts.RED if toast and toast.error else fonts.MUTED)
        state = m.timeline_state()
        if dpg.get_value("oc_timeline_state") != state:
            dpg.set_value("oc_timeline_state", state)
            dpg.configure_item("oc_timeline_state", show=bool(state))
        if self.timeline is not None:
            self.timeline.update("timeline" in dirty)
            jump = self.timeline.away_from_present()
            if jump != dpg.is_item_shown("oc_jump"):
                dpg.configure_item("oc_jump", show=jump)

    def _render_taskbar(self) -> None:
        self._clear("oc_taskbar")
        sm = self.model.server
        s = self.s
        with dpg.group(parent="oc_taskbar", horizontal=True, pos=(max(0, self.width // 2 - s(200)), s(6))):
            if sm is not None:
                pill = dpg.add_button(label=sm.record.icon_text[:2] or "??", width=s(28), height=s(24))
                dpg.bind_item_theme(pill, self.themes["tile_active"])
                with dpg.group(horizontal=True):
                    n = dpg.add_text(sm.record.display_name)
                    dpg.bind_item_font(n, self.fonts.bold)
                    if self.width >= NARROW * self.scale:
                        b = dpg.add_text(
                            f"BUILD {self.app.updater.current} · {platform.system().upper()} / {platform.machine().upper()}",
                            color=fonts.MUTED,
                        )
                        dpg.bind_item_font(b, self.fonts.small)
            else:
                dpg.add_text("OpenChat")
        self.render_update_controls()

    # -- overlays -------------------------------------------------------------------------------

    # -- input ----------------------------------------------------------------------------------
    def _on_key(self, key: int) -> None:
        self.app.poke()
        ctrl = (
            dpg.is_key_down(dpg.mvKey_ModCtrl)
            or dpg.is_key_down(dpg.mvKey_LControl)
            or dpg.is_key_down(dpg.mvKey_RControl)
        )
        alt = (
            dpg.is_key_down(dpg.mvKey_ModAlt)
            or dpg.is_key_down(dpg.mvKey_LAlt)
            or dpg.is_key_down(dpg.mvKey_RAlt)
        )
        shift = (
            dpg.is_key_down(dpg.mvKey_ModShift)
            or dpg.is_key_down(dpg.mvKey_LShift)
            or dpg.is_key_down(dpg.mvKey_RShift)
        )
        name = KEY_NAMES.get(key)
        if name is None:
            return
        text_active = any(
            dpg.does_item_exist(t) and dpg.is_item_active(t)
            for t in (
                "oc_composer",
                "oc_filter",
                "oc_add_url",
                "oc_switch_query",
                "oc_conn_path",
                "oc_search_query",
            )
        )
        self.app.on_key(name, ctrl=ctrl, alt=alt, shift=shift, text_active=text_active)

    def _on_right_click(self) -> None:
        for sid in self.model.order:
            if dpg.does_item_exist(f"oc_tile_{sid}") and dpg.is_item_hovered(f"oc_tile_{sid}"):
                self.open_server_menu(sid)
                return
        sm = self.model.server
        for g in sm.groups if sm is not None else []:
            for c in g.channels:
                if (
                    sm is not None
                    and dpg.does_item_exist(f"oc_chan_{c.id}")
                    and dpg.is_item_hovered(f"oc_chan_{c.id}")
                ):
                    self.open_channel_menu(sm.server_id, c.id)  # mute, level (issue 18)
                    return
        if self.timeline is not None:
            for mid, w in self.timeline.widgets.items():
                if dpg.is_item_hovered(w.tag):
                    self.open_message_menu(mid)
                    return

    def _on_wheel(self, delta: float) -> None:
        if dpg.is_item_shown("oc_lightbox"):
            self.lightbox_zoom(delta)


def _key_names() -> dict[int, str]:
    names: dict[int, str] = {}
    for attr in dir(dpg):
        if attr.startswith("mvKey_") and len(attr) == 7:
            names[getattr(dpg, attr)] = attr[6:].lower()
    for attr, name in (
        ("mvKey_Up", "up"),
        ("mvKey_Down", "down"),
        ("mvKey_Escape", "escape"),
        ("mvKey_Return", "enter"),
        ("mvKey_Spacebar", "space"),
        ("mvKey_Tab", "tab"),
    ):
        names[getattr(dpg, attr)] = name
    return names


KEY_NAMES = _key_names()
