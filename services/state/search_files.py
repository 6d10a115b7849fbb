"""The message index's file: where it lives, opening it (a file SQLite cannot read is moved
aside), and seeding it from the state view (shared by the state service and its index worker)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from pathlib import Path

from services.core.contracts.chat import ChatMessage
from services.core.paths import HomeLayout
from services.state.search_index import PutMessage, SearchIndex
from services.state.settings import StateSettings
from services.state.store import ViewStore

log = logging.getLogger("openchat.state.search")
SEED_BATCH = 2000


def index_path(settings: StateSettings) -> Path:
    return HomeLayout(settings.home).data / "search" / "index.sqlite3"


def open_index(path: Path) -> SearchIndex:
    """Open the index; a file SQLite cannot read is moved aside and a new one started (the
    indexer then rebuilds it from the stream and the view)."""
    try:
        return SearchIndex(path)
    except sqlite3.DatabaseError as exc:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        log.warning(
            "search index unreadable, starting a new one", extra={"error": repr(exc), "moved_to": str(aside)}
        )
        for suffix in ("", "-wal", "-shm"):
            p = Path(f"{path}{suffix}")
            if p.exists():
                p.rename(Path(f"{aside}{suffix}"))
        return SearchIndex(path)


async def seed_from_view(store: ViewStore, index: SearchIndex) -> int:
    """Index every message the state view holds in Redis (each channel's newest window)."""
    count = 0
    prefix = f"{store.prefix}:m:"
    async for raw in store.redis.scan_iter(match=f"{prefix}*:servers", count=500):
        key = raw.decode() if isinstance(raw, bytes) else raw
        member = key[len(prefix) : -len(":servers")]
        for server_id in await store.servers(member):
            values = await store.redis.hvals(store.k_server(member, server_id, "msg"))
            ops: list[PutMessage] = []
            for value in values:
                m = ChatMessage.model_validate_json(value)
                ops.append(
                    PutMessage(member, server_id, m.channel_id, m.id, m.author_uid, m.created_at, m.body)
                )
            for start in range(0, len(ops), SEED_BATCH):
                await asyncio.to_thread(index.apply, ops[start : start + SEED_BATCH])
            count += len(ops)
    return count
