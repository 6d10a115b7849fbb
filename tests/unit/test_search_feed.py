"""The feed from the view's pass to the search worker (``services.state.search_feed``): frames,
their checks, and a sender that never blocks the view (a real unix socket pair)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import ChatMessage, MessageCreated
from services.state import search_feed
from services.state.domain import InvalidEvent, decode_event
from services.state.materializer import Fed, Materializer
from services.state.search_feed import FeedSender, InvalidFrame, decode_frame, encode_frames, socket_pair
from services.state.search_index import PutMessage
from services.state.search_indexer import INDEXED_KINDS, checked_ops, index_ops

SUBJECT = "oc.sys.ev.alice.srv_a.message.created"


def created(i: int, body: str = "hello", checked: bool = False) -> Fed:
    msg = ChatMessage(
        id=f"m{i}",
        server_id="srv_a",
        channel_id="general",
        author_uid="uid_1",
        body=body,
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )
    env = EventEnvelope[MessageCreated](
        event_id=f"e{i}", server_id="srv_a", type="message.created", payload=MessageCreated(message=msg)
    )
    data = env.model_dump_json().encode()
    # ``checked``: as the view's pass hands it on after validating it (its decoded event)
    return Fed(i, "message.created", SUBJECT, data, decode_event(SUBJECT, data, i) if checked else None)


def test_a_batch_round_trips_and_decodes_as_a_read_of_the_stream_would() -> None:
    frames = encode_frames(10, 14, [created(11), created(13, "東京 token")])
    assert len(frames) == 1
    before, last, items = decode_frame(frames[0])
    assert (before, last) == (10, 14)
    assert [(seq, subject, checked) for seq, subject, _, checked in items] == [
        (11, SUBJECT, False),
        (13, SUBJECT, False),
    ]
    ops = index_ops(items[1][1], items[1][2])
    assert isinstance(ops[0], PutMessage) and ops[0].body == "東京 token" and ops[0].message_id == "m13"


def test_a_large_batch_is_split_into_frames_that_continue_each_other(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(search_feed, "FRAME_TARGET", 1000)
    items = [created(i, "x" * 400) for i in range(101, 111)]
    frames = encode_frames(100, 115, items)
    assert len(frames) > 2
    decoded = [decode_frame(f) for f in frames]
    assert decoded[0][0] == 100 and decoded[-1][1] == 115
    for (_, last, _), (before, _, _) in itertools.pairwise(decoded):
        assert before == last  # each continues where the previous one ended
    assert [seq for _, _, its in decoded for seq, _, _, _ in its] == list(range(101, 111))


def test_events_the_view_validated_are_flagged_and_give_the_same_operations() -> None:
    frame = encode_frames(10, 13, [created(11, "東京 token", checked=True), created(12, "plain")])[0]
    _, _, items = decode_frame(frame)
    assert [checked for _, _, _, checked in items] == [True, False]
    for _, subject, data, _ in items:
        assert checked_ops(subject, data) == index_ops(subject, data)
    (op,) = checked_ops(items[0][1], items[0][2])
    assert isinstance(op, PutMessage) and op.body == "東京 token" and op.created_at.tzinfo is not None


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[]",
        b'{"payload": {"message": {"id": 1}}}',
        # fields of the wrong types, or another server than the subject's: validated in full
        b'{"event_id":"e","server_id":"srv_a","type":"message.created","payload":{"message":'
        b'{"id":"m1","server_id":"srv_b","channel_id":"c","author_uid":"u","body":"b",'
        b'"created_at":"2026-01-01T00:00:00Z"}}}',
    ],
)
def test_a_flagged_event_that_is_not_what_the_view_validated_is_checked_in_full(data: bytes) -> None:
    with pytest.raises(InvalidEvent):
        checked_ops(SUBJECT, data)


def test_an_empty_batch_still_tells_where_the_view_is() -> None:
    assert decode_frame(encode_frames(7, 9, [])[0]) == (7, 9, [])


@pytest.mark.parametrize(
    "mangle",
    [
        lambda f: f[:10],  # short
        lambda f: f[:-1],  # truncated entry
        lambda f: f + b"x",  # trailing bytes
        lambda f: search_feed._HEAD.pack(20, 10, 0),  # before after last
        lambda f: search_feed._HEAD.pack(11, 14, 1) + f[search_feed._HEAD.size :],  # entry outside its batch
    ],
)
def test_malformed_frames_are_refused(mangle: Any) -> None:
    frame = encode_frames(10, 14, [created(11)])[0]
    with pytest.raises(InvalidFrame):
        decode_frame(mangle(frame))


def test_the_sender_never_blocks_the_view_and_counts_what_it_dropped() -> None:
    view = Materializer(cast(Any, None), cast(Any, None), "S", 20, lambda: datetime.now(UTC))
    sender = FeedSender(view, INDEXED_KINDS)
    ours, theirs = socket_pair()
    try:
        sender.attach(ours)  # the worker is told where the view is at once
        assert decode_frame(theirs.recv(1 << 20)) == (0, 0, [])
        seq = 0
        while sender.dropped == 0:  # nobody reads: the socket fills up, then frames are dropped
            sender.tap(seq, [created(seq + 1, "y" * 2000)], seq + 1)
            seq += 1
            assert seq < 100_000
        assert sender.sent > 0
        received = []
        theirs.setblocking(False)
        while True:
            try:
                received.append(decode_frame(theirs.recv(1 << 20)))
            except BlockingIOError:
                break
        # what arrived is an unbroken run from the start; what did not is a gap the worker sees
        assert [r[0] for r in received] == list(range(len(received)))
        assert len(received) == sender.sent - 1
    finally:
        sender.attach(None)
        theirs.close()
