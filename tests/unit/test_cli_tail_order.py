"""The ordering rules of ``openchat tail`` (no I/O: the resync itself is tested against a real
NATS kill in tests/faults/test_tail_resync.py)."""

from __future__ import annotations

import json
from typing import Any, cast

from nats.aio.msg import Msg

from services.cli.chat import MemberClient, _Tailer


def live(seq: int) -> Msg:
    return Msg(
        cast(Any, None),
        subject="oc.alice.evt.srv_a.message.created",
        data=json.dumps({"n": seq}).encode(),
        headers={"Nats-Sequence": str(seq)},
    )


def tailer(printed: list[int]) -> _Tailer:
    return _Tailer(cast(MemberClient, None), lambda seq, subject, doc: printed.append(seq), lambda _: None)


async def test_live_events_before_the_start_position_are_printed() -> None:
    """The view's sequence when tail starts may already include an event still on its way to
    this connection: the start position is where a resync begins, never a filter."""
    printed: list[int] = []
    t = tailer(printed)
    await t.on_msg(live(12))  # buffered while the start position is asked
    t.start_at(15)  # the view had applied up to 15 already
    await t.on_msg(live(14))  # late on this connection, but never printed: print it
    await t.on_msg(live(16))
    assert printed == [12, 14, 16]


async def test_events_buffered_during_a_resync_print_once_in_order() -> None:
    printed: list[int] = []
    t = tailer(printed)
    t.start_at(10)
    await t.on_msg(live(11))
    t.disconnected()  # from here on, live events wait for the gap
    await t.on_msg(live(20))
    await t.on_msg(live(18))
    assert printed == [11]
    t._print(13, "s", {})  # what the resync returned from the stream
    t._print(18, "s", {})
    t._flush()
    assert printed == [11, 13, 18, 20]
