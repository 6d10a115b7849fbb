"""In-memory state of one devserver instance, with optional JSON persistence.

Holds what the public backend keeps in memory (wire §1): the directory and channel tree, history,
attachments, profiles and avatars, per-uid leaves — plus the Profile B state (read-acks, owners,
ownership claims, the realtime event counter).  All methods are synchronous and run on the event
loop thread; there is no locking.

Errors are raised as ``WireError(status, code, message, retryable)`` carrying the backend's exact
code and message text; the HTTP layer turns them into the flat error envelope.

Persistence (``--state-file PATH``): the public backend forgets everything on restart; with a state
file the devserver reloads its state instead of the seed.  The JSON document is written atomically
(temporary file + ``os.replace``) shortly after every change (changes within ``FLUSH_DELAY_S`` are
coalesced) and on shutdown; attachment and avatar bytes live beside it in ``PATH.blobs/``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from services.core.contracts.wire import Attachment, Message, ReplyTo
from services.core.paths import write_atomic
from services.devserver.config import DevserverConfig
from services.devserver.gojson import go_truncate_bytes
from services.devserver.images import decode_dimensions, normalize_content_type
from services.devserver.seeds import Seed, build_seed, derive_icon_text
from services.devserver.wire_http import rfc3339

STATE_VERSION = 1
FLUSH_DELAY_S = 0.05

MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
MAX_ATTACHMENTS = 4
ATTACHMENT_TYPES = frozenset({"image/png", "image/jpeg", "image/gif"})
MAX_AVATAR_BYTES = 2 * 1024 * 1024
MAX_AVATAR_SIDE = 1024
AVATAR_TYPES = frozenset({"image/png", "image/jpeg"})
AVATAR_PRESETS = ("horizon", "reef", "mint", "ember", "violet", "slate")
REPLY_PREVIEW_RUNES = 220
OWNERSHIP_CLAIM_TTL = timedelta(minutes=5)
BANNER_PRESETS = frozenset(
    {"", "ocean", "sunset", "ember", "forest", "midnight", "orchid", "teal", "gold", "slate"}
)


class WireError(Exception):
    """A handler-level error with the backend's status, code and message text."""

    def __init__(self, status: int, code: str, message: str, retryable: bool = False) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.retryable = retryable


def now_utc() -> datetime:
    return datetime.now(UTC)


def short_id(prefix: str) -> str:
    """``prefix`` + the first 8 characters of a random UUID (32 bits, as the backend does)."""
    return prefix + uuid.uuid4().hex[:8]


def is_letter_or_digit(ch: str) -> bool:
    return unicodedata.category(ch)[0] in ("L", "N")


def display_name_valid(name: str) -> bool:
    """2-32 runes of ``[\\p{L}\\p{N} ._\\-]``."""
    if not 2 <= len(name) <= 32:
        return False
    return all(ch in " ._-" or is_letter_or_digit(ch) for ch in name)


def default_display_name(uid: str) -> str:
    if uid.startswith("uid_") and len(uid.encode()) > 4:
        return "User " + go_truncate_bytes(uid[4:], 10)
    return "User " + go_truncate_bytes(uid, 14)


def default_preset(uid: str) -> str:
    return AVATAR_PRESETS[sum(ord(ch) for ch in uid) % len(AVATAR_PRESETS)]


_WS_LINE = re.compile(r"\r")


def reply_preview(body: str) -> str:
    """Whitespace-collapsed preview of at most 220 runes (219 + ``…``)."""
    lines = _WS_LINE.sub("", body.strip()).split("\n")
    preview = " ".join(part for part in (line.strip() for line in lines) if part)
    if len(preview) <= REPLY_PREVIEW_RUNES:
        return preview
    return preview[: REPLY_PREVIEW_RUNES - 1] + "…"


def go_trim(text: str) -> str:
    """``strings.TrimSpace``: Unicode white space (Python's ``str.strip`` is close enough)."""
    return text.strip()


def extract_mentions(body: str) -> list[dict[str, Any]]:
    """``@token`` mentions (``[\\p{L}\\p{N}_.-]+`` not preceded by such a rune); ``@here``/``@channel``
    are channel mentions.  ``range`` is in UTF-8 byte offsets of the body, as the Go reference."""

    def token_rune(ch: str) -> bool:
        return ch in "_-." or is_letter_or_digit(ch)

    mentions: list[dict[str, Any]] = []
    i = 0
    n = len(body)
    while i < n:
        if body[i] != "@" or (i > 0 and token_rune(body[i - 1])):
            i += 1
            continue
        j = i + 1
        while j < n and token_rune(body[j]):
            j += 1
        if j == i + 1:
            i += 1
            continue
        raw = body[i + 1 : j]
        start = len(body[:i].encode())
        end = start + len(body[i:j].encode())
        lowered = raw.lower()
        mention: dict[str, Any]
        if lowered in ("here", "channel"):
            mention = {
                "type": "channel",
                "token": "@" + lowered,
                "target_id": lowered,
                "display_text": lowered,
            }
        else:
            mention = {"type": "user", "token": "@" + raw, "target_id": raw, "display_text": raw}
        mention["range"] = {"start": start, "end": end}
        mentions.append(mention)
        i = j
    return mentions


