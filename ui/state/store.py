"""A channel's messages as the desktop keeps them: bounded live objects, compact pages beyond.

Only a *window* of a channel's messages exists as ``ChatMessage`` objects (the rows the timeline
shows and a margin around them). Messages that leave the window — older ones while the reader
follows the newest, newer ones while the reader is deep in history — are kept as pages of
zlib-compressed JSON (~70 bytes per message instead of ~1.3 KB as objects) and come back page by
page when the timeline reaches an edge of the window. Older messages the desktop never had are
fetched from the stack (``has_more``) only once the compact pages are exhausted.

While newer pages exist the log is *detached*: the window does not end at the newest message,
so messages that arrive are appended to the compact tail instead of the window (the reader is
not following); reaching the window's end brings the newer pages back until the log is attached
again.

Identity: a message id is de-duplicated against the window and the ids of the newest
``RECENT_IDS`` messages that left it (replays and overlapping pages only ever touch the edges).
"""

from __future__ import annotations

import bisect
import zlib
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime

from pydantic import TypeAdapter

from services.core.contracts.chat import ChatMessage

PAGE = 256  # messages per compact page
WINDOW_MAX = 1_200  # live objects kept while the reader is in history
WINDOW_IDLE = 200  # live objects kept while following the newest (or the channel is not shown)
RECENT_IDS = 4_096

_PAGE_ADAPTER: TypeAdapter[list[ChatMessage]] = TypeAdapter(list[ChatMessage])


def _key(m: ChatMessage) -> datetime:
    """Timeline order: by time; among equal times the order of arrival (the backend's): sorting
    is stable and ``insort`` inserts after equal keys."""
    return m.created_at


def _pack(msgs: list[ChatMessage]) -> bytes:
    return zlib.compress(_PAGE_ADAPTER.dump_json(msgs), 1)


def _unpack(page: bytes) -> list[ChatMessage]:
    return _PAGE_ADAPTER.validate_json(zlib.decompress(page))


