"""The notification service on a real nats-server with JetStream and a real SQLite registry.

Chat events are published with ``Bus.publish_event`` exactly as the connector does; "UIs" are
bus clients that call the service's commands and listen to the member's events (one test uses
real member credentials, as the desktop app does)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg
from pydantic import BaseModel

from services.cli.chat import MemberClient
from services.cli.members import add_member
from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.bus import Empty, EventEnvelope
from services.core.contracts.chat import (
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChannelInfo,
    ChannelsUpdated,
    ChatMessage,
    MentionRef,
    MessageCreated,
    ServerJoined,
    ServerRecord,
    message_event_id,
)
from services.core.contracts.notify import (
    FocusArgs,
    MarkReadArgs,
    NotifyPrefs,
    SetDndArgs,
    SetLevelArgs,
    SetMuteArgs,
    UnreadArgs,
    UnreadResult,
)
from services.core.members import ConnectionFile
from services.core.servers import ServerStore
from services.notification.service import NotificationService
from tests.integration.conftest import StackNats

ME = "uid_aaaa1111"
BOB = "uid_bbbb2222"
STREAM = "OC_EVENTS"
FAST = 1.0  # "two UIs agree within a second"


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(ConnectOptions(url=nats_url, name="test-notify"), first_attempts=3)
    for info in await b.js.streams_info():  # a stream owns oc.sys.ev.>: start from a clean one
        assert info.config.name is not None
        await b.js.delete_stream(info.config.name)
    await b.ensure_events_stream(STREAM, duplicate_window_s=60)
    yield b
    await b.close()


def record(server_id: str = "srv_a", uid: str = ME, consent: bool | None = None) -> ServerRecord:
    return ServerRecord(
        server_id=server_id,
        base_url="http://127.0.0.1:1",
        display_name=server_id,
        icon_text="SA",
        user_uid=uid,
        device_id="desktop_test",
        profile_consent=consent,
        joined_at=datetime.now(UTC),
    )


class Connector:
    """Publishes chat events on the bus the way the connector does."""

    def __init__(self, bus: Bus, member: str, server_id: str = "srv_a") -> None:
        self.bus, self.member, self.server_id = bus, member, server_id
        self.n = 0
        self.last_seq = 0

    async def event(self, kind: str, payload: BaseModel, event_id: str, channel_id: str | None = None) -> int:
        env: EventEnvelope[Any] = EventEnvelope[Any](
            event_id=event_id, server_id=self.server_id, channel_id=channel_id, type=kind, payload=payload
        )
        ack = await self.bus.publish_event(self.member, env)
        self.last_seq = ack.seq
        return ack.seq

    async def joined(self, uid: str = ME, consent: bool | None = None) -> int:
        rec = record(self.server_id, uid, consent)
        return await self.event("server.joined", ServerJoined(server=rec), f"joined:{self.n}")

    async def capabilities(self, **features: bool) -> int:
        snap = CapabilitySnapshot(server_name="A", features=features, fetched_at=datetime.now(UTC))
        return await self.event("capabilities", snap, f"caps:{features}")

    async def channels(self, *ids: str, unread: dict[str, int] | None = None) -> int:
        chans = [
            ChannelInfo(
                id=c,
                name=c.removeprefix("ch_"),
                type="text",
                group_id="g",
                unread_count=(unread or {}).get(c),
            )
            for c in ids
        ]
        groups = [ChannelGroupInfo(id="g", label="Text", kind="text", channels=chans)]
        return await self.event("channels.updated", ChannelsUpdated(groups=groups), f"channels:{ids}")

    async def message(
        self, channel_id: str, author: str, body: str, mentions: list[MentionRef] | None = None
    ) -> int:
        self.n += 1
        msg = ChatMessage(
            id=f"msg_{self.member}_{self.server_id}_{self.n}",
            server_id=self.server_id,
            channel_id=channel_id,
            author_uid=author,
            body=body,
            created_at=datetime.now(UTC),
            mentions=mentions,
        )
        return await self.event(
            "message.created",
            MessageCreated(message=msg),
            message_event_id(msg.id, msg.created_at),
            channel_id,
        )


class UI:
    """A member's UI: listens to ``oc.<member>.evt.>`` and sends notification commands."""

    def __init__(self, bus: Bus, member: str) -> None:
        self.bus, self.member = bus, member
        self.events: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()

    async def attach(self) -> UI:
        async def on_msg(msg: Msg) -> None:
            self.events.append(json.loads(msg.data))
            self.arrived.set()

        await self.bus.nc.subscribe(subjects.events_of_member(self.member), cb=on_msg)
        await self.bus.nc.flush()
        return self

    async def call(self, verb: str, args: BaseModel, result: type[Any]) -> Any:
        return await self.bus.request(subjects.command(self.member, "notification", verb), args, result)

    async def unread(self, server_id: str | None = None) -> UnreadResult:
        res: UnreadResult = await self.call("unread", UnreadArgs(server_id=server_id), UnreadResult)
        return res

    async def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float = FAST) -> dict[str, Any]:
        async def scan() -> dict[str, Any]:
            seen = 0
            while True:
                for ev in self.events[seen:]:
                    if pred(ev):
                        return ev
                seen = len(self.events)
                self.arrived.clear()
                await self.arrived.wait()

        return await asyncio.wait_for(scan(), timeout)

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind]


