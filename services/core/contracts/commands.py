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
from services.core.contracts.notify import (
    FocusArgs,
    MarkReadArgs,
    NotifyPrefs,
    ReadAckGetArgs,
    ReadAckPutArgs,
    ReadAckResult,
    SetDndArgs,
    SetLevelArgs,
    SetMuteArgs,
    SetQuietHoursArgs,
    UnreadArgs,
    UnreadResult,
)

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

# -- state -----------------------------------------------------------------------------------------
SNAPSHOT = CommandSpec("state", "snapshot", SnapshotArgs, Snapshot, doc="the member's view at seq")
SYNC = CommandSpec("state", "sync", SyncArgs, SyncResult, doc="stored events after seq")
VIEW_HISTORY = CommandSpec("state", "history", ViewHistoryArgs, ViewHistoryResult, doc="a channel window")
SERVERS = CommandSpec("state", "servers", Empty, ServerList, doc="joined servers and their state")
HTTP_TOKEN = CommandSpec("state", "http_token", Empty, HttpToken, doc="a bearer token for the HTTP API")

# -- notification ----------------------------------------------------------------------------------
UNREAD = CommandSpec("notification", "unread", UnreadArgs, UnreadResult)
MARK_READ = CommandSpec("notification", "mark_read", MarkReadArgs, UnreadResult)
FOCUS = CommandSpec("notification", "focus", FocusArgs, UnreadResult)
PREFS = CommandSpec("notification", "prefs", Empty, NotifyPrefs)
SET_MUTE = CommandSpec("notification", "set_mute", SetMuteArgs, NotifyPrefs)
SET_LEVEL = CommandSpec("notification", "set_level", SetLevelArgs, NotifyPrefs)
SET_DND = CommandSpec("notification", "set_dnd", SetDndArgs, NotifyPrefs)
SET_QUIET_HOURS = CommandSpec("notification", "set_quiet_hours", SetQuietHoursArgs, NotifyPrefs)

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
    SNAPSHOT,
    SYNC,
    VIEW_HISTORY,
    SERVERS,
    HTTP_TOKEN,
    UNREAD,
    MARK_READ,
    FOCUS,
    PREFS,
    SET_MUTE,
    SET_LEVEL,
    SET_DND,
    SET_QUIET_HOURS,
)
for _spec in _TABLE:
    register_command(_spec)


def commands_of(service: str) -> list[CommandSpec[Any, Any]]:
    return [s for s in COMMANDS.values() if s.service == service]


def table_rows() -> list[tuple[str, str, str, str]]:
    """``(service, verb, args model, result model)`` rows (docs, tests)."""
    return [(s.service, s.verb, s.args.__name__, s.result.__name__) for s in COMMANDS.values()]
