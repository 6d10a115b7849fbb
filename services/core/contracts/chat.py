"""Bus contracts of the chat loop: normalized domain objects, event payloads and commands.

Everything here is *normalized*: keyed by the member's chosen ``server_id`` (the directory entry
the member picked, D1) and never by channel id alone (D3). Backend payloads are parsed with
``services.core.contracts.wire`` at the connector's edge and converted into these models.

Event kinds (``EventEnvelope.type``, the last tokens of ``oc.<member>.evt.<server_id>.<kind>``):

=====================  ==========================  =============================================
kind                   payload                     ``event_id`` (de-duplication key)
=====================  ==========================  =============================================
``server.joined``      ``ServerJoined``            ``joined:<ts>``
``server.left``        ``ServerLeft``              ``left:<ts>``
``server.connection``  ``ConnectionState``         ``conn:<uuid>``
``capabilities``       ``CapabilitySnapshot``      ``caps:<uuid>``
``channels.updated``   ``ChannelsUpdated``         ``channels:<uuid>``
``members.updated``    ``MembersUpdated``          ``members:<uuid>``
``message.created``    ``MessageCreated``          ``msg:<message id>``
``message.deleted``    ``MessageDeleted``          ``del:<message id>``
``typing``             ``Typing``                  ``typing:<uuid>``
``presence.snapshot``  ``PresenceSnapshot``        ``presence:<uuid>``
``presence.joined``    ``PresenceChange``          ``presence:<uuid>``
``presence.left``      ``PresenceChange``          ``presence:<uuid>``
``presence.batch``     ``PresenceBatch``           ``presence:<uuid>`` (``contracts/presence.py``)
``profile.updated``    ``ProfileUpdated``          ``profile:<uid>:<profile_version>``
``server.updated``     ``ServerUpdated``           ``srvupd:<uuid>``
``message.previews``   ``MessagePreviews``         ``previews:<message id>``
=====================  ==========================  =============================================

Internal: ``oc.sys.connector.rehydrate`` (``REHYDRATE_SUBJECT``) carries ``RehydrateRequest``; the
connector answers by re-publishing capabilities, channels, connection state and message windows
of that member's sessions (every member when ``member`` is ``None``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from pydantic import Field

from services.core.contracts.bus import Contract
from services.core.contracts.media import VoiceStatus

ServerId = str
ChannelId = str
MAX_ATTACHMENTS = 4
HISTORY_WINDOW = 150
TYPING_EXPIRY_S = 6.0  # a typing indicator disappears this long after its event unless renewed
REHYDRATE_SUBJECT = "oc.sys.connector.rehydrate"  # state -> connectors: hydrate again (RehydrateRequest)


# -- domain objects ------------------------------------------------------------------------------
class ChannelInfo(Contract):
    id: ChannelId
    name: str
    type: Literal["text", "voice"]
    group_id: str
    unread_count: int | None = None  # server-provided (Profile B, D6)


class ChannelGroupInfo(Contract):
    id: str
    label: str
    kind: Literal["text", "voice"]
    channels: list[ChannelInfo]


class ReplyRef(Contract):
    message_id: str
    author_uid: str = ""
    preview_text: str = ""
    is_unavailable: bool = False


class AttachmentRef(Contract):
    attachment_id: str
    file_name: str
    content_type: str
    bytes: int
    width: int | None = None
    height: int | None = None
    url: str  # the backend's absolute URL, origin rewritten to the server's base URL


class MentionRef(Contract):
    type: Literal["user", "channel"]
    token: str
    target_id: str = ""
    display_text: str = ""


LINK_PREVIEW_URL_MAX = 2048
LINK_PREVIEW_TITLE_MAX = 220  # numbers.md: a longer text is cut to N-1 characters + "…"
LINK_PREVIEW_DESCRIPTION_MAX = 420
LINK_PREVIEW_SITE_NAME_MAX = 120


class LinkPreview(Contract):
    """A finished link preview card (features 5.9, 14.5, P6): fetched by the home stack, never
    by a desktop; texts already decoded, collapsed and cut (title ≤ 220, description ≤ 420, site
    name ≤ 120 characters, the "…" included: a longer text keeps N-1 characters + "…",
    numbers.md §OpenGraph text caps); ``image_url`` is http(s) or None."""

    url: str = Field(max_length=LINK_PREVIEW_URL_MAX)
    site_name: str = Field(default="", max_length=LINK_PREVIEW_SITE_NAME_MAX)
    title: str = Field(default="", max_length=LINK_PREVIEW_TITLE_MAX)
    description: str = Field(default="", max_length=LINK_PREVIEW_DESCRIPTION_MAX)
    image_url: str | None = Field(default=None, max_length=LINK_PREVIEW_URL_MAX)


MESSAGE_ID_MAX = 200  # a backend's message id (event ids ``msg:<id>``/``previews:<id>`` stay ≤ 256)


class ChatMessage(Contract):
    id: str = Field(min_length=1, max_length=MESSAGE_ID_MAX)
    server_id: ServerId
    channel_id: ChannelId
    author_uid: str
    body: str
    created_at: datetime
    reply_to: ReplyRef | None = None
    attachments: list[AttachmentRef] = Field(default_factory=list)
    mentions: list[MentionRef] | None = None  # None: the server sends no mention metadata
    link_previews: list[LinkPreview] = Field(default_factory=list, max_length=3)


class MessagePreviews(Contract):
    """Event ``message.previews``: the previews of a message already published (the stack
    fetched them after the message). Consumers replace the message's ``link_previews``."""

    channel_id: ChannelId
    message_id: str
    previews: list[LinkPreview] = Field(default_factory=list, max_length=3)


