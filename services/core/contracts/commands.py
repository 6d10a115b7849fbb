"""The commands table of the stack: service, verb, args model, result model (and a timeout).

Every request/reply command on ``oc.<member>.cmd.<service>.<verb>`` is one row of ``COMMANDS``.
Services serve their rows (``services.core.rpc.serve``: the handler's signature must match the row's
models, which mypy checks), clients call them (``services.core.rpc.StackCommands``: the result is
parsed with the row's result model). So a command is declared once, here; the desktop, the CLI
and the services cannot drift apart on what a command answers.

A new command (another service's) is one more ``CommandSpec`` passed to ``register_command``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from services.core.contracts import subjects
from services.core.contracts.blobs import MediaArgs, MediaChunk, UploadChunkArgs, UploadChunkResult
from services.core.contracts.bus import Empty
from services.core.contracts.chat import (
    Ack,
    ConsentArgs,
    DeleteMessageArgs,
    DiscoverArgs,
    DiscoverResult,
    HistoryArgs,
    HistoryResult,
    HttpToken,
    IdentityCreateArgs,
    IdentityGetArgs,
    IdentityImportArgs,
    IdentityInfo,
    JoinArgs,
    JoinResult,
    LeaveArgs,
    LeaveResult,
    MembersArgs,
    MembersUpdated,
    PreviewsArgs,
    PreviewsResult,
    ProbeArgs,
    ProbeResult,
    ProfileGetArgs,
    ProfileGetResult,
    ProfilesArgs,
    ProfileSetArgs,
    ProfilesResult,
    SendArgs,
    SendResult,
    ServerList,
    Snapshot,
    SnapshotArgs,
    SyncArgs,
    SyncResult,
    UidModeArgs,
    ViewHistoryArgs,
    ViewHistoryResult,
)
from services.core.contracts.chat import TypingArgs as TypingCommandArgs
from services.core.contracts.media import (
    BridgeAlive,
    BridgeAnswer,
    BridgeKeepaliveArgs,
    BridgeOfferArgs,
    VoiceJoinArgs,
    VoicePrefsArgs,
    VoiceStatus,
)
from services.core.contracts.notify import (
    FocusArgs,
    MarkReadArgs,
    NotifyPrefs,
    ReadAckGetArgs,
    ReadAckPutArgs,
    ReadAckResult,
    SetDndArgs,
    SetHideMutedArgs,
    SetLevelArgs,
    SetMuteArgs,
    SetQuietHoursArgs,
    SetStatusArgs,
    UnreadArgs,
    UnreadResult,
)
from services.core.contracts.search import SearchArgs, SearchResult
from services.core.contracts.version import ServiceVersion, StackVersion

A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)
DEFAULT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class CommandSpec(Generic[A, R]):
    """One row of the commands table."""

    service: str
    verb: str
    args: type[A]
    result: type[R]
    timeout_s: float = DEFAULT_TIMEOUT_S  # what a client waits by default
    doc: str = ""

    @property
    def name(self) -> str:
        return f"{self.service}.{self.verb}"

    def subject(self, member: str) -> str:
        return subjects.command(member, self.service, self.verb)

    def wildcard(self) -> str:
        """What the serving service subscribes to (every member)."""
        return subjects.command_wildcard(self.service, self.verb)


# -- connector -------------------------------------------------------------------------------------
DISCOVER = CommandSpec("connector", "discover", DiscoverArgs, DiscoverResult, 20, "a directory's servers")
PROBE = CommandSpec("connector", "probe", ProbeArgs, ProbeResult, 20, "capabilities, trust, disclosure")
JOIN = CommandSpec("connector", "join", JoinArgs, JoinResult, 30, "join a server (confirmed)")
LEAVE = CommandSpec("connector", "leave", LeaveArgs, LeaveResult, 30, "leave a server")
SEND = CommandSpec("connector", "send", SendArgs, SendResult, 30, "send a message")
TYPING = CommandSpec("connector", "typing", TypingCommandArgs, Ack, doc="typing on/off")
DELETE = CommandSpec("connector", "delete", DeleteMessageArgs, Ack, 20, "delete an own message")
HISTORY = CommandSpec("connector", "history", HistoryArgs, HistoryResult, 20, "older messages")
MEMBERS = CommandSpec("connector", "members", MembersArgs, MembersUpdated, doc="a server's member list")
PROFILES = CommandSpec("connector", "profiles", ProfilesArgs, ProfilesResult, doc="users' profiles")
CONSENT = CommandSpec("connector", "consent", ConsentArgs, JoinResult, doc="profile consent per server")
PROFILE_GET = CommandSpec("connector", "profile_get", ProfileGetArgs, ProfileGetResult)
PROFILE_SET = CommandSpec("connector", "profile_set", ProfileSetArgs, ProfileGetResult, 20)
READ_ACK_GET = CommandSpec("connector", "read_ack_get", ReadAckGetArgs, ReadAckResult)
READ_ACK_PUT = CommandSpec("connector", "read_ack_put", ReadAckPutArgs, ReadAckResult)
IDENTITY_GET = CommandSpec("connector", "identity_get", IdentityGetArgs, IdentityInfo)
IDENTITY_CREATE = CommandSpec("connector", "identity_create", IdentityCreateArgs, IdentityInfo)
IDENTITY_IMPORT = CommandSpec("connector", "identity_import", IdentityImportArgs, IdentityInfo, 30)
UID_MODE = CommandSpec("connector", "uid_mode", UidModeArgs, IdentityInfo, 30)
PREVIEWS = CommandSpec("connector", "previews", PreviewsArgs, PreviewsResult, doc="link preview switch")
UPLOAD = CommandSpec(
    "connector", "upload", UploadChunkArgs, UploadChunkResult, 30, "stage an upload in chunks"
)

# -- state -----------------------------------------------------------------------------------------
SNAPSHOT = CommandSpec("state", "snapshot", SnapshotArgs, Snapshot, doc="the member's view at seq")
SYNC = CommandSpec("state", "sync", SyncArgs, SyncResult, doc="stored events after seq")
VIEW_HISTORY = CommandSpec("state", "history", ViewHistoryArgs, ViewHistoryResult, doc="a channel window")
SERVERS = CommandSpec("state", "servers", Empty, ServerList, doc="joined servers and their state")
HTTP_TOKEN = CommandSpec("state", "http_token", Empty, HttpToken, doc="a bearer token for the HTTP API")
SEARCH = CommandSpec(
    "state", "search", SearchArgs, SearchResult, 15, "the member's messages matching a query"
)
MEDIA_BYTES = CommandSpec(
    "state", "media", MediaArgs, MediaChunk, 30, "one chunk of an attachment/avatar/image"
)

# -- notification ----------------------------------------------------------------------------------
UNREAD = CommandSpec("notification", "unread", UnreadArgs, UnreadResult)
MARK_READ = CommandSpec("notification", "mark_read", MarkReadArgs, UnreadResult)
FOCUS = CommandSpec("notification", "focus", FocusArgs, UnreadResult)
PREFS = CommandSpec("notification", "prefs", Empty, NotifyPrefs)
SET_MUTE = CommandSpec("notification", "set_mute", SetMuteArgs, NotifyPrefs)
SET_LEVEL = CommandSpec("notification", "set_level", SetLevelArgs, NotifyPrefs)
SET_DND = CommandSpec("notification", "set_dnd", SetDndArgs, NotifyPrefs)
SET_QUIET_HOURS = CommandSpec("notification", "set_quiet_hours", SetQuietHoursArgs, NotifyPrefs)
SET_STATUS = CommandSpec(
    "notification", "set_status", SetStatusArgs, NotifyPrefs, doc="online/idle/dnd/invisible"
)
SET_HIDE_MUTED = CommandSpec("notification", "set_hide_muted", SetHideMutedArgs, NotifyPrefs)

# -- media (voice) ---------------------------------------------------------------------------------
VOICE_JOIN = CommandSpec("media", "join", VoiceJoinArgs, VoiceStatus, 35, "join a voice channel")
VOICE_LEAVE = CommandSpec("media", "leave", Empty, VoiceStatus, doc="leave the call")
VOICE_STATUS = CommandSpec("media", "status", Empty, VoiceStatus, doc="call state and participants")
VOICE_PREFS = CommandSpec("media", "prefs", VoicePrefsArgs, VoiceStatus, doc="mute/deafen/input volume")
BRIDGE_OFFER = CommandSpec("media", "bridge_offer", BridgeOfferArgs, BridgeAnswer, 20, "the client's offer")
BRIDGE_KEEPALIVE = CommandSpec("media", "bridge_keepalive", BridgeKeepaliveArgs, BridgeAlive)
BRIDGE_CLOSE = CommandSpec("media", "bridge_close", BridgeKeepaliveArgs, BridgeAlive)

# -- versions (every service answers its own; any one of them ``stack.version``) -------------------
STACK_VERSION = CommandSpec("stack", "version", Empty, StackVersion, doc="the home stack's version")
SERVICE_VERSIONS = tuple(
    CommandSpec(service, "version", Empty, ServiceVersion, doc=f"the {service} service's version")
    for service in subjects.SERVICES
)

COMMANDS: dict[tuple[str, str], CommandSpec[Any, Any]] = {}


def register_command(spec: CommandSpec[A, R]) -> CommandSpec[A, R]:
    """Add a row; the same row again is harmless, another row for a (service, verb) is refused."""
    key = (spec.service, spec.verb)
    current = COMMANDS.get(key)
    if current is not None and current != spec:
        raise ValueError(f"command {spec.name} is already registered differently")
    COMMANDS[key] = spec
    return spec


_TABLE: tuple[CommandSpec[Any, Any], ...] = (
    DISCOVER,
    PROBE,
    JOIN,
    LEAVE,
    SEND,
    TYPING,
    DELETE,
    HISTORY,
    MEMBERS,
    PROFILES,
    CONSENT,
    PROFILE_GET,
    PROFILE_SET,
    READ_ACK_GET,
    READ_ACK_PUT,
    IDENTITY_GET,
    IDENTITY_CREATE,
    IDENTITY_IMPORT,
    UID_MODE,
    PREVIEWS,
    UPLOAD,
    SNAPSHOT,
    SYNC,
    VIEW_HISTORY,
    SERVERS,
    HTTP_TOKEN,
    MEDIA_BYTES,
    SEARCH,
    UNREAD,
    MARK_READ,
    FOCUS,
    PREFS,
    SET_MUTE,
    SET_LEVEL,
    SET_DND,
    SET_QUIET_HOURS,
    SET_STATUS,
    SET_HIDE_MUTED,
    VOICE_JOIN,
    VOICE_LEAVE,
    VOICE_STATUS,
    VOICE_PREFS,
    BRIDGE_OFFER,
    BRIDGE_KEEPALIVE,
    BRIDGE_CLOSE,
    STACK_VERSION,
    *SERVICE_VERSIONS,
)
for _spec in _TABLE:
    register_command(_spec)


def commands_of(service: str) -> list[CommandSpec[Any, Any]]:
    return [s for s in COMMANDS.values() if s.service == service]


def table_rows() -> list[tuple[str, str, str, str]]:
    """``(service, verb, args model, result model)`` rows (docs, tests)."""
    return [(s.service, s.verb, s.args.__name__, s.result.__name__) for s in COMMANDS.values()]
