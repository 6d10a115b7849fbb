"""Message search in the state service on real NATS (JetStream) and Redis: indexing from the
events stream, deletes, history pages, leaving, isolation, restarts and rebuilds (issue 17)."""

# ruff: noqa: F811  (pytest fixtures imported from test_state_support are parameters here)

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts.chat import MessageDeleted, ServerLeft
from services.core.contracts.search import KIND_HISTORY_PAGE, HistoryPage, SearchArgs, SearchResult
from services.core.members import MemberRegistry
from services.core.paths import HomeLayout
from services.core.servers import ServerStore
from services.state.app import StateRuntime
from services.state.search_files import index_path
from services.state.search_indexer import SearchIndexer
from tests.integration.test_state_support import (  # noqa: F401  (fixtures)
    applied,
    at,
    bus,
    clock,
    cmd,
    emit,
    join,
    make_state,
    message,
    post,
    record,
    redis,
    state_settings,
    stream,
)

MakeState = Callable[..., Awaitable[StateRuntime]]


@contextlib.asynccontextmanager
async def own_runtime(
    nats_url: str, redis_client: aioredis.Redis, tmp_path: Path, stream: str, **over: Any
) -> AsyncIterator[StateRuntime]:
    """A state runtime on its own bus connection: stopping it also ends its command subscriptions
    (the ``make_state`` runtimes share the test's connection, so a stopped one would still answer)."""
    own = await Bus.connect(ConnectOptions(url=nats_url, name="state-restart"), first_attempts=3)
    rt = StateRuntime(own, redis_client, state_settings(tmp_path, stream, **over))
    await rt.start()
    try:
        await rt.materializer.wait_for(lambda m: m.caught_up)
        yield rt
    finally:
        await rt.stop()
        await own.close()


async def search(bus: Bus, member: str, query: str, **kw: Any) -> SearchResult:
    return await bus.request(cmd(member, "search"), SearchArgs(query=query, **kw), SearchResult)


def indexer_of(rt: StateRuntime) -> SearchIndexer:
    assert rt.search is not None and rt.search.indexer is not None
    return rt.search.indexer


async def indexed(rt: StateRuntime, seq: int) -> None:
    await indexer_of(rt).wait_for(lambda ix: ix.applied_seq >= seq and ix.caught_up)


def said(mid: str, body: str, server_id: str = "srv_a", channel_id: str = "general", t: float = 0):  # type: ignore[no-untyped-def]
    return message(mid, server_id, channel_id, at=at(t)).model_copy(update={"body": body})


async def test_live_history_pages_deletes_and_leaving(bus: Bus, make_state: MakeState) -> None:
    rt = await make_state()
    await join(bus, "alice", "srv_a")
    await join(bus, "alice", "srv_b")
    await post(bus, "alice", said("a1", "the harbor token is here", t=1))
    await post(bus, "alice", said("b1", "another token on b", "srv_b", "random", t=2))
    page = HistoryPage(channel_id="general", messages=[said("old1", "an ancient token", t=-9000)])
    await emit(bus, "alice", "srv_a", KIND_HISTORY_PAGE, page, "page:general:old1:old1")
    await post(bus, "bob", said("x1", "bob has a token too", "srv_a", t=3))
    last = await post(bus, "alice", said("a2", "nothing to see", t=4))
    await indexed(rt, last.seq)

    found = await search(bus, "alice", "token")
    assert [(h.server_id, h.channel_id, h.message_id) for h in found.hits] == [
        ("srv_b", "random", "b1"),
        ("srv_a", "general", "a1"),
        ("srv_a", "general", "old1"),
    ]
    assert found.caught_up and found.hits[1].snippet == "the harbor «token» is here"
    assert found.hits[1].author_uid == "uid_someone" and found.hits[1].created_at == at(1)
    assert [h.message_id for h in (await search(bus, "bob", "token")).hits] == ["x1"]
    assert [h.message_id for h in (await search(bus, "alice", "token", server_id="srv_b")).hits] == ["b1"]

    deleted = await emit(
        bus, "alice", "srv_a", "message.deleted", MessageDeleted(channel_id="general", message_id="a1")
    )
    await indexed(rt, deleted.seq)
    assert [h.message_id for h in (await search(bus, "alice", "token")).hits] == ["b1", "old1"]

    left = await emit(bus, "alice", "srv_b", "server.left", ServerLeft(server_id="srv_b"))
    await indexed(rt, left.seq)
    assert [h.message_id for h in (await search(bus, "alice", "token")).hits] == ["old1"]
    assert [h.message_id for h in (await search(bus, "bob", "token")).hits] == ["x1"]


