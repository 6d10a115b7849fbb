"""The member's identity and profile on the desktop (features 1.3-1.6 and rule D18, ux.md 3.12).

- **First run** (after the connection file): when the connector holds no identity for the member,
  the *Welcome* dialog asks to create one or to import the root used on another device; when the
  member has no profile yet, it asks for a display name and an avatar — a generated preset or an
  uploaded image. The profile is kept on the home stack and published to a server only after the
  member agreed to share it with that server (the consent dialog, per server).
- **Dock:** the member's own name (the profile's) next to the active server's ``@uid``.
- **Settings → My Account:** the disclosure sentence for the current UID mode, the current uid,
  "Switch UID mode (…)" (the connector re-binds every server to the newly projected uid), the
  identity root on request (to copy to another device), and "Edit profile…".

Everything goes through the connector's commands; nothing here talks to a backend.
"""

from __future__ import annotations

import base64
import logging
import re
from pathlib import Path
from typing import Any, Literal

from services.core.contracts.chat import (
    AVATAR_PRESETS,
    DISPLAY_NAME_MAX,
    DISPLAY_NAME_MIN,
    IDENTITY_ROOT_PATTERN,
    MAX_AVATAR_BYTES,
    IdentityInfo,
    MemberProfile,
    ProfileGetResult,
    ProfileSetArgs,
    UidModeName,
    UploadedImage,
)
from ui import fonts
from ui.adapter import error_text
from ui.ports import AccountHost, Step

log = logging.getLogger("openchat.ui.account")

DIALOG = "oc_onboard"
# the generated avatars' colours (top, bottom of the gradient), by preset id
PRESET_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "horizon": ((255, 154, 98), (214, 72, 128)),
    "reef": ((38, 198, 218), (21, 101, 192)),
    "mint": ((129, 230, 170), (30, 150, 110)),
    "ember": ((255, 112, 67), (183, 28, 28)),
    "violet": ((179, 136, 255), (94, 53, 177)),
    "slate": ((144, 164, 190), (69, 90, 120)),
}
UPLOAD_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


def disclosure_sentence(mode: UidModeName, origin: str | None = None) -> str:
    """Features 1.6; ``origin``: the backend URL the uid is scoped to as well, for a server whose
    id collides with one joined on another backend (issue #14, ADR 0018)."""
    scope = "server-scoped" if mode == "server_scoped" else "global"
    if mode == "server_scoped" and origin:
        return f"This server sees only a server-scoped UID (scoped to its backend, {origin}) and proof."
    return f"This server sees only a {scope} UID and proof."


def other_mode(mode: UidModeName) -> UidModeName:
    return "global" if mode == "server_scoped" else "server_scoped"


def check_display_name(name: str) -> str | None:
    """The error text for a display name, or None when it is acceptable."""
    n = len(name.strip())
    if n == 0:
        return "Username is required."
    if n < DISPLAY_NAME_MIN or n > DISPLAY_NAME_MAX:
        return f"Display name must be {DISPLAY_NAME_MIN} to {DISPLAY_NAME_MAX} characters."
    return None


