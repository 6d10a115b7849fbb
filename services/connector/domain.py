"""Plain domain rules of the connector (no I/O; unit-tested directly).

- ``assess_trust`` / ``disclosure``: what a member is told before joining (features 2.4 and 1.6:
  trust warnings and the identity disclosure; lasting conditions such as the HTTPS warning become
  banners, not transient text: docs/product-rules.md D15);
- ``snapshot_of`` / ``groups_of`` / ``message_of`` / ``profile_of``: backend payloads (validated
  ``contracts.wire`` models) → normalized bus contracts, keyed by the member's chosen server id;
- ``RateLimiter``: client-side send throttle per (member, server) from ``rate_limit_per_minute``;
- ``check_send``: message size (UTF-8 bytes of the trimmed body) and image checks before sending;
- ``TypingThrottle``: at most one ``is_typing: true`` per 2.5 s per channel;
- ``Backoff``: the reconnect ladder 1, 2, 5, 10, 15 s then 15 s forever, with jitter;
- ``KnownIds``: bounded per-channel record of published message ids (de-duplication, gap fill);
- ``missing_after``: what a history page holds beyond the newest message already known.
"""

from __future__ import annotations

import base64
import binascii
import math
import random
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from services.connector.backend import is_local, rewrite_origin
from services.connector.previews import previews_from_wire
from services.core.bus import CommandError
from services.core.contracts import wire
from services.core.contracts.chat import (
    MAX_ATTACHMENTS,
    AttachmentRef,
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChannelInfo,
    ChatMessage,
    Disclosure,
    MentionRef,
    ReplyRef,
    TrustAssessment,
    UploadedImage,
    UserProfile,
    message_identity,
)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # numbers.md §3: assumed when the server gives none
IMAGE_TYPES = {"image/png": "png", "image/jpeg": "jpeg", "image/gif": "gif"}
TYPING_INTERVAL_S = 2.5
TYPING_EXPIRY_S = 6.0
REFERENCE_BACKOFF_S: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 15.0)

HTTPS_REQUIRED_WARNING = "Server requires HTTPS. Update the backend URL to an HTTPS endpoint."
INSECURE_WARNING = (
    "Connection is not HTTPS. Network operators and server admins may inspect traffic metadata."
)
UNVERIFIED_WARNING = "This server is not verified by its directory."


# -- trust and disclosure --------------------------------------------------------------------------
def assess_trust(base_url: str, https_required: bool, trust_state: str | None) -> TrustAssessment:
    secure = base_url.startswith("https://")
    local = is_local(base_url)
    mismatch = https_required and not secure and not local
    warnings: list[str] = []
    if not secure and not local:
        warnings.append(HTTPS_REQUIRED_WARNING if https_required else INSECURE_WARNING)
    verified = trust_state == "verified"
    if not verified:
        warnings.append(UNVERIFIED_WARNING)
    return TrustAssessment(
        transport_secure=secure,
        local_host=local,
        https_required_mismatch=mismatch,
        verified=verified,
        warnings=warnings,
    )


def disclosure(
    user_uid: str,
    device_id: str,
    uid_mode: Literal["server_scoped", "global"],
    profile_shared: bool,
    origin_scope: str | None = None,
) -> Disclosure:
    """``origin_scope``: the backend URL the uid is scoped to as well, for a server whose id
    collides with one the member joined on another backend (issue #14); the sentence says so."""
    scope = "server-scoped" if uid_mode == "server_scoped" else "global"
    uid = user_uid
    if uid_mode == "server_scoped" and origin_scope:
        uid = (
            f"{user_uid}; scoped to this backend's address, {origin_scope}, as well, because another "
            "server you joined uses the same server id"
        )
    summary = f"This server sees only a {scope} UID ({uid}) and this device's id ({device_id})" + (
        ", plus the display name and avatar you agreed to share."
        if profile_shared
        else "; never your name, avatar or e-mail unless you agree to share your profile with it."
    )
    return Disclosure(
        user_uid=user_uid,
        device_id=device_id,
        uid_mode=uid_mode,
        profile_shared=profile_shared,
        summary=summary,
        origin_scope=origin_scope if uid_mode == "server_scoped" else None,
    )


