"""Which images the desktop draws and asks for (no Dear PyGui, no I/O): texture keys, and the
keys the rows on screen pin (never released while drawn). ``ui.image_loader`` fetches them over
the member's bus connection; ``ui.images.ImageCache`` holds the textures."""

from __future__ import annotations

from collections.abc import Iterable

from services.core.contracts.chat import AttachmentRef, ChatMessage

AVATAR_SIDE = 96  # avatars are decoded this small (drawn at 40 px, 80 px at 200 %)
PREVIEW_SIDE = 160  # link-preview images are decoded this small (drawn at most 80 px high)
PINNED_PREFIXES = ("avatar:", "draft:", "preview:")  # drawn by rows until their inputs change


def attachment_key(m: ChatMessage, att: AttachmentRef) -> str:
    return f"{m.server_id}/{m.channel_id}/{m.id}/{att.attachment_id}"


def own_avatar_key(avatar_key: str) -> str:
    return f"avatar:own:{avatar_key}"


def avatar_key(sid: str, uid: str, profile_version: int) -> str:
    return f"avatar:{sid}:{uid}:{profile_version}"


def preview_key(m: ChatMessage, index: int) -> str:
    return f"preview:{m.server_id}:{m.channel_id}:{m.id}:{index}"


def pinned_keys(textures: Iterable[str], drawn: Iterable[ChatMessage]) -> set[str]:
    """Texture keys never released: avatars, drafts and previews, and the attachments of the
    messages drawn on screen."""
    keys = {k for k in textures if k.startswith(PINNED_PREFIXES)}
    for m in drawn:
        keys.update(attachment_key(m, a) for a in m.attachments)
    return keys


def redraws_rows(key: str) -> bool:
    """A texture that arrived for ``key`` changes rows already drawn (avatars and previews are
    part of a row's inputs; attachments fill a card that is already there)."""
    return key.startswith(("avatar:", "preview:"))
