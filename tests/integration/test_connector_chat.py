"""Connector against real devservers and a real NATS: join, send, receive, limits, leave."""

from __future__ import annotations

import base64

import httpx
import pytest

from services.core.bus import CommandError
from services.core.contracts.chat import (
    Ack,
    DiscoverArgs,
    DiscoverResult,
    HistoryArgs,
    HistoryResult,
    JoinArgs,
    JoinResult,
    LeaveArgs,
    LeaveResult,
    MembersArgs,
    MembersUpdated,
    ProfilesArgs,
    ProfilesResult,
    SendArgs,
    SendResult,
    TypingArgs,
    UploadedImage,
)
from services.core.identity import directory_server_id, project_uid
from services.devserver.runner import DevserverHandle, arunning_devserver
from tests.connector_harness import Harness

PNG_1X1 = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)


async def admin_post(srv: DevserverHandle, channel_id: str, uid: str, body: str) -> str:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        response = await client.post(
            "/_admin/messages", json={"channel_id": channel_id, "user_uid": uid, "body": body}
        )
        response.raise_for_status()
        return str(response.json()["message"]["id"])


async def join(h: Harness, member: str, srv: DevserverHandle, server_id: str) -> JoinResult:
    return await h.call(
        member, "join", JoinArgs(url=srv.base_url, server_id=server_id, confirmed=True), JoinResult
    )


async def test_two_servers_reusing_channel_ids_never_bleed(
    harness: Harness, family: DevserverHandle, harbor: DevserverHandle
) -> None:
    events = await harness.events("alice")
    found = await harness.call("alice", "discover", DiscoverArgs(url=family.base_url + "/"), DiscoverResult)
    assert [s.server_id for s in found.servers] == ["srv_family"]
    root = harness.connector.identities.root("alice")
    assert found.directory_uid == project_uid(root, directory_server_id(family.base_url))

    fam = await join(harness, "alice", family, "srv_family")
    har = await join(harness, "alice", harbor, "srv_harbor")
    assert fam.server.user_uid == project_uid(root, "srv_family")
    assert har.server.user_uid != fam.server.user_uid
    await events.wait_for(
        lambda ev: all(events.last_connection(sid) == "live" for sid in ("srv_family", "srv_harbor"))
    )
    # hydrate: the seed messages of each server arrive under that server only
    assert events.message_ids("srv_family", "ch_general") == ["msg_fam_01", "msg_fam_02"]
    assert events.message_ids("srv_harbor", "ch_general") == ["msg_seed_01", "msg_seed_02"]

    sent_f = await harness.call(
        "alice",
        "send",
        SendArgs(server_id="srv_family", channel_id="ch_general", body="  hi family  "),
        SendResult,
    )
    sent_h = await harness.call(
        "alice",
        "send",
        SendArgs(server_id="srv_harbor", channel_id="ch_general", body="hi harbor"),
        SendResult,
    )
    assert sent_f.message.body == "hi family"
    assert sent_f.message.author_uid == fam.server.user_uid
    other_f = await admin_post(family, "ch_general", "uid_mum", "from mum")
    other_h = await admin_post(harbor, "ch_general", "uid_lyra", "from lyra")
    await events.wait_for(lambda ev: other_f in events.message_ids("srv_family", "ch_general"))
    await events.wait_for(lambda ev: other_h in events.message_ids("srv_harbor", "ch_general"))
    fam_ids = events.message_ids("srv_family", "ch_general")
    har_ids = events.message_ids("srv_harbor", "ch_general")
    assert fam_ids == ["msg_fam_01", "msg_fam_02", sent_f.message.id, other_f]
    assert har_ids == ["msg_seed_01", "msg_seed_02", sent_h.message.id, other_h]
    for e in events.of("message.created"):
        assert e["payload"]["message"]["server_id"] == e["server_id"]

    # D7: identity headers on every request, each server with its own projected uid
    assert harness.requests.requests
    for request in harness.requests.requests:
        uid = request.headers.get("X-OpenChat-User-UID")
        assert uid and request.headers.get("X-OpenChat-Device-ID") == fam.server.device_id
        port = request.url.port
        if request.url.path in ("/v1/servers", "/v1/client/capabilities") and uid not in (
            fam.server.user_uid,
            har.server.user_uid,
        ):
            assert uid == project_uid(root, directory_server_id(f"http://127.0.0.1:{port}"))
        elif port == family.cfg.port:
            assert uid == fam.server.user_uid, request.url.path
        else:
            assert uid == har.server.user_uid, request.url.path
    paths = set(harness.requests.paths("GET"))
    assert {"/v1/servers/srv_family/channels", "/v1/servers/srv_family/members"} <= paths
    assert "/v1/channels/ch_general/messages" in paths

    # the realtime socket carries the identity too: the presence snapshot names our uid/device
    # (coalesced: a ``presence.batch`` whose delta of the channel carries the snapshot, ADR 0022)
    # published within the presence window after the subscription: awaited
    def ours(_: object) -> bool:
        return any(
            m["user_uid"] == fam.server.user_uid and m["device_id"] == fam.server.device_id
            for e in events.of("presence.batch", "srv_family")
            for d in e["payload"]["channels"]
            if d["channel_id"] == "ch_general"
            for m in d["snapshot"] or ()
        )

    assert await events.wait_for(ours)