def channel_counts(res: UnreadResult, server_id: str = "srv_a") -> dict[str, tuple[int, int]]:
    for s in res.servers:
        if s.server_id == server_id:
            return {c.channel_id: (c.unread, c.mentions) for c in s.channels}
    raise AssertionError(f"{server_id} not in {res}")


def unread_event(channel: str, unread: int, mentions: int | None = None) -> Callable[[dict[str, Any]], bool]:
    def pred(ev: dict[str, Any]) -> bool:
        if ev["type"] != "unread.updated":
            return False
        for c in ev["payload"]["channels"]:
            if c["channel_id"] == channel and c["unread"] == unread:
                return mentions is None or c["mentions"] == mentions
        return False

    return pred


async def start(bus: Bus, db: Path) -> NotificationService:
    svc = NotificationService(bus, db, stream=STREAM)
    await svc.start()
    return svc


async def test_counts_accumulate_with_no_ui_and_service_down_then_a_ui_sees_them(
    bus: Bus, tmp_path: Path
) -> None:
    db = tmp_path / "registry.sqlite3"
    conn = Connector(bus, "carol")
    await conn.joined()
    await conn.channels("ch_general", "ch_random", "ch_quiet")
    # Nothing listens: neither a UI nor the notification service.
    await conn.message("ch_general", BOB, "hello")
    await conn.message("ch_general", ME, "my own echo")  # D5: marks general read
    await conn.message("ch_general", BOB, f"ping @{ME}")
    await conn.message("ch_random", BOB, "random")
    await conn.message("ch_random", BOB, f"email me at x@{ME}")  # not a token: not a mention
    svc = await start(bus, db)
    try:
        await svc.wait_applied(conn.last_seq)
        ui = await UI(bus, "carol").attach()
        counts = channel_counts(await ui.unread())
        assert counts == {"ch_general": (1, 1), "ch_random": (2, 0), "ch_quiet": (0, 0)}
        totals = (await ui.unread("srv_a")).servers[0]
        assert (totals.unread, totals.mentions) == (3, 1)
        # A new message reaches the attached UI as an unread.updated event within a second.
        await conn.message("ch_quiet", BOB, "psst")
        ev = await ui.wait_for(unread_event("ch_quiet", 1, 0))
        assert ev["server_id"] == "srv_a" and ev["payload"]["unread"] == 4
        with pytest.raises(CommandError) as err:
            await ui.unread("srv_unknown")
        assert err.value.code == "server_not_joined"
    finally:
        await svc.stop()


async def test_joined_servers_have_counts_from_the_registry_before_any_event(
    bus: Bus, tmp_path: Path
) -> None:
    db = tmp_path / "registry.sqlite3"
    ServerStore(db).add("dora", record("srv_x"))
    ServerStore(db).add("dora", record("srv_y"))
    svc = await start(bus, db)
    try:
        res = await UI(bus, "dora").unread()
        assert [(s.server_id, s.unread, s.mentions) for s in res.servers] == [
            ("srv_x", 0, 0),
            ("srv_y", 0, 0),
        ]
    finally:
        await svc.stop()


