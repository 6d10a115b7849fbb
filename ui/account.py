"""The account/onboarding flow: the connector's identity and profile commands, driven by the
state machine ``ui.state.account.AccountState`` (features 1.3-1.6; docs/product-rules.md on
profile consent). No Dear PyGui: the dialog (``ui.view.dialogs.onboarding``) renders the state
through the ``OnboardingView`` port and calls the methods below, as tests do.

Everything goes through the connector's commands; nothing here talks to a backend.
"""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

from services.core.contracts.chat import (
    MAX_AVATAR_BYTES,
    IdentityInfo,
    MemberProfile,
    ProfileGetResult,
    UidModeName,
    UploadedImage,
)
from ui.adapter import StackClient, error_text
from ui.controller import StackPort
from ui.ports import OnboardingView
from ui.state.account import (
    PRESET_COLORS,
    AccountState,
    Step,
    check_display_name,
    check_root,
    disclosure_sentence,
    other_mode,
)
from ui.state.model import ViewModel

__all__ = [
    "PRESET_COLORS",
    "UPLOAD_TYPES",
    "Account",
    "OnboardingView",
    "check_display_name",
    "disclosure_sentence",
    "other_mode",
    "read_avatar",
]

log = logging.getLogger("openchat.ui.account")

UPLOAD_TYPES = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


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


class AccountHost(Protocol):
    """What the account/onboarding flow needs from its host (``ui.workspace.Workspace``)."""

    model: ViewModel

    @property
    def adapter(self) -> StackPort | None: ...
    @property
    def view(self) -> Any: ...  # the built panes, or None before the window exists

    def after_account(self) -> None: ...
    def after_onboarding(self) -> None: ...
    def prefs_skipped(self) -> bool: ...
    def refresh_settings(self) -> None: ...
    def skip_onboarding(self) -> None: ...


