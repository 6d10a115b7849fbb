"""The member's identity over the bus (issue #5; features 1.3-1.6), on real devservers and a real NATS.

``connector.identity_get`` never creates an identity; ``identity_create`` is idempotent;
``uid_mode`` and ``identity_import`` re-bind every joined server to the newly projected uid: its
session is stopped (realtime socket closed), its record stored and published (``server.updated``),
and a new session hydrates under the new uid, continuing the old one's history (nothing is
re-published). The devservers are the witnesses: request headers, the realtime presence, and the
author uid of a message sent after the switch.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Sequence
from typing import Any

import httpx
import pytest

from services.cli.chat import MemberClient
from services.cli.members import add_member
from services.connector.session import Session
from services.core.bus import CommandError
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    IDENTITY_ROOT_PATTERN,
    ConsentArgs,
    IdentityCreateArgs,
    IdentityGetArgs,
    IdentityImportArgs,
    IdentityInfo,
    JoinArgs,
    JoinResult,
    MessageCreated,
    ProfileGetResult,
    ProfileSetArgs,
    SendArgs,
    SendResult,
    UidModeArgs,
)
from services.core.identity import IdentityError, device_id, project_uid
from services.devserver.runner import DevserverHandle, arunning_devserver
from tests.connector_harness import EventLog, Harness
from tests.integration.conftest import StackNats, connector_running, until

FAMILY, HARBOR = "srv_family", "srv_harbor"
OTHER_ROOT = "identity_zz9plz42"


async def get(h: Harness, member: str, *, reveal: bool = False) -> IdentityInfo:
    return await h.call(member, "identity_get", IdentityGetArgs(reveal=reveal), IdentityInfo)


async def join(h: Harness, member: str, srv: DevserverHandle, server_id: str) -> JoinResult:
    return await h.call(
        member, "join", JoinArgs(url=srv.base_url, server_id=server_id, confirmed=True), JoinResult
    )


def uids(info: IdentityInfo) -> dict[str, str]:
    return {s.server_id: s.user_uid for s in info.servers}


async def rebound(events: EventLog, mark: int, server_id: str, uid: str) -> dict[str, Any]:
    """Wait for the ``server.updated`` carrying ``uid`` published after ``mark``, then for the new
    session to be live; return the event."""

    def updated(ev: list[dict[str, Any]]) -> int | None:
        for i in range(mark, len(ev)):
            e = ev[i]
            if (
                e["type"] == "server.updated"
                and e["server_id"] == server_id
                and e["payload"]["server"]["user_uid"] == uid
            ):
                return i + 1
        return None

    after = await events.wait_for(updated)
    await events.wait_for(
        lambda ev: any(
            e["type"] == "server.connection"
            and e["server_id"] == server_id
            and e["payload"]["state"] == "live"
            for e in ev[after:]
        )
    )
    return events.events[after - 1]


def updates_since(events: EventLog, mark: int) -> list[dict[str, Any]]:
    return [e for e in events.events[mark:] if e["type"] == "server.updated"]


async def realtime_clients(srv: DevserverHandle) -> int:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        response = await client.get("/_admin/state")
        response.raise_for_status()
        return int(response.json()["realtime_clients"])


async def admin_post(srv: DevserverHandle, channel_id: str, uid: str, body: str) -> str:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        response = await client.post(
            "/_admin/messages", json={"channel_id": channel_id, "user_uid": uid, "body": body}
        )
        response.raise_for_status()
        return str(response.json()["message"]["id"])


async def remote_profile(srv: DevserverHandle, uid: str, device: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        response = await client.get(
            "/v1/profile/me", headers={"X-OpenChat-User-UID": uid, "X-OpenChat-Device-ID": device}
        )
        response.raise_for_status()
        doc: dict[str, Any] = response.json()
        return doc


def count_published_messages(h: Harness) -> list[str]:
    """Record the id of every ``message.created`` the connector publishes from now on (before
    JetStream's de-duplication): sessions started later use these sinks."""
    ids: list[str] = []
    sink, batch_sink = h.connector.sink, h.connector.batch_sink
    assert batch_sink is not None

    def note(envelope: EventEnvelope[Any]) -> None:
        if isinstance(envelope.payload, MessageCreated):
            ids.append(envelope.payload.message.id)

    async def counting(member: str, envelope: EventEnvelope[Any]) -> None:
        note(envelope)
        await sink(member, envelope)

    async def counting_batch(member: str, envelopes: Sequence[EventEnvelope[Any]]) -> None:
        for envelope in envelopes:
            note(envelope)
        await batch_sink(member, envelopes)

    h.connector.sink, h.connector.batch_sink = counting, counting_batch
    return ids


def session(h: Harness, member: str, server_id: str) -> Session:
    return h.connector.sessions[(member, server_id)]


async def test_get_never_creates_and_create_is_idempotent(harness: Harness) -> None:
    first = await get(harness, "dora", reveal=True)
    assert first == IdentityInfo(exists=False)
    with pytest.raises(IdentityError):
        harness.connector.identities.root("dora")  # nothing was created

    created = await harness.call("dora", "identity_create", IdentityCreateArgs(), IdentityInfo)
    assert created.exists and created.uid_mode == "server_scoped" and created.servers == []
    assert created.root is None  # only when asked for
    shown = await get(harness, "dora", reveal=True)
    assert shown.root is not None and re.fullmatch(IDENTITY_ROOT_PATTERN, shown.root)
    assert created.device_id == shown.device_id == device_id(shown.root)
    assert (await get(harness, "dora")).root is None

    again = await harness.call("dora", "identity_create", IdentityCreateArgs(), IdentityInfo)
    assert again == created
    assert (await get(harness, "dora", reveal=True)).root == shown.root

    # another member is untouched
    assert not (await get(harness, "eve")).exists


async def test_uid_mode_and_import_rebind_every_server(
    harness: Harness, family: DevserverHandle, harbor: DevserverHandle
) -> None:
    member = "alice"
    events = await harness.events(member)
    await harness.call(member, "identity_create", IdentityCreateArgs(), IdentityInfo)
    root = (await get(harness, member, reveal=True)).root
    assert root is not None
    await harness.call(member, "profile_set", ProfileSetArgs(display_name="Alice B."), ProfileGetResult)
    await join(harness, member, family, FAMILY)
    await join(harness, member, harbor, HARBOR)
    await harness.call(member, "consent", ConsentArgs(server_id=FAMILY, share_profile=True), JoinResult)
    await events.wait_for(lambda ev: all(events.last_connection(s) == "live" for s in (FAMILY, HARBOR)))

    # server_scoped (default): each server sees its own uid
    info = await get(harness, member)
    scoped = {s: project_uid(root, s, "server_scoped") for s in (FAMILY, HARBOR)}
    assert uids(info) == scoped and scoped[FAMILY] != scoped[HARBOR]
    assert all(s.device_id == device_id(root) for s in info.servers)
    before_ids = {s: events.message_ids(s, "ch_general") for s in (FAMILY, HARBOR)}
    assert before_ids[FAMILY] and before_ids[HARBOR]
    published = count_published_messages(harness)
    old_family = session(harness, member, FAMILY)
    # posted just before the switch: published once, by the old session or the new one's gap fill
    racing = await admin_post(family, "ch_general", "uid_mum", "during the switch")

    # -> global: every record, event, request and socket carries the global uid
    mark, requests_mark = len(events.events), len(harness.requests.requests)
    switched = await harness.call(member, "uid_mode", UidModeArgs(mode="global"), IdentityInfo)
    glob = project_uid(root, FAMILY, "global")
    assert glob == project_uid(root, HARBOR, "global") and glob not in scoped.values()
    assert switched.uid_mode == "global" and uids(switched) == {FAMILY: glob, HARBOR: glob}
    assert {s.server_id: s.user_uid for s in harness.connector.servers.of_member(member)} == uids(switched)
    for sid in (FAMILY, HARBOR):
        event = await rebound(events, mark, sid, glob)
        assert event["payload"]["server"]["device_id"] == device_id(root)
    assert len(updates_since(events, mark)) == 2  # one per server
    assert session(harness, member, FAMILY) is not old_family
    await events.wait_for(lambda ev: racing in events.message_ids(FAMILY, "ch_general"))

    sent = await harness.call(
        member, "send", SendArgs(server_id=FAMILY, channel_id="ch_general", body="as global"), SendResult
    )
    assert sent.message.author_uid == glob
    created = await events.wait_for(
        lambda ev: next(
            (
                e
                for e in ev
                if e["type"] == "message.created" and e["payload"]["message"]["id"] == sent.message.id
            ),
            None,
        )
    )
    assert created["payload"]["message"]["author_uid"] == glob
    # the new realtime socket announces the new uid; the old one is closed
    await events.wait_for(
        lambda ev: any(
            e["type"] == "presence.batch"
            and e["server_id"] == FAMILY
            and any(m["user_uid"] == glob for d in e["payload"]["channels"] for m in d["snapshot"] or ())
            for e in ev[mark:]
        )
    )
    await until(lambda: _is(realtime_clients(family), 1))
    for request in harness.requests.requests[requests_mark:]:
        if request.url.path.startswith("/v1/servers/") or request.url.path.startswith("/v1/channels/"):
            assert request.headers["X-OpenChat-User-UID"] == glob, request.url.path
    # the consented profile is published under the new uid (not on harbor: no consent there)
    await events.wait_for(
        lambda ev: any(
            e["type"] == "profile.updated"
            and e["server_id"] == FAMILY
            and e["payload"]["profile"]["user_uid"] == glob
            and e["payload"]["profile"]["display_name"] == "Alice B."
            for e in ev[mark:]
        )
    )
    assert (await remote_profile(family, glob, device_id(root)))["display_name"] == "Alice B."

    # history continued: nothing published before the switch was published again
    assert not set(published) & {i for ids in before_ids.values() for i in ids}
    for sid in (FAMILY, HARBOR):
        ids = events.message_ids(sid, "ch_general")
        assert ids[: len(before_ids[sid])] == before_ids[sid] and len(ids) == len(set(ids))
        assert await session(harness, member, sid).gap_fill() == 0

    # the same mode again: nothing to re-bind
    mark = len(events.events)
    kept = {sid: session(harness, member, sid) for sid in (FAMILY, HARBOR)}
    same = await harness.call(member, "uid_mode", UidModeArgs(mode="global"), IdentityInfo)
    assert uids(same) == uids(switched)
    assert {sid: session(harness, member, sid) for sid in (FAMILY, HARBOR)} == kept

    # -> back to server_scoped: the original uids again
    mark = len(events.events)
    back = await harness.call(member, "uid_mode", UidModeArgs(mode="server_scoped"), IdentityInfo)
    assert back.uid_mode == "server_scoped" and uids(back) == scoped
    for sid in (FAMILY, HARBOR):
        await rebound(events, mark, sid, scoped[sid])

    # import another root (in global mode: the mode is kept)
    await harness.call(member, "uid_mode", UidModeArgs(mode="global"), IdentityInfo)
    mark = len(events.events)
    imported = await harness.call(
        member, "identity_import", IdentityImportArgs(root=OTHER_ROOT), IdentityInfo
    )
    other = project_uid(OTHER_ROOT, FAMILY, "global")
    assert imported.uid_mode == "global" and uids(imported) == {FAMILY: other, HARBOR: other}
    assert imported.device_id == device_id(OTHER_ROOT) != device_id(root)
    assert all(s.device_id == device_id(OTHER_ROOT) for s in imported.servers)
    assert (await get(harness, member, reveal=True)).root == OTHER_ROOT
    for sid in (FAMILY, HARBOR):
        await rebound(events, mark, sid, other)
    sent = await harness.call(
        member, "send", SendArgs(server_id=HARBOR, channel_id="ch_general", body="imported"), SendResult
    )
    assert sent.message.author_uid == other

    # the same root again: a no-op
    mark = len(events.events)
    kept = {sid: session(harness, member, sid) for sid in (FAMILY, HARBOR)}
    again = await harness.call(member, "identity_import", IdentityImportArgs(root=OTHER_ROOT), IdentityInfo)
    assert again == imported
    assert {sid: session(harness, member, sid) for sid in (FAMILY, HARBOR)} == kept

    # an invalid root is refused before anything changes
    bad = IdentityImportArgs.model_construct(root="identity_NOPE")  # skip the client-side check
    with pytest.raises(CommandError) as refused:
        await harness.call(member, "identity_import", bad, IdentityInfo)
    assert refused.value.code == "invalid_payload" and not refused.value.retryable
    assert (await get(harness, member, reveal=True)).root == OTHER_ROOT
    assert {sid: session(harness, member, sid) for sid in (FAMILY, HARBOR)} == kept
    assert updates_since(events, mark) == []


async def _is(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def test_uid_mode_needs_an_identity_and_import_creates_one(harness: Harness) -> None:
    with pytest.raises(CommandError) as missing:
        await harness.call("fay", "uid_mode", UidModeArgs(mode="global"), IdentityInfo)
    assert missing.value.code == "identity_not_found"
    assert not (await get(harness, "fay")).exists

    imported = await harness.call("fay", "identity_import", IdentityImportArgs(root=OTHER_ROOT), IdentityInfo)
    assert imported.exists and imported.uid_mode == "server_scoped"
    assert imported.device_id == device_id(OTHER_ROOT) and imported.servers == []
    assert (await get(harness, "fay", reveal=True)).root == OTHER_ROOT


async def test_cli_identity_mode(stack_nats: StackNats) -> None:
    from click.testing import CliRunner, Result

    from services.cli.main import main
    from services.core.members import ConnectionFile

    for name in ("ivan", "jane"):
        await asyncio.to_thread(add_member, stack_nats.home, name, out=lambda _: None)
    stack_nats.home.identities.delete("jane")  # ``member add`` creates one: back to a first run
    runner = CliRunner()

    def cli(*argv: str) -> Result:
        return runner.invoke(main, ["identity", *argv], catch_exceptions=False)

    cf = ConnectionFile.read(stack_nats.home.layout.connection_file("ivan"))
    async with (
        arunning_devserver(seed="family", admin=True) as dev,
        connector_running(stack_nats),
        MemberClient.connect(cf) as ivan,
    ):
        joined = await ivan.join(dev.base_url, FAMILY)
        root = stack_nats.home.identities.root("ivan")
        assert joined.server.user_uid == project_uid(root, FAMILY)

        shown = await asyncio.to_thread(cli, "mode", "--member", "ivan", "--json")
        assert shown.exit_code == 0, shown.output
        doc = json.loads(shown.output)
        assert doc["uid_mode"] == "server_scoped" and doc["root"] is None
        assert [(s["server_id"], s["user_uid"]) for s in doc["servers"]] == [(FAMILY, joined.server.user_uid)]

        switched = await asyncio.to_thread(cli, "mode", "global", "--member", "ivan")
        assert switched.exit_code == 0, switched.output
        glob = project_uid(root, FAMILY, "global")
        assert "uid mode: global" in switched.output
        assert re.search(rf"{FAMILY}\s+{glob}", switched.output)
        # the home-directory view agrees
        direct = await asyncio.to_thread(cli, "show", "--member", "ivan", "--server", FAMILY)
        assert f"uid on {FAMILY}: {glob}" in direct.output

        back = await asyncio.to_thread(cli, "mode", "server_scoped", "--member", "ivan", "--json")
        assert json.loads(back.output)["servers"][0]["user_uid"] == joined.server.user_uid

        none = await asyncio.to_thread(cli, "mode", "--member", "jane")
        assert none.exit_code == 0 and "no identity yet" in none.output
        refused = await asyncio.to_thread(
            runner.invoke, main, ["identity", "mode", "global", "--member", "jane"]
        )
        assert refused.exit_code != 0 and "identity_not_found" in refused.output
        wrong = await asyncio.to_thread(
            runner.invoke, main, ["identity", "mode", "sideways", "--member", "ivan"]
        )
        assert wrong.exit_code == 2