async def test_two_uis_of_one_member_stay_in_step_with_member_credentials(
    stack_nats: StackNats, tmp_path: Path
) -> None:
    await asyncio.to_thread(add_member, stack_nats.home, "erin", out=lambda _: None)
    svc_bus = await Bus.connect(
        ConnectOptions(url=stack_nats.url, user="svc", password=stack_nats.service_password), first_attempts=3
    )
    await svc_bus.ensure_events_stream(STREAM, duplicate_window_s=60)
    svc = await start(svc_bus, tmp_path / "registry.sqlite3")
    cf = ConnectionFile.read(stack_nats.home.layout.connection_file("erin"))
    conn = Connector(svc_bus, "erin")
    try:
        async with MemberClient.connect(cf) as a_client, MemberClient.connect(cf) as b_client:
            a, b = await UI(a_client.bus, "erin").attach(), await UI(b_client.bus, "erin").attach()
            await conn.joined()
            await conn.channels("ch_1", "ch_2")
            await conn.message("ch_1", BOB, "one")
            await conn.message("ch_1", BOB, f"@{ME} two")
            for ui in (a, b):
                await ui.wait_for(unread_event("ch_1", 2, 1))
            # UI A marks the channel read: UI B learns it within a second.
            res = await a.call("mark_read", MarkReadArgs(server_id="srv_a", channel_id="ch_1"), UnreadResult)
            assert channel_counts(res)["ch_1"] == (0, 0)
            await b.wait_for(unread_event("ch_1", 0, 0))
            # UI A shows ch_2 focused: a message there is read at once and does not notify.
            await a.call(
                "focus",
                FocusArgs(client_id="desk-a", server_id="srv_a", channel_id="ch_2", focused=True),
                UnreadResult,
            )
            await conn.message("ch_2", BOB, "seen at once")
            await svc.wait_applied(conn.last_seq)
            assert channel_counts(await b.unread())["ch_2"] == (0, 0)
            # A blurs: the next one counts on both UIs and notifies both.
            await a.call(
                "focus",
                FocusArgs(client_id="desk-a", server_id="srv_a", channel_id="ch_2", focused=False),
                UnreadResult,
            )
            await conn.message("ch_2", BOB, "while away")
            for ui in (a, b):
                note = await ui.wait_for(
                    lambda e: e["type"] == "notification" and e["payload"]["channel_id"] == "ch_2"
                )
                assert note["payload"]["title"] == f"{BOB} in #2"
                assert note["payload"]["body"] == "while away"
                assert note["payload"]["tag"] == "openchat:srv_a:ch_2"
                await ui.wait_for(unread_event("ch_2", 1, 0))
            # Refocusing the active channel clears it (D4), for both UIs.
            await b.call(
                "focus",
                FocusArgs(client_id="desk-b", server_id="srv_a", channel_id="ch_2", focused=True),
                UnreadResult,
            )
            await a.wait_for(unread_event("ch_2", 0, 0))
            notes = [e["payload"]["body"] for e in a.of_type("notification")]
            assert notes == ["one", f"@{ME} two", "while away"]
    finally:
        await svc.stop()
        await svc_bus.close()


