"""Bounded, streaming parse of a history response (``GET /v1/channels/{cid}/messages``).

A backend may answer a history request with far more than was asked (the public backend has no
cap; a hostile one sends 100,000 messages, 100,000-deep nesting or invalid items). Loading such
an answer at once (``json.loads`` → 100k dicts → 100k models) costs hundreds of MB that the
process never gives back. ``HistoryParser`` is fed the response body chunk by chunk as it
arrives (``ijson``'s C parser, push mode) and keeps only:

- the top-level ``channel_id`` and ``next_cursor`` (strings, bounded);
- the **newest ``keep``** items of ``messages`` (the list is oldest first, so older surplus items
  are dropped as they stream past and only counted: ``truncated``);

Each kept item is validated on its own (``wire.Message``): an invalid one is *rejected* with a
short reason (the field and the error type, never a value) while the others are kept. An item
nested deeper than ``max_depth`` or holding more than ``max_item_chars`` characters of strings is
rejected without being built. Anything outside ``messages`` is skipped. The parser itself holds at
most ``keep`` built items plus the one being built, whatever the size of the answer.

Pure (no I/O): ``BackendClient.messages`` feeds it from the HTTP stream.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import ijson
from pydantic import ValidationError

from services.core.contracts import wire
from services.core.contracts.chat import MESSAGE_ID_MAX

MAX_DEPTH = 32  # nesting inside one message (mentions, attachments, rich bodies are 3-4 deep)
MAX_ITEM_CHARS = 1024 * 1024  # characters of strings and keys in one message
MAX_TOP_STRING = 1024  # channel_id / next_cursor
MAX_REASONS = 32  # rejection reasons kept per response (the count is exact)


class HistoryFormatError(ValueError):
    """The response is not a history page at all (not JSON, not an object, no list)."""


@dataclass
class Rejected:
    """One message the connector refused, with why (never its content)."""

    index: int  # position in the response's ``messages`` list
    message_id: str | None  # the id when it is a short printable string, else None
    reason: str
    id_digest: str | None = None  # a digest of any string id (log once per item, whatever its id)


@dataclass
class HistoryPage:
    channel_id: str
    messages: list[wire.Message]
    next_cursor: str | None = None
    total: int = 0  # items in the response's ``messages`` list
    truncated: int = 0  # older items dropped beyond ``keep``
    rejected: list[Rejected] = field(default_factory=list)
    rejected_count: int = 0


def id_digest(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()


def short_id(value: Any) -> str | None:
    """An id safe to log: a short printable ASCII string (anything else is not logged)."""
    if isinstance(value, str) and 0 < len(value) <= 128 and value.isascii() and value.isprintable():
        return value
    return None


def valid_id(value: str, max_len: int = MESSAGE_ID_MAX) -> bool:
    """An opaque backend id the stack can carry: 1..max_len printable characters."""
    return 0 < len(value) <= max_len and value.isprintable()


def reason_of(exc: ValidationError) -> str:
    """``field: error type`` of the first error (no input values)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "message"
    return f"{loc[:64]}: {first.get('type', 'invalid')}"


class _Skip:
    """Marker: the value being built is not kept (outside ``messages``, or a rejected item)."""


_SKIP = _Skip()