async def test_bad_queries_get_clear_errors(bus: Bus, make_state: MakeState) -> None:
    await make_state()
    with pytest.raises(CommandError) as err:
        await search(bus, "alice", "from:")
    assert err.value.code == "invalid_query"
    raw = json.dumps({"args": {"query": "x" * 600}}).encode()  # past the client's own validation
    reply = json.loads((await bus.nc.request(cmd("alice", "search"), raw, timeout=5)).data)
    assert reply["ok"] is False and reply["error"]["code"] == "invalid_payload"
    assert (await search(bus, "alice", 'NEAR("a" OR')).hits == []  # literal words, no syntax error


async def test_survives_restart_and_rebuilds_a_lost_index(
    bus: Bus, nats_url: str, redis: aioredis.Redis, stream: str, tmp_path: Path
) -> None:
    async with own_runtime(nats_url, redis, tmp_path, stream) as rt:
        await join(bus, "alice", "srv_a")
        for i in range(30):
            last = await post(bus, "alice", said(f"m{i}", f"restart token {i} 東京都の 한국어를", t=i))
        await indexed(rt, last.seq)
        assert indexer_of(rt).rebuilds == 1  # a new file: built from the stream

    async with own_runtime(nats_url, redis, tmp_path, stream) as again:  # same file, reopened
        await indexed(again, last.seq)
        assert indexer_of(again).rebuilds == 0
        assert len((await search(bus, "alice", "restart token", limit=100)).hits) == 30
        path = index_path(again.settings)

    for f in path.parent.iterdir():
        f.unlink()
    async with own_runtime(nats_url, redis, tmp_path, stream) as rebuilt:
        await indexed(rebuilt, last.seq)
        assert indexer_of(rebuilt).rebuilds == 1
        result = await search(bus, "alice", "東京 한국어", limit=100)
        assert [h.message_id for h in result.hits] == [f"m{i}" for i in reversed(range(30))]


async def test_a_lost_index_is_seeded_from_the_view_when_the_stream_no_longer_has_it(
    bus: Bus, nats_url: str, redis: aioredis.Redis, stream: str, tmp_path: Path
) -> None:
    async with own_runtime(nats_url, redis, tmp_path, stream, window=20) as rt:
        await join(bus, "alice", "srv_a")
        for i in range(25):
            last = await post(bus, "alice", said(f"m{i}", f"seed token {i}", t=i))
        await indexed(rt, last.seq)
        await applied(rt, last.seq)
        path = index_path(rt.settings)
    for f in path.parent.iterdir():
        f.unlink()
    await bus.js.purge_stream(stream)  # the stream's retention ran out

    async with own_runtime(nats_url, redis, tmp_path, stream, window=20) as rebuilt:
        assert rebuilt.search is not None
        await indexer_of(rebuilt).wait_for(lambda ix: ix.caught_up)
        ids = [h.message_id for h in (await search(bus, "alice", "seed token", limit=100)).hits]
        assert ids == [f"m{i}" for i in reversed(range(5, 25))]  # the view's window: the newest 20


async def test_removed_members_and_servers_no_longer_joined_are_dropped(
    bus: Bus, make_state: MakeState, tmp_path: Path
) -> None:
    db = HomeLayout(tmp_path / "home").registry_db
    members, servers = MemberRegistry(db), ServerStore(db)
    for name in ("alice", "bob"):
        members.add(name)
        servers.add(name, record("srv_a"))
    servers.add("alice", record("srv_b"))
    rt = await make_state(state_search_reconcile_s=0.1)
    for m, sid in (("alice", "srv_a"), ("alice", "srv_b"), ("bob", "srv_a")):
        await join(bus, m, sid)
        last = await post(bus, m, said(f"{m}-{sid}", "reconcile token", sid))
    await indexed(rt, last.seq)
    assert len((await search(bus, "alice", "reconcile")).hits) == 2

    servers.remove("alice", "srv_b")  # left while the state service was not told
    members.remove("bob")
    servers.forget_member("bob")
    assert rt.search is not None
    index = rt.search.index

    async def dropped() -> bool:
        return index.members() == {"alice"} and index.servers("alice") == {"srv_a"}

    from tests.integration.conftest import until

    await until(dropped)
    assert [h.message_id for h in (await search(bus, "alice", "reconcile")).hits] == ["alice-srv_a"]
    assert (await search(bus, "bob", "reconcile")).hits == []


