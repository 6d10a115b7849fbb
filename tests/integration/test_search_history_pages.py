"""The connector publishes each history page it fetched on a member's demand as ``history.page``
events (issue 17: search indexes messages older than any cached window). Real NATS, a real
devserver."""

from __future__ import annotations

import httpx

from services.core.contracts.chat import HistoryArgs, HistoryResult, JoinArgs, JoinResult
from services.core.contracts.search import KIND_HISTORY_PAGE, MAX_PAGE_MESSAGES, HistoryPage
from services.devserver.runner import DevserverHandle
from tests.connector_harness import Harness


async def test_a_fetched_history_page_is_published_for_the_index(
    harness: Harness, family: DevserverHandle
) -> None:
    events = await harness.events("bob")
    await harness.call(
        "bob", "join", JoinArgs(url=family.base_url, server_id="srv_family", confirmed=True), JoinResult
    )
    async with httpx.AsyncClient(base_url=family.base_url) as client:
        r = await client.post(
            "/_admin/burst", json={"channel_id": "ch_plans", "count": 300, "user_uid": "uid_sam"}
        )
        burst = r.json()
    await events.wait_for(
        lambda ev: burst["last_id"] in events.message_ids("srv_family", "ch_plans"), timeout=30
    )

    page = await harness.call(
        "bob",
        "history",
        HistoryArgs(server_id="srv_family", channel_id="ch_plans", before=burst["last_id"], limit=250),
        HistoryResult,
    )
    assert len(page.messages) == 250

    def published() -> list[str]:
        ids: list[str] = []
        for ev in events.of(KIND_HISTORY_PAGE, "srv_family"):
            ids += [m.id for m in HistoryPage.model_validate(ev["payload"]).messages]
        return ids

    await events.wait_for(lambda ev: len(published()) >= 250, timeout=20)
    assert published() == [m.id for m in page.messages]
    pages = events.of(KIND_HISTORY_PAGE, "srv_family")
    assert [len(p["payload"]["messages"]) for p in pages] == [MAX_PAGE_MESSAGES, MAX_PAGE_MESSAGES, 50]
    assert all(p["channel_id"] == "ch_plans" and p["payload"]["channel_id"] == "ch_plans" for p in pages)
