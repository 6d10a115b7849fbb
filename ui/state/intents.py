"""The member's intents (what the panes ask for) and the controller's effects on the panes.

Intents go pane -> controller (``ui.controller.Controller.dispatch``); the controller turns them
into state changes (``ui.state``) and commands (the commands table, through the stack port).
Effects go controller -> the app's wiring, for what only a pane can do (move the timeline, put
text into the composer widget, show a dialog); the panes themselves render the state.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.core.contracts.notify import Notification


# -- intents ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelectServer:
    server_id: str


@dataclass(frozen=True)
class SelectChannel:
    channel_id: str


@dataclass(frozen=True)
class Send:
    """Send the composer's draft (text, reply, attachments) to the channel on screen."""


@dataclass(frozen=True)
class ReplyTo:
    message_id: str


@dataclass(frozen=True)
class CancelReply:
    pass


@dataclass(frozen=True)
class DeleteMessage:
    message_id: str


@dataclass(frozen=True)
class LoadOlder:
    server_id: str
    channel_id: str
    before: str


@dataclass(frozen=True)
class MarkServerRead:
    server_id: str


@dataclass(frozen=True)
class SetMute:
    server_id: str
    muted: bool


@dataclass(frozen=True)
class Leave:
    server_id: str


@dataclass(frozen=True)
class OpenAddServer:
    url: str


@dataclass(frozen=True)
class SetAddUrl:
    url: str


@dataclass(frozen=True)
class Discover:
    url: str


@dataclass(frozen=True)
class PickServer:
    label: str


@dataclass(frozen=True)
class Probe:
    url: str


@dataclass(frozen=True)
class Join:
    url: str


@dataclass(frozen=True)
class SetAddLocalId:
    """The Add Server dialog's local id field changed (issue #14)."""

    local_id: str


@dataclass(frozen=True)
class AnswerConsent:
    server_id: str
    share: bool


@dataclass(frozen=True)
class OpenSearch:
    """Ctrl+F: the search panel (``scope`` None keeps the last one)."""

    scope: str | None = None


@dataclass(frozen=True)
class SearchQuery:
    text: str


@dataclass(frozen=True)
class SearchScope:
    scope: str  # "all" | "server" | "channel"


@dataclass(frozen=True)
class RunSearch:
    pass


@dataclass(frozen=True)
class CloseSearch:
    pass


@dataclass(frozen=True)
class JumpToHit:
    """A click on a search result: open its channel at the message (``index`` in the hits)."""

    index: int


Intent = (
    SelectServer
    | SelectChannel
    | Send
    | ReplyTo
    | CancelReply
    | DeleteMessage
    | LoadOlder
    | MarkServerRead
    | SetMute
    | Leave
    | OpenAddServer
    | SetAddUrl
    | Discover
    | PickServer
    | Probe
    | Join
    | SetAddLocalId
    | AnswerConsent
    | OpenSearch
    | SearchQuery
    | SearchScope
    | RunSearch
    | CloseSearch
    | JumpToHit
)


# -- effects ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TimelinePrepended:
    """Older rows came in above the ones on screen (``added`` of them)."""

    added: int


@dataclass(frozen=True)
class TimelineReset:
    """A channel was (re)opened: back to the newest rows."""


@dataclass(frozen=True)
class FollowTimeline:
    """The member sent a message: follow the bottom again."""


@dataclass(frozen=True)
class ComposerText:
    text: str


@dataclass(frozen=True)
class CloseOverlays:
    pass


@dataclass(frozen=True)
class ShowAddServer:
    pass


@dataclass(frozen=True)
class AskConsent:
    """Servers may be waiting for the profile question: share the name and avatar with that
    server? (rule D18)."""


@dataclass(frozen=True)
class SnapshotApplied:
    pass


@dataclass(frozen=True)
class StackBack:
    """The stack is reachable again (the account is read again)."""


@dataclass(frozen=True)
class RevealMessage:
    """Show this message of the channel on screen (a search hit it jumped to), marked."""

    server_id: str
    channel_id: str
    message_id: str


@dataclass(frozen=True)
class Notify:
    notification: Notification


Effect = (
    TimelinePrepended
    | TimelineReset
    | FollowTimeline
    | ComposerText
    | CloseOverlays
    | ShowAddServer
    | AskConsent
    | SnapshotApplied
    | StackBack
    | Notify
    | RevealMessage
)