# -- normalization ---------------------------------------------------------------------------------
def snapshot_of(caps: wire.Capabilities, fetched_at: datetime | None = None) -> CapabilitySnapshot:
    features: dict[str, bool] = {
        "messaging": caps.features.messaging,
        "presence": caps.features.presence,
        "attachments": caps.features.attachments,
        "notifications": caps.features.notifications,
    }
    for name, value in (caps.features.model_extra or {}).items():
        if isinstance(value, bool):
            features[name] = value
    if caps.features.server_creation is not None:
        features["server_creation"] = caps.features.server_creation
    for name in ("read_acks", "mentions"):
        if caps.feature_on(name):
            features[name] = True
    return CapabilitySnapshot(
        server_name=caps.server_name[:200],
        api_version=caps.api_version[:64],
        build_version=caps.build_version[:64],
        build_commit=caps.build_commit[:64],
        max_message_bytes=caps.limits.max_message_bytes,
        max_upload_bytes=caps.limits.max_upload_bytes,
        rate_limit_per_minute=caps.limits.rate_limit_per_minute,
        features=features,
        profile_enabled=bool(caps.profile and caps.profile.enabled),
        https_required=caps.security.https_required,
        fetched_at=fetched_at or datetime.now(UTC),
    )


def version_key(caps: CapabilitySnapshot) -> tuple[str, str, str]:
    return (caps.api_version, caps.build_version, caps.build_commit)


CHANNEL_ID_MAX = 128  # ``EventEnvelope.channel_id``


def _usable_id(value: str) -> bool:
    return 0 < len(value) <= CHANNEL_ID_MAX and value.isprintable()


def groups_of(channels: wire.ChannelList) -> list[ChannelGroupInfo]:
    """The channel tree; groups and channels whose ids the stack cannot carry (empty, longer than
    128 characters, control characters) are left out."""
    groups: list[ChannelGroupInfo] = []
    for group in channels.groups:
        if not _usable_id(group.id):
            continue
        kind: Literal["text", "voice"] = "voice" if group.kind == "voice" else "text"
        infos = [
            ChannelInfo(
                id=ch.id,
                name=ch.name,
                type="voice" if ch.type == "voice" else "text",
                group_id=group.id,
                unread_count=ch.unread_count,
            )
            for ch in group.channels
            if ch.type in ("text", "voice") and _usable_id(ch.id)
        ]
        groups.append(ChannelGroupInfo(id=group.id, label=group.label, kind=kind, channels=infos))
    return groups


def text_channels(groups: Sequence[ChannelGroupInfo]) -> list[str]:
    seen: list[str] = []
    for group in groups:
        for ch in group.channels:
            if ch.type == "text" and ch.id not in seen:
                seen.append(ch.id)
    return seen


