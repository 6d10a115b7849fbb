"""Bus contracts of message search (issue 17): the command, its result, and the history-page event.

Command (request/reply), served by the state service, which owns the search index:

==========================================  ================  ================
subject                                     args              result
==========================================  ================  ================
``oc.<member>.cmd.state.search``            ``SearchArgs``    ``SearchResult``
==========================================  ================  ================

The member comes from the subject (``Bus.command``), never from the arguments: a member searches
only the index of their own servers. The query syntax is parsed by ``services.core.search_query``.

Event (on the events stream like every other, ``oc.sys.ev.<member>.<server_id>.history.page``):

=====================  ==========================  =============================================
kind                   payload                     ``event_id`` (de-duplication key)
=====================  ==========================  =============================================
``history.page``       ``HistoryPage``             ``page:<channel>:<first id>:<last id>``
=====================  ==========================  =============================================

The connector publishes one after each ``connector.history`` page it fetched for a member, so
messages older than anything cached are indexed too. The state view and the desktop ignore the
kind (it changes no view); only the search indexer consumes it.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from services.core.contracts import subjects
from services.core.contracts.bus import Contract
from services.core.contracts.chat import ChannelId, ChatMessage, ServerId

SERVICE = "state"
VERB = "search"
KIND_HISTORY_PAGE = "history.page"
MAX_QUERY_CHARS = 512
MAX_SEARCH_LIMIT = 200
DEFAULT_SEARCH_LIMIT = 50
MAX_PAGE_MESSAGES = 100  # a history page larger than this is published as several events
MAX_SNIPPET_CHARS = 400


def search_subject(member: str) -> str:
    return subjects.command(member, SERVICE, VERB)


def history_page_event_id(channel_id: str, first_id: str, last_id: str) -> str:
    return f"page:{channel_id}:{first_id}:{last_id}"[:256]


class SearchArgs(Contract):
    """``query``: words (all must match), ``"exact phrases"``, ``prefix*``, ``from:<uid>`` and
    ``in:<channel>`` / ``in:<server>/<channel>`` / ``in:<server>/`` filters. The other fields narrow
    it further (all of them must hold); ``after`` is inclusive, ``before`` exclusive."""

    query: str = Field(max_length=MAX_QUERY_CHARS)
    server_id: ServerId | None = Field(default=None, max_length=128)
    channel_id: ChannelId | None = Field(default=None, max_length=128)
    from_uid: str | None = Field(default=None, max_length=256)
    after: datetime | None = None
    before: datetime | None = None
    limit: int = Field(default=DEFAULT_SEARCH_LIMIT, ge=1, le=MAX_SEARCH_LIMIT)


class Span(Contract):
    """A matched range ``[start, end)`` in ``SearchHit.excerpt`` (characters)."""

    start: int = Field(ge=0)
    end: int = Field(ge=0)


class SearchHit(Contract):
    """One message found. ``snippet`` is the excerpt with every match between ``«`` and ``»``;
    ``excerpt`` + ``spans`` say the same without markers (for a UI that highlights itself)."""

    server_id: ServerId
    channel_id: ChannelId
    message_id: str
    author_uid: str
    created_at: datetime
    snippet: str = Field(max_length=2 * MAX_SNIPPET_CHARS)
    excerpt: str = Field(max_length=MAX_SNIPPET_CHARS + 2)
    spans: list[Span] = Field(default_factory=list)


class SearchResult(Contract):
    """Hits newest first. ``has_more``: more messages match than ``limit``. ``indexed_seq``: the
    events-stream sequence the index reflects; ``caught_up`` False while it is still (re)building."""

    hits: list[SearchHit]
    has_more: bool
    indexed_seq: int
    caught_up: bool


class HistoryPage(Contract):
    """Event ``history.page``: messages of one channel the connector fetched from the backend on
    the member's demand (older than the cached window); indexed for search, nothing else."""

    channel_id: ChannelId
    messages: list[ChatMessage] = Field(max_length=MAX_PAGE_MESSAGES)
