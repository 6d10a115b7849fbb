"""The desktop's bounded message log (ui.state.store): a window of objects, compact pages beyond."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.core.contracts.chat import ChatMessage, ReplyRef
from ui.state.store import PAGE, WINDOW_IDLE, WINDOW_MAX, MessageLog

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def m(i: int, body: str | None = None) -> ChatMessage:
    return ChatMessage(
        id=f"m{i:06d}",
        server_id="srv_a",
        channel_id="ch_1",
        author_uid=f"uid_{i % 7}",
        body=body if body is not None else f"message {i} ✓ — ünïcode",
        created_at=T0 + timedelta(seconds=i),
        reply_to=ReplyRef(message_id=f"m{i - 1:06d}", author_uid="uid_1", preview_text="p")
        if i % 5
        else None,
    )


def ids(msgs: list[ChatMessage]) -> list[str]:
    return [x.id for x in msgs]


def test_following_keeps_only_the_newest_window_and_pages_the_rest() -> None:
    log = MessageLog()
    for i in range(5_000):
        assert log.add(m(i))
        if i % 100 == 0:
            log.trim(len(log), len(log), following=True)
    log.trim(len(log), len(log), following=True)
    assert len(log) <= WINDOW_IDLE
    assert ids(log.window) == ids([m(i) for i in range(5_000 - len(log), 5_000)])
    assert log.spilled == 5_000 - len(log) and not log.detached
    # replays of recent ones are recognised even once paged out
    assert not log.add(m(4_999)) and not log.add(m(4_000))


def test_paging_back_returns_every_message_once_in_order_and_equal() -> None:
    log = MessageLog(m(i) for i in range(3_000))
    log.trim(3_000, 3_000, following=True)
    seen = list(log.window)
    while log.older:
        back = log.unspill_older()
        assert back > 0
        seen = log.window[:back] + seen
        # the reader is at the top: the window stays bounded by spilling newer pages
        log.trim(0, 50, following=False)
        assert len(log) <= WINDOW_MAX + PAGE
    assert seen == [m(i) for i in range(3_000)]  # field-for-field equal after compaction
    assert log.detached and log.window[0] == m(0)


def test_detached_log_takes_arrivals_in_its_tail_and_returns_to_present() -> None:
    log = MessageLog(m(i) for i in range(2_000))
    log.trim(2_000, 2_000, following=True)
    while log.older:
        log.unspill_older()
        log.trim(0, 50, following=False)
    assert log.detached
    assert log.add(m(2_000)) and m(2_000) not in log.window
    assert not log.add(m(2_000))
    assert log.latest(3) == [m(1_998), m(1_999), m(2_000)]
    # scrolling down brings every newer page back, then the tail
    seen = list(log.window)
    while log.detached:
        n = log.unspill_newer()
        assert n > 0
        seen += log.window[-n:]
        front = log.trim(len(log) - 50, len(log), following=False)
        assert front % PAGE == 0
    assert ids(seen)[-3:] == ["m001998", "m001999", "m002000"]
    assert len(set(ids(seen))) == len(seen)
    assert log.add(m(2_001)) and log.window[-1] == m(2_001)


def test_jump_to_present_does_not_unpack_the_history_between() -> None:
    log = MessageLog(m(i) for i in range(4_000))
    log.trim(4_000, 4_000, following=True)
    while log.older:
        log.unspill_older()
        log.trim(0, 50, following=False)
    for i in range(4_000, 4_300):
        log.add(m(i))
    log.attach()
    assert not log.detached
    assert log.window[-1] == m(4_299) and WINDOW_IDLE <= len(log) <= WINDOW_IDLE + PAGE
    assert log.spilled + len(log) == 4_300
    # and every message is still reachable, in order, going up
    seen = list(log.window)
    while log.older:
        back = log.unspill_older()
        seen = log.window[:back] + seen
    assert ids(seen) == [f"m{i:06d}" for i in range(4_300)]


def test_out_of_order_and_deletes_anywhere() -> None:
    log = MessageLog(m(i) for i in range(0, 1_000, 2))
    assert log.add(m(501))  # older than the newest: inserted in time order
    assert ids(log.window).index("m000501") == ids(log.window).index("m000500") + 1
    log.trim(len(log), len(log), following=True)
    assert log.delete("m000002")  # in a compact page
    assert log.delete("m000998")  # in the window
    assert not log.delete("nope")
    seen = list(log.window)
    while log.older:
        back = log.unspill_older()
        seen = log.window[:back] + seen
    assert "m000002" not in ids(seen) and "m000998" not in ids(seen)
    assert len(seen) == 500 + 1 - 2


def test_compact_pages_are_small() -> None:
    log = MessageLog(m(i) for i in range(10_000))
    log.trim(10_000, 10_000, following=True)
    packed = sum(len(p) for p in log.older)
    assert packed / log.spilled < 150  # bytes per message kept compactly (objects: ~1.3 KB)
