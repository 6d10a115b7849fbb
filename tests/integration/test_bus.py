"""The bus client against a real nats-server with JetStream."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.msg import Msg
from pydantic import BaseModel

from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.bus import Contract, EventEnvelope
from services.core.contracts.subjects import SubjectError


class Echo(Contract):
    text: str
    times: int = 1


class Echoed(Contract):
    text: str


class Note(Contract):
    n: int


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[Bus]:
    b = await Bus.connect(ConnectOptions(url=nats_url, name="test"), first_attempts=3)
    yield b
    await b.close()


@pytest.fixture
async def stream(bus: Bus, request: pytest.FixtureRequest) -> str:
    # One stream per test: a stream owns its subjects, so remove any other first.
    for info in await bus.js.streams_info():
        assert info.config.name is not None
        await bus.js.delete_stream(info.config.name)
    await bus.ensure_events_stream("OC_TEST_EVENTS", duplicate_window_s=60)
    return "OC_TEST_EVENTS"


async def test_typed_request_reply(bus: Bus) -> None:
    @bus.command("echo", "say", Echo)
    async def say(member: str, args: Echo) -> BaseModel:
        return Echoed(text=f"{member}:{args.text * args.times}")

    await bus.serve_commands()
    result = await bus.request(subjects.command("alice", "echo", "say"), Echo(text="ab", times=2), Echoed)
    assert isinstance(result, Echoed)
    assert result.text == "alice:abab"


async def test_handler_exception_becomes_error_reply(bus: Bus) -> None:
    @bus.command("boom", "fail", Echo)
    async def fail(member: str, args: Echo) -> BaseModel:
        raise RuntimeError("database on fire")

    @bus.command("boom", "refuse", Echo)
    async def refuse(member: str, args: Echo) -> BaseModel:
        raise CommandError("message_too_large", "the message exceeds 65536 bytes", retryable=False)

    await bus.serve_commands()
    with pytest.raises(CommandError) as failed:
        await bus.request(subjects.command("alice", "boom", "fail"), Echo(text="x"), Echoed)
    assert failed.value.code == "internal_error"
    assert failed.value.retryable is True
    assert "database on fire" not in failed.value.body.message  # internals are logged, not sent

    with pytest.raises(CommandError) as refused:
        await bus.request(subjects.command("alice", "boom", "refuse"), Echo(text="x"), Echoed)
    assert refused.value.body.model_dump() == {
        "code": "message_too_large",
        "message": "the message exceeds 65536 bytes",
        "retryable": False,
    }


async def test_invalid_arguments_get_invalid_payload_reply(bus: Bus) -> None:
    @bus.command("echo2", "say", Echo)
    async def say(member: str, args: Echo) -> BaseModel:
        return Echoed(text=args.text)

    await bus.serve_commands()
    reply = await bus.nc.request(
        subjects.command("alice", "echo2", "say"), b'{"args": {"times": "many"}}', timeout=5
    )
    assert b'"code":"invalid_payload"' in reply.data
    assert b'"ok":false' in reply.data


async def test_request_without_responder_is_retryable_error(bus: Bus) -> None:
    with pytest.raises(CommandError) as err:
        await bus.request(subjects.command("alice", "nobody", "home"), Echo(text="x"), Echoed, timeout=1)
    assert err.value.code == "service_unavailable"
    assert err.value.retryable


async def test_subscribe_drops_invalid_payloads_and_delivers_valid_ones(bus: Bus) -> None:
    got: asyncio.Queue[Note] = asyncio.Queue()

    async def handler(note: Note, msg: Msg) -> None:
        await got.put(note)

    await bus.subscribe("oc.sys.test.notes", Note, handler)
    await bus.nc.publish("oc.sys.test.notes", b"not json")
    await bus.nc.publish("oc.sys.test.notes", b'{"n": "NaN-ish"}')
    await bus.publish("oc.sys.test.notes", Note(n=7))
    assert (await asyncio.wait_for(got.get(), 5)).n == 7
    assert got.empty()


async def test_jetstream_deduplicates_by_msg_id_and_republishes_once(bus: Bus, stream: str) -> None:
    live: asyncio.Queue[Msg] = asyncio.Queue()

    async def on_live(msg: Msg) -> None:
        await live.put(msg)

    await bus.nc.subscribe(subjects.events_of_member("alice"), cb=on_live)
    await bus.nc.flush()
    env = EventEnvelope[Note](
        event_id="msg_0001",
        server_id="srv_a",
        channel_id="ch_general",
        type="message.created",
        payload=Note(n=1),
    )
    first = await bus.publish_event("alice", env)
    again = await bus.publish_event("alice", env)
    other = await bus.publish_event("alice", env.model_copy(update={"event_id": "msg_0002"}))
    assert first.seq == again.seq
    assert again.duplicate is True
    assert other.seq == first.seq + 1
    info = await bus.js.stream_info(stream)
    assert info.state.messages == 2
    m1 = await asyncio.wait_for(live.get(), 5)
    m2 = await asyncio.wait_for(live.get(), 5)
    assert m1.subject == "oc.alice.evt.srv_a.message.created"
    assert m1.headers is not None and m1.headers["Nats-Sequence"] == str(first.seq)
    assert m2.headers is not None and m2.headers["Nats-Sequence"] == str(other.seq)
    assert EventEnvelope[Note].model_validate_json(m1.data).event_id == "msg_0001"
    assert live.empty()


def test_subject_helpers_refuse_injection() -> None:
    assert subjects.event("alice", "srv_a", "message.created") == "oc.alice.evt.srv_a.message.created"
    for bad in ("ali.ce", "*", ">", "Alice", "sys", ""):
        with pytest.raises(SubjectError):
            subjects.command(bad, "state", "snapshot")
    for bad_server in ("srv.a", "srv a", "*", ">"):
        with pytest.raises(SubjectError):
            subjects.event("alice", bad_server, "message.created")
