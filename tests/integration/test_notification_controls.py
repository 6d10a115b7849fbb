"""Issue 18 on the notification service itself (real nats-server with JetStream, real SQLite):
two "desktops" of one member see status and member-wide settings at once (``notify.member``), a
timed mute ends by itself and says so (``notify.prefs``), and a muted channel does not count."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.core.bus import Bus, ConnectOptions
from services.core.contracts.bus import Empty
from services.core.contracts.notify import (
    MEMBER_SCOPE,
    NotifyPrefs,
    SetHideMutedArgs,
    SetMuteArgs,
    SetStatusArgs,
)
from tests.integration import test_notification_service as notify_tests
from tests.integration.test_notification_service import (
    BOB,
    FAST,
    UI,
    Connector,
    channel_counts,
    start,
    unread_event,
)


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    """A clean events stream, as in the notification service's own tests."""
    b = await Bus.connect(ConnectOptions(url=nats_url, name="test-notify-controls"), first_attempts=3)
    for info in await b.js.streams_info():
        assert info.config.name is not None
        await b.js.delete_stream(info.config.name)
    await b.ensure_events_stream(notify_tests.STREAM, duplicate_window_s=60)
    yield b
    await b.close()


async def test_status_and_hide_muted_reach_every_desktop_and_persist(bus: Bus, tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    desk_a, desk_b = await UI(bus, "gina").attach(), await UI(bus, "gina").attach()
    other = await UI(bus, "hal").attach()
    svc = await start(bus, db)
    try:
        prefs: NotifyPrefs = await desk_a.call("set_status", SetStatusArgs(status="invisible"), NotifyPrefs)
        assert (prefs.status, prefs.dnd) == ("invisible", False)
        ev = await desk_b.wait_for(lambda e: e["type"] == "notify.member", FAST)
        assert ev["server_id"] == MEMBER_SCOPE and ev["payload"]["status"] == "invisible"
        await desk_a.call("set_hide_muted", SetHideMutedArgs(hide=True), NotifyPrefs)
        await desk_b.wait_for(
            lambda e: e["type"] == "notify.member" and e["payload"]["hide_muted_channels"] is True, FAST
        )
        await desk_a.call("set_status", SetStatusArgs(status="dnd"), NotifyPrefs)
        await desk_b.wait_for(lambda e: e["type"] == "notify.member" and e["payload"]["dnd"] is True, FAST)
        assert other.of_type("notify.member") == []  # another member never sees them
    finally:
        await svc.stop()
    svc2 = await start(bus, db)
    try:
        prefs = await desk_a.call("prefs", Empty(), NotifyPrefs)
        assert (prefs.status, prefs.dnd, prefs.hide_muted_channels) == ("dnd", True, True)
    finally:
        await svc2.stop()


async def test_a_timed_mute_ends_by_itself_and_a_muted_channel_does_not_count(
    bus: Bus, tmp_path: Path
) -> None:
    conn = Connector(bus, "ivy")
    ui = await UI(bus, "ivy").attach()
    svc = await start(bus, tmp_path / "registry.sqlite3")
    try:
        await conn.joined()
        await conn.channels("ch_a", "ch_b")
        await svc.wait_applied(conn.last_seq)
        prefs: NotifyPrefs = await ui.call(
            "set_mute",
            SetMuteArgs(server_id="srv_a", channel_id="ch_a", muted=True, duration_s=2),
            NotifyPrefs,
        )
        (muted,) = prefs.servers[0].channels
        assert muted.channel_id == "ch_a" and muted.muted_until is not None
        await conn.message("ch_a", BOB, "while muted")
        await conn.message("ch_b", BOB, "elsewhere")
        await ui.wait_for(unread_event("ch_b", 1), FAST)
        await svc.wait_applied(conn.last_seq)
        assert channel_counts(await ui.unread()) == {"ch_a": (0, 0), "ch_b": (1, 0)}
        assert [n["payload"]["channel_id"] for n in ui.of_type("notification")] == ["ch_b"]

        # The end: a notify.prefs without the channel, then ch_a counts and notifies again.
        ended = await ui.wait_for(
            lambda e: e["type"] == "notify.prefs" and e["payload"]["channels"] == [], timeout=2 + 30
        )
        assert ended["server_id"] == "srv_a"
        assert (await ui.call("prefs", Empty(), NotifyPrefs)).servers[0].channels == []
        await conn.message("ch_a", BOB, "after the mute")
        await ui.wait_for(unread_event("ch_a", 1), FAST)
        await ui.wait_for(
            lambda e: e["type"] == "notification" and e["payload"]["channel_id"] == "ch_a", FAST
        )
    finally:
        await svc.stop()


async def test_a_mute_that_ended_while_the_service_was_down_ends_at_start(bus: Bus, tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    conn = Connector(bus, "jo")
    ui = await UI(bus, "jo").attach()
    svc = await start(bus, db)
    try:
        await conn.joined()
        await svc.wait_applied(conn.last_seq)
        await ui.call("set_mute", SetMuteArgs(server_id="srv_a", muted=True, duration_s=1), NotifyPrefs)
    finally:
        await svc.stop()
    await asyncio.sleep(1.1)  # the mute's end passes while no service runs: nothing to await
    svc2 = await start(bus, db)
    try:
        await ui.wait_for(lambda e: e["type"] == "notify.prefs" and e["payload"]["muted"] is False, FAST * 5)
        server = (await ui.call("prefs", Empty(), NotifyPrefs)).servers[0]
        assert (server.muted, server.muted_until) == (False, None)
    finally:
        await svc2.stop()