class PresenceEntry(Contract):
    client_id: str
    user_uid: str
    device_id: str


class UserProfile(Contract):
    user_uid: str
    display_name: str
    avatar_mode: str = "generated"
    avatar_preset_id: str | None = None
    avatar_asset_id: str | None = None
    avatar_url: str | None = None
    profile_version: int = 0
    updated_at: str = ""


class TrustAssessment(Contract):
    """What the member is told before joining (features 2.4, D15)."""

    transport_secure: bool
    local_host: bool
    https_required_mismatch: bool
    verified: bool
    warnings: list[str]


class Disclosure(Contract):
    """Exactly what the server will learn about the member (UID-only by default)."""

    user_uid: str
    device_id: str
    uid_mode: Literal["server_scoped", "global"]
    profile_shared: bool
    summary: str
    # issue #14: the backend URL the uid is scoped to as well (its server id collides with one the
    # member joined elsewhere); None: the reference projection (root + server id)
    origin_scope: str | None = None


class ServerRecord(Contract):
    """A joined server of one member (the durable registry row)."""

    server_id: ServerId
    base_url: str
    display_name: str
    icon_text: str
    trust_state: str = "unverified"
    user_uid: str
    device_id: str
    profile_consent: bool | None = None  # None: not asked yet (D18)
    joined_at: datetime
    # issue #14 (ADR 0018): ``server_id`` above is the member's LOCAL id (every key of the stack);
    # the backend's own id goes on the wire. None: the same as the local id (records from before).
    backend_server_id: ServerId | None = None
    # the scope the uid is projected from when it is not the backend's id (the reference
    # projection): ``<backend id>@<backend URL>`` for a server whose id collides with one joined
    uid_scope: str | None = None

    @property
    def backend_id(self) -> str:
        """The server's id on its backend (wire paths, realtime query, join tickets)."""
        return self.backend_server_id or self.server_id

    @property
    def projection_scope(self) -> str:
        """What the uid is projected from (``services.core.identity.project_uid``)."""
        return self.uid_scope or self.backend_id


# -- event payloads ------------------------------------------------------------------------------
class ServerJoined(Contract):
    server: ServerRecord


class ServerLeft(Contract):
    server_id: ServerId


class ConnectionState(Contract):
    state: Literal["live", "connecting", "reconnecting", "offline"]
    attempt: int = 0
    next_retry_at: datetime | None = None
    reason: str = ""


class CapabilitySnapshot(Contract):
    server_name: str
    api_version: str = ""
    build_version: str = ""
    build_commit: str = ""
    max_message_bytes: int | None = None
    max_upload_bytes: int | None = None
    rate_limit_per_minute: int | None = None
    features: dict[str, bool] = Field(default_factory=dict)
    profile_enabled: bool = False
    https_required: bool = False
    fetched_at: datetime


class ChannelsUpdated(Contract):
    groups: list[ChannelGroupInfo]


class MembersUpdated(Contract):
    members: list[dict[str, str]]


class MessageCreated(Contract):
    message: ChatMessage


class MessageDeleted(Contract):
    channel_id: ChannelId
    message_id: str