async def test_send_limits_images_typing_and_history(harness: Harness, family: DevserverHandle) -> None:
    events = await harness.events("bob")
    await join(harness, "bob", family, "srv_family")
    await events.wait_for(lambda ev: events.last_connection("srv_family") == "live")
    before = len(harness.requests.requests)

    # max_message_bytes (65536) counts UTF-8 bytes of the trimmed body: 21846 x "€" = 65538 bytes
    with pytest.raises(CommandError) as too_big:
        await harness.call(
            "bob",
            "send",
            SendArgs(server_id="srv_family", channel_id="ch_general", body="€" * 21846),
            SendResult,
        )
    assert too_big.value.code == "message_too_large" and not too_big.value.retryable
    with pytest.raises(CommandError) as bad_type:
        image = UploadedImage(
            file_name="x.webp",
            content_type="image/webp",
            data_b64=base64.b64encode(b"RIFF0000WEBPVP8 ").decode(),
        )
        await harness.call(
            "bob",
            "send",
            SendArgs(server_id="srv_family", channel_id="ch_general", images=[image]),
            SendResult,
        )
    assert bad_type.value.code == "image_type_unsupported"
    with pytest.raises(CommandError) as empty:
        await harness.call(
            "bob", "send", SendArgs(server_id="srv_family", channel_id="ch_general", body="  "), SendResult
        )
    assert empty.value.code == "message_empty"
    assert len(harness.requests.requests) == before  # refused before any request

    # an image goes as multipart part "files"; the attachment URL points at the base URL
    png = UploadedImage(
        file_name="dot.png", content_type="image/png", data_b64=base64.b64encode(PNG_1X1).decode()
    )
    sent = await harness.call(
        "bob",
        "send",
        SendArgs(server_id="srv_family", channel_id="ch_photos", body="look", images=[png], reply_to=None),
        SendResult,
    )
    assert [a.file_name for a in sent.message.attachments] == ["dot.png"]
    assert sent.message.attachments[0].url.startswith(family.base_url + "/v1/channels/ch_photos/attachments/")
    reply = await harness.call(
        "bob",
        "send",
        SendArgs(server_id="srv_family", channel_id="ch_photos", body="re", reply_to=sent.message.id),
        SendResult,
    )
    assert reply.message.reply_to is not None and reply.message.reply_to.message_id == sent.message.id
    await events.wait_for(
        lambda ev: events.message_ids("srv_family", "ch_photos") == [sent.message.id, reply.message.id]
    )
    # the POST response and the realtime echo are one event
    ids = [e["event_id"] for e in events.of("message.created")]
    assert len(ids) == len(set(ids))

    # unknown server / channel
    with pytest.raises(CommandError) as unknown:
        await harness.call(
            "bob", "send", SendArgs(server_id="srv_nope", channel_id="ch_general", body="x"), SendResult
        )
    assert unknown.value.code == "server_not_joined"

    # typing heartbeat: one true per 2.5 s, false always
    first = await harness.call(
        "bob", "typing", TypingArgs(server_id="srv_family", channel_id="ch_general", is_typing=True), Ack
    )
    second = await harness.call(
        "bob", "typing", TypingArgs(server_id="srv_family", channel_id="ch_general", is_typing=True), Ack
    )
    stop = await harness.call(
        "bob", "typing", TypingArgs(server_id="srv_family", channel_id="ch_general", is_typing=False), Ack
    )
    assert (first.detail, second.detail, stop.detail) == ("sent", "throttled", "sent")

    # Profile A history page: before a message id, grown limit
    async with httpx.AsyncClient(base_url=family.base_url) as client:
        r = await client.post(
            "/_admin/burst", json={"channel_id": "ch_plans", "count": 400, "user_uid": "uid_sam"}
        )
        burst = r.json()
    await events.wait_for(
        lambda ev: burst["last_id"] in events.message_ids("srv_family", "ch_plans"), timeout=20
    )
    page = await harness.call(
        "bob",
        "history",
        HistoryArgs(server_id="srv_family", channel_id="ch_plans", before=burst["last_id"], limit=50),
        HistoryResult,
    )
    plans = events.message_ids("srv_family", "ch_plans")
    assert [m.id for m in page.messages] == plans[-51:-1] and page.has_more
    oldest = await harness.call(
        "bob",
        "history",
        HistoryArgs(server_id="srv_family", channel_id="ch_plans", before=plans[30], limit=50),
        HistoryResult,
    )
    assert [m.id for m in oldest.messages] == plans[:30] and not oldest.has_more

    members = await harness.call("bob", "members", MembersArgs(server_id="srv_family"), MembersUpdated)
    assert [m["name"] for m in members.members] == ["Mum", "Dad", "Sam"]
    profiles = await harness.call(
        "bob",
        "profiles",
        ProfilesArgs(server_id="srv_family", user_uids=["uid_mum", "uid_dad"]),
        ProfilesResult,
    )
    assert [p.user_uid for p in profiles.profiles] == ["uid_mum", "uid_dad"]
    # UID-only: no profile publish without consent
    assert not [
        r for r in harness.requests.requests if r.method == "PUT" or r.url.path == "/v1/profile/avatar"
    ]


