"""The state service when Redis dies: killed and restarted empty while events keep arriving."""

# ruff: noqa: F811  (pytest fixtures imported from test_state_support are parameters here)

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from services.core.bus import Bus, CommandError
from services.core.contracts.chat import Snapshot, SnapshotArgs, ViewHistoryArgs, ViewHistoryResult
from services.core.procs import ManagedProcess
from services.state.app import StateRuntime
from tests.integration.test_state_support import (  # noqa: F401  (fixtures)
    applied,
    at,
    bus,
    clock,
    cmd,
    join,
    make_state,
    message,
    post,
    redis,
    stream,
)

MakeState = Callable[..., Awaitable[StateRuntime]]


@pytest.mark.faults
async def test_redis_killed_and_restarted_empty_while_events_arrive(
    bus: Bus, make_state: MakeState, redis_ctl: ManagedProcess, tmp_path: Path
) -> None:
    own = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis_ctl.port}/0", decode_responses=False)
    try:
        rt = await make_state(redis_client=own, window=50)
        await join(bus, "alice", "srv_a")
        for i in range(20):
            ack = await post(bus, "alice", message(f"m{i:02d}", at=at(i)))
        await applied(rt, ack.seq)
        rebuilds = rt.materializer.rebuilds

        redis_ctl.kill()
        shutil.rmtree(tmp_path / "redis", ignore_errors=True)  # its AOF too: it comes back empty
        (tmp_path / "redis").mkdir()
        for i in range(20, 40):  # the connector keeps publishing meanwhile
            last = await post(bus, "alice", message(f"m{i:02d}", at=at(i)))
        redis_ctl.start()

        await rt.materializer.wait_for(
            lambda m: m.rebuilds == rebuilds + 1 and m.caught_up and m.applied_seq >= last.seq, timeout=30
        )
        snap = await bus.request(cmd("alice", "snapshot"), SnapshotArgs(messages_per_channel=500), Snapshot)
        assert snap.seq == last.seq
        assert [m.id for m in snap.servers[0].messages["general"]] == [f"m{i:02d}" for i in range(40)]
    finally:
        await own.aclose()


@pytest.mark.faults
async def test_history_while_the_view_is_lost_is_retryable_not_not_found(
    bus: Bus, make_state: MakeState, redis_ctl: ManagedProcess
) -> None:
    """Issue 10: right after a FLUSHALL (or Redis restarted empty) the member's server is missing
    from Redis; `history` must say "rebuilding, retry" — not "no such server", which a desktop
    takes for a server the member left."""
    own = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis_ctl.port}/0", decode_responses=False)
    try:
        rt = await make_state(redis_client=own, window=50)
        await join(bus, "alice", "srv_a")
        ack = await post(bus, "alice", message("m00", at=at(0)))
        await applied(rt, ack.seq)
        args = ViewHistoryArgs(server_id="srv_a", channel_id="general", limit=10)
        before = await bus.request(cmd("alice", "history"), args, ViewHistoryResult)
        assert [m.id for m in before.messages] == ["m00"]

        rebuilds = rt.materializer.rebuilds
        await rt.materializer.stop()  # the view stays lost while we ask (no rebuild racing us)
        assert await own.flushall()
        with pytest.raises(CommandError) as lost:
            await bus.request(cmd("alice", "history"), args, ViewHistoryResult)
        assert lost.value.code == "state_rebuilding" and lost.value.retryable
        # A server that is really not in the view is still not_found once the view is back.
        rt.materializer.start()
        await rt.materializer.wait_for(
            lambda m: m.rebuilds == rebuilds + 1 and m.caught_up and m.applied_seq >= ack.seq, timeout=30
        )
        after = await bus.request(cmd("alice", "history"), args, ViewHistoryResult)
        assert [m.id for m in after.messages] == ["m00"]
        other = ViewHistoryArgs(server_id="srv_other", channel_id="general", limit=10)
        with pytest.raises(CommandError) as gone:
            await bus.request(cmd("alice", "history"), other, ViewHistoryResult)
        assert gone.value.code == "not_found"
    finally:
        await own.aclose()