class Typing(Contract):
    channel_id: ChannelId
    user_uid: str
    device_id: str = ""
    is_typing: bool
    expires_at: datetime | None = None


class PresenceSnapshot(Contract):
    channel_id: ChannelId
    members: list[PresenceEntry]


class PresenceChange(Contract):
    channel_id: ChannelId
    member: PresenceEntry


class ProfileUpdated(Contract):
    profile: UserProfile


# -- connector commands (oc.<member>.cmd.connector.<verb>) ----------------------------------------
class DiscoverArgs(Contract):
    url: str = Field(max_length=2048)


class DirectoryEntry(Contract):
    server_id: ServerId
    display_name: str
    icon_text: str = ""
    description: str = ""
    trust_state: str = "unverified"


class DiscoverResult(Contract):
    url: str
    directory_uid: str
    servers: list[DirectoryEntry]


class ProbeArgs(Contract):
    url: str = Field(max_length=2048)
    server_id: ServerId | None = None


class ProbeResult(Contract):
    url: str
    capabilities_path: str
    capabilities: CapabilitySnapshot
    trust: TrustAssessment
    disclosure: Disclosure
    # issue #14: the backend id a join would use (the picked entry, else the capabilities' id,
    # rule D1), whether the backend's directory lists it, and the local id proposed for it
    backend_server_id: ServerId = ""
    in_directory: bool | None = None
    local_id: ServerId = ""


class JoinArgs(Contract):
    url: str = Field(max_length=2048)
    server_id: ServerId  # the backend's id (a directory entry, or the capabilities' id)
    confirmed: bool = False
    # the member's local id for it (``--as``); None: the backend's id when free, else derived
    local_id: ServerId | None = Field(default=None, max_length=128)


class JoinResult(Contract):
    server: ServerRecord


class LeaveArgs(Contract):
    server_id: ServerId


class LeaveResult(Contract):
    server_id: ServerId
    backend_left: bool
    detail: str = ""


class UploadedImage(Contract):
    file_name: str = Field(max_length=255)
    content_type: str
    data_b64: str = ""  # inline, bounded by the bus payload limit; or:
    # an image staged in chunks with ``connector.upload`` (services.core.contracts.blobs, ADR 0010)
    upload_id: str | None = Field(default=None, pattern=r"^up_[0-9a-f]{32}$")


class SendArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId
    body: str = ""
    reply_to: str | None = None
    images: list[UploadedImage] = Field(default_factory=list, max_length=MAX_ATTACHMENTS)
    client_ref: str | None = None  # lets a UI match the reply to its draft


class SendResult(Contract):
    message: ChatMessage


class TypingArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId
    is_typing: bool


class HistoryArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId
    before: str | None = None  # a message id: page of older messages
    limit: int = Field(default=50, ge=1, le=500)


class HistoryResult(Contract):
    messages: list[ChatMessage]
    has_more: bool


class ConsentArgs(Contract):
    server_id: ServerId
    share_profile: bool


class Ack(Contract):
    ok: bool = True
    detail: str = ""


# -- state commands (oc.<member>.cmd.state.<verb>) ------------------------------------------------
class SnapshotArgs(Contract):
    server_id: ServerId | None = None  # None: every joined server
    messages_per_channel: int = Field(default=50, ge=0, le=500)


class ServerView(Contract):
    server: ServerRecord
    connection: ConnectionState
    capabilities: CapabilitySnapshot | None = None
    groups: list[ChannelGroupInfo] = Field(default_factory=list)
    messages: dict[ChannelId, list[ChatMessage]] = Field(default_factory=dict)
    presence: dict[ChannelId, list[PresenceEntry]] = Field(default_factory=dict)
    typing: dict[ChannelId, list[Typing]] = Field(default_factory=dict)
    profiles: dict[str, UserProfile] = Field(default_factory=dict)
    members: list[dict[str, str]] = Field(default_factory=list)  # last ``members.updated``
    voice: VoiceStatus | None = None  # the member's call on this server: last ``voice.state`` (issue 12)


class Snapshot(Contract):
    """The member's view as of stream sequence ``seq``: apply every event with a larger
    ``Nats-Sequence`` (live, or from ``sync``) and nothing is missed or repeated."""

    seq: int
    servers: list[ServerView]


class SyncArgs(Contract):
    since_seq: int = Field(ge=0)
    limit: int = Field(default=1000, ge=1, le=10000)