def parse_time(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return datetime.fromtimestamp(0, UTC)
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def identity_of(msg: wire.Message) -> str:
    """A backend message's identity (id and creation time; ids repeat: ``message_identity``)."""
    return message_identity(msg.id, parse_time(msg.created_at))


def message_of(msg: wire.Message, server_id: str, base_url: str) -> ChatMessage:
    reply = None
    if msg.reply_to is not None:
        reply = ReplyRef(
            message_id=msg.reply_to.message_id,
            author_uid=msg.reply_to.author_uid,
            preview_text=msg.reply_to.preview_text,
            is_unavailable=msg.reply_to.is_unavailable,
        )
    attachments = [
        AttachmentRef(
            attachment_id=a.attachment_id,
            file_name=a.file_name,
            content_type=a.content_type,
            bytes=a.bytes,
            width=a.width,
            height=a.height,
            url=rewrite_origin(a.url, base_url),
        )
        for a in (msg.attachments or [])
    ]
    mentions = None
    if msg.mentions is not None:
        mentions = [
            MentionRef(
                type="channel" if m.type == "channel" else "user",
                token=m.token,
                target_id=m.target_id,
                display_text=m.display_text,
            )
            for m in msg.mentions
        ]
    return ChatMessage(
        id=msg.id,
        server_id=server_id,
        channel_id=msg.channel_id,
        author_uid=msg.author_uid,
        body=msg.body,
        created_at=parse_time(msg.created_at),
        reply_to=reply,
        attachments=attachments,
        mentions=mentions,
        # Profile B "rich message fields": the server's own cards (then nothing is scraped)
        link_previews=previews_from_wire((msg.model_extra or {}).get("link_previews")),
    )


def profile_of(p: wire.Profile | wire.ProfileUpdatedPayload, base_url: str) -> UserProfile:
    return UserProfile(
        user_uid=p.user_uid,
        display_name=p.display_name,
        avatar_mode=p.avatar_mode,
        avatar_preset_id=p.avatar_preset_id,
        avatar_asset_id=p.avatar_asset_id,
        avatar_url=rewrite_origin(p.avatar_url, base_url) or None if p.avatar_url else None,
        profile_version=p.profile_version,
        updated_at=p.updated_at,
    )


def chunks(items: Sequence[str], size: int = 100) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


# -- sending ---------------------------------------------------------------------------------------
@dataclass
class RateLimiter:
    """Sliding one-minute window of sends per key (member, server)."""

    clock: object = time.monotonic
    _sent: dict[tuple[str, str], deque[float]] = field(default_factory=dict)

    def _now(self) -> float:
        clock = self.clock
        assert callable(clock)
        return float(clock())

    def check(self, key: tuple[str, str], per_minute: int | None) -> float:
        """0 when a send may go now (and records it); else the seconds until one may."""
        if not per_minute or per_minute <= 0:
            return 0.0
        now = self._now()
        window = self._sent.setdefault(key, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= per_minute:
            return max(0.001, window[0] + 60.0 - now)
        window.append(now)
        return 0.0

    def forget(self, key: tuple[str, str]) -> None:
        self._sent.pop(key, None)


def rate_limited_error(wait_s: float, per_minute: int, now: datetime | None = None) -> CommandError:
    at = (now or datetime.now(UTC)).timestamp() + wait_s
    when = datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
    return CommandError(
        "rate_limited",
        f"Sending is held back: this server allows {per_minute} messages per minute. "
        f"Retry after {when} (in {math.ceil(wait_s)} s).",
        retryable=True,
    )


def format_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n / (1024 * 1024):.2f} MB"


def _sniff(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    return None


def check_send(
    body: str,
    images: Sequence[UploadedImage],
    caps: CapabilitySnapshot,
) -> tuple[str, list[tuple[str, bytes, str]]]:
    """Validate a send before any request; return the trimmed body and decoded images."""
    text = body.strip()
    size = len(text.encode("utf-8"))
    limit = caps.max_message_bytes
    if limit is not None and limit > 0 and size > limit:
        raise CommandError(
            "message_too_large",
            f"Message is too large. Max {format_bytes(limit)} ({size} bytes given).",
            retryable=False,
        )
    if len(images) > MAX_ATTACHMENTS:
        raise CommandError("too_many_images", f"Up to {MAX_ATTACHMENTS} images per message.")
    if images and caps.features.get("attachments") is False:
        raise CommandError("attachments_unsupported", "This server does not accept attachments.")
    upload_limit = caps.max_upload_bytes or DEFAULT_UPLOAD_LIMIT
    decoded: list[tuple[str, bytes, str]] = []
    for index, image in enumerate(images, start=1):
        declared = image.content_type.split(";")[0].strip().lower()
        try:
            data = base64.b64decode(image.data_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise CommandError("invalid_image", f"Image {index} is not valid base64 data.") from exc
        sniffed = _sniff(data)
        if declared not in IMAGE_TYPES or sniffed is None or sniffed != declared:
            raise CommandError(
                "image_type_unsupported", f"Image {index}: use PNG, JPEG or GIF (this server's types)."
            )
        if len(data) > upload_limit:
            raise CommandError(
                "image_too_large", f"Image {index} is too large. Max {format_bytes(upload_limit)}."
            )
        name = (
            image.file_name.strip().replace("/", "_").replace("\\", "_")
            or f"image-{index}.{IMAGE_TYPES[declared]}"
        )
        decoded.append((name, data, declared))
    if not text and not decoded:
        raise CommandError("message_empty", "The message is empty.")
    return text, decoded


@dataclass
class TypingThrottle:
    """At most one ``is_typing: true`` per ``interval_s`` per channel; ``false`` always passes."""

    interval_s: float = TYPING_INTERVAL_S
    clock: object = time.monotonic
    _last_true: dict[str, float] = field(default_factory=dict)

    def should_send(self, channel_id: str, is_typing: bool) -> bool:
        clock = self.clock
        assert callable(clock)
        now = float(clock())
        if not is_typing:
            self._last_true.pop(channel_id, None)
            return True
        last = self._last_true.get(channel_id)
        if last is not None and now - last < self.interval_s:
            return False
        self._last_true[channel_id] = now
        return True


# -- reconnect -------------------------------------------------------------------------------------
@dataclass
class Backoff:
    """The reference ladder (1, 2, 5, 10, 15 s, then 15 s for ever) with ±``jitter`` spread."""

    ladder: tuple[float, ...] = REFERENCE_BACKOFF_S
    jitter: float = 0.2
    attempt: int = 0

    def next_delay(self) -> float:
        base = self.ladder[min(self.attempt, len(self.ladder) - 1)]
        self.attempt += 1
        return max(0.0, base * random.uniform(1 - self.jitter, 1 + self.jitter))

    def reset(self) -> None:
        self.attempt = 0


# -- de-duplication and gap fill -------------------------------------------------------------------
@dataclass
class KnownIds:
    """Messages already published, per channel, in publish order (bounded per channel), by their
    identity (``message_identity``: id and creation time — a backend's ids repeat)."""

    per_channel: int = 5000
    _ids: dict[str, OrderedDict[str, None]] = field(default_factory=dict)

    def __contains__(self, key: tuple[str, str]) -> bool:
        channel_id, message_id = key
        return message_id in self._ids.get(channel_id, ())

    def add(self, channel_id: str, message_id: str) -> None:
        ids = self._ids.setdefault(channel_id, OrderedDict())
        ids[message_id] = None
        ids.move_to_end(message_id)
        while len(ids) > self.per_channel:
            ids.popitem(last=False)

    def discard(self, channel_id: str, message_id: str) -> None:
        self._ids.get(channel_id, OrderedDict()).pop(message_id, None)

    def newest(self, channel_id: str) -> str | None:
        ids = self._ids.get(channel_id)
        if not ids:
            return None
        return next(reversed(ids))

    def count(self, channel_id: str) -> int:
        return len(self._ids.get(channel_id, ()))

    def channels(self) -> list[str]:
        return list(self._ids)


@dataclass
class SeenOnce:
    """A bounded set of keys: ``first(key)`` is True the first time a key is seen (log once)."""

    size: int = 4096
    _keys: OrderedDict[tuple[str, ...], None] = field(default_factory=OrderedDict)

    def first(self, key: tuple[str, ...]) -> bool:
        if key in self._keys:
            self._keys.move_to_end(key)
            return False
        self._keys[key] = None
        while len(self._keys) > self.size:
            self._keys.popitem(last=False)
        return True


def missing_after(
    page: Iterable[wire.Message], channel_id: str, anchor: str | None, known: KnownIds
) -> tuple[list[wire.Message], list[wire.Message], bool]:
    """Split a history page (oldest first) against what is already published (``anchor`` and
    ``known`` hold identities, ``identity_of``).

    Returns ``(late, fresh, found)``: ``fresh`` are the unknown messages after ``anchor`` (the newest
    message already published), in order; ``late`` are unknown messages *before* the anchor but
    after the oldest known message of the page (events a backend dropped silently, e.g. when its
    per-socket queue overflowed); ``found`` says whether the anchor is in the page. Without an
    anchor (or when it is not in the page) every unknown message is ``fresh``. Messages of another
    channel and repeated ids are ignored."""
    items: list[wire.Message] = []
    keys: list[str] = []
    seen: set[str] = set()
    for msg in page:
        if msg.channel_id != channel_id:
            continue
        key = identity_of(msg)
        if key not in seen:
            seen.add(key)
            items.append(msg)
            keys.append(key)
    anchor_index = next((i for i, k in enumerate(keys) if k == anchor), None) if anchor else None
    if anchor_index is None:
        return [], [m for m, k in zip(items, keys, strict=True) if (channel_id, k) not in known], False
    first_known = next(i for i, k in enumerate(keys) if (channel_id, k) in known or k == anchor)
    late = [items[i] for i in range(first_known, anchor_index) if (channel_id, keys[i]) not in known]
    fresh = [items[i] for i in range(anchor_index + 1, len(items)) if (channel_id, keys[i]) not in known]
    return late, fresh, True
