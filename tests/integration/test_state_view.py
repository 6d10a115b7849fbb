"""The state service on real NATS (JetStream) and Redis: view, snapshot, sync, rebuild, isolation."""

# ruff: noqa: F811  (pytest fixtures imported from test_state_support are parameters here)

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from nats.aio.msg import Msg

from services.core.bus import Bus, CommandError
from services.core.contracts import subjects
from services.core.contracts.bus import Empty
from services.core.contracts.chat import (
    REHYDRATE_SUBJECT,
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChannelInfo,
    ChannelsUpdated,
    ConnectionState,
    MembersUpdated,
    MessageCreated,
    MessageDeleted,
    PresenceChange,
    PresenceEntry,
    PresenceSnapshot,
    ProfileUpdated,
    RehydrateRequest,
    ServerLeft,
    ServerList,
    Snapshot,
    SnapshotArgs,
    SyncArgs,
    SyncResult,
    Typing,
    UserProfile,
    ViewHistoryArgs,
    ViewHistoryResult,
)
from services.core.procs import ManagedProcess
from services.core.servers import ServerStore
from services.state.app import StateRuntime
from tests.integration.test_state_support import (  # noqa: F401  (fixtures)
    Clock,
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
    stream,
)

MakeState = Callable[..., Awaitable[StateRuntime]]


async def history(
    bus: Bus, member: str, server_id: str, channel_id: str, limit: int = 500
) -> ViewHistoryResult:
    return await bus.request(
        cmd(member, "history"),
        ViewHistoryArgs(server_id=server_id, channel_id=channel_id, limit=limit),
        ViewHistoryResult,
    )


async def snapshot(bus: Bus, member: str, **kw: Any) -> Snapshot:
    return await bus.request(cmd(member, "snapshot"), SnapshotArgs(**kw), Snapshot)


async def test_window_is_bounded_deduplicated_ordered(bus: Bus, make_state: MakeState) -> None:
    rt = await make_state(window=20)
    await join(bus, "alice", "srv_a")
    ids = [f"m{i:03d}" for i in range(60)]
    order = [ids[(i * 37) % 60] for i in range(60)]  # out of order
    for mid in order:
        await post(bus, "alice", message(mid, at=at(int(mid[1:]))))
    # the same messages again under other event ids (a gap fill after the duplicate window)
    for mid in ids[40:]:
        await post(bus, "alice", message(mid, at=at(int(mid[1:]))), event_id=f"msg:{mid}:again")
    last = await emit(
        bus, "alice", "srv_a", "message.deleted", MessageDeleted(channel_id="general", message_id="m050")
    )
    await applied(rt, last.seq)

    result = await history(bus, "alice", "srv_a", "general")
    expected = [mid for mid in ids[40:] if mid != "m050"]
    assert [m.id for m in result.messages] == expected
    assert result.seq == last.seq and result.has_more is False
    newest = await history(bus, "alice", "srv_a", "general", limit=5)
    assert [m.id for m in newest.messages] == expected[-5:] and newest.has_more is True
    snap = await snapshot(bus, "alice", messages_per_channel=500)
    assert [m.id for m in snap.servers[0].messages["general"]] == expected