class SyncedEvent(Contract):
    seq: int
    subject: str
    type: str
    server_id: ServerId
    data: str  # the event envelope's JSON, exactly as stored


class SyncResult(Contract):
    """At most ``limit`` events and at most ``MAX_REPLY_RESULT_BYTES`` of them (bus contract)."""

    events: list[SyncedEvent]
    last_seq: int
    complete: bool  # False: call again from last_seq (limit or byte budget reached)
    truncated: bool = False  # True: since_seq is older than the stream keeps; take a snapshot
    # Stream sequences passed over because one such event alone is over the reply limit: their
    # effect is in a snapshot (the client takes one), never re-asked for page after page.
    oversized: list[int] = Field(default_factory=list, max_length=10000)


class ViewHistoryArgs(Contract):
    server_id: ServerId
    channel_id: ChannelId
    limit: int = Field(default=100, ge=1, le=500)


# -- connector additions (issue #4, connector sessions) -------------------------------------------
class ServerUpdated(Contract):
    """A joined server's record changed (profile consent given or withdrawn, server renamed)."""

    server: ServerRecord


class MembersArgs(Contract):
    server_id: ServerId


class ProfilesArgs(Contract):
    server_id: ServerId
    user_uids: list[str] = Field(min_length=1, max_length=1000)


class ProfilesResult(Contract):
    profiles: list[UserProfile]


class ViewHistoryResult(Contract):
    """The newest ``limit`` messages of a channel's window, oldest first, as of stream ``seq``."""

    seq: int
    messages: list[ChatMessage]
    has_more: bool  # the window holds older messages than these (older still: connector history)


class ServerStatus(Contract):
    server: ServerRecord
    connection: ConnectionState


class ServerList(Contract):
    seq: int
    servers: list[ServerStatus]


class HttpToken(Contract):
    """A short-lived bearer token for the state service's HTTP API (media bytes, read-only API)."""

    token: str
    expires_at: datetime
    member: str


# -- internal (oc.sys.>) ----------------------------------------------------------------------------
class RehydrateRequest(Contract):
    """state -> connectors on ``REHYDRATE_SUBJECT``: publish a fresh hydration (channel tree,
    newest messages, profiles, presence, connection and capability state) of every session of
    ``member`` (every member when ``None``), because the view was lost and the stream may no
    longer hold everything."""

    member: str | None = None
    reason: str = ""


def message_identity(message_id: str, created_at: datetime) -> str:
    """What tells one message of a channel from another: its id *and* its creation time.

    A backend's message ids are only 32 bits random (``msg_`` + 8 hex, wire spec "Ids"), so a
    busy channel repeats an id (expected once in ~77,000 messages): two messages with one id
    differ by ``created_at``, which is the same for a message wherever it is read (realtime,
    history, cursors pages). The connector de-duplicates and anchors gap fill by this identity and
    ``message.created``'s event id (``Nats-Msg-Id``) is built from it, so a second message with a
    repeated id is published, never taken for the first (ADR 0029)."""
    at = created_at if created_at.tzinfo is not None else created_at.replace(tzinfo=UTC)
    return f"{message_id}@{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}"


def message_event_id(message_id: str, created_at: datetime) -> str:
    return f"msg:{message_identity(message_id, created_at)}"


# -- the member's own profile (features 1.1, 11; D18) --------------------------------------------
# Commands ``oc.<member>.cmd.connector.profile_get`` (``ProfileGetArgs`` -> ``ProfileGetResult``)
# and ``profile_set`` (``ProfileSetArgs`` -> ``ProfileGetResult``). The profile is kept by the
# connector (registry database) and published only to servers the member consented to share it
# with (``ServerRecord.profile_consent``) that advertise ``profile.enabled``.
AVATAR_PRESETS: tuple[str, ...] = ("horizon", "reef", "mint", "ember", "violet", "slate")
MAX_AVATAR_BYTES = 2 * 1024 * 1024  # a locally kept uploaded avatar (PNG, JPEG or WEBP)
DISPLAY_NAME_MIN = 2
DISPLAY_NAME_MAX = 32


class MemberProfile(Contract):
    """The member's own profile. ``avatar_preset_id`` is always set: the avatar when the mode is
    ``generated``, the fallback for servers that take no uploads when it is ``uploaded``."""

    display_name: str
    avatar_mode: Literal["generated", "uploaded"]
    avatar_preset_id: str
    avatar_content_type: str | None = None  # uploaded: image/png, image/jpeg or image/webp
    avatar_bytes: int | None = None
    avatar_sha256: str | None = None
    avatar_b64: str | None = None  # the image itself, only when asked for (``include_avatar``)
    revision: int = 1
    updated_at: datetime


