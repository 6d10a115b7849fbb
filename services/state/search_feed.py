"""The view's pass feeding the search worker process over a socket (ADR 0014, issue 17 follow-up).

With ``STATE_SEARCH_WORKER=true`` (and ``STATE_SEARCH_WORKER_FED``, its default) the materializer's
batches reach the indexer in the worker process through a ``SOCK_SEQPACKET`` unix socket pair:
the state service hands on each applied batch's events of the indexed kinds as they are stored
(subject and bytes, framed with their sequences: no encoding per message in the view's process),
and the worker validates and decodes them with the index's lean contracts (``index_ops``) and does
the FTS5 inserts — at a lower CPU priority, in its own interpreter (no GIL shared with the view).

The socket is the bounded queue: it is non-blocking on the service's side, and a batch that does
not fit (the worker is behind, busy or restarting, or an event larger than the socket takes) is
dropped, never waited for. The next datagram then does not continue where the worker's index is
(its ``before`` is beyond it), and the worker reads the stream itself from the sequence stored in
its file until it has reached the view again — exactly as after any gap. A heartbeat
(``before == last ==`` the view's sequence, no entries) every ``HEARTBEAT_S`` tells an idle worker
where the view is, so a dropped last batch is noticed at once.

Frames are checked on the worker's side (``decode_frame``, then every event as a read of the
stream would be): a malformed frame is refused as a gap (``InvalidFrame``), never applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
from typing import Any

from services.state.domain import InvalidEvent
from services.state.materializer import Fed, Materializer
from services.state.search_index import IndexOp
from services.state.search_indexer import checked_ops, index_ops

log = logging.getLogger("openchat.state.search")

MAX_FRAME = 4 * 1024 * 1024  # the largest datagram the worker reads (an event is at most 1 MiB)
SOCKET_BUFFER = 8 * 1024 * 1024  # the bound of the queue between the view and the worker
HEARTBEAT_S = 0.5


class InvalidFrame(Exception):
    pass


def socket_pair() -> tuple[socket.socket, socket.socket]:
    """(the service's end, the worker's end)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    for s in (ours, theirs):
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER)
    ours.setblocking(False)
    return ours, theirs


# -- frames ---------------------------------------------------------------------------------------
# a frame: header (before, last, count), then per event (seq, flags, subject length, data length),
# the subject and the stored bytes as they are — the view's process only copies them (no encoding
# per message); the worker decodes them. Flag ``CHECKED``: the view's pass validated this event with
# the full contracts (its ``Fed.event``), so the worker only picks the index's fields out of a
# ``message.created`` (``checked_ops``); else it validates it as a read of the stream would
# (``index_ops``, the lean contracts)
_HEAD = struct.Struct("<QQI")
_ITEM = struct.Struct("<QBHI")
CHECKED = 1
FRAME_TARGET = 64 * 1024  # a batch is sent as frames of about this size (one event may be larger)