async def test_snapshot_live_and_sync_give_every_event_exactly_once(bus: Bus, make_state: MakeState) -> None:
    rt = await make_state(window=5000)
    await join(bus, "alice", "srv_a")
    published: list[str] = []  # alice's message ids in publish order
    live: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_live(msg: Msg) -> None:
        await live.put(msg)

    halfway = asyncio.Event()

    async def publish(prefix: str, n: int, start: int) -> int:
        """Alice's messages interleaved with bob's; the last sequence of alice's."""
        last = 0
        for i in range(n):
            mid = f"{prefix}{i:04d}"
            published.append(mid)
            ack = await post(bus, "alice", message(mid, at=at(start + i)))
            await post(bus, "bob", message(f"bob-{mid}", at=at(start + i)))  # noise of another member
            last = ack.seq
            if len(published) == 100:
                halfway.set()
        return last

    # 1. subscribe first, then snapshot while events keep coming
    sub = await bus.nc.subscribe(subjects.events_of_member("alice"), cb=on_live)
    await bus.nc.flush()
    producer = asyncio.create_task(publish("a", 300, 0))
    await halfway.wait()
    snap = await snapshot(bus, "alice", messages_per_channel=500)
    last_phase1 = await producer
    view: list[str] = [m.id for m in snap.servers[0].messages.get("general", [])]
    seen_seq = snap.seq
    applied_seqs: list[int] = []

    def apply(seq: int, data: bytes) -> None:
        nonlocal seen_seq
        if seq <= seen_seq:
            return
        env = json.loads(data)
        if env["type"] == "message.created":
            view.append(env["payload"]["message"]["id"])
        applied_seqs.append(seq)
        seen_seq = seq

    while seen_seq < last_phase1:
        msg = await asyncio.wait_for(live.get(), 10)
        assert msg.headers is not None
        apply(int(msg.headers["Nats-Sequence"]), msg.data)
    assert view == published  # snapshot + live: nothing missed, nothing twice
    assert 0 < len(snap.servers[0].messages["general"]) < 300  # the snapshot really was mid-stream

    # 2. disconnect; 1,000 events happen meanwhile
    await sub.unsubscribe()
    disconnected_at = seen_seq
    before_gap = len(published)
    last_gap = await publish("b", 1000, 1000)
    missed = published[before_gap:]

    # 3. reconnect: subscribe, then sync from the last sequence until complete
    while not live.empty():
        live.get_nowait()
    sub = await bus.nc.subscribe(subjects.events_of_member("alice"), cb=on_live)
    await bus.nc.flush()
    synced: list[str] = []
    since = disconnected_at
    while True:
        res = await bus.request(cmd("alice", "sync"), SyncArgs(since_seq=since, limit=300), SyncResult)
        assert not res.truncated
        for ev in res.events:
            assert ev.subject.startswith("oc.alice.evt.srv_a.")
            synced.append(json.loads(ev.data)["payload"]["message"]["id"])
            apply(ev.seq, ev.data.encode())
        since = res.last_seq
        if res.complete:
            break
    assert synced == missed  # exactly the events it missed, in order
    assert since == last_gap
    last_after = await publish("c", 5, 5000)
    while seen_seq < last_after:
        msg = await asyncio.wait_for(live.get(), 10)
        assert msg.headers is not None
        apply(int(msg.headers["Nats-Sequence"]), msg.data)
    assert view == published
    assert applied_seqs == sorted(set(applied_seqs))
    await sub.unsubscribe()
    # a state view that equals the client's
    await applied(rt, last_after + 1)  # bob's last event follows alice's
    final = await snapshot(bus, "alice", messages_per_channel=500)
    assert final.seq == last_after + 1
    assert [m.id for m in final.servers[0].messages["general"]] == published[-500:]


async def test_sync_reports_truncation(bus: Bus, make_state: MakeState, stream: str) -> None:
    await make_state()
    await join(bus, "alice", "srv_a")
    for i in range(5):
        await post(bus, "alice", message(f"m{i}"))
    await bus.js.purge_stream(stream, keep=2)
    res = await bus.request(cmd("alice", "sync"), SyncArgs(since_seq=1), SyncResult)
    assert res.truncated is True
    assert [json.loads(e.data)["payload"]["message"]["id"] for e in res.events] == ["m3", "m4"]
    ahead = await bus.request(cmd("alice", "sync"), SyncArgs(since_seq=10_000), SyncResult)
    assert ahead.truncated is True and ahead.events == []