class ProfileSyncState(Contract):
    """Where the member's profile stands on one joined server."""

    server_id: ServerId
    consent: bool | None
    state: Literal[
        "private",  # no consent (or not asked yet): nothing is published
        "pending",  # consented; not published yet (not connected, or in progress)
        "published",  # the server shows the member's current profile
        "disabled",  # the server does not advertise profile sync
        "unsupported",  # the server answered 404/405/501 on a profile route
        "rejected",  # the server's policy refuses the name or the avatar
        "failed",  # the last attempt failed (``code``); retried on the next hydrate or change
    ]
    code: str = ""
    profile_version: int | None = None


class ProfileGetArgs(Contract):
    include_avatar: bool = False


class ProfileGetResult(Contract):
    profile: MemberProfile | None  # None: never set up
    servers: list[ProfileSyncState] = Field(default_factory=list)


class ProfileSetArgs(Contract):
    """Change the profile; a field left ``None`` keeps its current value. ``avatar`` switches to
    ``uploaded`` and ``avatar_preset_id`` to ``generated`` (one of ``AVATAR_PRESETS``)."""

    display_name: str | None = None
    avatar_mode: Literal["generated", "uploaded"] | None = None
    avatar_preset_id: str | None = None
    avatar: UploadedImage | None = None


# -- the member's identity over the bus (issue #5: first run and UID mode) ------------------------
UidModeName = Literal["server_scoped", "global"]
IDENTITY_ROOT_PATTERN = r"^identity_[a-z0-9]{8}$"


class IdentityGetArgs(Contract):
    """``connector.identity_get``: never creates an identity. ``reveal`` adds the root itself (the
    member's own secret, to copy to another stack or device)."""

    reveal: bool = False


class IdentityInfo(Contract):
    """The member's identity as the connector holds it. ``exists`` False: none yet (first run);
    then ``uid_mode`` is the default and ``device_id``/``servers`` are empty."""

    exists: bool
    uid_mode: UidModeName = "server_scoped"
    device_id: str = ""
    root: str | None = None  # only when asked for (``reveal``)
    servers: list[ServerRecord] = Field(default_factory=list)  # joined servers with their current uids


class IdentityCreateArgs(Contract):
    """``connector.identity_create``: a new random root when the member has none; an existing
    one is kept (idempotent). Answers ``IdentityInfo``."""


class IdentityImportArgs(Contract):
    """``connector.identity_import``: replace the root (appear as the same user as on another
    device). Every joined server is re-bound to the newly projected uid, as for a UID mode
    switch. Answers ``IdentityInfo``."""

    root: str = Field(pattern=IDENTITY_ROOT_PATTERN)


class UidModeArgs(Contract):
    """``connector.uid_mode`` (features 1.5): project every server's uid in ``mode``; each
    session whose uid changes is stopped, its record updated (``server.updated``), its realtime
    socket re-opened and the server hydrated again with the new uid. Answers ``IdentityInfo``."""

    mode: UidModeName


# -- link previews (features 5.9, 14.5, D17, P6) ----------------------------------------------------
# ``oc.<member>.cmd.connector.previews`` (``PreviewsArgs`` -> ``PreviewsResult``): read or set the
# member's switch (on by default). Previews are fetched by the connector only for servers whose
# record is ``verified`` and only while the switch is on; they arrive as ``message.previews``.
KIND_MESSAGE_PREVIEWS = "message.previews"


def previews_event_id(message_id: str) -> str:
    return f"previews:{message_id}"


class PreviewsArgs(Contract):
    """``enabled`` None: only read the switch."""

    enabled: bool | None = None


class PreviewsResult(Contract):
    enabled: bool


class DeleteMessageArgs(Contract):
    """``connector.delete`` (features 5.8): delete a message on a server that advertises
    ``message_delete`` (the backend allows the author only). On success the connector publishes
    ``message.deleted`` at once (event id ``del:<message_id>``, the same the realtime event gets, so
    the stream keeps one). Answers ``Ack``."""

    server_id: ServerId
    channel_id: ChannelId
    message_id: str = Field(min_length=1, max_length=256)
