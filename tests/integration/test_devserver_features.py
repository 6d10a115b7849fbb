"""Profile B features of the devserver: off → absent exactly like the public backend; on →
advertised in the capability document and working (real server, httpx + websockets)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.core.contracts.wire import (
    Capabilities,
    ChannelList,
    Message,
    MessageList,
    ReadAckResponse,
    ReadAckUpdatedPayload,
    ServerCreateResponse,
)
from services.devserver.config import FEATURES
from services.devserver.runner import DevserverHandle
from tests.integration.conftest_devserver import ALICE, BOB, RealtimeClient, aclient, client, serve

HTTP_FEATURES = sorted(FEATURES - {"sfu_events"})
NOT_FOUND = "404 page not found\n"


@pytest.fixture(scope="module")
def plain() -> Iterator[DevserverHandle]:
    with serve() as server:
        yield server


@pytest.fixture(scope="module")
def full() -> Iterator[DevserverHandle]:
    with serve(features=frozenset(FEATURES)) as server:
        yield server


def test_all_off_advertises_nothing(plain: DevserverHandle) -> None:
    with client(plain) as http:
        caps = http.get("/v1/client/capabilities").json()
        assert list(caps["features"]) == ["messaging", "presence", "attachments", "notifications"]
        assert "read_acks" not in caps and "mentions" not in caps
        channels = http.get("/v1/servers/srv_harbor/channels").json()
        assert all("unread_count" not in ch for g in channels["groups"] for ch in g["channels"])
        history = http.get("/v1/channels/ch_general/messages").json()
        assert "next_cursor" not in history
        entry = http.get("/v1/servers").json()["servers"][0]
        assert "description" not in entry and "banner_preset" not in entry


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/client/capabilities", 404),
        ("GET", "/v1/channels/ch_general/read-ack", 404),
        ("PUT", "/v1/channels/ch_general/read-ack", 404),
        ("GET", "/v1/channels/ch_general/mentions:resolve?query=a", 404),
        ("DELETE", "/v1/channels/ch_general/messages/msg_seed_01", 404),
        ("POST", "/v1/servers", 405),
        ("POST", "/v1/servers/srv_harbor/ownership:claim", 404),
        ("POST", "/v1/servers/srv_harbor/channels", 405),
        ("POST", "/v1/servers/srv_harbor/categories", 404),
        ("PUT", "/v1/servers/srv_harbor/categories/grp_ops", 404),
        ("PUT", "/v1/servers/srv_harbor/channel-layout", 404),
        ("GET", "/v1/servers/srv_harbor/settings", 404),
    ],
)
def test_off_routes_are_absent(plain: DevserverHandle, method: str, path: str, status: int) -> None:
    with client(plain) as http:
        response = http.request(method, path, headers=ALICE, content=b"{}")
    assert response.status_code == status
    assert response.text == (NOT_FOUND if status == 404 else "")


@pytest.mark.parametrize("feature", HTTP_FEATURES)
def test_each_feature_alone_is_advertised(feature: str) -> None:
    with serve(features=frozenset({feature})) as server, client(server) as http:
        caps = Capabilities.model_validate(http.get("/v1/client/capabilities").json())
        assert caps.feature_on(feature)
        assert [f for f in HTTP_FEATURES if caps.feature_on(f)] == [feature]


def test_legacy_capabilities_path(full: DevserverHandle) -> None:
    with client(full) as http:
        legacy = http.get("/client/capabilities")
        assert legacy.status_code == 200
        assert legacy.json()["server_id"] == http.get("/v1/client/capabilities").json()["server_id"]


def test_cursors_page_back_through_history(full: DevserverHandle) -> None:
    with client(full) as http:
        for index in range(5):
            assert (
                http.post(
                    "/v1/channels/ch_outage/messages", json={"body": f"m{index}"}, headers=ALICE
                ).status_code
                == 201
            )
        seen: list[str] = []
        before = None
        while True:
            params = {"limit": "2", **({"before": before} if before else {})}
            page = MessageList.model_validate(
                http.get("/v1/channels/ch_outage/messages", params=params).json()
            )
            seen = [m.body for m in page.messages] + seen
            if page.next_cursor is None:
                break
            before = page.next_cursor
        assert seen == [f"m{i}" for i in range(5)]
        bad = http.get("/v1/channels/ch_outage/messages", params={"before": "msg_nope"})
        assert bad.status_code == 400 and bad.json()["code"] == "invalid_cursor"


async def test_read_acks_monotonic_with_event(full: DevserverHandle) -> None:
    async with aclient(full) as http:
        ids = []
        for body in ("one", "two"):
            response = await http.post("/v1/channels/ch_release/messages", json={"body": body}, headers=BOB)
            ids.append(response.json()["message"]["id"])
        empty = ReadAckResponse.model_validate(
            (await http.get("/v1/channels/ch_release/read-ack", headers=ALICE)).json()
        )
        assert empty.read_ack.cursor_index is None and empty.read_ack.last_read_message_id is None
        rt = await RealtimeClient.open(full, headers=ALICE)
        try:
            put = await http.put(
                "/v1/channels/ch_release/read-ack", json={"last_read_message_id": ids[1]}, headers=ALICE
            )
            ack = ReadAckResponse.model_validate(put.json())
            assert ack.applied is True and ack.read_ack.cursor_index is not None
            event = await rt.recv_type("chat.read_ack.updated")
            payload = ReadAckUpdatedPayload.model_validate(event["payload"])
            assert payload.last_read_message_id == ids[1] and payload.user_uid == "uid_alice"
            older = await http.put(
                "/v1/channels/ch_release/read-ack", json={"last_read_message_id": ids[0]}, headers=ALICE
            )
            assert older.json()["applied"] is False
            assert older.json()["read_ack"]["last_read_message_id"] == ids[1]
            missing = await http.put(
                "/v1/channels/ch_release/read-ack", json={"last_read_message_id": "x"}, headers=ALICE
            )
            assert missing.status_code == 400
        finally:
            await rt.close()


def test_unread_counts_follow_read_acks(full: DevserverHandle) -> None:
    with client(full) as http:

        def unread(channel_id: str) -> int:
            groups = ChannelList.model_validate(
                http.get("/v1/servers/srv_testlab/channels", headers=ALICE).json()
            )
            return (
                next(ch.unread_count for g in groups.groups for ch in g.channels if ch.id == channel_id) or 0
            )

        start = unread("tl_ch_qa")
        assert start == 1  # the seed message
        posted = http.post("/v1/channels/tl_ch_qa/messages", json={"body": "hi"}, headers=BOB).json()[
            "message"
        ]
        http.post("/v1/channels/tl_ch_qa/messages", json={"body": "mine"}, headers=ALICE)
        assert unread("tl_ch_qa") == 2
        http.put("/v1/channels/tl_ch_qa/read-ack", json={"last_read_message_id": posted["id"]}, headers=ALICE)
        assert unread("tl_ch_qa") == 0


def test_mentions_on_messages_and_resolve(full: DevserverHandle) -> None:
    with client(full) as http:
        body = "hey @uid_bob and @here, mail a@b"
        message = Message.model_validate(
            http.post("/v1/channels/ch_design/messages", json={"body": body}, headers=ALICE).json()["message"]
        )
        assert message.mentions is not None
        assert [(m.type, m.token, m.target_id) for m in message.mentions] == [
            ("user", "@uid_bob", "uid_bob"),
            ("channel", "@here", "here"),
        ]
        first = message.mentions[0].range
        assert first is not None and body.encode()[first.start : first.end] == b"@uid_bob"
        resolved = http.get(
            "/v1/channels/ch_design/mentions:resolve", params={"query": "uid_al", "limit": "12"}, headers=BOB
        )
        assert resolved.status_code == 200
        tokens = [r["token"] for r in resolved.json()["results"]]
        assert "@uid_alice" in tokens and "@here" not in tokens
        here = http.get("/v1/channels/ch_design/mentions:resolve", params={"query": "he"}, headers=BOB).json()
        assert here["results"][0]["token"] == "@here"


async def test_message_delete_author_only_with_event(full: DevserverHandle) -> None:
    async with aclient(full) as http:
        created = (
            await http.post("/v1/channels/ch_general/messages", json={"body": "oops"}, headers=ALICE)
        ).json()
        mid = created["message"]["id"]
        reply = await http.post(
            "/v1/channels/ch_general/messages", json={"body": "re", "reply_to_message_id": mid}, headers=BOB
        )
        rt = await RealtimeClient.open(full, headers=BOB)
        try:
            await rt.subscribe("ch_general")
            forbidden = await http.delete(f"/v1/channels/ch_general/messages/{mid}", headers=BOB)
            assert forbidden.status_code == 403
            deleted = await http.delete(f"/v1/channels/ch_general/messages/{mid}", headers=ALICE)
            assert deleted.status_code == 200 and deleted.json()["deleted"] is True
            event = await rt.recv_type("chat.message.deleted")
            assert event["payload"]["message_id"] == mid
        finally:
            await rt.close()
        history = (await http.get("/v1/channels/ch_general/messages", params={"limit": "1000"})).json()[
            "messages"
        ]
        assert mid not in [m["id"] for m in history]
        kept = next(m for m in history if m["id"] == reply.json()["message"]["id"])
        assert kept["reply_to"]["is_unavailable"] is True
        again = await http.delete(f"/v1/channels/ch_general/messages/{mid}", headers=ALICE)
        assert again.status_code == 404


def test_server_creation_and_claim(full: DevserverHandle) -> None:
    with client(full) as http:
        created = http.post(
            "/v1/servers",
            json={"display_name": "Book Club", "description": "d", "banner_preset": "ocean"},
            headers=ALICE,
        )
        assert created.status_code == 201
        body = ServerCreateResponse.model_validate(created.json())
        sid = body.server.server_id
        assert body.server.icon_text == "BC" and body.server.banner_preset == "ocean"
        assert sid in [s["server_id"] for s in http.get("/v1/servers", headers=ALICE).json()["servers"]]
        group_id = http.get(f"/v1/servers/{sid}/channels").json()["groups"][0]["id"]
        blocked = http.post(
            f"/v1/servers/{sid}/channels",
            json={"name": "x", "type": "text", "group_id": group_id},
            headers=ALICE,
        )
        assert blocked.status_code == 403 and blocked.json()["code"] == "ownership_claim_required"
        wrong = http.post(f"/v1/servers/{sid}/ownership:claim", json={"claim_token": "nope"}, headers=ALICE)
        assert wrong.status_code == 400
        claim = {"claim_token": body.ownership_claim.token}
        claimed = http.post(f"/v1/servers/{sid}/ownership:claim", json=claim, headers=ALICE)
        assert claimed.status_code == 200 and claimed.json()["owner_user_uid"] == "uid_alice"
        ok = http.post(
            f"/v1/servers/{sid}/channels",
            json={"name": "x", "type": "text", "group_id": group_id},
            headers=ALICE,
        )
        assert ok.status_code == 201


async def test_channel_admin_routes_and_events(full: DevserverHandle) -> None:
    async with aclient(full) as http:
        rt = await RealtimeClient.open(full, query="server_id=srv_testlab", headers=BOB)
        try:
            cat = await http.post(
                "/v1/servers/srv_testlab/categories", json={"name": "Projects", "kind": "text"}, headers=ALICE
            )
            assert cat.status_code == 201
            gid = cat.json()["group"]["id"]
            assert (await rt.recv_type("chat.category.created"))["payload"]["group"]["id"] == gid
            other = await http.post("/v1/servers/srv_testlab/categories", json={"name": "No"}, headers=BOB)
            assert other.status_code == 403
            chan = await http.post(
                "/v1/servers/srv_testlab/channels",
                json={"name": "plans", "type": "text", "group_id": gid},
                headers=ALICE,
            )
            assert chan.status_code == 201
            cid = chan.json()["channel"]["id"]
            assert (await rt.recv_type("chat.channel.created"))["payload"]["channel"]["id"] == cid
            renamed = await http.put(
                f"/v1/servers/srv_testlab/categories/{gid}", json={"name": "Work"}, headers=ALICE
            )
            assert renamed.json()["group"]["label"] == "Work"
            assert (await rt.recv_type("chat.category.updated"))["payload"]["group"]["label"] == "Work"
            groups = (await http.get("/v1/servers/srv_testlab/channels")).json()["groups"]
            layout = {
                "groups": [
                    {"id": g["id"], "channel_ids": [c["id"] for c in g["channels"]]} for g in reversed(groups)
                ]
            }
            put = await http.put("/v1/servers/srv_testlab/channel-layout", json=layout, headers=ALICE)
            assert put.status_code == 200 and put.json()["groups"][0]["id"] == gid
            await rt.recv_type("chat.channel.layout.updated")
            bad = await http.put("/v1/servers/srv_testlab/channel-layout", json={"groups": []}, headers=ALICE)
            assert bad.status_code == 400 and bad.json()["code"] == "invalid_channel_layout"
            settings = {"display_name": "Test Lab 2", "description": "QA", "banner_preset": "teal"}
            assert (
                await http.put("/v1/servers/srv_testlab/settings", json=settings, headers=ALICE)
            ).status_code == 200
            assert (await rt.recv_type("chat.server.updated"))["payload"]["display_name"] == "Test Lab 2"
            got = (await http.get("/v1/servers/srv_testlab/settings", headers=ALICE)).json()
            assert got == {"server_id": "srv_testlab", **settings}
        finally:
            await rt.close()


async def test_event_ids_and_resume(full: DevserverHandle) -> None:
    async with aclient(full) as http:
        rt = await RealtimeClient.open(full, headers=ALICE)
        await rt.subscribe("tl_ch_general")
        await http.post("/v1/channels/tl_ch_general/messages", json={"body": "first"}, headers=BOB)
        first = await rt.recv_type("chat.message.created")
        assert first["event_type"] == "chat.message.created" and first["server_id"] == "srv_testlab"
        assert isinstance(first["event_id"], int) and first["timestamp"].endswith("Z")
        await rt.close()
        missed = []
        for body in ("second", "third"):
            response = await http.post(
                "/v1/channels/tl_ch_general/messages", json={"body": body}, headers=BOB
            )
            missed.append(response.json()["message"]["id"])
        back = await RealtimeClient.open(full, query=f"resume_from={first['event_id']}", headers=ALICE)
        try:
            await back.subscribe("tl_ch_general")
            replayed = [await back.recv_type("chat.message.created") for _ in missed]
            assert [f["payload"]["message"]["id"] for f in replayed] == missed
            assert (
                replayed[0]["event_id"] > first["event_id"]
                and replayed[1]["event_id"] > replayed[0]["event_id"]
            )
        finally:
            await back.close()


async def test_plain_server_sends_no_envelope_extras(plain: DevserverHandle) -> None:
    async with aclient(plain) as http:
        rt = await RealtimeClient.open(plain, query="resume_from=0", headers=ALICE)
        try:
            await rt.subscribe("ch_outage")
            await http.post("/v1/channels/ch_outage/messages", json={"body": "x @uid_bob"}, headers=BOB)
            frame = await rt.recv_type("chat.message.created")
            assert list(frame) == ["type", "payload"]
            assert "mentions" not in frame["payload"]["message"]
        finally:
            await rt.close()
