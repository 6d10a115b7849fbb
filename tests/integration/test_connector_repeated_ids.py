"""Repeated message ids (issue 10, the soak's "duplicates"; ADR 0029).

A backend's message ids are ``msg_`` + 8 random hex digits (wire spec "Ids": 32 bits), so a busy
channel repeats an id — expected once in ~77,000 messages; the hour soak (180,000 messages) had
three. Two messages with one id differ by ``created_at``. The connector must publish each of
them once (never take the second for the first: de-duplication, gap-fill anchors and the
stream's ``Nats-Msg-Id`` go by id *and* creation time), and a message read again (gap fill,
reconcile, reconnect) is still published once.

Real NATS (JetStream, with the stream's duplicate window) and a real in-process devserver whose
ids repeat every 3 messages (``DevserverConfig.message_id_cycle``: the rare event made certain).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from services.core.contracts.chat import JoinArgs, JoinResult
from services.devserver.runner import arunning_devserver
from tests.connector_harness import FAST, EventLog, connector_harness

CHANNEL = "ch_general"
CYCLE = 3  # the devserver repeats an id every 3 messages


def created(events: EventLog) -> list[dict[str, Any]]:
    """The test's messages (not the seed's) as the member received them, in order."""
    return [
        e
        for e in events.of("message.created", "srv_family")
        if e["channel_id"] == CHANNEL and e["payload"]["message"]["body"].startswith("round ")
    ]


async def post(client: httpx.AsyncClient, body: str) -> dict[str, Any]:
    response = await client.post(
        "/_admin/messages", json={"channel_id": CHANNEL, "user_uid": "uid_poster", "body": body}
    )
    response.raise_for_status()
    message: dict[str, Any] = response.json()["message"]
    return message


async def next_second(after: str) -> None:
    """Until the wall clock (the in-process devserver's) is past ``after``'s whole second: the
    wire's times have whole seconds, and two messages sharing an id differ by their time."""
    last = datetime.fromisoformat(after.replace("Z", "+00:00")).timestamp()
    await asyncio.sleep(max(0.0, last + 1.01 - time.time()))  # the clock itself is what is awaited


async def test_messages_sharing_an_id_are_each_published_once(nats_url: str, tmp_path: Path) -> None:
    # a reconcile (gap fill over the newest history) every 0.2 s: pages full of repeated ids are
    # read again and again while messages arrive, and must add nothing
    timing = replace(FAST, reconcile_interval_s=0.2)
    async with (
        arunning_devserver(seed="family", admin=True, message_id_cycle=CYCLE) as srv,
        connector_harness(nats_url, tmp_path, timing=timing) as harness,
        httpx.AsyncClient(base_url=srv.base_url, timeout=30) as client,
    ):
        events = await harness.events("alice")
        await harness.call(
            "alice", "join", JoinArgs(url=srv.base_url, server_id="srv_family", confirmed=True), JoinResult
        )
        await events.wait_for(
            lambda _: any(
                e["payload"]["state"] == "live" for e in events.of("server.connection", "srv_family")
            )
        )
        posted: list[dict[str, Any]] = []
        for round_ in range(4):
            if posted:
                await next_second(posted[-1]["created_at"])
            if round_ == 2:
                # a dropped socket: the reconnect's gap fill reads the repeated ids from history
                (await client.post("/_admin/realtime/drop")).raise_for_status()
            for n in range(CYCLE):
                posted.append(await post(client, f"round {round_} message {n}"))
        ids = [m["id"] for m in posted]
        assert len(set(ids)) == CYCLE and len(ids) == 4 * CYCLE  # every id was given 4 times

        await events.wait_for(lambda _: len(created(events)) >= len(posted), timeout=30)

        # more reconciles over the same page (each 0.2 s), then a round trip through the bus: a
        # message published twice would be here by now
        def history_reads() -> int:
            return sum(1 for p in harness.requests.paths("GET") if p.endswith(f"/{CHANNEL}/messages"))

        reads, deadline = history_reads(), time.monotonic() + 30
        while history_reads() < reads + 5:
            assert time.monotonic() < deadline, "no reconcile ran"
            await asyncio.sleep(0.05)
        await harness.bus.nc.flush()
        await harness.member_bus.nc.flush()

        got = created(events)
        assert [e["payload"]["message"]["body"] for e in got] == [m["body"] for m in posted]
        assert [e["payload"]["message"]["id"] for e in got] == ids
        # the stream's de-duplication key tells them apart (the id alone did not)
        assert len({e["event_id"] for e in got}) == len(posted)
        seqs = [e["_seq"] for e in got]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
