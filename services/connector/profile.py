"""The member's own profile: kept by the connector, published only with consent (features 1.1, 11; rule D18).

- ``ProfileStore``: one profile per member in the registry database (table ``member_profiles``,
  owned by the connector): display name, avatar mode, preset, and an uploaded image kept locally
  as bytes (PNG, JPEG or WEBP, ≤ 2 MiB). Table ``member_profile_assets`` remembers, per (member,
  server), which avatar asset the server holds for which image (by SHA-256), so an unchanged image
  is never uploaded twice.
- ``apply_change``: validation of ``profile_set`` with typed errors — ``display_name_invalid``
  (trimmed, 2-32 runes of letters, digits, space, ``.``, ``_``, ``-``: the wire §9 policy) and
  ``avatar_invalid`` (unknown preset, not PNG/JPEG/WEBP, over 2 MiB, undecodable, no image).
- ``prepare_avatar``: what is uploaded — always re-encoded (EXIF orientation applied, metadata
  dropped), WEBP (or any type the server does not take) as PNG, scaled to the server's
  ``avatar_upload`` maximum width/height and, when still too big, re-encoded smaller until it fits
  its ``max_bytes``.
- ``ProfilePublisher.sync(session)``: rule D18. Only when the member consented for that server
  (``profile_consent is True``) and the server advertises ``profile.enabled``: ``GET
  /v1/profile/me`` (cached on the session), and when the name, mode or preset/asset differ, the
  avatar upload when needed, then ``PUT /v1/profile/me`` with ``If-Match: <profile_version>``; a
  ``409`` re-reads and retries once; ``404``/``405``/``501`` mark the server's profile routes
  unsupported (not called again until its build changes). Other failures are logged (code and
  status only) and kept as the session's ``profile_state``; nothing raises. Preset ids sent are
  only the six canonical ones; without consent no request at all is made.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import logging
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image, ImageOps, UnidentifiedImageError

from services.connector import domain
from services.connector.backend import BackendError, Unsupported
from services.core.bus import CommandError
from services.core.contracts import wire
from services.core.contracts.chat import (
    AVATAR_PRESETS,
    DISPLAY_NAME_MAX,
    DISPLAY_NAME_MIN,
    MAX_AVATAR_BYTES,
    MemberProfile,
    ProfileSetArgs,
    ProfileSyncState,
)
from services.core.db import SqliteStore

if TYPE_CHECKING:
    from services.connector.session import Session

log = logging.getLogger("openchat.connector.profile")

LOCAL_FORMATS = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
MAX_AVATAR_PIXELS = 25_000_000  # refuse to decode larger images (decompression bombs)
DEFAULT_UPLOAD = wire.CapabilityAvatarUpload(
    max_bytes=MAX_AVATAR_BYTES, mime_types=["image/png", "image/jpeg"], max_width=1024, max_height=1024
)
NAME_PUNCTUATION = frozenset(" ._-")
UNSUPPORTED_STATUSES = frozenset({404, 405, 501})
REJECTED_CODES = frozenset(
    {
        "display_name_invalid",
        "avatar_mode_unsupported",
        "avatar_too_large",
        "avatar_type_unsupported",
        "avatar_dimensions_exceeded",
    }
)

SCHEMA = """
CREATE TABLE IF NOT EXISTS member_profiles (
    member TEXT PRIMARY KEY,
    profile TEXT NOT NULL,
    avatar BLOB
);
CREATE TABLE IF NOT EXISTS member_profile_assets (
    member TEXT NOT NULL,
    server_id TEXT NOT NULL,
    avatar_sha256 TEXT NOT NULL,
    avatar_asset_id TEXT NOT NULL,
    PRIMARY KEY (member, server_id)
);
"""


# -- validation ----------------------------------------------------------------------------------
def name_error(message: str) -> CommandError:
    return CommandError("display_name_invalid", message)


def avatar_error(message: str) -> CommandError:
    return CommandError("avatar_invalid", message)


def check_display_name(raw: str) -> str:
    """The trimmed name, or ``display_name_invalid`` (wire §9: ``^[\\p{L}\\p{N} ._\\-]+$``, 2-32 runes)."""
    name = raw.strip()
    if not name:
        raise name_error("Username is required.")
    if not DISPLAY_NAME_MIN <= len(name) <= DISPLAY_NAME_MAX:
        raise name_error(f"Display name must be {DISPLAY_NAME_MIN} to {DISPLAY_NAME_MAX} characters.")
    for char in name:
        if char not in NAME_PUNCTUATION and unicodedata.category(char)[0] not in ("L", "N"):
            raise name_error("Display name may use only letters, digits, spaces, '.', '_' and '-'.")
    return name


def default_preset(name: str) -> str:
    """A stable preset for a new profile (the devserver's rule, applied to the name)."""
    return AVATAR_PRESETS[sum(map(ord, name)) % len(AVATAR_PRESETS)]


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int


def inspect_image(data: bytes) -> ImageInfo:
    """A locally kept avatar: PNG, JPEG or WEBP, ≤ 2 MiB, decodable; ``avatar_invalid`` otherwise."""
    if not data:
        raise avatar_error("Upload an avatar image or switch to generated.")
    if len(data) > MAX_AVATAR_BYTES:
        raise avatar_error("Avatar must be 2 MB or smaller.")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            fmt = probe.format or ""
            width, height = probe.size
        if fmt not in LOCAL_FORMATS:
            raise avatar_error("Use PNG, JPG, or WEBP for your avatar.")
        if width * height > MAX_AVATAR_PIXELS:
            raise avatar_error("Avatar image has too many pixels (at most 25 megapixels).")
        with Image.open(io.BytesIO(data)) as full:
            full.load()
    except CommandError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise avatar_error("Use PNG, JPG, or WEBP for your avatar.") from exc
    return ImageInfo(LOCAL_FORMATS[fmt], width, height)


# -- conversion for a server ---------------------------------------------------------------------
@dataclass(frozen=True)
class PreparedAvatar:
    file_name: str
    data: bytes
    content_type: str
    width: int
    height: int


def _encode(img: Image.Image, content_type: str, quality: int) -> bytes:
    out = io.BytesIO()
    if content_type == "image/png":
        converted = img if img.mode in ("RGB", "RGBA", "L", "LA") else img.convert("RGBA")
        converted.save(out, format="PNG", optimize=True)
    else:
        rgba = img.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        flat.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


def prepare_avatar(data: bytes, upload: wire.CapabilityAvatarUpload | None) -> PreparedAvatar:
    """Re-encode ``data`` for a server's ``avatar_upload`` limits (PNG preferred; a JPEG stays JPEG
    when the server takes JPEG), scaled to fit; ``avatar_invalid`` when it cannot be made to fit."""
    limits = upload or DEFAULT_UPLOAD
    accepted = {t.strip().lower() for t in limits.mime_types} or set(DEFAULT_UPLOAD.mime_types)
    info = inspect_image(data)
    order = [t for t in ("image/png", "image/jpeg") if t in accepted]
    if info.content_type == "image/jpeg" and "image/jpeg" in accepted:
        order = ["image/jpeg", *[t for t in order if t != "image/jpeg"]]
    if not order:
        raise avatar_error("The server takes neither PNG nor JPEG avatars.")
    max_w = max(1, limits.max_width or DEFAULT_UPLOAD.max_width)
    max_h = max(1, limits.max_height or DEFAULT_UPLOAD.max_height)
    max_bytes = max(1, limits.max_bytes or DEFAULT_UPLOAD.max_bytes)
    with Image.open(io.BytesIO(data)) as opened:
        img = ImageOps.exif_transpose(opened) or opened
        img.load()
        img = img.copy()
    if img.mode not in ("RGB", "RGBA", "L", "LA"):
        img = img.convert("RGBA")
    img.thumbnail((max_w, max_h), Image.Resampling.LANCZOS)
    for _ in range(12):
        for content_type in order:
            for quality in (90, 75) if content_type == "image/jpeg" else (0,):
                encoded = _encode(img, content_type, quality)
                if len(encoded) <= max_bytes:
                    ext = "png" if content_type == "image/png" else "jpg"
                    return PreparedAvatar(f"avatar.{ext}", encoded, content_type, img.width, img.height)
        if img.width <= 16 and img.height <= 16:
            break
        size = (max(1, int(img.width * 0.75)), max(1, int(img.height * 0.75)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    raise avatar_error("The avatar cannot be made small enough for this server.")


# -- the durable profile -------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredProfile:
    profile: MemberProfile  # without ``avatar_b64``
    image: bytes | None  # the uploaded avatar as the member gave it (mode ``uploaded``)

    def with_image(self) -> MemberProfile:
        if self.image is None:
            return self.profile
        return self.profile.model_copy(update={"avatar_b64": base64.b64encode(self.image).decode()})


class ProfileStore(SqliteStore):
    SCHEMA = SCHEMA
    MEMBER_TABLES = ("member_profiles", "member_profile_assets")

    def get(self, member: str) -> StoredProfile | None:
        with self._db() as db:
            row = db.execute(
                "SELECT profile, avatar FROM member_profiles WHERE member = ?", (member,)
            ).fetchone()
        if row is None:
            return None
        return StoredProfile(MemberProfile.model_validate_json(row[0]), bytes(row[1]) if row[1] else None)

    def put(self, member: str, stored: StoredProfile) -> None:
        doc = stored.profile.model_copy(update={"avatar_b64": None}).model_dump_json()
        with self._db() as db:
            db.execute(
                "INSERT INTO member_profiles (member, profile, avatar) VALUES (?, ?, ?) "
                "ON CONFLICT(member) DO UPDATE SET profile = excluded.profile, avatar = excluded.avatar",
                (member, doc, stored.image),
            )

    def asset(self, member: str, server_id: str) -> tuple[str, str] | None:
        """``(avatar_sha256, avatar_asset_id)`` last uploaded to that server, if any."""
        with self._db() as db:
            row = db.execute(
                "SELECT avatar_sha256, avatar_asset_id FROM member_profile_assets WHERE member = ? AND server_id = ?",
                (member, server_id),
            ).fetchone()
        return (str(row[0]), str(row[1])) if row else None

    def remember_asset(self, member: str, server_id: str, sha256: str, asset_id: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO member_profile_assets (member, server_id, avatar_sha256, avatar_asset_id) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(member, server_id) DO UPDATE SET "
                "avatar_sha256 = excluded.avatar_sha256, avatar_asset_id = excluded.avatar_asset_id",
                (member, server_id, sha256, asset_id),
            )

    def forget_server(self, member: str, server_id: str) -> None:
        with self._db() as db:
            db.execute(
                "DELETE FROM member_profile_assets WHERE member = ? AND server_id = ?", (member, server_id)
            )


def apply_change(current: StoredProfile | None, args: ProfileSetArgs, now: datetime) -> StoredProfile:
    """The profile after ``profile_set`` (validated); ``current`` when nothing changes."""
    raw_name = args.display_name if args.display_name is not None else None
    if raw_name is None and current is not None:
        raw_name = current.profile.display_name
    name = check_display_name(raw_name or "")
    if args.avatar is not None and args.avatar_preset_id is not None:
        raise avatar_error("Choose either a preset or an uploaded image, not both.")
    mode: Literal["generated", "uploaded"]
    if args.avatar_mode is not None:
        mode = args.avatar_mode
    elif args.avatar is not None:
        mode = "uploaded"
    elif args.avatar_preset_id is not None:
        mode = "generated"
    else:
        mode = current.profile.avatar_mode if current is not None else "generated"
    if mode == "generated" and args.avatar is not None:
        raise avatar_error("An uploaded image needs avatar mode 'uploaded'.")
    if mode == "uploaded" and args.avatar_preset_id is not None:
        raise avatar_error("A preset needs avatar mode 'generated'.")
    preset = args.avatar_preset_id or (current.profile.avatar_preset_id if current else default_preset(name))
    if preset not in AVATAR_PRESETS:
        raise avatar_error(
            f"Unknown avatar preset {preset[:40]!r}; choose one of {', '.join(AVATAR_PRESETS)}."
        )
    image: bytes | None = None
    if mode == "uploaded":
        if args.avatar is not None:
            try:
                image = base64.b64decode(args.avatar.data_b64, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise avatar_error("The avatar image is not valid base64.") from exc
        elif current is not None:
            image = current.image
        if not image:
            raise avatar_error("Upload an avatar image or switch to generated.")
    info = inspect_image(image) if image is not None else None
    fields: dict[str, Any] = {
        "display_name": name,
        "avatar_mode": mode,
        "avatar_preset_id": preset,
        "avatar_content_type": info.content_type if info else None,
        "avatar_bytes": len(image) if image is not None else None,
        "avatar_sha256": hashlib.sha256(image).hexdigest() if image is not None else None,
    }
    if current is not None and all(getattr(current.profile, k) == v for k, v in fields.items()):
        return current
    revision = current.profile.revision + 1 if current is not None else 1
    return StoredProfile(MemberProfile(**fields, revision=revision, updated_at=now), image)


# -- publishing: only to a server the member agreed to share with (D18) --------------------------------------
def sync_state(session: Session, state: str, code: str = "", version: int | None = None) -> ProfileSyncState:
    return ProfileSyncState.model_validate(
        {
            "server_id": session.server_id,
            "consent": session.record.profile_consent,
            "state": state,
            "code": code,
            "profile_version": version,
        }
    )


def current_state(session: Session) -> ProfileSyncState:
    """The session's last outcome, corrected for a consent changed since."""
    if session.record.profile_consent is not True:
        return sync_state(session, "private")
    state = session.profile_state
    if state is None or state.state == "private":
        return sync_state(session, "pending")
    return state.model_copy(update={"consent": session.record.profile_consent})


class ProfilePublisher:
    def __init__(self, store: ProfileStore) -> None:
        self.store = store

    async def sync(self, session: Session) -> None:
        session.profile_state = await self._sync(session)

    async def _sync(self, session: Session) -> ProfileSyncState:
        if session.record.profile_consent is not True:
            return sync_state(session, "private")  # no consent: nothing is read or written for ourselves
        caps = session.wire_caps
        if caps is None:
            return sync_state(session, "pending")  # the hydrate asks again once connected
        pcaps = caps.profile
        if pcaps is None or not pcaps.enabled:
            return sync_state(session, "disabled")
        if session.profile_unsupported:
            return sync_state(session, "unsupported")
        stored = await asyncio.to_thread(self.store.get, session.member)
        if stored is None:
            return sync_state(session, "pending", "profile_not_set")
        name = stored.profile.display_name
        if pcaps.display_name is not None and not (
            pcaps.display_name.min_length <= len(name) <= pcaps.display_name.max_length
        ):
            return sync_state(session, "rejected", "display_name_invalid")
        ctx = {"member": session.member, "server_id": session.server_id}
        try:
            for attempt in (1, 2):
                remote = session.own_profile or await session.backend.own_profile()
                session.own_profile = remote
                doc = await self._wanted(session, stored, remote, pcaps)
                if doc is None:
                    return sync_state(session, "published", version=remote.profile_version)
                if session.record.profile_consent is not True:
                    return sync_state(session, "private")  # withdrawn meanwhile: write nothing
                try:
                    updated = await session.backend.put_own_profile(doc, remote.profile_version)
                except BackendError as exc:
                    if attempt == 1 and exc.status == 409:
                        session.own_profile = None  # someone else changed it: read again, retry once
                        continue
                    if attempt == 1 and exc.code == "avatar_asset_not_found":
                        await asyncio.to_thread(self.store.forget_server, session.member, session.server_id)
                        continue  # the server lost our asset: upload again, retry once
                    raise
                session.own_profile = updated
                log.info("profile published", extra={**ctx, "profile_version": updated.profile_version})
                await session.emit_profile(domain.profile_of(updated, session.backend.base_url))
                return sync_state(session, "published", version=updated.profile_version)
            return sync_state(session, "failed", "profile_conflict")
        except CommandError as exc:  # the avatar cannot be converted for this server
            log.warning("profile not published", extra={**ctx, "code": exc.code})
            return sync_state(session, "rejected", exc.code)
        except BackendError as exc:
            if isinstance(exc, Unsupported) or exc.status in UNSUPPORTED_STATUSES:
                session.profile_unsupported = True
                log.info("profile sync unsupported", extra={**ctx, "status": exc.status})
                return sync_state(session, "unsupported")
            log.warning("profile publish failed", extra={**ctx, "code": exc.code, "status": exc.status})
            state = "rejected" if exc.code in REJECTED_CODES else "failed"
            return sync_state(session, state, exc.code)

    async def _wanted(
        self,
        session: Session,
        stored: StoredProfile,
        remote: wire.Profile,
        pcaps: wire.CapabilityProfile,
    ) -> dict[str, Any] | None:
        """The ``PUT`` body that makes the server show the stored profile; ``None`` when it does.
        Uploads the avatar first when the server does not hold the current image yet."""
        profile = stored.profile
        modes = set(pcaps.avatar_modes) or {"generated", "uploaded"}
        name = profile.display_name
        doc: dict[str, Any] = {"display_name": name}
        if (
            profile.avatar_mode == "uploaded"
            and "uploaded" in modes
            and stored.image
            and profile.avatar_sha256
        ):
            known = await asyncio.to_thread(self.store.asset, session.member, session.server_id)
            asset = known[1] if known is not None and known[0] == profile.avatar_sha256 else None
            if (
                asset is not None
                and remote.display_name == name
                and remote.avatar_mode == "uploaded"
                and remote.avatar_asset_id == asset
            ):
                return None
            if asset is None and session.record.profile_consent is True:
                prepared = await asyncio.to_thread(prepare_avatar, stored.image, pcaps.avatar_upload)
                uploaded = await session.backend.upload_avatar(
                    prepared.file_name, prepared.data, prepared.content_type
                )
                asset = uploaded.avatar_asset_id
                await asyncio.to_thread(
                    self.store.remember_asset, session.member, session.server_id, profile.avatar_sha256, asset
                )
            doc.update(avatar_mode="uploaded", avatar_preset_id=None, avatar_asset_id=asset)
            return doc
        if "generated" in modes and profile.avatar_preset_id in AVATAR_PRESETS:
            preset = profile.avatar_preset_id
            if (
                remote.display_name == name
                and remote.avatar_mode == "generated"
                and remote.avatar_preset_id == preset
            ):
                return None
            doc.update(avatar_mode="generated", avatar_preset_id=preset, avatar_asset_id=None)
            return doc
        # The server takes neither of our avatar modes: publish the name, keep its avatar.
        if remote.display_name == name:
            return None
        if remote.avatar_mode == "uploaded" and remote.avatar_asset_id:
            doc.update(avatar_mode="uploaded", avatar_preset_id=None, avatar_asset_id=remote.avatar_asset_id)
        else:
            preset = (
                remote.avatar_preset_id
                if remote.avatar_preset_id in AVATAR_PRESETS
                else profile.avatar_preset_id
            )
            doc.update(avatar_mode="generated", avatar_preset_id=preset, avatar_asset_id=None)
        return doc