async def populate(bus: Bus, clock: Clock) -> int:
    await join(bus, "alice", "srv_a")
    await join(bus, "alice", "srv_b")
    await join(bus, "bob", "srv_a")
    groups = [
        ChannelGroupInfo(
            id="g",
            label="Text",
            kind="text",
            channels=[ChannelInfo(id="general", name="general", type="text", group_id="g")],
        )
    ]
    for member in ("alice", "bob"):
        await emit(bus, member, "srv_a", "channels.updated", ChannelsUpdated(groups=groups))
        await emit(bus, member, "srv_a", "server.connection", ConnectionState(state="live"))
    await emit(
        bus,
        "alice",
        "srv_a",
        "capabilities",
        CapabilitySnapshot(server_name="A", features={"mentions": True}, fetched_at=clock.now),
    )
    await emit(bus, "alice", "srv_a", "members.updated", MembersUpdated(members=[{"user_uid": "u1"}]))
    for i in range(30):
        await post(bus, "alice", message(f"a{i}", at=at(i)))
        await post(bus, "alice", message(f"b{i}", server_id="srv_b", at=at(i)))
        await post(bus, "bob", message(f"x{i}", at=at(i)))
    await emit(
        bus, "alice", "srv_a", "message.deleted", MessageDeleted(channel_id="general", message_id="a25")
    )
    p1 = PresenceEntry(client_id="c1", user_uid="u1", device_id="d1")
    p2 = PresenceEntry(client_id="c2", user_uid="u2", device_id="d2")
    await emit(
        bus, "alice", "srv_a", "presence.snapshot", PresenceSnapshot(channel_id="general", members=[p1])
    )
    await emit(bus, "alice", "srv_a", "presence.joined", PresenceChange(channel_id="general", member=p2))
    await emit(
        bus,
        "alice",
        "srv_a",
        "profile.updated",
        ProfileUpdated(profile=UserProfile(user_uid="u1", display_name="Ann", profile_version=3)),
    )
    last = await emit(
        bus,
        "alice",
        "srv_a",
        "typing",
        Typing(channel_id="general", user_uid="u2", is_typing=True),
        ts=clock.now,
    )
    return last.seq


async def test_redis_flushed_mid_run_is_rebuilt_equal(
    bus: Bus, make_state: MakeState, redis_ctl: ManagedProcess, clock: Clock
) -> None:
    own = aioredis.Redis.from_url(f"redis://127.0.0.1:{redis_ctl.port}/0", decode_responses=False)
    try:
        rt = await make_state(redis_client=own, window=20)
        last = await populate(bus, clock)
        await applied(rt, last)
        before = {m: await snapshot(bus, m, messages_per_channel=500) for m in ("alice", "bob")}
        assert [s.server.server_id for s in before["alice"].servers] == ["srv_a", "srv_b"]
        view_a = before["alice"].servers[0]
        assert [m.id for m in view_a.messages["general"]][-3:] == ["a27", "a28", "a29"]
        assert "a25" not in [m.id for m in view_a.messages["general"]]
        assert len(view_a.messages["general"]) == 19  # window of 20, one deleted
        assert view_a.typing["general"][0].user_uid == "u2"
        assert [p.client_id for p in view_a.presence["general"]] == ["c1", "c2"]

        rehydrate: asyncio.Queue[RehydrateRequest] = asyncio.Queue()

        async def on_rehydrate(req: RehydrateRequest, msg: Msg) -> None:
            await rehydrate.put(req)

        await bus.subscribe(REHYDRATE_SUBJECT, RehydrateRequest, on_rehydrate)
        await bus.nc.flush()
        rebuilds = rt.materializer.rebuilds  # an empty redis at start was the first
        await own.flushall()
        await rt.materializer.wait_for(
            lambda m: m.rebuilds == rebuilds + 1 and m.caught_up and m.applied_seq >= last
        )
        assert (await asyncio.wait_for(rehydrate.get(), 5)).member is None
        after = {m: await snapshot(bus, m, messages_per_channel=500) for m in ("alice", "bob")}
        assert after == before

        # and it keeps applying new events after the rebuild
        ack = await post(bus, "alice", message("a99", at=at(99)))
        await applied(rt, ack.seq)
        assert (await history(bus, "alice", "srv_a", "general", limit=1)).messages[0].id == "a99"
    finally:
        await own.aclose()