async def test_rate_limit_per_member_and_server(harness: Harness) -> None:
    """``limits.rate_limit_per_minute`` (3 here, through the devserver's ``--limit`` knob) holds
    back the next send of that member on that server, with a retry time; others are unaffected."""
    async with (
        arunning_devserver(seed="family", admin=True, limits={"rate_limit_per_minute": 3}) as small,
        arunning_devserver(seed="harbor", admin=True, limits={"rate_limit_per_minute": 3}) as other,
    ):
        events = await harness.events("carol")
        await join(harness, "carol", small, "srv_family")
        await join(harness, "carol", other, "srv_harbor")
        await join(harness, "dave", small, "srv_family")
        await events.wait_for(
            lambda ev: all(events.last_connection(s) == "live" for s in ("srv_family", "srv_harbor"))
        )

        async def send(member: str, server_id: str, body: str) -> SendResult:
            args = SendArgs(server_id=server_id, channel_id="ch_general", body=body)
            return await harness.call(member, "send", args, SendResult)

        for i in range(3):
            await send("carol", "srv_family", f"m{i}")
        with pytest.raises(CommandError) as held:
            await send("carol", "srv_family", "one more")
        assert held.value.code == "rate_limited" and held.value.retryable
        assert "Retry after" in held.value.body.message and "3 messages per minute" in held.value.body.message
        # per (member, server): another server of carol, and another member on this server, still send
        assert (await send("carol", "srv_harbor", "elsewhere")).message.body == "elsewhere"
        assert (await send("dave", "srv_family", "me too")).message.body == "me too"


async def test_leave_and_leave_of_unreachable_server(harness: Harness, family: DevserverHandle) -> None:
    events = await harness.events("dave")
    await join(harness, "dave", family, "srv_family")
    await events.wait_for(lambda ev: events.last_connection("srv_family") == "live")
    with pytest.raises(CommandError) as dup:
        await join(harness, "dave", family, "srv_family")
    assert dup.value.code == "server_exists"
    left = await harness.call("dave", "leave", LeaveArgs(server_id="srv_family"), LeaveResult)
    assert left.backend_left and left.detail == "Left server."
    assert harness.connector.servers.of_member("dave") == []
    await events.wait_for(lambda ev: events.of("server.left", "srv_family"))
    assert events.events[-1]["type"] == "server.left"  # nothing of the session after it
    assert "DELETE" in {
        r.method for r in harness.requests.requests if r.url.path == "/v1/servers/srv_family/membership"
    }

    async with arunning_devserver(seed="harbor") as harbor:
        await join(harness, "dave", harbor, "srv_harbor")
        await events.wait_for(lambda ev: events.last_connection("srv_harbor") == "live")
    # the devserver is gone: leaving still removes it locally
    gone = await harness.call("dave", "leave", LeaveArgs(server_id="srv_harbor"), LeaveResult)
    assert not gone.backend_left and "unreachable" in gone.detail
    assert harness.connector.servers.of_member("dave") == []