class MessageLog:
    def __init__(self, msgs: Iterable[ChatMessage] = ()) -> None:
        self.window: list[ChatMessage] = sorted(msgs, key=_key)
        self.ids: set[str] = {m.id for m in self.window}
        self.older: list[bytes] = []  # older[-1] is next to window[0]
        self.newer: list[bytes] = []  # newer[0] is next to window[-1]
        self.tail: list[ChatMessage] = []  # arrived while detached, after every newer page
        self.recent: OrderedDict[str, None] = OrderedDict()
        self.spilled = 0  # messages held in compact pages (older + newer + tail)

    # -- reading ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.window)

    @property
    def detached(self) -> bool:
        """The window does not reach the newest message."""
        return bool(self.newer or self.tail)

    def has(self, message_id: str) -> bool:
        return message_id in self.ids or message_id in self.recent

    def find(self, message_id: str) -> ChatMessage | None:
        if message_id not in self.ids:
            return None
        for m in reversed(self.window):
            if m.id == message_id:
                return m
        return None

    def latest(self, n: int) -> list[ChatMessage]:
        """The newest ``n`` messages, wherever they are kept."""
        if not self.detached:
            return self.window[-n:]
        out = list(self.tail[-n:])
        for page in reversed(self.newer):
            if len(out) >= n:
                break
            out = _unpack(page) + out
        if len(out) < n:
            out = self.window + out
        return out[-n:]

    # -- adding -----------------------------------------------------------------------------
    def add(self, m: ChatMessage) -> bool:
        """A message that arrived (live or replayed); False when already known."""
        if self.has(m.id):
            return False
        if self.detached:
            self.tail.append(m)
            self._remember(m.id)
            self.spilled += 1
            if len(self.tail) >= PAGE:
                self.newer.append(_pack(self.tail))
                self.tail = []
            return True
        self.ids.add(m.id)
        w = self.window
        if not w or _key(w[-1]) <= _key(m):
            w.append(m)
        else:
            bisect.insort(w, m, key=_key)
        return True

    def prepend(self, msgs: Iterable[ChatMessage]) -> int:
        """An older page from the stack; returns how many were new."""
        added = 0
        for m in msgs:
            if not self.has(m.id):
                self.ids.add(m.id)
                bisect.insort(self.window, m, key=_key)
                added += 1
        return added

    def replace(self, message: ChatMessage) -> bool:
        """Swap a message held in the window for a newer copy of itself (previews arrived)."""
        if message.id not in self.ids:
            return False
        for i in range(len(self.window) - 1, -1, -1):
            if self.window[i].id == message.id:
                self.window[i] = message
                return True
        return False

    def delete(self, message_id: str) -> bool:
        if message_id in self.ids:
            self.ids.discard(message_id)
            self.window[:] = [m for m in self.window if m.id != message_id]
            return True
        if message_id in self.recent:
            del self.recent[message_id]
        n = len(self.tail)
        self.tail = [m for m in self.tail if m.id != message_id]
        if len(self.tail) != n:
            self.spilled -= 1
            return True
        for pages in (self.older, self.newer):
            for i, page in enumerate(pages):
                msgs = _unpack(page)
                kept = [m for m in msgs if m.id != message_id]
                if len(kept) != len(msgs):
                    if kept:
                        pages[i] = _pack(kept)
                    else:
                        del pages[i]
                    self.spilled -= 1
                    return True
        return False

    # -- moving the window ------------------------------------------------------------------
    def trim(self, lo: int, hi: int, following: bool) -> int:
        """Keep the window bounded around the shown rows ``[lo, hi)``; returns how many messages
        left the front (the caller shifts its indices by that)."""
        cap = WINDOW_IDLE if following else WINDOW_MAX
        if len(self.window) <= cap + PAGE:
            return 0
        front = 0
        # spill whole pages from the end farther from the shown rows
        while len(self.window) > cap:
            before, after = lo, len(self.window) - hi
            if after > before and after >= PAGE:
                page = self.window[-PAGE:]
                del self.window[-PAGE:]
                self.newer.insert(0, _pack(page))
                self._forget(page)
            elif before >= PAGE:
                page = self.window[:PAGE]
                del self.window[:PAGE]
                self.older.append(_pack(page))
                self._forget(page)
                lo -= PAGE
                hi -= PAGE
                front += PAGE
            else:
                break
        return front

    def unspill_older(self) -> int:
        """Bring the page before the window back; returns how many messages came back."""
        if not self.older:
            return 0
        page = _unpack(self.older.pop())
        self.spilled -= len(page)
        fresh = [m for m in page if m.id not in self.ids]
        self.ids.update(m.id for m in fresh)
        self.window[:0] = fresh
        return len(fresh)

    def unspill_newer(self) -> int:
        """Bring the page after the window back (the tail once no page is left)."""
        if self.newer:
            page = _unpack(self.newer.pop(0))
        elif self.tail:
            page, self.tail = self.tail, []
        else:
            return 0
        self.spilled -= len(page)
        fresh = [m for m in page if m.id not in self.ids]
        self.ids.update(m.id for m in fresh)
        self.window.extend(fresh)
        return len(fresh)

    def attach(self) -> None:
        """Back to the newest messages (jump to present) without unpacking what lies between:
        the window becomes older pages, the newer pages join them, and the newest pages return."""
        if not self.detached:
            return
        while self.window:
            page = self.window[:PAGE]
            del self.window[:PAGE]
            self.older.append(_pack(page))
            self._forget(page)
        self.ids.clear()
        if self.tail:
            self.newer.append(_pack(self.tail))
            self.tail = []
        self.older.extend(self.newer)
        self.newer = []
        while len(self.window) < WINDOW_IDLE and self.older:
            self.unspill_older()

    def _forget(self, page: list[ChatMessage]) -> None:
        for m in page:
            self.ids.discard(m.id)
            self._remember(m.id)
        self.spilled += len(page)

    def _remember(self, message_id: str) -> None:
        self.recent[message_id] = None
        if len(self.recent) > RECENT_IDS:
            self.recent.popitem(last=False)
