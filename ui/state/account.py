"""The member's identity and profile on the desktop as a state machine (no Dear PyGui, no I/O).

Features 1.3-1.6 and the profile-consent rule (a server gets the member's display name and avatar
only after the member agreed to share them with that server; see docs/product-rules.md):

- **First run**: when the connector holds no identity for the member (or one no server has seen),
  the *Welcome* dialog opens on the identity step (create one, or import the root used on another
  device); when the member has no profile yet, on the profile step (a display name and an avatar,
  a generated preset or an uploaded image). A member who skipped is not asked again on this desktop.
- **Settings → My Account**: the UID mode, the identity root on request, "Edit profile…".

``AccountState`` holds what the dialog and Settings show and decides each step; ``ui.account``
sends the connector's commands and feeds the answers back; ``ui.view.dialogs.onboarding`` renders.
"""

from __future__ import annotations

import re
from typing import Literal

from services.core.contracts.chat import (
    AVATAR_PRESETS,
    DISPLAY_NAME_MAX,
    DISPLAY_NAME_MIN,
    IDENTITY_ROOT_PATTERN,
    IdentityInfo,
    MemberProfile,
    ProfileSetArgs,
    UidModeName,
    UploadedImage,
)

Step = Literal["identity", "profile"]  # the Welcome/Edit Profile dialog's steps
AvatarMode = Literal["generated", "uploaded"]

# the generated avatars' colours (top, bottom of the gradient), by preset id
PRESET_COLORS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "horizon": ((255, 154, 98), (214, 72, 128)),
    "reef": ((38, 198, 218), (21, 101, 192)),
    "mint": ((129, 230, 170), (30, 150, 110)),
    "ember": ((255, 112, 67), (183, 28, 28)),
    "violet": ((179, 136, 255), (94, 53, 177)),
    "slate": ((144, 164, 190), (69, 90, 120)),
}


def disclosure_sentence(mode: UidModeName, origin: str | None = None) -> str:
    """What the server learns of the member (the uid mode); ``origin``: the backend URL the uid is
    scoped to as well, for a server whose id collides with one joined on another backend (ADR 0018)."""
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


def check_root(root: str) -> str | None:
    """The error text for an identity root to import, or None when it has the right shape."""
    if not re.match(IDENTITY_ROOT_PATTERN, root.strip()):
        return "An identity root looks like identity_ followed by 8 letters or digits."
    return None