@pytest.mark.parametrize("fed", [True, False], ids=["fed-over-socket", "own-consumer"])
async def test_the_indexer_runs_in_a_worker_process_and_is_restarted(
    bus: Bus,
    nats_url: str,
    redis_url: str,
    redis: aioredis.Redis,
    stream: str,
    tmp_path: Path,
    fed: bool,
) -> None:
    """``STATE_SEARCH_WORKER``: the indexer in a child process writing the file this process
    reads — fed by the view's pass over a socket (``search_feed``) or reading the stream itself."""
    import os
    import signal

    from tests.integration.conftest import until

    own = await Bus.connect(ConnectOptions(url=nats_url, name="state-worker"), first_attempts=3)
    settings = state_settings(
        tmp_path, stream, nats_url=nats_url, redis_url=redis_url, state_search_worker_fed=fed
    )
    rt = StateRuntime(own, redis, settings, search_worker=True)
    await rt.start()
    try:
        search_rt = rt.search
        assert search_rt is not None and search_rt.worker is not None and search_rt.indexer is None
        await join(bus, "alice", "srv_a")
        await post(bus, "alice", said("w1", "worker token one", t=1))

        def finds(ids: list[str]) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                result = await search(bus, "alice", "worker token")
                return [h.message_id for h in result.hits] == ids and result.caught_up

            return check

        await until(finds(["w1"]), timeout=60)
        first = search_rt.worker.process
        assert first is not None and first.pid is not None and first.pid != os.getpid()
        os.kill(first.pid, signal.SIGKILL)  # the worker dies: it is started again and goes on
        await until(
            lambda: asyncio.sleep(0, search_rt.worker is not None and search_rt.worker.starts == 2),
            timeout=30,
        )
        await post(bus, "alice", said("w2", "worker token two", t=2))
        await until(finds(["w2", "w1"]), timeout=60)
        await emit(  # a delete goes the same way
            bus, "alice", "srv_a", "message.deleted", MessageDeleted(channel_id="general", message_id="w1")
        )
        await until(finds(["w2"]), timeout=60)
        feed = search_rt.worker.feed
        if fed:  # the batches went over the socket
            assert feed is not None and feed.sent > 0
        else:
            assert feed is None
    finally:
        await rt.stop()
        await own.close()
    assert first.exitcode is not None and search_rt.worker.process is not None
    assert search_rt.worker.process.exitcode is not None  # stopped with the service


async def test_the_index_follows_the_views_pass_without_a_second_read(
    bus: Bus, nats_url: str, redis: aioredis.Redis, stream: str, tmp_path: Path
) -> None:
    """The default: the indexer is fed the materializer's batches (ADR 0014: one read and decode
    of the stream for the view and the index); it reads the stream itself only to catch up, and
    does so again when the view's batches do not continue where the index is."""
    async with own_runtime(nats_url, redis, tmp_path, stream) as rt:
        ix = indexer_of(rt)
        await join(bus, "alice", "srv_a")
        for i in range(40):
            last = await post(bus, "alice", said(f"f{i}", f"follow token {i}", t=i))
        await indexed(rt, last.seq)
        await ix.wait_for(lambda x: x.following)
        fed = ix.fed_batches
        assert (await bus.js.stream_info(stream)).state.consumer_count == 1  # the view's only
        for i in range(40, 60):
            last = await post(bus, "alice", said(f"f{i}", f"follow token {i}", t=i))
        await indexed(rt, last.seq)
        assert ix.fed_batches > fed and ix.following
        assert len((await search(bus, "alice", "follow token", limit=100)).hits) == 60

        starts = ix.follows
        ix.offer(ix.applied_seq + 5, [], ix.applied_seq + 9)  # a batch after a gap
        await ix.wait_for(lambda x: x.follows > starts)  # left, checked the stream, follows again
        last = await post(bus, "alice", said("f60", "follow token after the gap", t=60))
        await indexed(rt, last.seq)
        hits = (await search(bus, "alice", "follow token", limit=100)).hits
        assert len(hits) == 61 and hits[0].message_id == "f60"

        await rt.materializer.stop()  # the view's pass stops (Redis unreachable, say)
        last = await post(bus, "alice", said("f61", "follow token while the view is stopped", t=61))
        await indexed(rt, last.seq)  # after FOLLOW_STALL_S the index reads the stream itself
        hits = (await search(bus, "alice", "follow token", limit=100)).hits
        assert len(hits) == 62 and hits[0].message_id == "f61"
