"""Member credentials on a real nats-server configured as ``openchat up`` configures it:
a member may publish only its own commands and subscribe only its own events and inbox."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from services.cli.members import add_member, remove_member
from services.core.members import ConnectionFile
from tests.integration.conftest import StackNats


class Errors(list[Exception]):
    """Asynchronous errors the server sent a client (nats-py lower-cases their text)."""

    def __init__(self) -> None:
        super().__init__()
        self.arrived = asyncio.Event()

    async def violation(self, subject: str = "") -> str:
        """Wait for a permissions violation (naming ``subject`` when given) and return it."""
        while True:
            for exc in self:
                text = str(exc).lower()
                if "permissions violation" in text and subject.lower() in text:
                    return text
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 5)


Connect = Callable[[str], Coroutine[Any, Any, tuple[Client, Errors]]]


@pytest.fixture
async def members(stack_nats: StackNats) -> AsyncIterator[Connect]:
    # The CLI functions are synchronous (they run their own event loop): call them off this loop.
    await asyncio.to_thread(add_member, stack_nats.home, "alice", out=lambda _: None)
    await asyncio.to_thread(add_member, stack_nats.home, "bob", out=lambda _: None)
    clients: list[Client] = []

    async def connect(name: str) -> tuple[Client, Errors]:
        cf = ConnectionFile.read(stack_nats.home.layout.connection_file(name))
        assert cf.nats_url == stack_nats.url
        errors = Errors()

        async def on_error(exc: Exception) -> None:
            errors.append(exc)
            errors.arrived.set()

        nc = await nats.connect(
            cf.nats_url,
            nkeys_seed_str=cf.nkey_seed,
            inbox_prefix=cf.inbox_prefix.encode(),
            error_cb=on_error,
            max_reconnect_attempts=0,
            allow_reconnect=False,
        )
        clients.append(nc)
        return nc, errors

    yield connect
    for nc in clients:
        if not nc.is_closed:
            await nc.close()


@pytest.fixture
async def service(stack_nats: StackNats) -> AsyncIterator[Client]:
    nc = await nats.connect(stack_nats.url, user="svc", password=stack_nats.service_password)
    yield nc
    await nc.close()


async def _received(nc: Client, subject: str) -> asyncio.Queue[Msg]:
    queue: asyncio.Queue[Msg] = asyncio.Queue()

    async def cb(msg: Msg) -> None:
        await queue.put(msg)

    await nc.subscribe(subject, cb=cb)
    await nc.flush()
    return queue


async def test_member_publishes_own_commands_and_receives_own_events(
    members: Connect, service: Client
) -> None:
    alice, errors = await members("alice")
    commands = await _received(service, "oc.alice.cmd.>")
    events = await _received(alice, "oc.alice.evt.>")
    await alice.publish("oc.alice.cmd.x", b"hello")
    await alice.flush()  # the server has it (a refusal would be in ``errors`` by now)
    await service.publish("oc.alice.evt.srv_a.message.created", b"event")
    await service.flush()
    try:
        assert (await asyncio.wait_for(commands.get(), 5)).subject == "oc.alice.cmd.x"
        assert (await asyncio.wait_for(events.get(), 5)).data == b"event"
    except TimeoutError:
        raise AssertionError(
            f"not delivered (commands {commands.qsize()}, events {events.qsize()}, errors {errors})"
        ) from None
    assert errors == []


async def test_member_request_reply_through_own_inbox(members: Connect, service: Client) -> None:
    alice, errors = await members("alice")

    async def answer(msg: Msg) -> None:
        assert msg.reply.startswith("_INBOX_alice.")
        await msg.respond(b"pong")

    await service.subscribe("oc.alice.cmd.state.ping", cb=answer)
    await service.flush()
    reply = await alice.request("oc.alice.cmd.state.ping", b"ping", timeout=5)
    assert reply.data == b"pong"
    assert errors == []


REFUSED_SUBSCRIPTIONS = {
    "other_member_events": "oc.bob.evt.>",
    "every_member_events": "oc.*.evt.>",
    "everything": ">",
    "jetstream_api": "$JS.API.>",
    "internal_traffic": "oc.sys.>",
    "other_member_inbox": "_INBOX_bob.>",
}


@pytest.mark.parametrize("subject", REFUSED_SUBSCRIPTIONS.values(), ids=REFUSED_SUBSCRIPTIONS.keys())
async def test_member_subscription_refused(members: Connect, service: Client, subject: str) -> None:
    alice, errors = await members("alice")
    refused: asyncio.Queue[Msg] = asyncio.Queue()

    async def cb(msg: Msg) -> None:
        await refused.put(msg)

    await alice.subscribe(subject, cb=cb)
    allowed = await _received(alice, "oc.alice.evt.>")
    # The server answers the forbidden SUB with a permissions violation…
    await alice.flush()
    probe = subject.replace(">", "probe.x").replace("*", "bob")
    # …and delivers nothing on it: a message on the forbidden subject published *before* one on
    # alice's own subject must not arrive, although the later one does (NATS keeps order).
    await service.publish(probe, b"secret")
    await service.publish("oc.alice.evt.srv_a.probe", b"marker")
    assert (await asyncio.wait_for(allowed.get(), 5)).data == b"marker"
    assert refused.empty()
    assert subject.lower() in await errors.violation(subject)


REFUSED_PUBLISHES = {
    "other_member_commands": "oc.bob.cmd.state.snapshot",
    "events_directly": "oc.alice.evt.srv_a.message.created",
    "internal_traffic": "oc.sys.ev.alice.srv_a.message.created",
    "jetstream_api": "$JS.API.STREAM.INFO.OC_EVENTS",
}


@pytest.mark.parametrize("subject", REFUSED_PUBLISHES.values(), ids=REFUSED_PUBLISHES.keys())
async def test_member_publish_refused(members: Connect, service: Client, subject: str) -> None:
    alice, errors = await members("alice")
    seen = await _received(service, subject)
    commands = await _received(service, "oc.alice.cmd.>")
    await alice.publish(subject, b"forged")
    assert "publish" in await errors.violation(subject)
    # Anything the server had let through would reach the service before this later marker.
    await alice.publish("oc.alice.cmd.marker", b"marker")
    assert (await asyncio.wait_for(commands.get(), 5)).data == b"marker"
    assert seen.empty()


async def test_removed_member_is_disconnected_and_refused(members: Connect, stack_nats: StackNats) -> None:
    alice, _ = await members("alice")
    bob, _ = await members("bob")
    cf = ConnectionFile.read(stack_nats.home.layout.connection_file("alice"))
    closed = asyncio.Event()
    alice._closed_cb = _set_event(closed)
    outcome: list[str] = []
    await asyncio.to_thread(remove_member, stack_nats.home, "alice", out=outcome.append)
    assert "config reloaded" in outcome[0]
    await asyncio.wait_for(closed.wait(), 10)
    assert not alice.is_connected
    assert bob.is_connected
    with pytest.raises(Exception, match=r"(?i)authorization"):
        await nats.connect(
            stack_nats.url, nkeys_seed_str=cf.nkey_seed, max_reconnect_attempts=0, allow_reconnect=False
        )
    assert not stack_nats.home.layout.connection_file("alice").exists()


def _set_event(event: asyncio.Event) -> Callable[[], Coroutine[Any, Any, None]]:
    async def cb() -> None:
        event.set()

    return cb