async def test_two_servers_reusing_channel_and_message_ids_never_bleed(
    bus: Bus, make_state: MakeState
) -> None:
    rt = await make_state()
    await join(bus, "alice", "srv_a")
    await join(bus, "alice", "srv_b")
    for i in range(3):
        await post(bus, "alice", message(f"m{i}", server_id="srv_a", at=at(i)))
    for i in range(2):
        b = message(f"m{i}", server_id="srv_b", at=at(10 + i)).model_copy(update={"body": f"B{i}"})
        await post(bus, "alice", b)
    ack = await emit(
        bus, "alice", "srv_a", "message.deleted", MessageDeleted(channel_id="general", message_id="m1")
    )
    await applied(rt, ack.seq)
    a = await history(bus, "alice", "srv_a", "general")
    b_hist = await history(bus, "alice", "srv_b", "general")
    assert [(m.id, m.body) for m in a.messages] == [("m0", "body of m0"), ("m2", "body of m2")]
    assert [(m.id, m.body) for m in b_hist.messages] == [("m0", "B0"), ("m1", "B1")]
    ack = await emit(bus, "alice", "srv_a", "server.left", ServerLeft(server_id="srv_a"))
    await applied(rt, ack.seq)
    snap = await snapshot(bus, "alice")
    assert [s.server.server_id for s in snap.servers] == ["srv_b"]
    assert [m.id for m in snap.servers[0].messages["general"]] == ["m0", "m1"]
    with pytest.raises(CommandError) as err:
        await history(bus, "alice", "srv_a", "general")
    assert err.value.code == "not_found"


async def test_members_never_see_each_other(bus: Bus, make_state: MakeState) -> None:
    rt = await make_state()
    await join(bus, "alice", "srv_a")
    await join(bus, "bob", "srv_b")
    await post(bus, "alice", message("secret-a"))
    ack = await post(bus, "bob", message("hello-b", server_id="srv_b"))
    await applied(rt, ack.seq)
    bob_snap = await snapshot(bus, "bob", messages_per_channel=500)
    assert [s.server.server_id for s in bob_snap.servers] == ["srv_b"]
    assert "secret-a" not in bob_snap.model_dump_json()
    with pytest.raises(CommandError) as err:
        await snapshot(bus, "bob", server_id="srv_a")
    assert err.value.code == "not_found"
    with pytest.raises(CommandError):
        await history(bus, "bob", "srv_a", "general")
    servers = await bus.request(cmd("bob", "servers"), Empty(), ServerList)
    assert [s.server.server_id for s in servers.servers] == ["srv_b"]
    synced = await bus.request(cmd("bob", "sync"), SyncArgs(since_seq=0), SyncResult)
    assert {e.subject.split(".")[1] for e in synced.events} == {"bob"}
    assert "secret-a" not in synced.model_dump_json()
    # the member comes from the subject: a payload cannot name another member
    reply = await bus.nc.request(cmd("bob", "snapshot"), b'{"args": {"member": "alice"}}', timeout=5)
    assert b'"ok":false' in reply.data and b"invalid_payload" in reply.data


async def test_typing_expires_after_six_seconds(bus: Bus, make_state: MakeState, clock: Clock) -> None:
    rt = await make_state()
    await join(bus, "alice", "srv_a")
    ack = await emit(
        bus,
        "alice",
        "srv_a",
        "typing",
        Typing(channel_id="general", user_uid="u2", is_typing=True),
        ts=clock.now,
    )
    await applied(rt, ack.seq)
    clock.now += timedelta(seconds=5.5)
    assert [t.user_uid for t in (await snapshot(bus, "alice")).servers[0].typing["general"]] == ["u2"]
    clock.now += timedelta(seconds=0.5)
    assert (await snapshot(bus, "alice")).servers[0].typing == {}
    # renewed, then stopped explicitly
    ack = await emit(
        bus,
        "alice",
        "srv_a",
        "typing",
        Typing(channel_id="general", user_uid="u2", is_typing=True),
        ts=clock.now,
    )
    await applied(rt, ack.seq)
    assert "general" in (await snapshot(bus, "alice")).servers[0].typing
    ack = await emit(
        bus,
        "alice",
        "srv_a",
        "typing",
        Typing(channel_id="general", user_uid="u2", is_typing=False),
        ts=clock.now,
    )
    await applied(rt, ack.seq)
    assert (await snapshot(bus, "alice")).servers[0].typing == {}


