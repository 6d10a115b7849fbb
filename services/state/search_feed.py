"""The view's pass feeding the search worker process over a socket (ADR 0014, issue 17 follow-up).

With ``STATE_SEARCH_WORKER=true`` (and ``STATE_SEARCH_WORKER_FED``, its default) the materializer's
batches reach the indexer in the worker process through a ``SOCK_SEQPACKET`` unix socket pair:
the state service turns each applied batch's already decoded events into the few fields the
index keeps (``fed_ops``) and sends them as one compact JSON datagram; the worker does the FTS5
inserts on the other core, in its own interpreter (no GIL shared with the view).

The socket is the bounded queue: it is non-blocking on the service's side, and a batch that does
not fit (the worker is behind, busy or restarting, or the batch is larger than ``MAX_FRAME``) is
dropped, never waited for. The next datagram then does not continue where the worker's index is
(its ``before`` is beyond it), and the worker reads the stream itself from the sequence stored in
its file until it has reached the view again — exactly as after any gap. A heartbeat
(``before == last ==`` the view's sequence, no entries) every ``HEARTBEAT_S`` tells an idle worker
where the view is, so a dropped last batch is noticed at once.

Frames are validated on the worker's side (``decode_frame``): anything malformed is refused as a
gap (``InvalidFrame``), never applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from datetime import datetime
from typing import Any

from services.state.domain import InvalidEvent
from services.state.materializer import Fed, Materializer
from services.state.search_index import DeleteMessage, DropMember, DropServer, IndexOp, PutMessage
from services.state.search_indexer import fed_ops

log = logging.getLogger("openchat.state.search")

MAX_FRAME = 4 * 1024 * 1024  # one datagram; a larger batch is dropped (the worker reads the stream)
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
def _op_row(seq: int, op: IndexOp) -> list[Any]:
    if isinstance(op, PutMessage):
        return [
            seq,
            "p",
            op.member,
            op.server_id,
            op.channel_id,
            op.message_id,
            op.author_uid,
            op.created_at.isoformat(),
            op.body,
        ]
    if isinstance(op, DeleteMessage):
        return [seq, "d", op.member, op.server_id, op.channel_id, op.message_id]
    if isinstance(op, DropServer):
        return [seq, "s", op.member, op.server_id]
    return [seq, "m", op.member]


def encode_frame(before: int, last: int, ops: list[tuple[int, IndexOp]]) -> bytes:
    return json.dumps(
        [before, last, [_op_row(seq, op) for seq, op in ops]], ensure_ascii=False, separators=(",", ":")
    ).encode()


def _strs(row: list[Any], n: int) -> list[str]:
    if len(row) != n or not all(isinstance(x, str) for x in row[2:]):
        raise InvalidFrame("malformed entry")
    return row[2:]


def decode_frame(data: bytes) -> tuple[int, int, list[tuple[int, IndexOp]]]:
    """``(before, last, [(seq, op)])`` of one datagram. Raises ``InvalidFrame``."""
    try:
        frame = json.loads(data)
    except ValueError:
        raise InvalidFrame("not JSON") from None
    if not (isinstance(frame, list) and len(frame) == 3):
        raise InvalidFrame("not a frame")
    before, last, rows = frame
    if not (type(before) is int and type(last) is int and 0 <= before <= last and isinstance(rows, list)):
        raise InvalidFrame("bad sequences")
    ops: list[tuple[int, IndexOp]] = []
    for row in rows:
        if not (isinstance(row, list) and len(row) >= 3 and type(row[0]) is int):
            raise InvalidFrame("malformed entry")
        seq, kind = row[0], row[1]
        if not before < seq <= last:
            raise InvalidFrame("entry outside its batch")
        op: IndexOp
        if kind == "p":
            member, server, channel, mid, author, created, body = _strs(row, 9)
            try:
                when = datetime.fromisoformat(created)
            except ValueError:
                raise InvalidFrame("bad time") from None
            op = PutMessage(member, server, channel, mid, author, when, body)
        elif kind == "d":
            op = DeleteMessage(*_strs(row, 6))
        elif kind == "s":
            op = DropServer(*_strs(row, 4))
        elif kind == "m":
            op = DropMember(*_strs(row, 3))
        else:
            raise InvalidFrame("unknown entry kind")
        ops.append((seq, op))
    return before, last, ops


# -- the service's side ---------------------------------------------------------------------------
class FeedSender:
    """A tap of the materializer (``Materializer.add_tap``) sending each applied batch to the
    worker; never blocks the view's pass."""

    def __init__(self, source: Materializer, kinds: tuple[str, ...]) -> None:
        self.source = source
        self.sock: socket.socket | None = None
        self.sent = 0
        self.dropped = 0
        self.skipped = 0
        self._task: asyncio.Task[None] | None = None
        source.add_tap(self.tap, kinds)

    def attach(self, sock: socket.socket | None) -> None:
        """The socket of the (new) worker; None while there is none."""
        old, self.sock = self.sock, sock
        if old is not None and old is not sock:
            old.close()
        if sock is not None:
            self._send(self.source.applied_seq, self.source.applied_seq, [])

    def tap(self, before: int, items: list[Fed], last: int) -> None:
        if self.sock is None:
            return
        ops: list[tuple[int, IndexOp]] = []
        for item in items:
            try:
                ops.extend((item.seq, op) for op in fed_ops(item))
            except InvalidEvent as exc:
                self.skipped += 1  # the worker reads the stream itself for nothing it misses here:
                log.warning(  # the event is invalid for the index (logged as the indexer does)
                    "search index skipped an invalid event",
                    extra={"subject": item.subject, "seq": item.seq, "error": str(exc)[:300]},
                )
        self._send(before, last, ops)

    def _send(self, before: int, last: int, ops: list[tuple[int, IndexOp]]) -> None:
        sock = self.sock
        if sock is None:
            return
        frame = encode_frame(before, last, ops)
        if len(frame) > MAX_FRAME:
            self.dropped += 1
            return
        try:
            sock.send(frame)
            self.sent += 1
        except (BlockingIOError, InterruptedError):
            self.dropped += 1  # the worker is behind: it reads the stream itself
        except OSError:
            self.dropped += 1  # the worker is gone: it is started again and catches up

    def start(self) -> None:
        self._task = asyncio.create_task(self._heartbeat(), name="state-search-feed")

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            seq = self.source.applied_seq
            self._send(seq, seq, [])

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
        self.closed = asyncio.Event()

    async def run(self, offer: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, MAX_FRAME)
            if not data:
                self.closed.set()  # the service closed its end
                return
            try:
                before, last, ops = decode_frame(data)
            except InvalidFrame as exc:
                self.refused += 1
                log.warning("search feed: refused a frame", extra={"error": str(exc)})
                continue
            self.received += 1
            self.applied_seq = max(self.applied_seq, last)
            offer(before, ops, last)