@dataclass
class Upload:
    """One ``files`` part of a message-create request."""

    file_name: str
    content_type: str
    data: bytes


@dataclass
class ServerState:
    entry: dict[str, Any]  # ServerEntry fields incl. description / banner_preset
    groups: list[dict[str, Any]]
    members: list[dict[str, str]]
    owner_uid: str = ""
    requires_claim: bool = False


@dataclass
class Blob:
    meta: dict[str, Any]
    data: bytes
    channel_id: str = ""


@dataclass
class State:
    servers: list[ServerState] = field(default_factory=list)
    messages: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    attachments: dict[str, Blob] = field(default_factory=dict)
    avatars: dict[str, Blob] = field(default_factory=dict)
    profiles: dict[str, dict[str, Any]] = field(default_factory=dict)
    left: dict[str, dict[str, str]] = field(default_factory=dict)
    read_acks: dict[str, dict[str, Any]] = field(default_factory=dict)
    claims: dict[str, dict[str, str]] = field(default_factory=dict)
    event_seq: int = 0
    capabilities_server_id: str = ""
    capabilities_server_name: str = ""


class Store:
    """State of one devserver instance (see module docstring)."""

    def __init__(self, cfg: DevserverConfig, *, clock: Callable[[], datetime] = now_utc) -> None:
        self.cfg = cfg
        self.clock = clock
        self.started_at = clock()
        self._flush_handle: asyncio.TimerHandle | None = None
        self._dirty = False
        self._ids_made = 0  # new message ids made (``message_id_cycle``)
        self.state = State()
        loaded = False
        if cfg.state_file is not None and Path(cfg.state_file).exists():
            self._load(Path(cfg.state_file))
            loaded = True
        if not loaded:
            self._seed(build_seed(cfg.seed, cfg.server_id, cfg.name))
        self._index()

    # ------------------------------------------------------------------ seeding and indexing

    def _seed(self, seed: Seed) -> None:
        st = self.state
        st.capabilities_server_id = seed.capabilities_server_id
        st.capabilities_server_name = seed.capabilities_server_name
        for server in seed.servers:
            entry = {
                "server_id": server.server_id,
                "display_name": server.display_name,
                "icon_text": server.icon_text,
                "trust_state": "verified",
                "identity_handshake_strategy": "challenge_signature",
                "user_identifier_policy": "server_scoped",
                "description": server.description,
                "banner_preset": server.banner_preset,
            }
            st.servers.append(ServerState(entry, server.groups, server.members))
            for group in server.groups:
                for channel in group["channels"]:
                    st.messages.setdefault(channel["id"], [])
            for channel_id, rows in server.messages.items():
                for mid, author, body, minutes in rows:
                    created = rfc3339(self.started_at - timedelta(minutes=minutes))
                    msg: dict[str, Any] = {
                        "id": mid,
                        "channel_id": channel_id,
                        "author_uid": author,
                        "body": body,
                        "created_at": created,
                    }
                    st.messages[channel_id].append(msg)

    def _index(self) -> None:
        self._channel_type: dict[str, str] = {}
        self._channel_server: dict[str, str] = {}
        for server in self.state.servers:
            sid = server.entry["server_id"]
            for group in server.groups:
                for channel in group["channels"]:
                    self._channel_type[channel["id"]] = channel["type"]
                    self._channel_server[channel["id"]] = sid
                    self.state.messages.setdefault(channel["id"], [])

    # ------------------------------------------------------------------ RTC engineer interface

    def channel_type(self, channel_id: str) -> str | None:
        """``"text"`` / ``"voice"`` for a known channel, ``None`` otherwise."""
        return self._channel_type.get(channel_id)

    def has_server(self, server_id: str) -> bool:
        return any(s.entry["server_id"] == server_id for s in self.state.servers)

    @property
    def default_server_id(self) -> str:
        """Server id of the capability document (also the join-ticket default)."""
        return self.state.capabilities_server_id

    @property
    def server_name(self) -> str:
        return self.state.capabilities_server_name

    def server_for_channel(self, channel_id: str) -> str | None:
        return self._channel_server.get(channel_id)

    # ------------------------------------------------------------------ directory

    def server(self, server_id: str) -> ServerState:
        for server in self.state.servers:
            if server.entry["server_id"] == server_id:
                return server
        raise WireError(404, "server_not_found", f"unknown server id: {server_id}")

    def list_servers(self, uid: str) -> list[dict[str, Any]]:
        left = self.state.left.get(uid, {})
        return [dict(s.entry) for s in self.state.servers if s.entry["server_id"] not in left]

    def leave_server(self, server_id: str, uid: str) -> str:
        self.server(server_id)
        left_at = rfc3339(self.clock())
        self.state.left.setdefault(uid, {})[server_id] = left_at
        self.mark_dirty()
        return left_at

    def channel_groups(self, server_id: str) -> list[dict[str, Any]]:
        return self.server(server_id).groups

    def members(self, server_id: str) -> list[dict[str, str]]:
        return self.server(server_id).members

    # ------------------------------------------------------------------ history

    def history(
        self, channel_id: str, limit: int, before: str | None = None
    ) -> tuple[list[dict[str, Any]], bool]:
        """Newest ``limit`` messages (oldest first), optionally strictly older than ``before``.

        Returns the page and whether older messages exist before it.
        """
        if channel_id not in self._channel_type:
            raise WireError(404, "channel_not_found", f"unknown channel id: {channel_id}")
        messages = self.state.messages.get(channel_id, [])
        end = len(messages)
        if before is not None:
            end = next((i for i, m in enumerate(messages) if m["id"] == before), end)
        start = max(0, end - limit)
        return messages[start:end], start > 0

    def find_message(self, channel_id: str, message_id: str) -> tuple[int, dict[str, Any]] | None:
        for index, message in enumerate(self.state.messages.get(channel_id, [])):
            if message["id"] == message_id:
                return index, message
        return None

    # ------------------------------------------------------------------ messages

    def _new_message_id(self) -> str:
        """``msg_`` + 8 hex digits: random as the public backend, or cycling (``message_id_cycle``)."""
        cycle = self.cfg.message_id_cycle
        if cycle <= 0:
            return short_id("msg_")
        self._ids_made += 1
        return f"msg_{(self._ids_made - 1) % cycle:08x}"

    def create_message(
        self,
        channel_id: str,
        author_uid: str,
        body: str,
        uploads: list[Upload],
        reply_to_id: str,
        *,
        with_mentions: bool = False,
    ) -> dict[str, Any]:
        """Validate and store a message (wire §8.3 order); returns its wire dict."""
        body = go_trim(body)
        reply_to_id = go_trim(reply_to_id)
        ctype = self._channel_type.get(channel_id)
        if ctype is None:
            raise WireError(400, "message_create_failed", f"unknown channel id: {channel_id}")
        if ctype != "text":
            raise WireError(400, "message_create_failed", "messages can only be sent to text channels")
        if len(uploads) > MAX_ATTACHMENTS:
            raise WireError(400, "attachment_count_exceeded", "too many attachments in one message")
        attachments: list[dict[str, Any]] = []
        for upload in uploads:
            attachments.append(self._store_attachment(channel_id, upload))
        if not body and not attachments:
            raise WireError(400, "message_empty", "message body or attachment is required")
        reply: dict[str, Any] | None = None
        if reply_to_id:
            found = self.find_message(channel_id, reply_to_id)
            if found is None:
                raise WireError(400, "reply_target_not_found", "reply target message not found")
            target = found[1]
            reply = ReplyTo(
                message_id=target["id"],
                author_uid=target["author_uid"],
                author_display_name=target["author_uid"],
                preview_text=reply_preview(target["body"]),
                is_unavailable=False,
            ).model_dump()
        message = Message(
            id=self._new_message_id(),
            channel_id=channel_id,
            author_uid=author_uid,
            body=body,
            created_at=rfc3339(self.clock()),
            reply_to=ReplyTo.model_validate(reply) if reply else None,
            mentions=None,
            attachments=[Attachment.model_validate(a) for a in attachments] or None,
        ).model_dump(exclude_none=True)
        if with_mentions:
            mentions = extract_mentions(body)
            if mentions:
                # keep Go struct order: mentions sit between reply_to and attachments
                ordered = {k: v for k, v in message.items() if k != "attachments"}
                ordered["mentions"] = mentions
                if "attachments" in message:
                    ordered["attachments"] = message["attachments"]
                message = ordered
        self.state.messages[channel_id].append(message)
        self.mark_dirty()
        return message

    def _store_attachment(self, channel_id: str, upload: Upload) -> dict[str, Any]:
        data = upload.data
        if not data:
            raise WireError(400, "attachment_invalid_image", "attachment image payload is invalid")
        if len(data) > MAX_ATTACHMENT_BYTES:
            raise WireError(413, "attachment_too_large", "attachment exceeds max upload size")
        ctype = normalize_content_type(upload.content_type, data)
        if ctype not in ATTACHMENT_TYPES:
            raise WireError(415, "attachment_type_unsupported", "attachment mime type is unsupported")
        dims = decode_dimensions(data)
        if dims is None:
            raise WireError(400, "attachment_invalid_image", "attachment image payload is invalid")
        att_id = short_id("att_")
        name = go_trim(upload.file_name)
        if name:
            name = name.rstrip("/").rsplit("/", 1)[-1] or "/"
        else:
            name = {"image/jpeg": "image.jpg", "image/gif": "image.gif"}.get(ctype, "image.png")
        meta = Attachment(
            attachment_id=att_id,
            file_name=name,
            url=f"{self.cfg.base_url}/v1/channels/{channel_id}/attachments/{att_id}",
            width=dims[0],
            height=dims[1],
            content_type=ctype,
            bytes=len(data),
        ).model_dump()
        self.state.attachments[att_id] = Blob(meta, data, channel_id)
        self._write_blob("att", att_id, data)
        return meta

    def attachment(self, channel_id: str, attachment_id: str) -> Blob:
        blob = self.state.attachments.get(attachment_id.strip())
        if blob is None or blob.channel_id != channel_id.strip() or not channel_id.strip():
            raise WireError(404, "attachment_not_found", "attachment not found")
        return blob

    def delete_message(self, channel_id: str, message_id: str) -> dict[str, Any]:
        """Profile B: remove a message; replies to it become ``is_unavailable``."""
        if channel_id not in self._channel_type:
            raise WireError(404, "channel_not_found", f"unknown channel id: {channel_id}")
        found = self.find_message(channel_id, message_id)
        if found is None:
            raise WireError(404, "message_not_found", "message not found")
        index, message = found
        del self.state.messages[channel_id][index]
        for other in self.state.messages[channel_id]:
            reply = other.get("reply_to")
            if reply and reply.get("message_id") == message_id:
                reply["is_unavailable"] = True
        self.mark_dirty()
        return message

    # ------------------------------------------------------------------ profiles

    def profile(self, uid: str) -> dict[str, Any]:
        """The canonical profile of ``uid``, created on first read."""
        prof = self.state.profiles.get(uid)
        if prof is None:
            prof = {
                "user_uid": uid,
                "display_name": default_display_name(uid),
                "avatar_mode": "generated",
                "avatar_preset_id": default_preset(uid),
                "avatar_asset_id": None,
                "avatar_url": None,
                "profile_version": 1,
                "updated_at": rfc3339(self.clock()),
            }
            self.state.profiles[uid] = prof
            self.mark_dirty()
        return prof

    def profiles(self, uids: Iterable[str]) -> list[dict[str, Any]]:
        seen: set[str] = set()
        out = []
        for raw in uids:
            uid = raw.strip()
            if not uid or uid in seen:
                continue
            seen.add(uid)
            out.append(self.profile(uid))
        return out

    def update_profile(
        self,
        uid: str,
        display_name: str,
        mode: str,
        preset: str,
        asset_id: str,
        expected_version: int | None,
    ) -> dict[str, Any]:
        """``PUT /v1/profile/me`` after the JSON and ``If-Match`` checks (wire §9 steps 3-7)."""
        display_name = go_trim(display_name)
        if not display_name_valid(display_name):
            raise WireError(400, "display_name_invalid", "display name does not meet policy")
        current = self.profile(uid)
        if expected_version is not None and current["profile_version"] != expected_version:
            raise WireError(409, "profile_conflict", "profile update conflict", retryable=True)
        updated = dict(current)
        updated["display_name"] = display_name
        updated["avatar_mode"] = mode
        if mode == "generated":
            preset = preset.strip()
            if preset not in AVATAR_PRESETS:
                raise WireError(400, "avatar_mode_unsupported", "avatar preset is invalid")
            updated.update(avatar_preset_id=preset, avatar_asset_id=None, avatar_url=None)
        elif mode == "uploaded":
            asset_id = asset_id.strip()
            blob = self.state.avatars.get(asset_id)
            if blob is None:
                raise WireError(400, "avatar_asset_not_found", "avatar asset not found")
            updated.update(
                avatar_preset_id=None, avatar_asset_id=asset_id, avatar_url=blob.meta["avatar_url"]
            )
        else:
            raise WireError(400, "avatar_mode_unsupported", "avatar mode is not supported")
        updated["profile_version"] = current["profile_version"] + 1
        updated["updated_at"] = rfc3339(self.clock())
        self.state.profiles[uid] = updated
        self.mark_dirty()
        return updated

    def upload_avatar(self, declared_type: str, data: bytes) -> dict[str, Any]:
        ctype = normalize_content_type(declared_type, data)
        if ctype not in AVATAR_TYPES:
            raise WireError(415, "avatar_type_unsupported", "avatar mime type is unsupported")
        if not data or len(data) > MAX_AVATAR_BYTES:
            raise WireError(413, "avatar_too_large", "avatar exceeds max upload size")
        dims = decode_dimensions(data, ("png", "jpeg"))
        if dims is None:
            raise WireError(415, "avatar_type_unsupported", "avatar mime type is unsupported")
        if dims[0] > MAX_AVATAR_SIDE or dims[1] > MAX_AVATAR_SIDE:
            raise WireError(400, "avatar_dimensions_exceeded", "avatar dimensions exceed limits")
        asset_id = short_id("asset_")
        meta = {
            "avatar_asset_id": asset_id,
            "avatar_url": f"{self.cfg.base_url}/v1/profile/avatar/{asset_id}",
            "width": dims[0],
            "height": dims[1],
            "content_type": ctype,
            "bytes": len(data),
        }
        self.state.avatars[asset_id] = Blob(meta, data)
        self._write_blob("avatar", asset_id, data)
        self.mark_dirty()
        return meta

    def avatar(self, asset_id: str) -> Blob:
        blob = self.state.avatars.get(asset_id.strip())
        if blob is None:
            raise WireError(404, "avatar_asset_not_found", "avatar asset not found")
        return blob

    # ------------------------------------------------------------------ Profile B: read-acks

    def read_ack(self, channel_id: str, uid: str) -> dict[str, Any]:
        if channel_id not in self._channel_type:
            raise WireError(404, "channel_not_found", f"unknown channel id: {channel_id}")
        ack = self.state.read_acks.get(f"{channel_id}|{uid}")
        return dict(ack) if ack else {"channel_id": channel_id, "user_uid": uid}

    def update_read_ack(self, channel_id: str, uid: str, last_read_id: str) -> tuple[dict[str, Any], bool]:
        """Monotonic read-ack: an older cursor than the stored one is not applied."""
        if channel_id not in self._channel_type:
            raise WireError(404, "channel_not_found", f"unknown channel id: {channel_id}")
        last_read_id = last_read_id.strip()
        messages = self.state.messages.get(channel_id, [])
        cursor = -1
        if not last_read_id:
            if messages:
                last_read_id = messages[-1]["id"]
                cursor = len(messages) - 1
        else:
            found = self.find_message(channel_id, last_read_id)
            if found is None:
                raise WireError(
                    400, "read_ack_cursor_not_found", "last_read_message_id is not in channel history"
                )
            cursor = found[0]
        key = f"{channel_id}|{uid}"
        existing = self.state.read_acks.get(key)
        if existing is not None:
            held = existing.get("cursor_index", -1)
            if cursor < held or (cursor == held and existing.get("last_read_message_id") == last_read_id):
                return dict(existing), False
        ack: dict[str, Any] = {"channel_id": channel_id, "user_uid": uid}
        if last_read_id:
            ack["last_read_message_id"] = last_read_id
        ack["acked_at"] = rfc3339(self.clock())
        if cursor >= 0:
            ack["cursor_index"] = cursor
        self.state.read_acks[key] = ack
        self.mark_dirty()
        return dict(ack), True

    def unread_count(self, channel_id: str, uid: str) -> int:
        """Messages after the uid's read cursor (all messages when never acked), own ones excluded."""
        messages = self.state.messages.get(channel_id, [])
        ack = self.state.read_acks.get(f"{channel_id}|{uid}")
        start = 0
        if ack is not None:
            last = ack.get("last_read_message_id")
            found = self.find_message(channel_id, last) if last else None
            start = found[0] + 1 if found else ack.get("cursor_index", -1) + 1
        return sum(1 for m in messages[start:] if m["author_uid"] != uid)

    def mention_candidates(self, channel_id: str, uid: str, query: str, limit: int) -> list[dict[str, str]]:
        if channel_id not in self._channel_type:
            raise WireError(404, "channel_not_found", f"unknown channel id: {channel_id}")
        q = query.strip().lower().removeprefix("@")
        out: list[dict[str, str]] = []
        for token in ("@here", "@channel"):
            if q in token[1:]:
                out.append(
                    {"type": "channel", "token": token, "target_id": token[1:], "display_text": token[1:]}
                )
        known: set[str] = {uid} if uid else set()
        server_id = self._channel_server.get(channel_id)
        for cid, sid in self._channel_server.items():
            if sid == server_id and self._channel_type.get(cid) == "text":
                known.update(m["author_uid"] for m in self.state.messages.get(cid, []))
        known.update(self.state.profiles)
        for candidate in sorted(u for u in known if q in u.lower()):
            out.append(
                {"type": "user", "token": "@" + candidate, "target_id": candidate, "display_text": candidate}
            )
        return out[:limit]

    # ------------------------------------------------------------------ Profile B: servers and layout

    def create_server(self, uid: str, display_name: str, description: str, banner: str) -> dict[str, Any]:
        display_name = display_name.strip()
        description = description.strip()
        banner = banner.strip().lower() or "ocean"
        if not display_name or len(display_name) > 100:
            raise WireError(400, "invalid_server_name", "server display name is invalid")
        if len(description) > 280:
            raise WireError(400, "invalid_server_description", "server description is invalid")
        if banner not in BANNER_PRESETS:
            raise WireError(400, "invalid_banner_preset", "server banner preset is invalid")
        server_id = str(uuid.uuid4())
        text_id = self._new_channel_id("ch_")
        voice_id = self._new_channel_id("vc_")
        entry = {
            "server_id": server_id,
            "display_name": display_name,
            "icon_text": derive_icon_text(display_name),
            "trust_state": "unverified",
            "identity_handshake_strategy": "challenge_signature",
            "user_identifier_policy": "server_scoped",
            "description": description,
            "banner_preset": banner,
        }
        groups = [
            {
                "id": short_id("grp_"),
                "label": "general",
                "kind": "text",
                "channels": [
                    {"id": text_id, "name": "general", "type": "text"},
                    {"id": voice_id, "name": "General Voice", "type": "voice"},
                ],
            }
        ]
        self.state.servers.append(
            ServerState(entry, groups, [{"id": uid, "name": uid, "status": "online"}], requires_claim=True)
        )
        now = self.clock()
        token = "claim_" + uuid.uuid4().hex
        expires = rfc3339(now + OWNERSHIP_CLAIM_TTL)
        self.state.claims[token] = {"server_id": server_id, "expires_at": expires}
        self._index()
        self.mark_dirty()
        return {
            "server": dict(entry),
            "created_by_uid": uid,
            "created_at": rfc3339(now),
            "ownership_claim": {"token": token, "expires_at": expires},
        }

    def claim_ownership(self, server_id: str, uid: str, token: str) -> dict[str, Any]:
        server = self.server(server_id)
        token = token.strip()
        if not token:
            raise WireError(400, "ownership_claim_invalid", "ownership claim token is invalid")
        claimed = {"server_id": server_id, "owner_user_uid": uid, "claimed_at": rfc3339(self.clock())}
        if not server.requires_claim:
            if server.owner_uid == uid:
                return claimed
            raise WireError(403, "ownership_claim_forbidden", "ownership claim is forbidden")
        claim = self.state.claims.get(token)
        if claim is None or claim["server_id"] != server_id:
            raise WireError(400, "ownership_claim_invalid", "ownership claim token is invalid")
        if rfc3339(self.clock()) > claim["expires_at"]:
            del self.state.claims[token]
            raise WireError(400, "ownership_claim_expired", "ownership claim token has expired")
        server.owner_uid = uid
        server.requires_claim = False
        for other in [t for t, c in self.state.claims.items() if c["server_id"] == server_id]:
            del self.state.claims[other]
        self.mark_dirty()
        return claimed

    def require_owner(self, server: ServerState, uid: str, forbidden: tuple[str, str]) -> None:
        """Seed servers get their first mutating uid as owner; created ones need a claim first."""
        if server.requires_claim:
            if not server.owner_uid:
                raise WireError(403, "ownership_claim_required", "ownership claim is required")
        elif not server.owner_uid:
            server.owner_uid = uid
        if server.owner_uid != uid:
            raise WireError(403, *forbidden)

    def _new_channel_id(self, prefix: str) -> str:
        while True:
            candidate = short_id(prefix)
            if candidate not in self._channel_type:
                return candidate

    def create_channel(
        self, server_id: str, uid: str, group_id: str, name: str, ctype: str
    ) -> dict[str, Any]:
        server = self.server(server_id)
        name = name.strip()
        group_id = group_id.strip()
        if not group_id:
            raise WireError(404, "channel_group_not_found", "channel group not found")
        if not name or len(name) > 100:
            raise WireError(400, "invalid_channel_name", "channel name is invalid")
        if ctype not in ("text", "voice"):
            raise WireError(400, "invalid_channel_type", "channel type is unsupported")
        self.require_owner(
            server, uid, ("channel_create_forbidden", "requester does not have permission to create channels")
        )
        group = next((g for g in server.groups if g["id"] == group_id), None)
        if group is None:
            raise WireError(404, "channel_group_not_found", "channel group not found")
        channel = {
            "id": self._new_channel_id("vc_" if ctype == "voice" else "ch_"),
            "name": name,
            "type": ctype,
        }
        group["channels"].append(channel)
        self._index()
        self.mark_dirty()
        return {
            "server_id": server_id,
            "group_id": group_id,
            "channel": dict(channel),
            "created_by_uid": uid,
            "created_at": rfc3339(self.clock()),
        }

    def create_category(self, server_id: str, uid: str, name: str, kind: str) -> dict[str, Any]:
        server = self.server(server_id)
        name = name.strip()
        kind = kind.strip().lower() or "text"
        if not name or len(name) > 100:
            raise WireError(400, "invalid_category_name", "category name is invalid")
        if kind not in ("text", "voice"):
            raise WireError(400, "invalid_category_kind", "category kind is unsupported")
        self.require_owner(
            server,
            uid,
            ("category_create_forbidden", "requester does not have permission to create categories"),
        )
        group = {"id": short_id("grp_"), "label": name, "kind": kind, "channels": []}
        server.groups.append(group)
        self.mark_dirty()
        return {
            "server_id": server_id,
            "group": group,
            "created_by_uid": uid,
            "created_at": rfc3339(self.clock()),
        }

    def rename_category(self, server_id: str, uid: str, group_id: str, name: str) -> dict[str, Any]:
        server = self.server(server_id)
        name = name.strip()
        if not name or len(name) > 100:
            raise WireError(400, "invalid_category_name", "category name is invalid")
        self.require_owner(
            server,
            uid,
            ("category_update_forbidden", "requester does not have permission to update categories"),
        )
        group = next((g for g in server.groups if g["id"] == group_id.strip()), None)
        if group is None:
            raise WireError(404, "category_not_found", "category was not found")
        group["label"] = name
        self.mark_dirty()
        return {
            "server_id": server_id,
            "group": group,
            "updated_by_uid": uid,
            "updated_at": rfc3339(self.clock()),
        }

    def delete_category(self, server_id: str, uid: str, group_id: str) -> dict[str, Any]:
        """Remove an empty category (its channels, if any, move to the first remaining one)."""
        server = self.server(server_id)
        self.require_owner(
            server,
            uid,
            ("category_update_forbidden", "requester does not have permission to update categories"),
        )
        index = next((i for i, g in enumerate(server.groups) if g["id"] == group_id.strip()), None)
        if index is None:
            raise WireError(404, "category_not_found", "category was not found")
        if len(server.groups) == 1 and server.groups[0]["channels"]:
            raise WireError(400, "invalid_channel_layout", "channel layout payload is invalid")
        group = server.groups.pop(index)
        if group["channels"]:
            server.groups[0]["channels"].extend(group["channels"])
        self.mark_dirty()
        return {
            "server_id": server_id,
            "groups": server.groups,
            "updated_by_uid": uid,
            "updated_at": rfc3339(self.clock()),
        }

    def update_layout(self, server_id: str, uid: str, layout: list[tuple[str, list[str]]]) -> dict[str, Any]:
        server = self.server(server_id)
        self.require_owner(
            server,
            uid,
            ("channel_layout_forbidden", "requester does not have permission to update channel layout"),
        )
        invalid = WireError(400, "invalid_channel_layout", "channel layout payload is invalid")
        groups = {g["id"]: g for g in server.groups}
        channels = {c["id"]: c for g in server.groups for c in g["channels"]}
        if len(layout) != len(groups):
            raise invalid
        seen_groups: set[str] = set()
        seen_channels: set[str] = set()
        result = []
        for gid, channel_ids in layout:
            gid = gid.strip()
            if gid not in groups or gid in seen_groups:
                raise invalid
            seen_groups.add(gid)
            picked = []
            for cid in channel_ids:
                cid = cid.strip()
                if cid not in channels or cid in seen_channels:
                    raise invalid
                seen_channels.add(cid)
                picked.append(channels[cid])
            src = groups[gid]
            result.append({"id": src["id"], "label": src["label"], "kind": src["kind"], "channels": picked})
        if seen_channels != set(channels):
            raise invalid
        server.groups[:] = result
        self.mark_dirty()
        return {
            "server_id": server_id,
            "groups": result,
            "updated_by_uid": uid,
            "updated_at": rfc3339(self.clock()),
        }

    def settings(self, server_id: str) -> dict[str, str]:
        entry = self.server(server_id).entry
        return {
            "server_id": server_id,
            "display_name": entry["display_name"],
            "description": entry.get("description", ""),
            "banner_preset": entry.get("banner_preset", ""),
        }

    def update_settings(
        self, server_id: str, uid: str, display_name: str, description: str, banner: str
    ) -> dict[str, Any]:
        server = self.server(server_id)
        display_name = display_name.strip()
        description = description.strip()
        banner = banner.strip().lower()
        if not display_name or len(display_name) > 100:
            raise WireError(400, "invalid_server_name", "server display name is invalid")
        if len(description) > 280:
            raise WireError(400, "invalid_server_description", "server description is invalid")
        if banner not in BANNER_PRESETS:
            raise WireError(400, "invalid_banner_preset", "server banner preset is invalid")
        self.require_owner(
            server,
            uid,
            ("server_settings_forbidden", "requester does not have permission to update server settings"),
        )
        server.entry.update(
            display_name=display_name,
            description=description,
            banner_preset=banner,
            icon_text=derive_icon_text(display_name, server.entry["icon_text"]),
        )
        self.mark_dirty()
        return {
            "server_id": server_id,
            "display_name": display_name,
            "description": description,
            "banner_preset": banner,
            "updated_by_uid": uid,
            "updated_at": rfc3339(self.clock()),
        }

    # ------------------------------------------------------------------ event ids

    def next_event_id(self) -> int:
        self.state.event_seq += 1
        self.mark_dirty()
        return self.state.event_seq

    # ------------------------------------------------------------------ admin

    def reset(self) -> None:
        """Back to the seed (admin ``reset``); the state file, if any, is rewritten."""
        self.state = State()
        self.started_at = self.clock()
        self._seed(build_seed(self.cfg.seed, self.cfg.server_id, self.cfg.name))
        self._index()
        self.mark_dirty()

    # ------------------------------------------------------------------ persistence

    @property
    def _blob_dir(self) -> Path | None:
        if self.cfg.state_file is None:
            return None
        return Path(str(self.cfg.state_file) + ".blobs")

    def _write_blob(self, kind: str, blob_id: str, data: bytes) -> None:
        directory = self._blob_dir
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / f"{kind}_{blob_id}", data)

    def mark_dirty(self) -> None:
        """Schedule a state-file write (coalesced) when persistence is on."""
        if self.cfg.state_file is None:
            return
        self._dirty = True
        if self._flush_handle is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_handle = loop.call_later(FLUSH_DELAY_S, self.flush)

    def flush(self) -> None:
        """Write the state file now if anything changed."""
        self._flush_handle = None
        if self.cfg.state_file is None or not self._dirty:
            return
        self._dirty = False
        write_atomic(Path(self.cfg.state_file), json.dumps(self._snapshot(), ensure_ascii=False).encode())

    def _snapshot(self) -> dict[str, Any]:
        st = self.state
        return {
            "version": STATE_VERSION,
            "saved_at": time.time(),
            "seed": self.cfg.seed,
            "capabilities_server_id": st.capabilities_server_id,
            "capabilities_server_name": st.capabilities_server_name,
            "servers": [
                {
                    "entry": s.entry,
                    "groups": s.groups,
                    "members": s.members,
                    "owner_uid": s.owner_uid,
                    "requires_claim": s.requires_claim,
                }
                for s in st.servers
            ],
            "messages": st.messages,
            "attachments": {
                k: {"meta": b.meta, "channel_id": b.channel_id} for k, b in st.attachments.items()
            },
            "avatars": {k: {"meta": b.meta} for k, b in st.avatars.items()},
            "profiles": st.profiles,
            "left": st.left,
            "read_acks": st.read_acks,
            "claims": st.claims,
            "event_seq": st.event_seq,
        }

    def _load(self, path: Path) -> None:
        doc = json.loads(path.read_text(encoding="utf-8"))
        if doc.get("version") != STATE_VERSION:
            raise ValueError(f"{path}: unsupported state file version {doc.get('version')!r}")
        st = self.state
        st.capabilities_server_id = doc["capabilities_server_id"]
        st.capabilities_server_name = doc["capabilities_server_name"]
        st.servers = [
            ServerState(
                s["entry"], s["groups"], s["members"], s.get("owner_uid", ""), s.get("requires_claim", False)
            )
            for s in doc["servers"]
        ]
        st.messages = doc["messages"]
        st.profiles = doc["profiles"]
        st.left = doc["left"]
        st.read_acks = doc["read_acks"]
        st.claims = doc["claims"]
        st.event_seq = int(doc["event_seq"])
        blob_dir = self._blob_dir
        for kind, target, rows in (
            ("att", st.attachments, doc["attachments"]),
            ("avatar", st.avatars, doc["avatars"]),
        ):
            for blob_id, row in rows.items():
                blob_path = blob_dir / f"{kind}_{blob_id}" if blob_dir else None
                if blob_path is None or not blob_path.exists():
                    continue
                target[blob_id] = Blob(row["meta"], blob_path.read_bytes(), row.get("channel_id", ""))

    async def aclose(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self.flush()
