"""Fault suite: the backend drops the realtime socket 10 times and restarts 3 times (state file
kept) while 2,000 messages stream in. Real processes: NATS, the devserver (reference backend), the
connector (``python -m services.connector``). Every message reaches the member exactly once, in
the backend's order, and the connector never crashes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from testkit.connector_proc import ConnectorProc, DevserverProc, stream_report
from tests.connector_harness import EventLog

pytestmark = pytest.mark.faults

CHANNELS = ("ch_general", "ch_plans")


@pytest.fixture
async def connector(nats_url: str, tmp_path: Path) -> AsyncIterator[ConnectorProc]:
    proc = ConnectorProc(nats_url, tmp_path, "OC_DROPS")
    await proc.drop_streams()
    await proc.start()
    try:
        yield proc
    finally:
        await proc.close()


@pytest.fixture
async def devserver(tmp_path: Path) -> AsyncIterator[DevserverProc]:
    srv = DevserverProc(tmp_path, "--seed", "family", "--admin", "--state-file", str(tmp_path / "state.json"))
    await srv.start()
    try:
        yield srv
    finally:
        srv.kill()


def lives(events: EventLog, server_id: str) -> int:
    return sum(1 for e in events.of("server.connection", server_id) if e["payload"]["state"] == "live")


async def run_stream(
    connector: ConnectorProc,
    srv: DevserverProc,
    events: EventLog,
    *,
    messages: int,
    drops: int,
    restarts: int,
) -> dict[str, dict[str, int]]:
    """Post ``messages`` in bursts of 50 over two channels with ``drops`` socket drops and
    ``restarts`` backend restarts spread over the stream; return the report per channel."""
    bursts = messages // 50
    drop_at = {round((i + 1) * bursts / (drops + 1)) for i in range(drops)}
    restart_at = {round((i + 1) * bursts / (restarts + 1)) for i in range(restarts)}
    assert len(drop_at) == drops and len(restart_at) == restarts
    for index in range(1, bursts + 1):
        channel_id = CHANNELS[index % 2]
        await srv.admin("/_admin/burst", {"channel_id": channel_id, "count": 50, "body_prefix": f"b{index}"})
        if index in drop_at:
            await srv.admin("/_admin/realtime/drop", {})
        if index in restart_at:
            await srv.restart()
    expected = {c: await srv.history_ids(c) for c in CHANNELS}

    def complete(ev: list[dict[str, object]]) -> bool:
        return all(set(ids) <= set(events.message_ids("srv_family", c)) for c, ids in expected.items())

    await events.wait_for(complete, timeout=120)
    # a barrier: one more message, published live after everything before it
    marker = await srv.admin(
        "/_admin/messages", {"channel_id": "ch_general", "user_uid": "uid_m", "body": "end"}
    )
    mid = marker["message"]["id"]
    await events.wait_for(lambda ev: mid in events.message_ids("srv_family", "ch_general"), timeout=60)
    expected["ch_general"].append(mid)
    return {c: stream_report(ids, events.message_ids("srv_family", c)) for c, ids in expected.items()}


async def test_10_drops_and_3_restarts_during_2000_messages(
    connector: ConnectorProc, devserver: DevserverProc
) -> None:
    assert connector.bus is not None
    events = EventLog()
    await events.attach(connector.bus, "alice")
    await connector.bus.nc.flush()
    await connector.join("alice", devserver.base_url, "srv_family")
    await events.wait_for(lambda ev: lives(events, "srv_family") == 1, timeout=30)

    report = await run_stream(connector, devserver, events, messages=2000, drops=10, restarts=3)

    for channel_id, figures in report.items():
        assert figures["lost"] == 0 and figures["duplicated"] == 0, (channel_id, figures)
        assert figures["out_of_order"] == 0 and figures["foreign"] == 0, (channel_id, figures)
    assert sum(f["received"] for f in report.values()) >= 2000
    seqs = [e["_seq"] for e in events.events]
    assert seqs == sorted(seqs)
    assert lives(events, "srv_family") >= 2  # it reconnected (drops and restarts were seen)
    assert connector.alive and connector.starts == 1
    assert connector.log_count("session cycle failed") == 0