def read_avatar(path: Path) -> UploadedImage:
    """An image file as an avatar upload: PNG, JPEG or WEBP, at most ``MAX_AVATAR_BYTES``.
    Raises ``ValueError`` with the text to show."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValueError(f"Cannot read {path.name}.") from exc
    if size > MAX_AVATAR_BYTES:
        raise ValueError("Avatar must be 2 MB or smaller.")
    data = path.read_bytes()
    from PIL import Image, UnidentifiedImageError

    try:
        import io

        with Image.open(io.BytesIO(data)) as img:
            kind = img.format or ""
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError("Use PNG, JPG, or WEBP for your avatar.") from exc
    content_type = UPLOAD_TYPES.get(kind)
    if content_type is None:
        raise ValueError("Use PNG, JPG, or WEBP for your avatar.")
    return UploadedImage(
        file_name=path.name, content_type=content_type, data_b64=base64.b64encode(data).decode()
    )


class Account:
    def __init__(self, app: AccountHost) -> None:
        self.app = app
        self.info: IdentityInfo | None = None
        self.profile: MemberProfile | None = None
        self.step: Step | None = None  # the Welcome dialog's step on screen
        self.editing = False  # the profile step opened from Settings (not the first run)
        self.error = ""
        self.busy = False
        self.preset = AVATAR_PRESETS[0]
        self.mode: Literal["generated", "uploaded"] = "generated"
        self.upload: UploadedImage | None = None
        self.revealed: str | None = None
        self.avatar_image: bytes | None = None  # the member's own uploaded avatar (local)
        self.avatar_key = ""
        self._asked = False  # identity and profile read from the stack this session
        self.settled = False  # the first reads answered (or failed): other prompts may follow

    # -- reading ------------------------------------------------------------------------------
    @property
    def uid_mode(self) -> UidModeName:
        return self.info.uid_mode if self.info is not None else "server_scoped"

    def refresh(self) -> None:
        """Read the identity and the profile (each time the stack comes back)."""
        adapter = self.app.adapter
        if adapter is None:
            return
        adapter.submit(lambda c: c.identity_get(), self._on_identity)

    def _on_identity(self, info: IdentityInfo | None, error: BaseException | None) -> None:
        if error is not None or info is None:
            # an older stack without the command: the connector creates the identity on join
            log.info("identity not readable", extra={"error": type(error).__name__})
            self._settle()
            return
        self.info = info
        first = not self._asked
        self._asked = True
        if first and (not info.exists or not info.servers) and not self.app.prefs_skipped():
            # no identity yet, or a new one no server has seen: the moment to import another
            self.open("identity")
        if not info.exists:
            self._settle()
            return
        adapter = self.app.adapter
        if adapter is not None:
            adapter.submit(lambda c: c.profile_get(), lambda v, e: self._on_profile(v, e, first))

    def _on_profile(self, result: ProfileGetResult | None, error: BaseException | None, first: bool) -> None:
        if error is not None or result is None:
            log.info("profile not readable", extra={"error": type(error).__name__})
            self._settle()
            return
        self._set_profile(result.profile)
        if result.profile is None and first and self.step is None and not self.app.prefs_skipped():
            self.open("profile")
        self._settle()

    def _settle(self) -> None:
        if not self.settled:
            self.settled = True
            self.app.after_account()

    def _set_profile(self, profile: MemberProfile | None) -> None:
        self.profile = profile
        if profile is not None:
            self.app.model.display_name = profile.display_name
            self.preset = profile.avatar_preset_id
            self.mode = profile.avatar_mode
            if profile.avatar_mode != "uploaded":
                self.avatar_image = None
            elif profile.avatar_sha256 != self.avatar_key:
                self._load_own_avatar()
        self.app.model.rows_version += 1  # the member's own avatar in the timeline
        self.app.model.touch("dock", "timeline", "members")

    def _load_own_avatar(self) -> None:
        adapter = self.app.adapter
        if adapter is None:
            return

        def done(result: ProfileGetResult | None, error: BaseException | None) -> None:
            prof = result.profile if result is not None else None
            if error is not None or prof is None or not prof.avatar_b64:
                return
            self.avatar_image = base64.b64decode(prof.avatar_b64)
            self.avatar_key = prof.avatar_sha256 or str(prof.revision)
            self.app.model.rows_version += 1
            self.app.model.touch("dock", "timeline")

        adapter.submit(lambda c: c.profile_get(include_avatar=True), done)

    def avatar_colors(self) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        """The member's own generated avatar (None: no profile, or an uploaded image)."""
        if self.profile is None or self.profile.avatar_mode != "generated":
            return None
        return PRESET_COLORS.get(self.profile.avatar_preset_id)

    # -- the Welcome dialog -------------------------------------------------------------------------
    def open(self, step: Step, editing: bool = False) -> None:
        self.step = step
        self.editing = editing
        self.error = ""
        self.upload = None
        if self.profile is not None:
            self.preset = self.profile.avatar_preset_id
            self.mode = self.profile.avatar_mode
        view = self.app.view
        if view is None:
            return
        import dearpygui.dearpygui as dpg

        view.hide_overlays()  # one modal at a time: Dear ImGui would close both
        dpg.set_value("oc_onb_name", self.profile.display_name if self.profile else "")
        dpg.set_value("oc_onb_root", "")
        self.render()
        view.show(DIALOG)

    def close(self) -> None:
        self.step = None
        if self.app.view is not None:
            self.app.view.hide(DIALOG)
        self.app.after_onboarding()

    def create_identity(self) -> None:
        self._identity_call(lambda c: c.identity_create(), "Identity created.")

    def import_identity(self, root: str) -> None:
        root = root.strip()
        if not re.match(IDENTITY_ROOT_PATTERN, root):
            self.fail("An identity root looks like identity_ followed by 8 letters or digits.")
            return
        self._identity_call(lambda c: c.identity_import(root), "Identity imported.")

    def _identity_call(self, work: Any, done_text: str) -> None:
        adapter = self.app.adapter
        if adapter is None or self.busy:
            return
        self.busy = True
        self.error = ""
        self.render()

        def done(info: IdentityInfo | None, error: BaseException | None) -> None:
            self.busy = False
            if error is not None or info is None:
                self.fail(f"Identity not saved: {_error_text(error)}")
                return
            self.info = info
            self.app.model.toast(done_text, history=True)
            if self.profile is None:
                self.step = "profile"
                self.render()
            else:
                self.close()

        adapter.submit(work, done)

    def pick_preset(self, preset: str) -> None:
        if preset in PRESET_COLORS:
            self.preset = preset
            self.mode = "generated"
            self.error = ""
            self.render()

    def choose_avatar_file(self, path: Path) -> bool:
        try:
            self.upload = read_avatar(path)
        except ValueError as exc:
            self.fail(str(exc))
            return False
        self.mode = "uploaded"
        self.error = ""
        self.render()
        return True

    def open_avatar_dialog(self) -> None:
        import dearpygui.dearpygui as dpg

        def chosen(_sender: Any, app_data: dict[str, Any]) -> None:
            paths = [Path(p) for p in (app_data.get("selections") or {}).values()]
            if paths:
                self.choose_avatar_file(paths[0])

        with dpg.file_dialog(callback=chosen, width=700, height=420, modal=True):
            dpg.add_file_extension("Images (*.png *.jpg *.jpeg *.webp){.png,.jpg,.jpeg,.webp}")

    def save_profile(self, name: str) -> None:
        adapter = self.app.adapter
        if adapter is None or self.busy:
            return
        problem = check_display_name(name)
        if problem is not None:
            self.fail(problem)
            return
        if (
            self.mode == "uploaded"
            and self.upload is None
            and not (self.profile is not None and self.profile.avatar_mode == "uploaded")
        ):
            self.fail("Upload an avatar image or switch to generated.")
            return
        if self.mode == "uploaded" and self.upload is not None:
            args = ProfileSetArgs(display_name=name.strip(), avatar=self.upload)
        elif self.mode == "uploaded":
            args = ProfileSetArgs(display_name=name.strip())
        else:
            args = ProfileSetArgs(
                display_name=name.strip(), avatar_mode="generated", avatar_preset_id=self.preset
            )
        self.busy = True
        self.error = ""
        self.render()

        def done(result: ProfileGetResult | None, error: BaseException | None) -> None:
            self.busy = False
            if error is not None or result is None:
                self.fail(f"Profile not saved: {_error_text(error)}")
                return
            self._set_profile(result.profile)
            self.app.model.toast("Profile saved. Servers see it only where you share it.", history=True)
            self.close()

        adapter.submit(lambda c: c.profile_set(args), done)

    def skip(self) -> None:
        """Close without saving; a first-run member is not asked again on this desktop."""
        if not self.editing and self.step is not None:
            self.app.skip_onboarding()
        self.close()

    def fail(self, text: str) -> None:
        self.error = text
        self.render()

    # -- settings -----------------------------------------------------------------------------------
    def switch_uid_mode(self) -> None:
        adapter = self.app.adapter
        if adapter is None or self.busy:
            return
        target = other_mode(self.uid_mode)
        self.busy = True

        def done(info: IdentityInfo | None, error: BaseException | None) -> None:
            self.busy = False
            if error is not None or info is None:
                self.app.model.toast(f"UID mode not changed: {_error_text(error)}", error=True, history=True)
                return
            self.info = info
            for rec in info.servers:  # the server.updated events follow; show the new uids now
                sm = self.app.model.servers.get(rec.server_id)
                if sm is not None:
                    sm.record = rec
            self.app.model.rows_version += 1
            self.app.model.touch()
            scope = "server-scoped" if info.uid_mode == "server_scoped" else "global"
            self.app.model.toast(f"UID mode is now {scope}: every server sees your new uid.", history=True)
            self.app.refresh_settings()

        adapter.submit(lambda c: c.uid_mode(target), done)

    def reveal_root(self) -> None:
        adapter = self.app.adapter
        if adapter is None:
            return

        def done(info: IdentityInfo | None, error: BaseException | None) -> None:
            if error is not None or info is None or info.root is None:
                self.app.model.toast(f"Identity root unavailable: {_error_text(error)}", error=True)
                return
            self.revealed = info.root
            self.app.refresh_settings()

        adapter.submit(lambda c: c.identity_get(reveal=True), done)

    # -- widgets ------------------------------------------------------------------------------------
    def build(self, dpg: Any, s: Any, bold: Any) -> None:
        with dpg.window(
            tag=DIALOG,
            label="OpenChat setup",
            modal=True,
            show=False,
            width=s(600),
            height=s(460),
            no_resize=True,
            on_close=lambda: self.skip(),
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
                    callback=lambda: self.create_identity(),
                )
                dpg.add_spacer(height=s(6))
                dpg.add_text("or import an existing one")
                with dpg.group(horizontal=True):
                    dpg.add_input_text(tag="oc_onb_root", hint="identity_xxxxxxxx", width=s(300))
                    dpg.add_button(
                        label="Import",
                        tag="oc_onb_import",
                        callback=lambda: self.import_identity(str(dpg.get_value("oc_onb_root"))),
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
                                callback=lambda s_, a, u: self.pick_preset(u), user_data=preset
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
                        callback=lambda: self.save_profile(str(dpg.get_value("oc_onb_name"))),
                    )
                    dpg.add_button(label="Skip for now", tag="oc_onb_skip", callback=lambda: self.skip())
            dpg.add_text("", tag="oc_onb_error", color=fonts.RED, wrap=s(560))
            dpg.add_text("", tag="oc_onb_busy", color=fonts.MUTED)

    def render(self) -> None:
        if self.app.view is None:
            return
        import dearpygui.dearpygui as dpg

        if not dpg.does_item_exist(DIALOG):
            return
        dpg.configure_item(DIALOG, label="Edit profile" if self.editing else "OpenChat setup")
        dpg.configure_item("oc_onb_identity", show=self.step == "identity")
        dpg.configure_item("oc_onb_profile", show=self.step == "profile")
        dpg.configure_item("oc_onb_skip", label="Cancel" if self.editing else "Skip for now")
        exists = self.info is not None and self.info.exists
        dpg.configure_item(
            "oc_onb_create", label="Continue with my new identity" if exists else "Create a new identity"
        )
        for preset in AVATAR_PRESETS:
            chosen = self.mode == "generated" and preset == self.preset
            dpg.configure_item(f"oc_onb_ring_{preset}", color=(255, 255, 255, 255 if chosen else 0))
        if self.mode == "uploaded":
            name = self.upload.file_name if self.upload else "the uploaded image (kept)"
            dpg.set_value("oc_onb_file", f"Avatar: {name}")
        else:
            dpg.set_value("oc_onb_file", f"Avatar: generated ({self.preset})")
        dpg.set_value("oc_onb_error", self.error)
        dpg.set_value("oc_onb_busy", "Saving…" if self.busy else "")


def _error_text(error: BaseException | None) -> str:
    return error_text(error) if error is not None else "no answer"
