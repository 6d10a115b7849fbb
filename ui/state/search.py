"""The desktop's message search (issue 17) as plain state: the Ctrl+F panel and the jump to a hit.

Pure (no Dear PyGui, no asyncio): ``SearchPanel`` holds what the member typed, the scope, the
request in flight and the answer; the controller (``ui.controller.Controller``) sends the
``state.search`` command it builds and hands the answer back; the pane (``ui.view.search``)
renders ``groups()``.

- **Query**: the box takes the syntax of ``openchat search`` (``services.core.search_query``):
  words (all must match), ``"exact phrases"``, ``prefix*``, ``from:<uid>`` and ``in:<channel>`` /
  ``in:<server>/<channel>`` / ``in:<server>/``. It is parsed here first, so a query the service
  would refuse says why at once, without a round trip.
- **Scope**: all servers, this server, this channel (of what is on screen when the search runs).
  ``in:`` and ``from:`` narrow it further (all must hold).
- **Answers**: each request has an id; an answer to an older request (the member typed on) is
  dropped.
- **Results**: newest first, grouped by server and channel in the order their newest hit came;
  every snippet as segments ``(text, matched)`` from the hit's excerpt and match spans.
- **Jump** (``JumpPlan``): to show a hit, the channel is opened and its history is loaded back
  until the message is in the log — from the desktop's compact pages first, then older pages from
  the stack — plus a page of context before it; it stops at a bound or once the history is older
  than the message (deleted since, or no longer on the server).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from services.core.contracts.chat import ChatMessage
from services.core.contracts.search import MAX_QUERY_CHARS, SearchArgs, SearchHit, SearchResult
from ui.state.store import MessageLog

Scope = Literal["all", "server", "channel"]
SCOPES: tuple[tuple[Scope, str], ...] = (
    ("all", "All servers"),
    ("server", "This server"),
    ("channel", "This channel"),
)


def as_scope(value: str | None) -> Scope | None:
    """A scope name from an intent (anything else: None)."""
    for scope, _label in SCOPES:
        if value == scope:
            return scope
    return None


RESULT_LIMIT = 50
JUMP_PAGE = 200  # messages per older page while looking for a hit's message
JUMP_MAX_PAGES = 25  # 5,000 messages back at most
CONTEXT = 20  # messages wanted above the found one ("the history around it")

Segment = tuple[str, bool]  # (text, is a match)


@dataclass(frozen=True)
class SearchCmd:
    """One ``state.search`` request to send."""

    request: int
    args: SearchArgs


@dataclass(frozen=True)
class HitRow:
    hit: SearchHit
    author: str
    time_text: str
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class ResultGroup:
    server_id: str
    channel_id: str
    title: str  # "Server / # channel"
    hits: tuple[HitRow, ...]


def segments(hit: SearchHit) -> tuple[Segment, ...]:
    """The hit's excerpt cut at its match spans: ``(text, matched)`` pieces in order."""
    text = hit.excerpt
    out: list[Segment] = []
    pos = 0
    for span in sorted(hit.spans, key=lambda s: s.start):
        start, end = max(pos, min(span.start, len(text))), min(span.end, len(text))
        if end <= start:
            continue
        if start > pos:
            out.append((text[pos:start], False))
        out.append((text[start:end], True))
        pos = end
    if pos < len(text):
        out.append((text[pos:], False))
    return tuple(out)


def format_hit_time(created: datetime, now: datetime) -> str:
    local = created.astimezone()
    if local.date() == now.astimezone().date():
        return f"Today at {local:%H:%M}"
    if local.year == now.astimezone().year:
        return f"{local:%b} {local.day} at {local:%H:%M}"
    return f"{local:%Y-%m-%d %H:%M}"


