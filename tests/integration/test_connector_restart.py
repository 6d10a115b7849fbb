"""Gap fill across a connector restart: the anchors persisted in the registry database make the
first hydrate of a new connector publish exactly what was posted while it was down — every message
once, in order — instead of a fresh window (real NATS, real devserver)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx
import pytest

from services.core.contracts.chat import JoinArgs, JoinResult
from services.core.paths import HomeLayout
from services.devserver.runner import arunning_devserver
from tests.connector_harness import EventLog, connector_harness

DOWNTIME_MESSAGES = 400  # > the 150-message hydrate window


def lives(events: EventLog, server_id: str) -> int:
    return sum(1 for e in events.of("server.connection", server_id) if e["payload"]["state"] == "live")


def anchors(home: Path) -> dict[str, str]:
    db = sqlite3.connect(HomeLayout(home).registry_db)
    try:
        rows = db.execute(
            "SELECT channel_id, message_id FROM connector_anchors WHERE member = ? AND server_id = ?",
            ("alice", "srv_family"),
        ).fetchall()
    finally:
        db.close()
    return {channel: message for channel, message in rows}


@pytest.mark.parametrize("profile", ["A", "B"])
async def test_messages_posted_while_the_connector_was_down_are_published_once_in_order(
    nats_url: str, tmp_path: Path, profile: str
) -> None:
    features = frozenset({"cursors"} if profile == "B" else set())
    async with arunning_devserver(seed="family", admin=True, features=features) as srv:
        admin = httpx.AsyncClient(base_url=srv.base_url, timeout=30)

        async def history(channel_id: str) -> list[str]:
            response = await admin.get(f"/v1/channels/{channel_id}/messages", params={"limit": 100000})
            return [m["id"] for m in response.json()["messages"]]

        try:
            # 1. first connector: join, hydrate, a few live messages; then the whole connector stops
            async with connector_harness(nats_url, tmp_path) as first:
                events = await first.events("alice")
                await first.call(
                    "alice",
                    "join",
                    JoinArgs(url=srv.base_url, server_id="srv_family", confirmed=True),
                    JoinResult,
                )
                await events.wait_for(lambda ev: lives(events, "srv_family") == 1)
                burst = await admin.post(
                    "/_admin/burst", json={"channel_id": "ch_general", "count": 5, "body_prefix": "live"}
                )
                last_live = burst.json()["last_id"]
                await events.wait_for(lambda ev: last_live in events.message_ids("srv_family", "ch_general"))
                before = {ch: events.message_ids("srv_family", ch) for ch in ("ch_general", "ch_plans")}
            assert anchors(tmp_path / "home")["ch_general"] == last_live  # written on close

            # 2. while it is down: more than a hydrate window on one channel, a few on another
            for channel_id, count in (("ch_general", DOWNTIME_MESSAGES), ("ch_plans", 7)):
                response = await admin.post(
                    "/_admin/burst", json={"channel_id": channel_id, "count": count, "body_prefix": "down"}
                )
                response.raise_for_status()
            expected = {ch: await history(ch) for ch in ("ch_general", "ch_plans")}

            # 3. a new connector process (same home): exactly the missed messages, once, in order
            async with connector_harness(nats_url, tmp_path, events_of=("alice",)) as second:
                after = second.logs["alice"]
                await after.wait_for(lambda ev: lives(after, "srv_family") == 1, timeout=30)
                await second.member_bus.nc.flush()  # a duplicate would have arrived by now
                for channel_id, ids in expected.items():
                    published = after.message_ids("srv_family", channel_id)
                    assert before[channel_id] + published == ids, channel_id
                assert len(after.message_ids("srv_family", "ch_general")) == DOWNTIME_MESSAGES
                # the gap fill fetched until the anchor was included: Profile A grows the limit
                # geometrically, Profile B follows the cursors back
                fills = [
                    (r.url.params.get("limit"), r.url.params.get("before"))
                    for r in second.requests.requests
                    if r.url.path == "/v1/channels/ch_general/messages"
                ]
                if profile == "A":
                    assert fills == [("150", None), ("600", None)]
                else:
                    assert [limit for limit, _ in fills] == ["150"] * 3
                    assert fills[0][1] is None and all(before for _, before in fills[1:])
                # and the live path still works after the restart
                burst = await admin.post(
                    "/_admin/burst", json={"channel_id": "ch_general", "count": 1, "body_prefix": "again"}
                )
                again = burst.json()["last_id"]
                await after.wait_for(lambda ev: again in after.message_ids("srv_family", "ch_general"))
                assert after.message_ids("srv_family", "ch_general")[-1] == again
                assert after.message_ids("srv_family", "ch_general").count(again) == 1
            assert anchors(tmp_path / "home")["ch_general"] == again
        finally:
            await admin.aclose()
