"""The notification tables round-trip every piece of state, and the stream position with them."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from services.core.contracts.chat import ChatMessage, ServerRecord
from services.core.contracts.notify import QuietHours
from services.notification.domain import Engine
from services.notification.store import NotifyStore

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_round_trip_and_progress(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    e = Engine(clock=lambda: T0)
    rec = ServerRecord(
        server_id="s1",
        base_url="http://x",
        display_name="S",
        icon_text="S",
        user_uid="uid_me",
        device_id="d",
        joined_at=T0,
    )
    e.on_server_joined("m", rec)
    for i in range(3):
        e.on_message(
            "m",
            ChatMessage(
                id=f"m{i}",
                server_id="s1",
                channel_id="c1",
                author_uid="uid_x",
                body="@uid_me" if i == 1 else "x",
                created_at=T0,
            ),
        )
    e.mark_read("m", "s1", "c1", "m0")
    e.set_mute("m", "s1", "c1", True)
    e.set_level("m", "s1", None, "mentions")
    e.set_dnd("m", True)
    e.set_quiet_hours("m", QuietHours(enabled=True, start="21:00", end="06:00"), "Europe/Paris")
    store = NotifyStore(db)
    assert store.flush(e, "notification", 42) > 0
    assert not e.dirty_channels and not e.dirty_servers
    store.close()

    again = NotifyStore(db)
    e2 = Engine(clock=lambda: T0)
    again.load(e2)
    assert again.last_seq("notification") == 42
    assert e2.unread("m") == e.unread("m")
    assert e2.prefs("m") == e.prefs("m")
    assert e2.member("m").servers["s1"].channels["c1"].last_read_message_id == "m0"
    e2.on_server_left("m", "s1")
    again.flush(e2)
    e3 = Engine()
    again.load(e3)
    assert e3.unread("m").servers == []
    again.close()