async def test_join_needs_confirmation_and_a_listed_server(harness: Harness, family: DevserverHandle) -> None:
    with pytest.raises(CommandError) as unconfirmed:
        await harness.call("erin", "join", JoinArgs(url=family.base_url, server_id="srv_family"), JoinResult)
    assert unconfirmed.value.code == "confirmation_required"
    with pytest.raises(CommandError) as missing:
        await harness.call(
            "erin", "join", JoinArgs(url=family.base_url, server_id="srv_other", confirmed=True), JoinResult
        )
    assert missing.value.code == "server_not_found"
    with pytest.raises(CommandError) as bad_url:
        await harness.call(
            "erin", "join", JoinArgs(url="ftp://x", server_id="srv_family", confirmed=True), JoinResult
        )
    assert bad_url.value.code == "invalid_url"
    assert harness.connector.servers.of_member("erin") == []


async def test_server_updated_and_management_events_channel_admin(harness: Harness) -> None:
    async with arunning_devserver(seed="family", admin=True, features=frozenset({"channel_admin"})) as srv:
        events = await harness.events("erin")
        await join(harness, "erin", srv, "srv_family")
        await events.wait_for(lambda ev: events.last_connection("srv_family") == "live")
        owner = {"X-OpenChat-User-UID": "uid_owner", "X-OpenChat-Device-ID": "dev_owner"}
        async with httpx.AsyncClient(base_url=srv.base_url, headers=owner) as http:
            # chat.server.updated -> server.updated with the record's display name patched (and stored)
            r = await http.put(
                "/v1/servers/srv_family/settings",
                json={"display_name": "The Family Room", "description": "", "banner_preset": "ocean"},
            )
            assert r.status_code == 200, r.text
            updated = await events.wait_for(lambda ev: events.of("server.updated", "srv_family") or None)
            record = updated[-1]["payload"]["server"]
            assert record["display_name"] == "The Family Room"
            assert record["user_uid"] == harness.connector.sessions[("erin", "srv_family")].record.user_uid
            assert harness.connector.servers.get("erin", "srv_family").display_name == "The Family Room"

            # chat.channel.created -> the tree is fetched again and published; the new channel is live
            trees = len(events.of("channels.updated", "srv_family"))
            group = events.of("channels.updated", "srv_family")[-1]["payload"]["groups"][0]["id"]
            r = await http.post(
                "/v1/servers/srv_family/channels", json={"name": "recipes", "type": "text", "group_id": group}
            )
            assert r.status_code == 201, r.text
            new_id = r.json()["channel"]["id"]

            def has_channel(ev: list[dict[str, object]]) -> bool:
                latest = events.of("channels.updated", "srv_family")[trees:]
                return any(
                    ch["id"] == new_id for e in latest for g in e["payload"]["groups"] for ch in g["channels"]
                )

            await events.wait_for(has_channel)
            posted = await admin_post(srv, new_id, "uid_mum", "first recipe")
            await events.wait_for(lambda ev: events.message_ids("srv_family", new_id) == [posted])

            # chat.category.created and chat.channel.layout.updated -> channels.updated again
            trees = len(events.of("channels.updated", "srv_family"))
            r = await http.post("/v1/servers/srv_family/categories", json={"name": "Kitchen", "kind": "text"})
            assert r.status_code == 201, r.text
            kitchen = r.json()["group"]["id"]
            await events.wait_for(
                lambda ev: any(
                    g["id"] == kitchen
                    for e in events.of("channels.updated", "srv_family")[trees:]
                    for g in e["payload"]["groups"]
                )
            )
            trees = len(events.of("channels.updated", "srv_family"))
            groups = (await http.get("/v1/servers/srv_family/channels")).json()["groups"]
            layout = [
                {
                    "id": g["id"],
                    "channel_ids": [c["id"] for c in g["channels"] if c["id"] != new_id]
                    + ([new_id] if g["id"] == kitchen else []),
                }
                for g in groups
            ]
            r = await http.put("/v1/servers/srv_family/channel-layout", json={"groups": layout})
            assert r.status_code == 200, r.text

            def moved(ev: list[dict[str, object]]) -> bool:
                for e in events.of("channels.updated", "srv_family")[trees:]:
                    for g in e["payload"]["groups"]:
                        if g["id"] == kitchen and [c["id"] for c in g["channels"]] == [new_id]:
                            return True
                return False

            await events.wait_for(moved)
