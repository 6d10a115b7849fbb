"""The periodic reconcile (ADR 0025): a probe page where nothing can be missing before the anchor,
a full page on a channel that had live messages since its last fill, and an interval that
lengthens with the number of sessions. Real devserver (in-process), real NATS, real connector.

A message the backend dropped for the socket is made with the devserver's ``silent`` admin post
(stored, never fanned out): the same state as a frame dropped by a full 64-frame queue."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest

from services.core.contracts.chat import JoinArgs, JoinResult
from services.devserver.runner import arunning_devserver
from tests.connector_harness import FAST, EventLog, Harness, connector_harness
from tests.integration.conftest import until

RECONCILE = dataclasses.replace(FAST, reconcile_interval_s=1.0, reconcile_jitter=0.2, reconcile_probe=5)
CHANNEL = "ch_general"


@pytest.fixture
async def reconciling(nats_url: str, tmp_path: Path) -> AsyncIterator[Harness]:
    async with connector_harness(nats_url, tmp_path, timing=RECONCILE) as h:
        yield h


def lives(events: EventLog, server_id: str) -> int:
    return sum(1 for e in events.of("server.connection", server_id) if e["payload"]["state"] == "live")


async def joined(harness: Harness, member: str, base_url: str) -> EventLog:
    """``member`` joins the family devserver; returns their events once the session is live."""
    events = await harness.events(member)
    await harness.call(
        member, "join", JoinArgs(url=base_url, server_id="srv_family", confirmed=True), JoinResult
    )
    await events.wait_for(lambda ev: lives(events, "srv_family") == 1)
    return events


async def post(base_url: str, body: str, *, silent: bool) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        response = await client.post(
            "/_admin/messages",
            json={"channel_id": CHANNEL, "user_uid": "uid_bob", "body": body, "silent": silent},
        )
        response.raise_for_status()
        return str(response.json()["message"]["id"])


def history_params(harness: Harness) -> list[dict[str, str]]:
    return [
        dict(r.url.params)
        for r in harness.requests.requests
        if r.url.path == f"/v1/channels/{CHANNEL}/messages"
    ]


def probed(harness: Harness, count: int = 2) -> Callable[[], Awaitable[bool]]:
    """``count`` reconciles of the channel since the log was cleared (a probe publishes nothing)."""

    async def check() -> bool:
        return len(history_params(harness)) >= count

    return check


@pytest.mark.parametrize("profile", ["A", "B"])
async def test_periodic_reconcile_probes_then_grows_and_fills_dropped_messages(
    reconciling: Harness, profile: str
) -> None:
    harness = reconciling
    features = frozenset({"cursors"}) if profile == "B" else frozenset()
    async with arunning_devserver(seed="family", admin=True, features=features) as srv:
        events = await joined(harness, "erin", srv.base_url)
        before = list(events.message_ids("srv_family", CHANNEL))

        # nothing was dropped: the timer's reconcile reads a probe page only
        harness.requests.requests.clear()
        await until(probed(harness))
        assert all(p["limit"] == "5" and "before" not in p for p in history_params(harness))

        # one dropped message: within the probe page, published by the next reconcile
        one = await post(srv.base_url, "dropped one", silent=True)
        await events.wait_for(lambda ev: one in events.message_ids("srv_family", CHANNEL), timeout=10)

        # twelve dropped: the anchor is not in the probe page, the fill reads on until it is
        harness.requests.requests.clear()
        twelve = [await post(srv.base_url, f"dropped {i}", silent=True) for i in range(12)]
        await events.wait_for(
            lambda ev: set(twelve) <= set(events.message_ids("srv_family", CHANNEL)), timeout=10
        )
        await harness.member_bus.nc.flush()
        assert events.message_ids("srv_family", CHANNEL) == [*before, one, *twelve]  # once, in order
        fills = history_params(harness)
        grown = next(i for i, p in enumerate(fills) if p["limit"] != "5")
        assert fills[grown - 1]["limit"] == "5" and "before" not in fills[grown - 1]
        if profile == "A":
            assert fills[grown]["limit"] == "150" and "before" not in fills[grown]
        else:
            assert fills[grown]["limit"] == "150" and fills[grown].get("before")


async def test_live_messages_make_the_next_reconcile_read_a_full_page(reconciling: Harness) -> None:
    """A message dropped *before* six live ones is out of a probe page's reach: the live ones
    mark the channel, and the timer's reconcile reads it with the history window."""
    harness = reconciling
    async with arunning_devserver(seed="family", admin=True) as srv:
        events = await joined(harness, "frank", srv.base_url)
        dropped = await post(srv.base_url, "dropped before the live ones", silent=True)
        live = [await post(srv.base_url, f"live {i}", silent=False) for i in range(6)]
        await events.wait_for(
            lambda ev: {dropped, *live} <= set(events.message_ids("srv_family", CHANNEL)), timeout=10
        )
        await harness.member_bus.nc.flush()
        ids = events.message_ids("srv_family", CHANNEL)
        assert ids.count(dropped) == 1 and all(ids.count(m) == 1 for m in live)
        # A late message is published last, so the gap fill's anchor (the last one published)
        # is now older than the newest five: probes grow to a full page until a live message moves
        # the anchor forward (ADR 0025). After one, and the full reconcile it asks for, the channel
        # is verified again: probe pages only (the first reconcile after the clear may still be
        # that full one).
        last = await post(srv.base_url, "live again", silent=False)
        await events.wait_for(lambda ev: last in events.message_ids("srv_family", CHANNEL), timeout=10)
        harness.requests.requests.clear()
        await until(probed(harness, 3))
        assert all(p["limit"] == "5" for p in history_params(harness)[1:]), history_params(harness)


async def test_reconcile_interval_grows_with_sessions_and_is_jittered(reconciling: Harness) -> None:
    harness = reconciling
    async with arunning_devserver(seed="family", admin=True) as srv:
        await joined(harness, "gina", srv.base_url)
        session = harness.connector.sessions[("gina", "srv_family")]
        one = [session.reconcile_delay() for _ in range(200)]
        assert all(0.8 <= d <= 1.2 for d in one) and max(one) - min(one) > 0.1  # 1 session: 1 s ±20 %
        session.peers = lambda: 1000  # 1,000 sessions at 5 per second: every 200 s, ±20 %
        many = [session.reconcile_delay() for _ in range(200)]
        assert all(160.0 <= d <= 240.0 for d in many) and max(many) - min(many) > 20.0