class Account:
    """The flow; ``state`` holds what is shown. The names below are the app's entry points."""

    def __init__(self, app: AccountHost) -> None:
        self.app = app
        self.state = AccountState()
        self.dialog: OnboardingView | None = None  # set once the window exists

    # -- the state, as panes and tests read it ----------------------------------------------------
    @property
    def info(self) -> IdentityInfo | None:
        return self.state.info

    @property
    def profile(self) -> MemberProfile | None:
        return self.state.profile

    @property
    def step(self) -> Step | None:
        return self.state.step

    @property
    def settled(self) -> bool:
        return self.state.settled

    @property
    def busy(self) -> bool:
        return self.state.busy

    @property
    def error(self) -> str:
        return self.state.error

    @property
    def revealed(self) -> str | None:
        return self.state.revealed

    @revealed.setter
    def revealed(self, value: str | None) -> None:
        self.state.revealed = value

    @property
    def avatar_image(self) -> bytes | None:
        return self.state.avatar_image

    @property
    def avatar_key(self) -> str:
        return self.state.avatar_key

    @property
    def uid_mode(self) -> UidModeName:
        return self.state.uid_mode

    def avatar_colors(self) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        return self.state.avatar_colors()

    def _submit(
        self, work: Callable[[StackClient], Awaitable[Any]], done: Callable[[Any, Any], None]
    ) -> bool:
        adapter = self.app.adapter
        if adapter is None:
            return False
        adapter.submit(work, done)
        return True

    # -- reading ------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Read the identity and the profile (each time the stack comes back)."""
        self._submit(lambda c: c.identity_get(), self._on_identity)

    def _on_identity(self, info: IdentityInfo | None, error: BaseException | None) -> None:
        if error is not None or info is None:
            # an older stack without the command: the connector creates the identity on join
            log.info("identity not readable", extra={"error": type(error).__name__})
            self._settle()
            return
        step, first = self.state.identity_read(info, self.app.prefs_skipped())
        if step is not None:
            self.open(step)
        if not info.exists:
            self._settle()
            return
        self._submit(lambda c: c.profile_get(), lambda v, e: self._on_profile(v, e, first))

    def _on_profile(self, result: ProfileGetResult | None, error: BaseException | None, first: bool) -> None:
        if error is not None or result is None:
            log.info("profile not readable", extra={"error": type(error).__name__})
            self._settle()
            return
        self._set_profile(result.profile)
        step = self.state.profile_read(result.profile, first, self.app.prefs_skipped())
        if step is not None:
            self.open(step)
        self._settle()

    def _settle(self) -> None:
        if self.state.settle():
            self.app.after_account()

    def _set_profile(self, profile: MemberProfile | None) -> None:
        if profile is not None:
            self.app.model.display_name = profile.display_name
        if self.state.set_profile(profile):
            self._load_own_avatar()
        self.app.model.redraw_rows("dock", "members")  # the member's own avatar in the timeline

    def _load_own_avatar(self) -> None:
        def done(result: ProfileGetResult | None, error: BaseException | None) -> None:
            prof = result.profile if result is not None else None
            if error is not None or prof is None or not self.state.own_avatar(prof):
                return
            self.app.model.redraw_rows("dock")

        self._submit(lambda c: c.profile_get(include_avatar=True), done)

    # -- the Welcome dialog -------------------------------------------------------------------------
    def open(self, step: Step, editing: bool = False) -> None:
        self.state.open(step, editing)
        if self.app.view is not None and self.dialog is not None:
            self.dialog.open(self.state)

    def close(self) -> None:
        self.state.close()
        if self.app.view is not None and self.dialog is not None:
            self.dialog.close()
        self.app.after_onboarding()

    def render(self) -> None:
        if self.app.view is not None and self.dialog is not None:
            self.dialog.render(self.state)

    def create_identity(self) -> None:
        self._identity_call(lambda c: c.identity_create(), "Identity created.")

    def import_identity(self, root: str) -> None:
        problem = check_root(root)
        if problem is not None:
            self.fail(problem)
            return
        root = root.strip()
        self._identity_call(lambda c: c.identity_import(root), "Identity imported.")

    def _identity_call(self, work: Callable[[StackClient], Awaitable[IdentityInfo]], done_text: str) -> None:
        if self.app.adapter is None or not self.state.begin():
            return
        self.render()

        def done(info: IdentityInfo | None, error: BaseException | None) -> None:
            if error is not None or info is None:
                self.state.busy = False
                self.fail(f"Identity not saved: {_error_text(error)}")
                return
            finished = self.state.identity_saved(info)
            self.app.model.toast(done_text, history=True)
            if finished:
                self.close()
            else:
                self.render()

        self._submit(work, done)

    def pick_preset(self, preset: str) -> None:
        if self.state.pick_preset(preset):
            self.render()

    def choose_avatar_file(self, path: Path) -> bool:
        try:
            upload = read_avatar(path)
        except ValueError as exc:
            self.fail(str(exc))
            return False
        self.state.upload_chosen(upload)
        self.render()
        return True

    def save_profile(self, name: str) -> None:
        if self.app.adapter is None or self.state.busy:
            return
        args = self.state.profile_args(name)
        if isinstance(args, str):
            self.fail(args)
            return
        self.state.begin()
        self.render()

        def done(result: ProfileGetResult | None, error: BaseException | None) -> None:
            self.state.busy = False
            if error is not None or result is None:
                self.fail(f"Profile not saved: {_error_text(error)}")
                return
            self._set_profile(result.profile)
            self.app.model.toast("Profile saved. Servers see it only where you share it.", history=True)
            self.close()

        self._submit(lambda c: c.profile_set(args), done)

    def skip(self) -> None:
        """Close without saving; a first-run member is not asked again on this desktop."""
        if self.state.skip():
            self.app.skip_onboarding()
        self.close()

    def fail(self, text: str) -> None:
        self.state.fail(text)
        self.render()

    # -- settings -----------------------------------------------------------------------------------
    def switch_uid_mode(self) -> None:
        if self.app.adapter is None or self.state.busy:
            return
        target = other_mode(self.uid_mode)
        self.state.busy = True

        def done(info: IdentityInfo | None, error: BaseException | None) -> None:
            self.state.busy = False
            if error is not None or info is None:
                self.app.model.toast(f"UID mode not changed: {_error_text(error)}", error=True, history=True)
                return
            self.state.info = info
            for rec in info.servers:  # the server.updated events follow; show the new uids now
                sm = self.app.model.servers.get(rec.server_id)
                if sm is not None:
                    sm.record = rec
            self.app.model.redraw_rows()
            self.app.model.touch()
            scope = "server-scoped" if info.uid_mode == "server_scoped" else "global"
            self.app.model.toast(f"UID mode is now {scope}: every server sees your new uid.", history=True)
            self.app.refresh_settings()

        self._submit(lambda c: c.uid_mode(target), done)

    def reveal_root(self) -> None:
        def done(info: IdentityInfo | None, error: BaseException | None) -> None:
            if error is not None or info is None or info.root is None:
                self.app.model.toast(f"Identity root unavailable: {_error_text(error)}", error=True)
                return
            self.state.revealed = info.root
            self.app.refresh_settings()

        self._submit(lambda c: c.identity_get(reveal=True), done)


def _error_text(error: BaseException | None) -> str:
    return error_text(error) if error is not None else "no answer"
