"""The connector's durable gap-fill anchors (registry SQLite): pending wins, batched writes, forget."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

from services.connector.anchors import Anchor, AnchorStore

T0 = datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


async def test_anchors_are_written_in_batches_and_survive_a_new_store(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    store = AnchorStore(db, interval_s=60.0)
    assert store.load("alice", "srv_a") == {}
    for i in range(100):  # one note per published message: memory only
        store.note("alice", "srv_a", "ch_general", Anchor(f"m{i}", T0 + timedelta(seconds=i)))
    store.note("alice", "srv_a", "ch_plans", Anchor("p1", T0))
    store.note("alice", "srv_b", "ch_general", Anchor("b1", T0))
    store.note("bob", "srv_a", "ch_general", Anchor("x1", T0))
    assert store.load("alice", "srv_a")["ch_general"].message_id == "m99"  # pending is visible
    assert AnchorStore(db).load("alice", "srv_a") == {}  # ...but not written yet
    assert await store.flush() == 4  # one row per channel, one transaction
    assert store.flushes == 1 and await store.flush() == 0

    again = AnchorStore(db)
    loaded = again.load("alice", "srv_a")
    assert loaded == {
        "ch_general": Anchor("m99", T0 + timedelta(seconds=99)),
        "ch_plans": Anchor("p1", T0),
    }
    again.note("alice", "srv_a", "ch_general", Anchor("m100", T0 + timedelta(seconds=100)))
    await again.close()  # close writes what is pending
    assert AnchorStore(db).load("alice", "srv_a")["ch_general"].message_id == "m100"

    again.forget("alice", "srv_a")
    assert AnchorStore(db).load("alice", "srv_a") == {}
    assert AnchorStore(db).load("alice", "srv_b") == {"ch_general": Anchor("b1", T0)}
    assert AnchorStore(db).load("bob", "srv_a") == {"ch_general": Anchor("x1", T0)}


async def test_the_background_writer_flushes_after_a_note(tmp_path: Path) -> None:
    store = AnchorStore(tmp_path / "registry.sqlite3", interval_s=0.01)
    store.start()
    try:
        store.note("alice", "srv_a", "ch_general", Anchor("m1", T0))
        await asyncio.wait_for(store.flushed.wait(), 5)
        assert AnchorStore(store.db_path).load("alice", "srv_a")["ch_general"].message_id == "m1"
    finally:
        await store.close()
