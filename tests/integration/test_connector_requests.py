"""The HTTP requests of a join and its hydrate (issue 16): one profile batch covers the authors of
every channel. (The first hydrate asks for the capabilities again: reusing the join's answer made a
read-ack test flaky, see ADR 0032.) Counted on the
connector's own HTTP client (the harness logs every request) against a real devserver."""

from __future__ import annotations

import httpx

from services.core.contracts.chat import JoinArgs, JoinResult
from services.devserver.runner import DevserverHandle
from testkit.eventlog import EventLog
from tests.connector_harness import Harness


def lives(events: EventLog, server_id: str) -> int:
    return sum(1 for e in events.of("server.connection", server_id) if e["payload"]["state"] == "live")


async def test_join_and_first_hydrate_ask_each_thing_once(harness: Harness, harbor: DevserverHandle) -> None:
    events = await harness.events("alice")
    joined = await harness.call(
        "alice", "join", JoinArgs(url=harbor.base_url, server_id="srv_harbor", confirmed=True), JoinResult
    )
    await events.wait_for(lambda ev: lives(events, "srv_harbor") == 1)
    uid = joined.server.user_uid
    mine = [r for r in harness.requests.requests if r.headers.get("X-OpenChat-User-UID") == uid]
    paths = [r.url.path for r in mine]
    # the join asks, and the hydrate asks again (it publishes what it read itself)
    assert paths.count("/v1/client/capabilities") == 2
    assert paths.count("/v1/servers/srv_harbor/channels") == 1
    assert paths.count("/v1/servers/srv_harbor/members") == 1
    text = [
        c["id"]
        for e in events.of("channels.updated", "srv_harbor")[-1:]
        for g in e["payload"]["groups"]
        for c in g["channels"]
        if c["type"] == "text"
    ]
    assert len(text) > 1  # several channels: one profile batch for all of them is what is checked
    assert sorted(p for p in paths if p.endswith("/messages")) == sorted(
        f"/v1/channels/{c}/messages" for c in text
    )
    # one de-duplicated profile batch for the authors of every channel's messages
    batches = [r for r in mine if r.url.path == "/v1/profiles:batch"]
    assert len(batches) == 1
    asked = batches[0].url.params.get_list("user_uid")
    authors = {e["payload"]["message"]["author_uid"] for e in events.of("message.created", "srv_harbor")}
    channels_with_messages = {
        e["payload"]["message"]["channel_id"] for e in events.of("message.created", "srv_harbor")
    }
    assert len(channels_with_messages) > 1
    assert len(asked) == len(set(asked)) and set(asked) == authors
    await events.wait_for(
        lambda ev: (
            {e["payload"]["profile"]["user_uid"] for e in events.of("profile.updated", "srv_harbor")}
            >= authors
        )
    )

    # a later cycle (the socket dropped) asks for the capabilities again; known authors are not
    # fetched again
    async with httpx.AsyncClient(base_url=harbor.base_url) as http:
        assert (await http.post("/_admin/realtime/drop")).status_code < 300
    await events.wait_for(lambda ev: lives(events, "srv_harbor") == 2)
    paths = [r.url.path for r in harness.requests.requests if r.headers.get("X-OpenChat-User-UID") == uid]
    assert paths.count("/v1/client/capabilities") == 3
    assert paths.count("/v1/profiles:batch") == 1