class AccountState:
    def __init__(self) -> None:
        self.info: IdentityInfo | None = None
        self.profile: MemberProfile | None = None
        self.step: Step | None = None  # the Welcome dialog's step on screen
        self.editing = False  # the profile step opened from Settings (not the first run)
        self.error = ""
        self.busy = False
        self.preset = AVATAR_PRESETS[0]
        self.mode: AvatarMode = "generated"
        self.upload: UploadedImage | None = None
        self.revealed: str | None = None
        self.avatar_image: bytes | None = None  # the member's own uploaded avatar (local)
        self.avatar_key = ""
        self.asked = False  # identity and profile read from the stack this session
        self.settled = False  # the first reads answered (or failed): other prompts may follow

    @property
    def uid_mode(self) -> UidModeName:
        return self.info.uid_mode if self.info is not None else "server_scoped"

    # -- the reads of each (re)connection --------------------------------------------------------
    def settle(self) -> bool:
        """The first reads are done (answered or failed). True the first time only."""
        if self.settled:
            return False
        self.settled = True
        return True

    def identity_read(self, info: IdentityInfo, skipped: bool) -> tuple[Step | None, bool]:
        """The identity was read: (the step to open, whether this was the session's first read).
        No identity yet, or one no server has seen, is the moment to import another."""
        self.info = info
        first = not self.asked
        self.asked = True
        if first and (not info.exists or not info.servers) and not skipped:
            return "identity", first
        return None, first

    def profile_read(self, profile: MemberProfile | None, first: bool, skipped: bool) -> Step | None:
        """The profile was read (after the identity): the step to open, if any."""
        if profile is None and first and self.step is None and not skipped:
            return "profile"
        return None

    def set_profile(self, profile: MemberProfile | None) -> bool:
        """A profile read or saved. True when the member's own uploaded avatar must be fetched."""
        self.profile = profile
        if profile is None:
            return False
        self.preset = profile.avatar_preset_id
        self.mode = profile.avatar_mode
        if profile.avatar_mode != "uploaded":
            self.avatar_image = None
            return False
        return profile.avatar_sha256 != self.avatar_key

    def own_avatar(self, profile: MemberProfile) -> bool:
        """The profile with its image bytes arrived. True when the image was taken."""
        if not profile.avatar_b64:
            return False
        import base64

        self.avatar_image = base64.b64decode(profile.avatar_b64)
        self.avatar_key = profile.avatar_sha256 or str(profile.revision)
        return True

    def avatar_colors(self) -> tuple[tuple[int, int, int], tuple[int, int, int]] | None:
        """The member's own generated avatar (None: no profile, or an uploaded image)."""
        if self.profile is None or self.profile.avatar_mode != "generated":
            return None
        return PRESET_COLORS.get(self.profile.avatar_preset_id)

    # -- the Welcome / Edit profile dialog ---------------------------------------------------------
    def open(self, step: Step, editing: bool = False) -> None:
        self.step = step
        self.editing = editing
        self.error = ""
        self.upload = None
        if self.profile is not None:
            self.preset = self.profile.avatar_preset_id
            self.mode = self.profile.avatar_mode

    def close(self) -> None:
        self.step = None

    def begin(self) -> bool:
        """A command starts: False while another one runs (the dialog shows "Saving…")."""
        if self.busy:
            return False
        self.busy = True
        self.error = ""
        return True

    def identity_saved(self, info: IdentityInfo) -> bool:
        """Created or imported. True when the dialog is done (a profile exists already); else it
        goes on to the profile step."""
        self.busy = False
        self.info = info
        if self.profile is None:
            self.step = "profile"
            return False
        return True

    def pick_preset(self, preset: str) -> bool:
        if preset not in PRESET_COLORS:
            return False
        self.preset = preset
        self.mode = "generated"
        self.error = ""
        return True

    def upload_chosen(self, upload: UploadedImage) -> None:
        self.upload = upload
        self.mode = "uploaded"
        self.error = ""

    def profile_args(self, name: str) -> ProfileSetArgs | str:
        """The profile to save from the dialog's fields, or the error text to show."""
        problem = check_display_name(name)
        if problem is not None:
            return problem
        if (
            self.mode == "uploaded"
            and self.upload is None
            and not (self.profile is not None and self.profile.avatar_mode == "uploaded")
        ):
            return "Upload an avatar image or switch to generated."
        if self.mode == "uploaded" and self.upload is not None:
            return ProfileSetArgs(display_name=name.strip(), avatar=self.upload)
        if self.mode == "uploaded":
            return ProfileSetArgs(display_name=name.strip())
        return ProfileSetArgs(
            display_name=name.strip(), avatar_mode="generated", avatar_preset_id=self.preset
        )

    def skip(self) -> bool:
        """Closed without saving. True when a first-run member is not to be asked again here."""
        return not self.editing and self.step is not None

    def fail(self, text: str) -> None:
        self.error = text

    # -- what the dialog shows (the view renders these) -------------------------------------------
    @property
    def title(self) -> str:
        return "Edit profile" if self.editing else "OpenChat setup"

    @property
    def skip_label(self) -> str:
        return "Cancel" if self.editing else "Skip for now"

    @property
    def create_label(self) -> str:
        exists = self.info is not None and self.info.exists
        return "Continue with my new identity" if exists else "Create a new identity"

    @property
    def avatar_line(self) -> str:
        if self.mode == "uploaded":
            name = self.upload.file_name if self.upload else "the uploaded image (kept)"
            return f"Avatar: {name}"
        return f"Avatar: generated ({self.preset})"

    def preset_chosen(self, preset: str) -> bool:
        return self.mode == "generated" and preset == self.preset
