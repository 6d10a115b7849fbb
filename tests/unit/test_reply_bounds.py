"""Pages of messages are bounded by bytes as well as count (bus contract, issue 10 defect 2)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.connector.app import _bounded_history
from services.core.bus import newest_that_fit
from services.core.contracts.bus import MAX_BUS_PAYLOAD_BYTES, MAX_REPLY_RESULT_BYTES, ReplyEnvelope
from services.core.contracts.chat import ChatMessage, HistoryArgs, HistoryResult


def msg(n: int, size: int) -> ChatMessage:
    return ChatMessage(
        id=f"m{n:04d}", server_id="srv_a", channel_id="general", author_uid="uid_x",
        body="x" * size, created_at=datetime(2026, 1, 1, tzinfo=UTC),
    )  # fmt: skip


def test_newest_that_fit_keeps_the_newest_within_the_budget() -> None:
    messages = [msg(n, 20_000) for n in range(400)]  # 8 MB
    keep = newest_that_fit(messages)
    assert 0 < keep < 400
    kept = messages[400 - keep :]
    assert sum(len(m.model_dump_json()) + 1 for m in kept) <= MAX_REPLY_RESULT_BYTES
    assert newest_that_fit(messages[:10]) == 10


async def test_connector_history_page_fits_the_bus() -> None:
    messages = [msg(n, 30_000) for n in range(300)]  # 9 MB from a backend

    async def backend_page(member: str, args: HistoryArgs) -> HistoryResult:
        return HistoryResult(messages=messages, has_more=False)

    bounded = _bounded_history(backend_page)
    result = await bounded("alice", HistoryArgs(server_id="srv_a", channel_id="general", limit=300))
    assert result.has_more and result.messages[-1].id == "m0299"
    assert (
        len(ReplyEnvelope[HistoryResult](ok=True, result=result).model_dump_json()) <= MAX_BUS_PAYLOAD_BYTES
    )
    small = [msg(n, 10) for n in range(5)]

    async def small_page(member: str, args: HistoryArgs) -> HistoryResult:
        return HistoryResult(messages=small, has_more=False)

    same = await _bounded_history(small_page)("alice", HistoryArgs(server_id="srv_a", channel_id="general"))
    assert same.messages == small and not same.has_more