class HistoryParser:
    """Push parser: ``feed(chunk)`` per body chunk, then ``finish()``."""

    def __init__(
        self,
        keep: int,
        *,
        max_depth: int = MAX_DEPTH,
        max_item_chars: int = MAX_ITEM_CHARS,
    ) -> None:
        self.keep = max(1, keep)
        self.max_depth = max_depth
        self.max_item_chars = max_item_chars
        self._events: Any = ijson.utils.sendable_list()
        self._coro = ijson.basic_parse_coro(self._events, use_float=True)
        self._depth = 0  # containers open
        self._top_key: str | None = None  # the current key of the top-level object
        self._in_messages = False  # inside the top-level ``messages`` array
        self._index = -1  # position of the current item
        self._stack: list[Any] = []  # containers of the item being built
        self._keys: list[str | None] = []  # pending key per open dict
        self._item_chars = 0
        self._item_reason: str | None = None  # set: the current item is rejected
        self._item_depth = 0
        self._kept: deque[tuple[int, Any]] = deque(maxlen=self.keep)
        self._early_rejects: dict[int, Rejected] = {}
        self.channel_id = ""
        self.next_cursor: str | None = None
        self._saw_object = False
        self._saw_messages = False

    # -- feeding ---------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return  # an empty send would mean "end of input" to ijson
        try:
            self._coro.send(chunk)
        except ijson.JSONError as exc:
            raise HistoryFormatError(f"not valid JSON: {_first_line(exc)}") from None
        self._drain()

    def finish(self) -> HistoryPage:
        try:
            self._coro.close()
        except StopIteration:
            pass
        except ijson.JSONError as exc:
            raise HistoryFormatError(f"not valid JSON: {_first_line(exc)}") from None
        self._drain()
        if not self._saw_object:
            raise HistoryFormatError("not a JSON object")
        if not self._saw_messages:
            raise HistoryFormatError("no messages list")
        total = self._index + 1
        page = HistoryPage(channel_id=self.channel_id, messages=[], next_cursor=self.next_cursor, total=total)
        page.truncated = max(0, total - self.keep)
        for index, value in self._kept:
            rejected = self._early_rejects.get(index)
            if rejected is None:
                if not isinstance(value, dict):
                    rejected = Rejected(
                        index, None, f"message: expected an object, got {type(value).__name__}"
                    )
                else:
                    try:
                        msg = wire.Message.model_validate(value)
                    except ValidationError as exc:
                        raw_id = value.get("id")
                        rejected = Rejected(index, short_id(raw_id), reason_of(exc), id_digest(raw_id))
                    else:
                        if valid_id(msg.id):
                            page.messages.append(msg)
                            continue
                        reason = f"id: not 1-{MESSAGE_ID_MAX} printable characters"
                        rejected = Rejected(index, None, reason, id_digest(msg.id))
            page.rejected_count += 1
            if len(page.rejected) < MAX_REASONS:
                page.rejected.append(rejected)
        self._kept.clear()
        self._early_rejects.clear()
        return page

    # -- events ----------------------------------------------------------------------------------
    def _drain(self) -> None:
        events = self._events
        if not events:
            return
        handle = self._event
        for event, value in events:
            handle(event, value)
        del events[:]

    def _event(self, event: str, value: Any) -> None:
        opening = event in ("start_map", "start_array")
        closing = event in ("end_map", "end_array")
        if self._depth == 0:
            if event != "start_map":
                raise HistoryFormatError("not a JSON object")
            self._saw_object = True
            self._depth = 1
            return
        if self._depth == 1:
            if event == "map_key":
                self._top_key = value
                return
            if event == "end_map":
                self._depth = 0
                return
            key, self._top_key = self._top_key, None
            if key == "messages" and event == "start_array":
                self._saw_messages = True
                self._in_messages = True
                self._depth = 2
                return
            if event == "string" and key in ("channel_id", "next_cursor"):
                text = value[:MAX_TOP_STRING]
                if key == "channel_id":
                    self.channel_id = text
                else:
                    self.next_cursor = text or None
                return
            if opening:  # some other container: skipped
                self._depth = 2
            return
        if not self._in_messages:  # inside a skipped top-level value
            if opening:
                self._depth += 1
            elif closing:
                self._depth -= 1
            return
        if self._depth == 2:  # directly in ``messages``
            if event == "end_array":
                self._in_messages = False
                self._depth = 1
                return
            self._index += 1
            self._item_chars = 0
            self._item_reason = None
            if opening:
                self._depth = 3
                self._item_depth = 1
                self._stack = [{} if event == "start_map" else []]
                self._keys = [None]
                return
            self._keep(value if event != "map_key" else None)  # a scalar item (rejected later)
            return
        # inside an item
        if opening:
            self._depth += 1
            self._item_depth += 1
            if self._item_reason is None and self._item_depth > self.max_depth:
                self._reject(f"message: nested deeper than {self.max_depth}")
            if self._item_reason is None:
                container: Any = {} if event == "start_map" else []
                self._add(container)
                self._stack.append(container)
                self._keys.append(None)
            return
        if closing:
            self._depth -= 1
            self._item_depth -= 1
            if self._item_reason is None:
                done = self._stack.pop()
                self._keys.pop()
                if not self._stack:
                    self._keep(done)
            elif self._item_depth == 0:
                self._keep(_SKIP)
            if self._item_depth == 0:
                self._depth = 2
            return
        if self._item_reason is not None:
            return
        if event == "map_key":
            self._count(value)
            self._keys[-1] = value
            return
        if event == "string":
            self._count(value)
            if self._item_reason is not None:
                return
        self._add(value)

    def _count(self, text: str) -> None:
        self._item_chars += len(text)
        if self._item_chars > self.max_item_chars:
            self._reject(f"message: more than {self.max_item_chars} characters")

    def _reject(self, reason: str) -> None:
        root = self._stack[0] if self._stack else None
        raw_id = root.get("id") if isinstance(root, dict) else None
        self._item_reason = reason
        self._early_rejects[self._index] = Rejected(self._index, short_id(raw_id), reason, id_digest(raw_id))
        self._stack = []
        self._keys = []

    def _add(self, value: Any) -> None:
        top = self._stack[-1]
        if isinstance(top, dict):
            key = self._keys[-1]
            if key is not None:
                top[key] = value
                self._keys[-1] = None
        else:
            top.append(value)

    def _keep(self, value: Any) -> None:
        if len(self._kept) == self.keep:
            dropped, _ = self._kept[0]
            self._early_rejects.pop(dropped, None)  # an older surplus item: only counted
        self._kept.append((self._index, value))
        if value is _SKIP and self._index not in self._early_rejects:
            self._early_rejects[self._index] = Rejected(self._index, None, "message: invalid")


def _first_line(exc: Exception) -> str:
    text = str(exc).removeprefix("b'").split("\\n", 1)[0].split("\n", 1)[0]
    return "".join(ch for ch in text if ch.isascii() and ch.isprintable())[:120]


LARGE_ANSWER_ITEMS = 20_000  # after a fill that parsed an answer this long, ``release_memory``


def release_memory() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``; a no-op elsewhere): a hostile
    answer's transient items would otherwise stay in the process's RSS as free heap."""
    global _trim
    if _trim is None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _trim = libc.malloc_trim
        except (OSError, AttributeError):
            _trim = False
    if _trim:
        _trim(0)


_trim: Any = None


def parse_history(body: bytes, keep: int, chunk: int = 64 * 1024) -> HistoryPage:
    """Parse a whole body (tests, small answers) the same bounded way."""
    parser = HistoryParser(keep)
    for start in range(0, len(body), chunk):
        parser.feed(body[start : start + chunk])
    return parser.finish()