@dataclass
class SearchPanel:
    """The Ctrl+F panel's state (main thread only)."""

    open: bool = False
    query: str = ""
    scope: Scope = "all"
    status: Literal["idle", "searching", "done", "error"] = "idle"
    error: str = ""
    hits: list[SearchHit] = field(default_factory=list)
    has_more: bool = False
    caught_up: bool = True
    searched: str = ""  # the query the hits answer
    version: int = 0  # bumped on every change the pane shows
    _request: int = 0

    def _changed(self) -> None:
        self.version += 1

    def show(self, scope: Scope | None = None) -> None:
        self.open = True
        if scope is not None:
            self.scope = scope
        self._changed()

    def close(self) -> None:
        self.open = False
        self._changed()

    def set_query(self, text: str) -> None:
        if text != self.query:
            self.query = text[:MAX_QUERY_CHARS]
            self._changed()

    def set_scope(self, scope: Scope) -> None:
        if scope != self.scope:
            self.scope = scope
            self._changed()

    def submit(self, server_id: str | None, channel_id: str | None) -> SearchCmd | None:
        """The request for what is typed, in the scope of what is on screen (``server_id`` /
        ``channel_id``); None (and ``error`` set) when there is nothing to send."""
        text = self.query.strip()
        self._request += 1  # any answer still in flight is stale from now on
        self.error = ""
        if not text:
            self.status, self.hits, self.searched = "idle", [], ""
            self._changed()
            return None
        from services.core.search_query import QueryError, parse_query  # with the first search, not at start

        try:
            parse_query(text)
        except QueryError as exc:
            self._fail(f"Cannot search: {exc}.")
            return None
        sid = server_id if self.scope in ("server", "channel") else None
        ch = channel_id if self.scope == "channel" else None
        if (self.scope != "all" and sid is None) or (self.scope == "channel" and ch is None):
            self._fail("Open a channel first, or search all servers.")
            return None
        self.status = "searching"
        self.searched = text
        self._changed()
        return SearchCmd(
            self._request, SearchArgs(query=text, server_id=sid, channel_id=ch, limit=RESULT_LIMIT)
        )

    def _fail(self, text: str) -> None:
        self.status, self.error, self.hits = "error", text, []
        self._changed()

    def answered(self, request: int, result: SearchResult | None, error: str | None) -> bool:
        """The answer to ``request``; False when it was stale (dropped)."""
        if request != self._request:
            return False
        if error is not None or result is None:
            self._fail(f"Search failed: {error or 'no answer'}")
            return True
        self.status = "done"
        self.hits = list(result.hits)
        self.has_more = result.has_more
        self.caught_up = result.caught_up
        self._changed()
        return True

    def drop_server(self, server_id: str) -> None:
        """A server was left: its hits go too."""
        kept = [h for h in self.hits if h.server_id != server_id]
        if len(kept) != len(self.hits):
            self.hits = kept
            self._changed()

    def drop_message(self, server_id: str, message_id: str) -> None:
        """A message was deleted: its hit goes (the index drops it too)."""
        kept = [h for h in self.hits if not (h.server_id == server_id and h.message_id == message_id)]
        if len(kept) != len(self.hits):
            self.hits = kept
            self._changed()

    def summary(self) -> str:
        if self.status == "searching":
            return "Searching…"
        if self.status == "error":
            return self.error
        if self.status == "idle":
            return 'Words, "exact phrase", prefix*, from:uid, in:channel — Enter to search'
        n = len(self.hits)
        if n == 0:
            text = "No messages match."
        else:
            text = f"{n}{'+' if self.has_more else ''} result{'s' if n != 1 or self.has_more else ''}"
        if not self.caught_up:
            text += " (the index is still catching up: results may be incomplete)"
        return text

    def groups(
        self,
        server_name: Callable[[str], str],
        channel_name: Callable[[str, str], str],
        author_name: Callable[[str, str], str],
        now: datetime,
    ) -> list[ResultGroup]:
        """Hits grouped by (server, channel), groups in the order of their newest hit."""
        order: dict[tuple[str, str], list[HitRow]] = {}
        for h in self.hits:
            row = HitRow(
                hit=h,
                author=author_name(h.server_id, h.author_uid),
                time_text=format_hit_time(h.created_at, now),
                segments=segments(h),
            )
            order.setdefault((h.server_id, h.channel_id), []).append(row)
        return [
            ResultGroup(sid, ch, f"{server_name(sid)} / # {channel_name(sid, ch)}", tuple(rows))
            for (sid, ch), rows in order.items()
        ]


# -- the jump ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Found:
    """The message is in the log's window: show it."""


@dataclass(frozen=True)
class FetchOlder:
    """Ask the stack for the page before ``before`` (None: the channel's newest page)."""

    before: str | None
    limit: int = JUMP_PAGE


@dataclass(frozen=True)
class Missing:
    """The message cannot be shown (deleted since, or beyond the server's history)."""

    reason: str


JumpStep = Found | FetchOlder | Missing


@dataclass
class JumpPlan:
    """Bring one message into a channel's log, with some history above it."""

    server_id: str
    channel_id: str
    message_id: str
    created_at: datetime
    pages: int = 0
    context_asked: bool = False

    def step(self, log: MessageLog, has_more: bool) -> JumpStep:
        """What to do next, given the channel's log now (this unpacks the log's compact older
        pages into its window until the message is there: no round trip for what is held)."""
        while log.find(self.message_id) is None and log.older:
            log.unspill_older()
        window = log.window
        index = next((i for i, m in enumerate(window) if m.id == self.message_id), None)
        if index is not None:
            if index < CONTEXT and has_more and not self.context_asked and self.pages < JUMP_MAX_PAGES:
                self.context_asked = True  # one more page, so the message is not at the very top
                return self._fetch(window)
            return Found()
        if window and not has_more:
            return Missing("This message is no longer in the channel's history.")
        if window and _older_than(window[0], self.created_at):
            return Missing("This message was deleted.")
        if self.pages >= JUMP_MAX_PAGES:
            return Missing(f"This message is more than {JUMP_MAX_PAGES * JUMP_PAGE:,} messages back.")
        return self._fetch(window)

    def _fetch(self, window: list[ChatMessage]) -> FetchOlder:
        self.pages += 1
        return FetchOlder(window[0].id if window else None)


def _older_than(m: ChatMessage, created_at: datetime) -> bool:
    """``m`` was posted strictly before the target (the target would be newer: in the window)."""
    return m.created_at < created_at
