"""The Welcome / Edit profile dialog (features 1.3-1.6, ux.md 3.12): renders
``ui.state.account.AccountState`` and emits the member's choices to an ``OnboardingPort``
(``ui/ports.py``: the account flow, ``ui.account.Account``). Owns the ``oc_onboard`` and ``oc_onb*`` tags."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import dearpygui.dearpygui as dpg

from services.core.contracts.chat import AVATAR_PRESETS, DISPLAY_NAME_MAX, DISPLAY_NAME_MIN
from ui import fonts
from ui.ports import OnboardingPort
from ui.state.account import PRESET_COLORS, AccountState

DIALOG = "oc_onboard"


class Overlays(Protocol):
    """The shell's overlay helpers (one modal at a time)."""

    def hide_overlays(self) -> None: ...
    def show(self, tag: str) -> None: ...
    def hide(self, tag: str) -> None: ...


class OnboardingDialog:
    def __init__(self, port: OnboardingPort, overlays: Overlays) -> None:
        self.port = port
        self.overlays = overlays

    def build(self, s: Callable[[float], int], bold: Any) -> None:
        port = self.port
        with dpg.window(
            tag=DIALOG,
            label="OpenChat setup",
            modal=True,
            show=False,
            width=s(600),
            height=s(460),
            no_resize=True,
            on_close=lambda: port.skip(),
        ):
            with dpg.group(tag="oc_onb_identity"):
                h = dpg.add_text("Your identity")
                dpg.bind_item_font(h, bold)
                dpg.add_text(
                    "Servers never see your identity root: each one sees only a user id projected from it "
                    "(a different one per server by default). Create a new identity, or import the root you "
                    "use on another device to appear as the same person.",
                    wrap=s(560),
                    color=fonts.MUTED,
                )
                dpg.add_spacer(height=s(6))
                dpg.add_button(
                    label="Create a new identity",
                    tag="oc_onb_create",
                    callback=lambda: port.create_identity(),
                )
                dpg.add_spacer(height=s(6))
                dpg.add_text("or import an existing one")
                with dpg.group(horizontal=True):
                    dpg.add_input_text(tag="oc_onb_root", hint="identity_xxxxxxxx", width=s(300))
                    dpg.add_button(
                        label="Import",
                        tag="oc_onb_import",
                        callback=lambda: port.import_identity(str(dpg.get_value("oc_onb_root"))),
                    )
            with dpg.group(tag="oc_onb_profile", show=False):
                h = dpg.add_text("Set up your profile")
                dpg.bind_item_font(h, bold)
                dpg.add_text(
                    "Local profile data is stored on your home stack. A server gets your name and avatar "
                    "only after you agree to share them with it; until then it sees only your user id.",
                    wrap=s(560),
                    color=fonts.MUTED,
                )
                dpg.add_input_text(
                    tag="oc_onb_name",
                    hint=f"Display name ({DISPLAY_NAME_MIN} to {DISPLAY_NAME_MAX} characters)",
                    width=s(360),
                )
                dpg.add_text("Avatar")
                with dpg.group(horizontal=True, tag="oc_onb_presets"):
                    for preset in AVATAR_PRESETS:
                        top, bottom = PRESET_COLORS[preset]
                        size = s(44)
                        with dpg.drawlist(width=size, height=size, tag=f"oc_onb_preset_{preset}"):
                            dpg.draw_rectangle(
                                (0, 0),
                                (size, size),
                                multicolor=True,
                                corner_colors=[(*top, 255), (*top, 255), (*bottom, 255), (*bottom, 255)],
                                fill=(*top, 255),
                            )
                            dpg.draw_rectangle(
                                (1, 1),
                                (size - 1, size - 1),
                                color=(255, 255, 255, 0),
                                thickness=3,
                                tag=f"oc_onb_ring_{preset}",
                            )
                        with dpg.item_handler_registry(tag=f"oc_onb_h_{preset}"):
                            dpg.add_item_clicked_handler(
                                callback=lambda s_, a, u: port.pick_preset(u), user_data=preset
                            )
                        dpg.bind_item_handler_registry(f"oc_onb_preset_{preset}", f"oc_onb_h_{preset}")
                with dpg.group(horizontal=True):
                    dpg.add_button(
                        label="Upload an image…",
                        tag="oc_onb_pick",
                        callback=lambda: self.open_avatar_dialog(),
                    )
                    dpg.add_text("", tag="oc_onb_file", color=fonts.MUTED)
                dpg.add_spacer(height=s(8))
                with dpg.group(horizontal=True):
                    dpg.add_button(
                        label="Save",
                        tag="oc_onb_save",
                        width=s(100),
                        callback=lambda: port.save_profile(str(dpg.get_value("oc_onb_name"))),
                    )
                    dpg.add_button(label="Skip for now", tag="oc_onb_skip", callback=lambda: port.skip())
            dpg.add_text("", tag="oc_onb_error", color=fonts.RED, wrap=s(560))
            dpg.add_text("", tag="oc_onb_busy", color=fonts.MUTED)

    def open_avatar_dialog(self) -> None:
        def chosen(_sender: Any, app_data: dict[str, Any]) -> None:
            paths = [Path(p) for p in (app_data.get("selections") or {}).values()]
            if paths:
                self.port.choose_avatar_file(paths[0])

        with dpg.file_dialog(callback=chosen, width=700, height=420, modal=True):
            dpg.add_file_extension("Images (*.png *.jpg *.jpeg *.webp){.png,.jpg,.jpeg,.webp}")

    def open(self, state: AccountState) -> None:
        self.overlays.hide_overlays()  # one modal at a time: Dear ImGui would close both
        dpg.set_value("oc_onb_name", state.profile.display_name if state.profile else "")
        dpg.set_value("oc_onb_root", "")
        self.render(state)
        self.overlays.show(DIALOG)

    def close(self) -> None:
        self.overlays.hide(DIALOG)

    def render(self, state: AccountState) -> None:
        if not dpg.does_item_exist(DIALOG):
            return
        dpg.configure_item(DIALOG, label=state.title)
        dpg.configure_item("oc_onb_identity", show=state.step == "identity")
        dpg.configure_item("oc_onb_profile", show=state.step == "profile")
        dpg.configure_item("oc_onb_skip", label=state.skip_label)
        dpg.configure_item("oc_onb_create", label=state.create_label)
        for preset in AVATAR_PRESETS:
            chosen = state.preset_chosen(preset)
            dpg.configure_item(f"oc_onb_ring_{preset}", color=(255, 255, 255, 255 if chosen else 0))
        dpg.set_value("oc_onb_file", state.avatar_line)
        dpg.set_value("oc_onb_error", state.error)
        dpg.set_value("oc_onb_busy", "Saving…" if state.busy else "")