def encode_frames(before: int, last: int, items: list[Fed]) -> list[bytes]:
    """The frames of one applied batch ``(before, last]``: consecutive sub-batches, each one
    continuing where the previous one ended, the last one ending at ``last``."""
    frames: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    start = before
    for item in items:
        subject = item.subject.encode()
        flags = CHECKED if item.event is not None else 0
        parts += (_ITEM.pack(item.seq, flags, len(subject), len(item.data)), subject, item.data)
        size += _ITEM.size + len(subject) + len(item.data)
        if size >= FRAME_TARGET:
            frames.append(_HEAD.pack(start, item.seq, len(parts) // 3) + b"".join(parts))
            start, parts, size = item.seq, [], 0
    if parts or not frames or start < last:
        frames.append(_HEAD.pack(start, last, len(parts) // 3) + b"".join(parts))
    return frames


def decode_frame(data: bytes) -> tuple[int, int, list[tuple[int, str, bytes, bool]]]:
    """``(before, last, [(seq, subject, data, checked)])`` of one datagram (``checked``: the view's
    pass validated the event). Raises ``InvalidFrame``."""
    if len(data) < _HEAD.size:
        raise InvalidFrame("short frame")
    before, last, count = _HEAD.unpack_from(data)
    if before > last:
        raise InvalidFrame("bad sequences")
    pos = _HEAD.size
    items: list[tuple[int, str, bytes, bool]] = []
    for _ in range(count):
        if pos + _ITEM.size > len(data):
            raise InvalidFrame("truncated frame")
        seq, flags, n_subject, n_data = _ITEM.unpack_from(data, pos)
        pos += _ITEM.size
        end = pos + n_subject + n_data
        if end > len(data) or not before < seq <= last or flags & ~CHECKED:
            raise InvalidFrame("malformed entry")
        try:
            subject = data[pos : pos + n_subject].decode()
        except UnicodeDecodeError:
            raise InvalidFrame("malformed subject") from None
        items.append((seq, subject, data[pos + n_subject : end], bool(flags & CHECKED)))
        pos = end
    if pos != len(data):
        raise InvalidFrame("trailing bytes")
    return before, last, items


# -- the service's side ---------------------------------------------------------------------------
class FeedSender:
    """A tap of the materializer (``Materializer.add_tap``) sending each applied batch to the
    worker; never blocks the view's pass."""

    def __init__(self, source: Materializer, kinds: tuple[str, ...]) -> None:
        self.source = source
        self.sock: socket.socket | None = None
        self.sent = 0
        self.dropped = 0
        self._task: asyncio.Task[None] | None = None
        source.add_tap(self.tap, kinds)

    def attach(self, sock: socket.socket | None) -> None:
        """The socket of the (new) worker; None while there is none."""
        old, self.sock = self.sock, sock
        if old is not None and old is not sock:
            old.close()
        if sock is not None:
            self._heartbeat_frame()

    def tap(self, before: int, items: list[Fed], last: int) -> None:
        if self.sock is None:
            return
        for frame in encode_frames(before, last, items):
            if not self._send(frame):
                return  # the rest would not continue where the worker is: it reads the stream

    def _send(self, frame: bytes) -> bool:
        sock = self.sock
        if sock is None:
            return False
        try:
            sock.send(frame)
        except (BlockingIOError, InterruptedError):
            self.dropped += 1  # the worker is behind: it reads the stream itself
            return False
        except OSError:
            self.dropped += 1  # the worker is gone (or a frame too large): it catches up itself
            return False
        self.sent += 1
        return True

    def _heartbeat_frame(self) -> None:
        seq = self.source.applied_seq
        self._send(_HEAD.pack(seq, seq, 0))

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name="state-search-feed")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self._heartbeat_frame()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.attach(None)


# -- the worker's side ----------------------------------------------------------------------------
class FeedSource:
    """What the worker knows of the view: its applied sequence (from every datagram), and the
    batches, handed to the indexer's ``offer_ops`` in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.setblocking(False)
        self.applied_seq = 0
        self.received = 0
        self.refused = 0
        self.skipped = 0
        self.closed = asyncio.Event()

    async def run(self, offer: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, MAX_FRAME)
            if not data:
                self.closed.set()  # the service closed its end
                return
            try:
                before, last, items = decode_frame(data)
            except InvalidFrame as exc:
                self.refused += 1  # the next frame then does not continue: a catch-up
                log.warning("search feed: refused a frame", extra={"error": str(exc)})
                continue
            self.received += 1
            self.applied_seq = max(self.applied_seq, last)
            ops: list[tuple[int, IndexOp]] = []
            for seq, subject, payload, checked in items:
                try:
                    ops.extend((seq, op) for op in (checked_ops if checked else index_ops)(subject, payload))
                except InvalidEvent as exc:
                    self.skipped += 1
                    log.warning(
                        "search index skipped an invalid event",
                        extra={"subject": subject, "seq": seq, "error": str(exc)[:300]},
                    )
            offer(before, ops, last)