async def test_restart_keeps_counts_cursors_and_prefs(bus: Bus, tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    conn = Connector(bus, "fred")
    ui = await UI(bus, "fred").attach()
    svc = await start(bus, db)
    await conn.joined()
    await conn.channels("ch_a", "ch_b")
    for i in range(3):
        await conn.message("ch_a", BOB, f"a{i}")
    await conn.message("ch_b", BOB, f"@{ME}")
    await svc.wait_applied(conn.last_seq)
    cursor = f"msg_fred_srv_a_{2}"
    await ui.call(
        "mark_read", MarkReadArgs(server_id="srv_a", channel_id="ch_a", message_id=cursor), UnreadResult
    )
    await ui.call("set_mute", SetMuteArgs(server_id="srv_a", channel_id="ch_b", muted=True), NotifyPrefs)
    await ui.call("set_level", SetLevelArgs(server_id="srv_a", level="mentions"), NotifyPrefs)
    await ui.call("set_dnd", SetDndArgs(dnd=True), NotifyPrefs)
    before = await ui.unread()
    assert channel_counts(before) == {"ch_a": (1, 0), "ch_b": (0, 0)}  # muting ch_b cleared it (issue 18)
    await svc.stop()

    # While the service is down, more events arrive.
    await conn.message("ch_a", BOB, "while down")
    await conn.message("ch_b", BOB, "also")

    svc2 = await start(bus, db)
    try:
        await svc2.wait_applied(conn.last_seq)
        after = await ui.unread()
        assert channel_counts(after) == {"ch_a": (2, 0), "ch_b": (0, 0)}  # muted: "also" does not count
        ch_a = next(c for c in after.servers[0].channels if c.channel_id == "ch_a")
        assert ch_a.last_read_message_id == cursor
        prefs: NotifyPrefs = await ui.call("prefs", Empty(), NotifyPrefs)
        assert prefs.dnd is True
        server = prefs.servers[0]
        assert (server.server_id, server.level) == ("srv_a", "mentions")
        assert [(c.channel_id, c.muted) for c in server.channels] == [("ch_b", True)]
        # Nothing was counted twice: a third start over the same stream changes nothing.
        await svc2.stop()
        svc3 = await start(bus, db)
        try:
            assert channel_counts(await ui.unread()) == {"ch_a": (2, 0), "ch_b": (0, 0)}
        finally:
            await svc3.stop()
    finally:
        if svc2._loop_task is not None and not svc2._loop_task.done():
            await svc2.stop()


async def test_mentions_from_metadata_and_from_tokens_notify(bus: Bus, tmp_path: Path) -> None:
    conn = Connector(bus, "gina")
    ui = await UI(bus, "gina").attach()
    svc = await start(bus, tmp_path / "registry.sqlite3")
    try:
        await conn.joined(consent=True)
        await conn.capabilities(mentions=True)
        await conn.channels("ch_m")
        # Metadata: the server resolved "@gee" to my uid.
        await conn.message("ch_m", BOB, "hi @gee", [MentionRef(type="user", token="@gee", target_id=ME)])
        # Metadata present without me: the body's token does not count (metadata wins).
        await conn.message("ch_m", BOB, f"cc @{ME}", [MentionRef(type="user", token="@x", target_id=BOB)])
        # No metadata: explicit tokens only.
        await conn.message("ch_m", BOB, f"@{ME} token")
        await conn.message("ch_m", BOB, f"substring {ME}5678 is not a mention")
        await conn.message("ch_m", BOB, "@channel everyone look")
        await svc.wait_applied(conn.last_seq)
        assert channel_counts(await ui.unread()) == {"ch_m": (5, 3)}
        await ui.wait_for(
            lambda e: e["type"] == "notification" and e["payload"]["body"].startswith("@channel")
        )
        mentions = [e["payload"]["mention"] for e in ui.of_type("notification")]
        assert mentions == [True, False, True, False, True]
        # Do Not Disturb: badges still count, no notification.
        await ui.call("set_dnd", SetDndArgs(dnd=True), NotifyPrefs)
        await conn.message("ch_m", BOB, f"@{ME} during dnd")
        await ui.wait_for(unread_event("ch_m", 6, 4))
        await conn.message("ch_m", BOB, "x" * 200)  # barrier: applied in order after the dnd one
        await ui.wait_for(unread_event("ch_m", 7, 4))
        assert len(ui.of_type("notification")) == 5
    finally:
        await svc.stop()


async def test_server_unread_count_seeds_badges(bus: Bus, tmp_path: Path) -> None:
    conn = Connector(bus, "hank")
    svc = await start(bus, tmp_path / "registry.sqlite3")
    try:
        await conn.joined()
        await conn.channels("ch_s", "ch_t", unread={"ch_s": 3})
        await svc.wait_applied(conn.last_seq)
        assert channel_counts(await UI(bus, "hank").unread()) == {"ch_s": (3, 0), "ch_t": (0, 0)}
    finally:
        await svc.stop()


async def test_cli_unread_and_read(stack_nats: StackNats, tmp_path: Path) -> None:
    import click
    from click.testing import CliRunner

    from services.cli.notify import register

    await asyncio.to_thread(add_member, stack_nats.home, "ivan", out=lambda _: None)
    svc_bus = await Bus.connect(
        ConnectOptions(url=stack_nats.url, user="svc", password=stack_nats.service_password), first_attempts=3
    )
    await svc_bus.ensure_events_stream(STREAM, duplicate_window_s=60)
    svc = await start(svc_bus, tmp_path / "registry.sqlite3")
    conn = Connector(svc_bus, "ivan")
    group = click.Group()
    register(group)
    runner = CliRunner()

    def cli(*argv: str) -> click.testing.Result:
        return runner.invoke(group, [*argv, "--member", "ivan"], catch_exceptions=False)

    try:
        await conn.joined()
        await conn.channels("ch_x", "ch_y")
        await conn.message("ch_x", BOB, f"@{ME} hi")
        await conn.message("ch_y", BOB, "yo")
        await svc.wait_applied(conn.last_seq)
        out = await asyncio.to_thread(cli, "unread", "--json")
        assert out.exit_code == 0, out.output
        doc = json.loads(out.output)
        assert [(s["server_id"], s["unread"], s["mentions"]) for s in doc] == [("srv_a", 2, 1)]
        assert {c["channel_id"]: (c["unread"], c["mentions"]) for c in doc[0]["channels"]} == {
            "ch_x": (1, 1),
            "ch_y": (1, 0),
        }
        text = await asyncio.to_thread(cli, "unread")
        assert "srv_a" in text.output and "#x" in text.output and "@1" in text.output
        done = await asyncio.to_thread(cli, "read", "srv_a", "ch_x")
        assert done.exit_code == 0 and "marked srv_a #ch_x read" in done.output
        assert channel_counts(await UI(svc_bus, "ivan").unread()) == {"ch_x": (0, 0), "ch_y": (1, 0)}
        await asyncio.to_thread(cli, "read", "srv_a")
        assert channel_counts(await UI(svc_bus, "ivan").unread()) == {"ch_x": (0, 0), "ch_y": (0, 0)}
        missing = await asyncio.to_thread(runner.invoke, group, ["read", "srv_nope", "--member", "ivan"])
        assert missing.exit_code != 0 and "server_not_joined" in missing.output
    finally:
        await svc.stop()
        await svc_bus.close()