async def test_bad_events_are_skipped_without_stopping(bus: Bus, make_state: MakeState) -> None:
    rt = await make_state()
    await join(bus, "alice", "srv_a")
    await bus.js.publish("oc.sys.ev.alice.srv_a.message.created", b"{not json")
    await bus.js.publish("oc.sys.ev.alice.srv_a.message.created", b'{"event_id":"x","server_id":"srv_a"}')
    wrong_server = message("m-wrong", server_id="srv_z")
    await emit(bus, "alice", "srv_a", "message.created", MessageCreated(message=wrong_server))
    ack = await post(bus, "alice", message("m-good"))
    await applied(rt, ack.seq)
    assert rt.materializer.skipped == 3
    assert [m.id for m in (await history(bus, "alice", "srv_a", "general")).messages] == ["m-good"]


async def test_joined_servers_are_reconciled_from_the_durable_store(
    bus: Bus, make_state: MakeState, tmp_path: Path
) -> None:
    store = ServerStore(tmp_path / "home" / "data" / "registry.sqlite3")
    store.add("alice", record("srv_kept"))
    rt = await make_state()
    await rt.materializer.wait_for(lambda m: m.applied_seq >= 1)
    servers = await bus.request(cmd("alice", "servers"), Empty(), ServerList)
    assert [s.server.server_id for s in servers.servers] == ["srv_kept"]
    assert servers.servers[0].connection.state == "connecting"


async def test_two_replicas_on_one_redis_keep_one_exact_view(bus: Bus, make_state: MakeState) -> None:
    """Two state replicas materialize into the same Redis: each batch is applied by exactly one."""
    first = await make_state(window=1000)
    second = await make_state(window=1000)
    seen: list[int] = []
    done = asyncio.Event()

    async def watch_seq() -> None:  # the stored sequence never goes back
        while not done.is_set():
            seen.append((await first.store.marker()).seq)

    watcher = asyncio.create_task(watch_seq())
    await join(bus, "alice", "srv_a")
    for i in range(300):
        last = await post(bus, "alice", message(f"m{i:03d}", at=at(i)))
    await applied(first, last.seq)
    await applied(second, last.seq)
    done.set()
    await watcher
    assert seen == sorted(seen) and len(seen) > 10
    result = await history(bus, "alice", "srv_a", "general")
    assert [m.id for m in result.messages] == [f"m{i:03d}" for i in range(300)]
    assert result.seq == last.seq


async def test_snapshot_keeps_the_members_call_for_a_late_client(bus: Bus, make_state: MakeState) -> None:
    """Voice (issue 12): the last ``voice.state`` of a server is in the snapshot, per member."""
    from services.core.contracts.media import VoiceParticipant, VoiceStatus

    rt = await make_state()
    await join(bus, "alice", "srv_a")
    await join(bus, "bob", "srv_a")
    joining = VoiceStatus(state="joining", server_id="srv_a", channel_id="vc_general")
    active = VoiceStatus(
        state="active",
        server_id="srv_a",
        channel_id="vc_general",
        participant_id="p_alice",
        participants=[
            VoiceParticipant(participant_id="p1", user_uid="uid_x", display_name="X", transport="webrtc")
        ],
    )
    await emit(bus, "alice", "srv_a", "voice.state", joining, channel_id="vc_general")
    ack = await emit(bus, "alice", "srv_a", "voice.state", active, channel_id="vc_general")
    await applied(rt, ack.seq)
    snap = await snapshot(bus, "alice")
    assert snap.servers[0].voice == active
    bob = await snapshot(bus, "bob")
    assert bob.servers[0].voice is None and "uid_x" not in bob.model_dump_json()
    # a voice state naming another server than its subject is refused
    ack = await emit(bus, "alice", "srv_a", "voice.state", active.model_copy(update={"server_id": "srv_b"}))
    await applied(rt, ack.seq)
    assert (await snapshot(bus, "alice")).servers[0].voice == active
