"""The Dear PyGui view: builds the workspace of ux.md §2 and re-renders the areas the view model
marks dirty. Main thread only. Every callback goes to the ``App`` (the controller), so tests can
call the same methods the widgets call.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import dearpygui.dearpygui as dpg

from services.core.contracts.chat import AVATAR_PRESETS, AttachmentRef, ChatMessage
from ui import fonts
from ui.account import PRESET_COLORS
from ui.fonts import FontSet
from ui.ports import AppPort
from ui.state.model import ViewModel, format_bytes
from ui.view.timeline import Timeline, round_image

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
    ("Alt+↑ / Alt+↓", "anywhere", "previous / next channel"),
    ("Ctrl+Alt+↑ / ↓", "anywhere", "previous / next server"),
    ("Alt+Shift+↑ / ↓", "anywhere", "previous / next unread channel"),
    ("any printable key", "workspace", "type into the composer"),
    ("mouse wheel", "lightbox", "zoom 1x to 6x"),
    ("right-click", "server tile, message", "context menu"),
]


class View:
    def __init__(self, app: AppPort, scale: float = 1.0, font_size: int = 16) -> None:
        self.app = app
        self.scale = scale
        self.font_size = font_size
        self.fonts = FontSet()
        self.themes: dict[str, int | str] = {}
        self.timeline: Timeline | None = None
        self.width, self.height = 1480, 920
        self._chip_at = 0.0
        self._built = False
        self.lightbox: dict[str, Any] = {}
        self.switch_items: list[Any] = []
        self.switch_index = 0
        self.discovered: list[Any] = []
        self._hidden_frame = -10
        self._pending_show: str | None = None

    @property
    def model(self) -> ViewModel:
        return self.app.model

    def s(self, px: float) -> int:
        return round(px * self.scale)

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
            "rail": fonts.color_theme(dpg, bg=fonts.RAIL),
            "panel": fonts.color_theme(dpg, bg=fonts.PANEL),
            "panel2": fonts.color_theme(dpg, bg=fonts.PANEL_2),
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
        with dpg.item_handler_registry(tag="oc_composer_handlers"):
            dpg.add_item_edited_handler(callback=lambda: self.app.on_draft(dpg.get_value("oc_composer")))
            dpg.add_item_deactivated_handler(callback=lambda: self.app.on_composer_blur())
        dpg.bind_item_handler_registry("oc_composer", "oc_composer_handlers")
        for tag, theme in (
            ("oc_rail", "rail"),
            ("oc_channels", "panel"),
            ("oc_dock", "panel2"),
            ("oc_members", "panel"),
            ("oc_taskbar", "rail"),
        ):
            dpg.bind_item_theme(tag, self.themes[theme])
        self._build_dialogs()
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

    TOP_LEVEL = (
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
        "oc_keys",
        "oc_composer_handlers",
    )

    def destroy(self) -> None:
        """Delete every widget this view created (tests reuse one Dear PyGui context)."""
        for tag in self.TOP_LEVEL:
            if dpg.does_item_exist(tag):
                dpg.delete_item(tag)
        self._built = False

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
        # Consent (rule D18)
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
            dpg.tab_bar(),
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
        self.app.account.build(dpg, s, self.fonts.bold)
        # Lightbox
        with dpg.window(tag="oc_lightbox", label="Image", modal=True, show=False, no_title_bar=True):
            with dpg.group(horizontal=True):
                dpg.add_text("", tag="oc_lightbox_caption")
                dpg.add_group(tag="oc_lightbox_actions", horizontal=True)
            dpg.add_group(tag="oc_lightbox_body")

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

    def _edit_profile(self) -> None:
        self.hide_overlays()
        self.app.account.open("profile", editing=True)

    # -- layout ---------------------------------------------------------------------------------
    def layout(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        s = self.s
        dpg.configure_item("oc_root", pos=(0, 0), width=width, height=height)
        if self.app.screen == "firstrun":
            dpg.configure_item("oc_workspace", show=False)
            dpg.configure_item("oc_firstrun", show=True, width=width - s(16), height=height - s(16))
            return
        dpg.configure_item("oc_firstrun", show=False)
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
        dpg.configure_item(
            "oc_channels", pos=(rail_w, top), width=max(1, chan_w), height=body_h - dock_h, show=not narrow
        )
        dpg.configure_item(
            "oc_dock", pos=(0, height - dock_h), width=rail_w + chan_w, height=max(1, dock_h), show=not narrow
        )
        chat_x = rail_w + chan_w
        chat_w = width - chat_x - mem_w
        dpg.configure_item("oc_chat", pos=(chat_x, top), width=chat_w, height=body_h)
        dpg.configure_item(
            "oc_members", pos=(width - mem_w, top), width=max(1, mem_w), height=body_h, show=mem_w > 0
        )
        dpg.configure_item("oc_composer", width=chat_w - s(32 + 80 + 32 + 48))
        self._timeline_height()
        if self.timeline is not None:
            self.timeline.width = chat_w - s(30)
        self.model.touch()

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

    # -- render ---------------------------------------------------------------------------------
    def render(self) -> None:
        m = self.model
        m.tick()
        self._apply_pending_show()
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

    def _clear(self, tag: str) -> None:
        dpg.delete_item(tag, children_only=True)

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
                            f"BUILD {VERSION} · {platform.system().upper()} / {platform.machine().upper()}",
                            color=fonts.MUTED,
                        )
                        dpg.bind_item_font(b, self.fonts.small)
            else:
                dpg.add_text("OpenChat")

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
                        if ch.id == active or text:
                            dpg.bind_item_theme(row, self.themes["active_row"])
                        if text:
                            badge = dpg.add_button(label=text, tag=f"oc_chan_badge_{ch.id}", small=True)
                            dpg.bind_item_theme(badge, self.themes["badge_mention" if mention else "badge"])
                            dpg.bind_item_font(badge, self.fonts.small)

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
                dpg.draw_circle(
                    (size - s(6), size - s(6)), s(5), fill=(*fonts.GREEN, 255), color=(*fonts.PANEL_2, 255)
                )
            with dpg.group():
                n = dpg.add_text(self.model.display_name or self.app.member, tag="oc_dock_name")
                dpg.bind_item_font(n, self.fonts.bold)
                u = dpg.add_text(f"@{uid}" if uid else "", tag="oc_dock_uid", color=fonts.MUTED)
                dpg.bind_item_font(u, self.fonts.small)
            del name
            gear = dpg.add_button(label="⚙", tag="oc_dock_gear", callback=lambda: self.app.open_settings())
            dpg.bind_item_font(gear, self.fonts.emoji)

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

    # -- overlays -------------------------------------------------------------------------------
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
            )
        )

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

    def render_switch_list(self, items: list[Any], index: int) -> None:
        self.switch_items = items
        self.switch_index = index
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

    _drag_last: tuple[float, float] | None = None

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
            for t in ("oc_composer", "oc_filter", "oc_add_url", "oc_switch_query", "oc_conn_path")
        )
        self.app.on_key(name, ctrl=ctrl, alt=alt, shift=shift, text_active=text_active)

    def _on_right_click(self) -> None:
        for sid in self.model.order:
            if dpg.does_item_exist(f"oc_tile_{sid}") and dpg.is_item_hovered(f"oc_tile_{sid}"):
                self.open_server_menu(sid)
                return
        if self.timeline is not None:
            for mid, w in self.timeline.widgets.items():
                if dpg.is_item_hovered(w.tag):
                    self.open_message_menu(mid)
                    return

    def _show_menu(self) -> None:
        x, y = dpg.get_mouse_pos(local=False)
        x = min(max(8, int(x)), self.width - self.s(240))
        y = min(max(8, int(y)), self.height - self.s(220))
        dpg.configure_item("oc_ctx", show=True, pos=(x, y))

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
                label="Mute Server",
                tag="oc_ctx_mute",
                check=True,
                default_value=sm.muted,
                callback=lambda s_, a: self._menu(self.app.set_mute, sid, bool(a)),
            )
            dpg.add_separator()
            leave = dpg.add_menu_item(
                label="Leave Server", tag="oc_ctx_leave", callback=lambda: self._menu(self.app.ask_leave, sid)
            )
            dpg.bind_item_theme(leave, self.themes["danger_text"])
            dpg.add_separator()
            cap = dpg.add_text(sm.record.display_name, color=fonts.MUTED)
            dpg.bind_item_font(cap, self.fonts.small)
        self._show_menu()

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

    def _menu(self, fn: Any, *args: Any) -> None:
        dpg.configure_item("oc_ctx", show=False)
        fn(*args)

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
