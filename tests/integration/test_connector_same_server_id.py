"""Two independent backends that both call their server ``srv_harbor`` (issue #14, ADR 0018):
the real connector on a real NATS, two real devservers (the ``harbor`` seed: one server,
``srv_harbor``, also the capabilities' id).

The member joins both: the first keeps its id and the reference uid projection, the second gets a
local id derived from its host and a uid projected from a scope with its backend's URL; the
connector speaks ``srv_harbor`` on the wire to both; each server's events come under its own
local id; a message sent to each lands only on its backend; leaving one leaves the other; the uid
mode toggle keeps each server's scope. The devservers are the witnesses (request paths, author
uids, their directories)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from services.core.bus import CommandError
from services.core.contracts.chat import (
    DiscoverArgs,
    DiscoverResult,
    IdentityCreateArgs,
    IdentityGetArgs,
    IdentityInfo,
    JoinArgs,
    JoinResult,
    LeaveArgs,
    LeaveResult,
    ProbeArgs,
    ProbeResult,
    SendArgs,
    SendResult,
    UidModeArgs,
)
from services.core.identity import project_uid
from services.core.local_ids import host_slug
from services.core.paths import HomeLayout
from services.devserver.runner import DevserverHandle, arunning_devserver
from tests.connector_harness import EventLog, Harness, connector_harness
from tests.integration.conftest import until

HARBOR = "srv_harbor"


async def history(srv: DevserverHandle, channel_id: str = "ch_general") -> list[dict[str, str]]:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        r = await client.get(f"/v1/channels/{channel_id}/messages", params={"limit": 200})
        r.raise_for_status()
        return list(r.json()["messages"])


async def admin_post(srv: DevserverHandle, body: str, uid: str = "uid_other") -> str:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        r = await client.post(
            "/_admin/messages", json={"channel_id": "ch_general", "user_uid": uid, "body": body}
        )
        r.raise_for_status()
        return str(r.json()["message"]["id"])


async def directory(srv: DevserverHandle, uid: str) -> list[str]:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        r = await client.get("/v1/servers", headers={"X-OpenChat-User-UID": uid})
        r.raise_for_status()
        return [s["server_id"] for s in r.json()["servers"]]


def bodies_of(events: EventLog, server_id: str) -> list[str]:
    return [e["payload"]["message"]["body"] for e in events.of("message.created", server_id)]


async def join(
    h: Harness, member: str, srv: DevserverHandle, local_id: str | None = None, server_id: str = HARBOR
) -> JoinResult:
    args = JoinArgs(url=srv.base_url, server_id=server_id, confirmed=True, local_id=local_id)
    return await h.call(member, "join", args, JoinResult)


async def root_of(h: Harness, member: str) -> str:
    await h.call(member, "identity_create", IdentityCreateArgs(), IdentityInfo)
    info = await h.call(member, "identity_get", IdentityGetArgs(reveal=True), IdentityInfo)
    assert info.root is not None
    return info.root


@pytest.mark.parametrize("chosen", [None, ("harbor-one", "harbor-two")], ids=["derived", "as"])
async def test_two_backends_with_the_same_server_id(harness: Harness, chosen: tuple[str, str] | None) -> None:
    member = "alice"
    events = await harness.events(member)
    root = await root_of(harness, member)
    async with (
        arunning_devserver(seed="harbor", admin=True) as one,
        arunning_devserver(seed="harbor", admin=True) as two,
    ):
        local_one = chosen[0] if chosen else HARBOR
        local_two = chosen[1] if chosen else f"{HARBOR}-{host_slug(two.base_url)}"
        # the first: its own id (or the chosen one), the reference projection
        p1 = await harness.call(member, "probe", ProbeArgs(url=one.base_url), ProbeResult)
        assert (p1.backend_server_id, p1.local_id, p1.in_directory) == (HARBOR, HARBOR, True)
        assert p1.disclosure.origin_scope is None
        first = (await join(harness, member, one, chosen[0] if chosen else None)).server
        assert (first.server_id, first.backend_id, first.uid_scope) == (local_one, HARBOR, None)
        assert first.user_uid == project_uid(root, HARBOR) == p1.disclosure.user_uid
        # the second: the probe proposes a derived id and says the uid is scoped to its backend
        p2 = await harness.call(member, "probe", ProbeArgs(url=two.base_url), ProbeResult)
        assert p2.backend_server_id == HARBOR
        assert p2.local_id == (f"{HARBOR}-{host_slug(two.base_url)}" if not chosen else HARBOR)
        assert p2.disclosure.origin_scope == two.base_url
        assert f"scoped to this backend's address, {two.base_url}" in p2.disclosure.summary
        second = (await join(harness, member, two, chosen[1] if chosen else None)).server
        assert (second.server_id, second.backend_id) == (local_two, HARBOR)
        assert second.uid_scope == f"{HARBOR}@{two.base_url}"
        assert second.user_uid == project_uid(root, f"{HARBOR}@{two.base_url}") == p2.disclosure.user_uid
        assert second.user_uid != first.user_uid
        # the same backend server again: refused, under any local id
        for again in (None, "harbor-three"):
            with pytest.raises(CommandError) as exc:
                await join(harness, member, one, again)
            assert exc.value.code == "server_exists" and "Server already added" in exc.value.body.message
        with pytest.raises(CommandError) as exc:
            await join(harness, member, two, local_one)  # a taken local id
        assert exc.value.code == "server_exists"

        # both live, hydrated with each backend's seed under its own local id
        await events.wait_for(
            lambda ev: all(events.last_connection(s) == "live" for s in (local_one, local_two))
        )
        # the connector spoke the backend's id on the wire to both
        paths = harness.requests.paths("GET")
        assert f"/v1/servers/{HARBOR}/channels" in paths
        assert not any(local_two in p for p in paths if local_two != HARBOR)

        # a message sent to each lands only on its backend, under that backend's uid
        for local, srv, other in ((local_one, one, two), (local_two, two, one)):
            body = f"sent to {local}"
            sent = await harness.call(
                member, "send", SendArgs(server_id=local, channel_id="ch_general", body=body), SendResult
            )
            assert sent.message.server_id == local
            on_srv = {m["body"]: m["author_uid"] for m in await history(srv)}
            assert on_srv[body] == (first.user_uid if srv is one else second.user_uid)
            assert body not in {m["body"] for m in await history(other)}

        # a message posted on each appears only under its own local id
        await admin_post(one, "posted on one")
        await admin_post(two, "posted on two")
        await events.wait_for(
            lambda ev: (
                "posted on one" in bodies_of(events, local_one)
                and "posted on two" in bodies_of(events, local_two)
            )
        )
        assert "posted on two" not in bodies_of(events, local_one)
        assert "posted on one" not in bodies_of(events, local_two)

        # the uid mode toggle keeps each server's scope: back to server-scoped, back to both uids
        await harness.call(member, "uid_mode", UidModeArgs(mode="global"), IdentityInfo)
        info = await harness.call(member, "uid_mode", UidModeArgs(mode="server_scoped"), IdentityInfo)
        assert {s.server_id: s.user_uid for s in info.servers} == {
            local_one: first.user_uid,
            local_two: second.user_uid,
        }

        # leaving the second leaves the first intact; the backend saw its own id and uid
        left = await harness.call(member, "leave", LeaveArgs(server_id=local_two), LeaveResult)
        assert left.backend_left and left.server_id == local_two
        assert f"/v1/servers/{HARBOR}/membership" in harness.requests.paths("DELETE")
        assert await directory(two, second.user_uid) == []  # left, as that uid
        assert await directory(one, first.user_uid) == [HARBOR]  # not left there
        assert [s.server_id for s in harness.connector.servers.of_member(member)] == [local_one]
        assert (member, local_one) in harness.connector.sessions
        await admin_post(one, "still here")
        await events.wait_for(lambda ev: "still here" in bodies_of(events, local_one))


async def test_probe_without_discover_warns_when_the_directory_does_not_list_the_id(
    harness: Harness,
) -> None:
    """Rule D1: a backend added by URL joins the capabilities' id, with a warning when its
    directory does not list that id (here: the directory uid left it)."""
    member = "bob"
    async with arunning_devserver(seed="harbor", admin=True) as srv:
        found = await harness.call(member, "discover", DiscoverArgs(url=srv.base_url), DiscoverResult)
        async with httpx.AsyncClient(base_url=srv.base_url) as client:
            r = await client.delete(
                f"/v1/servers/{HARBOR}/membership", headers={"X-OpenChat-User-UID": found.directory_uid}
            )
            r.raise_for_status()
        probed = await harness.call(member, "probe", ProbeArgs(url=srv.base_url), ProbeResult)
        assert probed.backend_server_id == HARBOR and probed.in_directory is False
        assert any("not listed in this backend's directory" in w for w in probed.trust.warnings)
        joined = (await join(harness, member, srv)).server
        assert joined.server_id == joined.backend_id == HARBOR

        async def live() -> bool:
            return (member, HARBOR) in harness.connector.sessions and bool(
                harness.connector.sessions[(member, HARBOR)].groups
            )

        await until(live)


def downgrade_registry(home: Path) -> None:
    """Rewrite the registry's joined servers as a release before #14 stored them: the old table
    (no backend id / URL columns, no index, user_version 0) and records without the new fields."""
    db = sqlite3.connect(HomeLayout(home).registry_db)
    try:
        rows = db.execute("SELECT member, server_id, record FROM joined_servers ORDER BY rowid").fetchall()
        db.executescript(
            "DROP TABLE joined_servers; CREATE TABLE joined_servers (member TEXT NOT NULL, server_id TEXT"
            " NOT NULL, record TEXT NOT NULL, PRIMARY KEY (member, server_id)); PRAGMA user_version = 0;"
        )
        for member, server_id, raw in rows:
            doc = json.loads(raw)
            del doc["backend_server_id"], doc["uid_scope"]
            db.execute("INSERT INTO joined_servers VALUES (?, ?, ?)", (member, server_id, json.dumps(doc)))
        db.commit()
    finally:
        db.close()


async def test_an_existing_installation_keeps_its_ids_and_uids(nats_url: str, tmp_path: Path) -> None:
    """Servers joined before #14 (an old registry) come back under the same ids and uids after the
    upgrade, and a second ``srv_harbor`` can then be joined beside them."""
    member = "alice"
    async with (
        arunning_devserver(seed="harbor", admin=True) as harbor,
        arunning_devserver(seed="family", admin=True) as family,
        arunning_devserver(seed="harbor", admin=True) as other,
    ):
        async with connector_harness(nats_url, tmp_path) as before:
            root = await root_of(before, member)
            await join(before, member, harbor)
            await join(before, member, family, server_id="srv_family")
            old = [(r.server_id, r.user_uid, r.base_url) for r in before.connector.servers.of_member(member)]
        assert old == [
            (HARBOR, project_uid(root, HARBOR), harbor.base_url),
            ("srv_family", project_uid(root, "srv_family"), family.base_url),
        ]
        downgrade_registry(tmp_path / "home")

        async with connector_harness(nats_url, tmp_path, events_of=(member,)) as after:
            events = after.logs[member]
            records = after.connector.servers.of_member(member)
            assert [(r.server_id, r.user_uid, r.base_url) for r in records] == old
            assert all(r.backend_server_id is None and r.uid_scope is None for r in records)
            await events.wait_for(
                lambda ev: all(events.last_connection(s) == "live" for s in (HARBOR, "srv_family"))
            )
            assert f"/v1/servers/{HARBOR}/channels" in after.requests.paths("GET")
            # the upgrade path meets the feature: a second srv_harbor joins beside the old one
            second = (await join(after, member, other)).server
            assert second.server_id == f"{HARBOR}-{host_slug(other.base_url)}"
            assert second.user_uid == project_uid(root, f"{HARBOR}@{other.base_url}") != old[0][1]
            await admin_post(harbor, "to the old one")
            await events.wait_for(lambda ev: "to the old one" in bodies_of(events, HARBOR))
            assert "to the old one" not in bodies_of(events, second.server_id)
