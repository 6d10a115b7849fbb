"""The FTS5 search index file (real SQLite) and the pure parts of its indexer."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import BaseModel

from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import ChatMessage, MessageCreated, MessageDeleted, ServerLeft
from services.core.contracts.search import HistoryPage
from services.core.search_query import parse_query
from services.state.domain import InvalidEvent
from services.state.search_files import open_index
from services.state.search_index import (
    DeleteMessage,
    DropMember,
    DropServer,
    Filters,
    PutMessage,
    SearchIndex,
    meta_tokens,
)
from services.state.search_indexer import index_ops, registry_drops

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def put(mid: str, body: str, *, member: str = "alice", server: str = "srv_a", channel: str = "general",
        author: str = "uid_bob", at: float = 0.0) -> PutMessage:  # fmt: skip
    return PutMessage(member, server, channel, mid, author, T0 + timedelta(seconds=at), body)


def ids(
    index: SearchIndex, query: str, member: str = "alice", limit: int = 50, **filters: object
) -> list[str]:
    rows, _ = index.search(member, parse_query(query), Filters(**filters), limit)  # type: ignore[arg-type]
    return [r.message_id for r in rows]


@pytest.fixture
def index(tmp_path: Path) -> Iterator[SearchIndex]:
    ix = SearchIndex(tmp_path / "search" / "index.sqlite3")
    yield ix
    ix.close()


def test_newest_first_with_limit_and_has_more(index: SearchIndex) -> None:
    index.apply([put(f"m{i}", f"token number {i}", at=i) for i in (5, 1, 9, 3, 7)])
    assert ids(index, "token") == ["m9", "m7", "m5", "m3", "m1"]
    rows, more = index.search("alice", parse_query("token"), Filters(), 2)
    assert [r.message_id for r in rows] == ["m9", "m7"] and more
    assert rows[0].created_at == T0 + timedelta(seconds=9) and rows[0].author_uid == "uid_bob"


def test_same_millisecond_messages_all_kept_newest_arrival_first(index: SearchIndex) -> None:
    index.apply([put(f"m{i:03d}", "same time") for i in range(300)])
    found = ids(index, "same", limit=200)
    assert found == [f"m{i:03d}" for i in reversed(range(100, 300))] and index.count("alice") == 300


def test_filters_server_channel_author_and_time(index: SearchIndex) -> None:
    index.apply(
        [
            put("a1", "word", server="srv_a", channel="general", author="uid_x", at=10),
            put("a2", "word", server="srv_a", channel="random", author="uid_y", at=20),
            put("b1", "word", server="srv_b", channel="general", author="uid_x", at=30),
        ]
    )
    assert ids(index, "word", server_id="srv_a") == ["a2", "a1"]
    assert ids(index, "word", channel_id="general") == ["b1", "a1"]
    assert ids(index, "word", authors=("uid_x",)) == ["b1", "a1"]
    assert ids(index, "word from:uid_y") == ["a2"]
    assert ids(index, "word in:srv_b/") == ["b1"]
    assert ids(index, "word in:srv_a/random in:srv_b/general") == ["b1", "a2"]
    assert ids(index, "word", after=T0 + timedelta(seconds=20)) == ["b1", "a2"]
    assert ids(index, "word", before=T0 + timedelta(seconds=20)) == ["a1"]
    assert ids(index, "from:uid_x") == ["b1", "a1"]  # filters only, no words
    assert ids(index, "in:general") == ["b1", "a1"]  # a channel id on any server
    assert ids(index, "word", server_id="srv_a", channel_id="random") == ["a2"]
    hidden = meta_tokens("srv_a", "general", "uid_x").split()[0]
    assert ids(index, hidden) == []  # the filter tokens are never matched by words


def test_upsert_delete_and_drops(index: SearchIndex) -> None:
    index.apply([put("m1", "first text"), put("m2", "second text", at=1)])
    index.apply([put("m1", "edited words")])  # the same id again with another body replaces it
    assert ids(index, "first") == [] and ids(index, "edited") == ["m1"]
    index.apply([put("m1", "edited words")])  # a replay changes nothing
    assert index.count("alice") == 2
    index.apply(
        [DeleteMessage("alice", "srv_a", "general", "m2"), DeleteMessage("alice", "srv_a", "general", "zz")]
    )
    assert ids(index, "text") == [] and index.count("alice") == 1
    index.apply([put("b1", "edited", server="srv_b")])
    index.apply([DropServer("alice", "srv_a")])
    assert ids(index, "edited") == ["b1"]
    index.apply([DropMember("alice")])
    assert ids(index, "edited") == [] and index.members() == set()


def test_members_are_isolated(index: SearchIndex) -> None:
    index.apply([put("a1", "secret plan", member="alice"), put("b1", "secret recipe", member="bob")])
    assert ids(index, "secret", member="alice") == ["a1"]
    assert ids(index, "secret", member="bob") == ["b1"]
    assert ids(index, "secret", member="carol") == []
    evil = 'x"; DROP TABLE members; --'
    assert index.search(evil, parse_query("secret"), Filters(), 5) == ([], False)
    with pytest.raises(ValueError, match="invalid member"):
        index.apply([put("e1", "secret", member=evil)])
    assert index.members() == {"alice", "bob"}


def test_progress_survives_reopen_and_files_are_private(tmp_path: Path) -> None:
    path = tmp_path / "search" / "index.sqlite3"
    ix = SearchIndex(path)
    ix.apply([put("m1", "kept across restarts")], "OC_EVENTS@x", 42)
    ix.close()
    again = SearchIndex(path)
    assert again.progress() == ("OC_EVENTS@x", 42) and ids(again, "restarts") == ["m1"]
    again.close()
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    for f in path.parent.iterdir():
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f


def test_another_segmentation_version_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    ix = SearchIndex(path)
    ix.apply([put("m1", "old")], "S", 7)
    ix._w.execute("UPDATE meta SET value = 'bigram0' WHERE key = 'format'")
    ix.close()
    fresh = SearchIndex(path)
    assert fresh.progress() == (None, 0) and fresh.members() == set()
    fresh.close()


def test_an_unreadable_file_is_moved_aside_and_started_anew(tmp_path: Path) -> None:
    path = tmp_path / "index.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    ix = open_index(path)
    assert ix.progress() == (None, 0)
    ix.close()
    assert any(p.name.startswith("index.sqlite3.corrupt-") for p in tmp_path.iterdir())


def test_a_query_past_its_budget_is_interrupted(index: SearchIndex) -> None:
    from services.state.search_index import SearchTimeout

    index.apply([put(f"m{i}", f"common w{i}", at=i) for i in range(20_000)])
    with pytest.raises(SearchTimeout):
        index.search("alice", parse_query("common"), Filters(), 200, budget_s=0.0)


# -- decoding stored events ------------------------------------------------------------------------
def msg(mid: str, server: str = "srv_a", channel: str = "general") -> ChatMessage:
    return ChatMessage(
        id=mid, server_id=server, channel_id=channel, author_uid="uid_bob", body=f"b {mid}", created_at=T0
    )


def env(kind: str, payload: BaseModel, server: str = "srv_a") -> bytes:
    e = cast(Any, EventEnvelope)[type(payload)](event_id="e1", server_id=server, type=kind, payload=payload)
    return cast(bytes, e.model_dump_json().encode())


def test_index_ops_of_each_kind() -> None:
    subj = "oc.sys.ev.alice.srv_a."
    assert index_ops(subj + "message.created", env("message.created", MessageCreated(message=msg("m1")))) == [
        PutMessage("alice", "srv_a", "general", "m1", "uid_bob", T0, "b m1")
    ]
    page = HistoryPage(channel_id="general", messages=[msg("m1"), msg("m2")])
    ops = index_ops(subj + "history.page", env("history.page", page))
    assert [op.message_id for op in ops if isinstance(op, PutMessage)] == ["m1", "m2"] and len(ops) == 2
    deleted = MessageDeleted(channel_id="general", message_id="m1")
    assert index_ops(subj + "message.deleted", env("message.deleted", deleted)) == [
        DeleteMessage("alice", "srv_a", "general", "m1")
    ]
    assert index_ops(subj + "server.left", env("server.left", ServerLeft(server_id="srv_a"))) == [
        DropServer("alice", "srv_a")
    ]
    assert index_ops(subj + "typing", b"{}") == []


def test_index_ops_refuse_inconsistent_events() -> None:
    with pytest.raises(InvalidEvent, match="server id"):
        index_ops(
            "oc.sys.ev.alice.srv_a.message.created",
            env("message.created", MessageCreated(message=msg("m1", server="srv_b"))),
        )
    mixed = HistoryPage(channel_id="general", messages=[msg("m1"), msg("m2", channel="random")])
    with pytest.raises(InvalidEvent, match="mixes"):
        index_ops("oc.sys.ev.alice.srv_a.history.page", env("history.page", mixed))
    with pytest.raises(InvalidEvent, match="invalid"):
        index_ops("oc.sys.ev.alice.srv_a.message.created", b'{"nope": 1}')


def test_registry_drops() -> None:
    indexed = {"alice": {"srv_a", "srv_b"}, "bob": {"srv_a"}}
    assert registry_drops(indexed, {"alice", "bob"}, {"alice": {"srv_a"}, "bob": {"srv_a"}}) == [
        DropServer("alice", "srv_b")
    ]
    assert registry_drops(indexed, {"alice"}, {"alice": {"srv_a", "srv_b"}}, {"bob"}) == [DropMember("bob")]
    # a member the registry does not know (not registered, not removed) is never guessed away
    assert registry_drops(indexed, {"alice"}, {"alice": {"srv_a", "srv_b"}}) == []
    assert registry_drops(indexed, None, {"alice": {"srv_a", "srv_b"}, "bob": {"srv_a"}}) == []


def test_sqlite_has_fts5() -> None:
    sqlite3.connect(":memory:").execute("CREATE VIRTUAL TABLE t USING fts5(x, tokenize='trigram')")


def _rows(index: SearchIndex, member: str) -> list[tuple[Any, ...]]:
    return index._w.execute(f'SELECT * FROM "msg:{member}" ORDER BY id').fetchall()  # noqa: S608  (a test's own member names)


def test_runs_written_together_give_what_one_by_one_gives(tmp_path: Path) -> None:
    """``apply`` writes runs of new messages with one statement per table and falls back to one
    by one when any is indexed already: both paths give the same rows, order and matches."""
    same_ms = [put(f"s{i}", f"tick {i} 東京", at=1) for i in range(5)]
    batches: list[list[Any]] = [
        [put("m1", "alpha beta", at=0), *same_ms, put("m2", "gamma", at=2, author="uid_x")],
        # the same millisecond again after the run: arrival order continues after s0..s4
        [put("s5", "tick 5", at=1), put("m3", "한국어를 공부합니다", at=3, channel="random")],
        # a replay of part of the first run with one new message: the fallback path
        [put("m1", "alpha beta", at=0), put("m4", "delta", at=4), put("s2", "tick 2 東京", at=1)],
        # an edit inside a run, and the same message twice in one run
        [put("m5", "epsilon", at=5), put("m2", "gamma edited", at=2, author="uid_x"), put("m5", "epsilon", at=5)],
        # members alternating inside one apply, and a run spread over more than the range read
        [put("b1", "beta", member="bob"), put("b2", "beta", member="bob", at=1), put("m6", "beta", at=6),
         put("m7", "old beta", at=-10 * 24 * 3600), put("m8", "new beta", at=7)],
        [DeleteMessage("alice", "srv_a", "general", "m4"), put("m9", "zeta", at=9), put("m10", "zeta", at=10)],
    ]  # fmt: skip
    together = SearchIndex(tmp_path / "a" / "index.sqlite3")
    alone = SearchIndex(tmp_path / "b" / "index.sqlite3")
    try:
        for batch in batches:
            together.apply(batch)
            for op in batch:
                alone.apply([op])
        for member in ("alice", "bob"):
            assert _rows(together, member) == _rows(alone, member)
        for query in (
            "tick",
            "東京",
            "한국어",
            "beta",
            "gamma",
            "edited",
            "delta",
            "zeta",
            "alpha",
            '"alpha beta"',
            "ti*",
        ):
            assert ids(together, query, limit=200) == ids(alone, query, limit=200), query
            assert ids(together, query, member="bob") == ids(alone, query, member="bob"), query
        assert ids(together, "tick", limit=200) == ["s5", "s4", "s3", "s2", "s1", "s0"]
        assert ids(together, "gamma") == ["m2"] and ids(together, "edited from:uid_x") == ["m2"]
        assert ids(together, "delta") == [] and ids(together, "epsilon") == ["m5"]
        assert ids(together, "beta") == ["m8", "m6", "m1", "m7"] and ids(together, "beta", member="bob") == [
            "b2",
            "b1",
        ]
        assert together.count("alice") == 15
    finally:
        together.close()
        alone.close()
