"""Devserver RTC behaviour beyond the golden fixtures (wire §11, §12, §13), against a real server.

Join tickets (identity, body quirks, check order, TTL, secret), the join handshake failures (all
end with a bare drop before ``rtc.joined``), the 1 MiB frame cap, malformed input, relay
encoding, routing quirks, the ``sfu_events`` feature on and off, keep-alive and the 64-frame
outbound queue.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from services.devserver.rtc import RtcHub, rtc_capabilities_patch
from services.devserver.rtc_tickets import TicketAuthority
from tests.integration.test_devserver_rtc_harness import (
    APP_KINDS,
    Devserver,
    decode_claims,
    real_app_available,
    run_devserver,
)

MIB = 1 << 20


def skip_unless_available(kind: str) -> None:
    if kind == "real" and not real_app_available():
        pytest.skip("services.devserver.app.create_app does not exist yet")


@pytest.fixture(scope="module", params=APP_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Devserver]:
    skip_unless_available(request.param)
    with run_devserver(request.param) as devserver:
        yield devserver


def error_body(code: str, message: str) -> bytes:
    return (
        json.dumps({"code": code, "message": message, "retryable": False}, separators=(",", ":")).encode()
        + b"\n"
    )


# ------------------------------------------------------------------------------ join tickets


@pytest.mark.parametrize("kind", APP_KINDS)
async def test_join_ticket_identity_is_strict_in_production(kind: str) -> None:
    skip_unless_available(kind)
    with run_devserver(kind, production=True) as prod:
        missing = await prod.post_ticket(
            "vc_general", uid=None, device=None, body={"server_id": "srv_harbor"}
        )
        assert missing.status_code == 401
        assert missing.content == error_body("unauthorized", "missing user identity headers")
        basic = await prod.post_ticket(
            "vc_general", uid=None, device=None, headers={"Authorization": "Basic dXNlcg=="}
        )
        assert basic.status_code == 401
        # Identity comes before the channel checks.
        unknown = await prod.post_ticket("vc_nope", uid=None, device=None)
        assert unknown.status_code == 401
        bearer = await prod.post_ticket(
            "vc_general", uid=None, device=None, headers={"Authorization": "bearer uid_prod"}
        )
        assert bearer.status_code == 200
        body = bearer.json()
        assert (body["user_uid"], body["device_id"]) == ("uid_prod", "dev_local")
    # Development: a header-less caller is uid_dev_local.
    with run_devserver(kind) as dev:
        anonymous = await dev.post_ticket("vc_general", uid=None, device=None)
        assert anonymous.status_code == 200
        assert (anonymous.json()["user_uid"], anonymous.json()["device_id"]) == ("uid_dev_local", "dev_local")


@pytest.mark.parametrize(
    ("raw_body", "server_id"),
    [
        (b"", "srv_harbor"),
        (b"not json", "srv_harbor"),
        (b'{"server_id": 5}', "srv_harbor"),
        (b'{"server_id": ""}', "srv_harbor"),
        (b'{"server_id": null}', "srv_harbor"),
        (b'["srv_testlab"]', "srv_harbor"),
        (b'{"server_id":"srv_testlab"} trailing bytes are never read', "srv_testlab"),
        (b'{"SERVER_ID":"srv_testlab"}', "srv_testlab"),  # Go matches struct fields case-insensitively
        (b'{"server_id":"srv_harbor","Server_Id":"srv_testlab"}', "srv_testlab"),
        (b'{"server_id":"srv_testlab","server_id":7}', "srv_testlab"),
        (b'{"server_id":"srv_testlab"', "srv_harbor"),
    ],
)
async def test_join_ticket_body_is_optional_and_decoded_like_go(
    server: Devserver, raw_body: bytes, server_id: str
) -> None:
    response = await server.post_ticket(
        "vc_party", raw_body=raw_body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["server_id"] == server_id
    assert decode_claims(response.json()["ticket"])["server_id"] == server_id


@pytest.mark.parametrize(
    ("channel", "server_id", "status", "body"),
    [
        ("vc_nope", "srv_nope", 404, error_body("channel_not_found", "unknown voice channel")),
        (
            "ch_general",
            "srv_nope",
            400,
            error_body("invalid_channel_type", "join ticket can only be created for voice channels"),
        ),
        (
            "tl_ch_qa",
            "srv_harbor",
            400,
            error_body("invalid_channel_type", "join ticket can only be created for voice channels"),
        ),
        ("vc_general", "srv_nope", 404, error_body("server_not_found", "unknown server")),
        ("tl_vc_pairing", "srv_harbor", 200, None),  # the channel is not checked against the server
    ],
)
async def test_join_ticket_check_order(
    server: Devserver, channel: str, server_id: str, status: int, body: bytes | None
) -> None:
    response = await server.post_ticket(channel, body={"server_id": server_id})
    assert response.status_code == status
    if body is not None:
        assert response.content == body
        assert response.headers["content-type"] == "application/json"


async def test_ticket_ttl_secret_and_escaping_follow_config(server: Devserver) -> None:
    with run_devserver("stub", ticket_ttl_s=5, ticket_secret="another-instance-secret-0123456789") as other:
        response = await other.post_ticket("vc_general", uid="uid_<b>&co", body={"server_id": "srv_harbor"})
        assert response.status_code == 200
        # Go's encoder escapes <, > and & (the claims and the response alike).
        assert b'"user_uid":"uid_\\u003cb\\u003e\\u0026co"' in response.content
        claims = decode_claims(response.json()["ticket"])
        assert claims["exp"] - claims["iat"] == 5
        assert claims["user_uid"] == "uid_<b>&co"
        # A ticket signed by another instance (different secret) is refused like a forged one.
        foreign = await other.ticket("uid_alice", "dev_a")
    client = await server.connect()
    await client.send("rtc.join", {"ticket": foreign}, request_id="join_foreign")
    code, frames = await client.wait_closed()
    assert (code, frames) == (None, [])
    assert server.hub.denials[-1] == "invalid join ticket"


@pytest.mark.parametrize("seed", ["family", "testlab"])
async def test_join_ticket_defaults_to_the_capability_server_on_other_seeds(seed: str) -> None:
    skip_unless_available("real")
    with run_devserver("real", seed=seed) as devserver:
        caps = await capabilities(devserver)
        assert caps is not None
        server_id = caps["server_id"]
        async with httpx.AsyncClient(base_url=devserver.base_url, trust_env=False) as client:
            groups = (await client.get(f"/v1/servers/{server_id}/channels")).json()["groups"]
        voice = [c["id"] for g in groups for c in g["channels"] if c["type"] == "voice"]
        text = [c["id"] for g in groups for c in g["channels"] if c["type"] == "text"]
        assert voice and text
        response = await devserver.post_ticket(voice[0])
        assert response.status_code == 200
        assert response.json()["server_id"] == server_id
        refused = await devserver.post_ticket(text[0])
        assert refused.status_code == 400 and refused.json()["code"] == "invalid_channel_type"
        alice = await devserver.join("uid_alice", voice[0], server_id=server_id)
        assert alice.joined["payload"]["channel_id"] == voice[0] and alice.joined["channel_id"] == voice[0]
        await alice.close()


async def test_plain_get_on_signaling_path_is_400(server: Devserver) -> None:
    async with httpx.AsyncClient(base_url=server.base_url, trust_env=False) as client:
        response = await client.get("/v1/rtc/signaling")
    assert response.status_code == 400
    assert response.content == b"Bad Request\n"
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["access-control-allow-origin"] == "*"


# ------------------------------------------------------------------------------ join handshake


def forged(ticket: str) -> str:
    first, _, signature = ticket.partition(".")
    return first[:-2] + ("AA" if first[-2:] != "AA" else "BB") + "." + signature


JOIN_FAILURES = [
    "garbage",
    "forged",
    "replayed",
    "expired",
    "wrong_first",
    "non_json",
    "type_not_string",
    "no_ticket",
]


@pytest.mark.parametrize("case", JOIN_FAILURES)
async def test_join_failure_drops_socket_before_joined(server: Devserver, case: str) -> None:
    hub: RtcHub = server.hub
    member = await server.join("uid_member", "vc_general")
    ticket = await server.ticket("uid_eve", "dev_eve")
    frame: str | bytes
    expected_reason: str | None
    if case == "garbage":
        frame, expected_reason = (
            json.dumps({"type": "rtc.join", "payload": {"ticket": "not-a-ticket"}}),
            "invalid join ticket",
        )
    elif case == "forged":
        frame, expected_reason = (
            json.dumps({"type": "rtc.join", "payload": {"ticket": forged(ticket)}}),
            "invalid join ticket",
        )
    elif case == "replayed":
        first = await server.connect()
        await first.send("rtc.join", {"ticket": ticket})
        assert (await first.recv())["type"] == "rtc.joined"
        await member.recv_type("rtc.participant.joined")
        await first.close()
        await member.recv_type("rtc.participant.left")
        frame, expected_reason = (
            json.dumps({"type": "rtc.join", "payload": {"ticket": ticket}}),
            "join ticket replayed",
        )
    elif case == "expired":
        # Signed with this server's secret, but its 60 s ran out a minute ago.
        authority = TicketAuthority(server.cfg.ticket_secret, 60, clock=lambda: time.time() - 121)
        old, _ = authority.issue("srv_harbor", "vc_general", "uid_eve", "dev_eve")
        frame, expected_reason = (
            json.dumps({"type": "rtc.join", "payload": {"ticket": old}}),
            "join ticket expired",
        )
    elif case == "wrong_first":
        frame, expected_reason = (
            json.dumps({"type": "rtc.ping", "request_id": "early"}),
            "first signaling message must be rtc.join",
        )
    elif case == "non_json":
        frame, expected_reason = "hello", None
    elif case == "type_not_string":
        frame, expected_reason = json.dumps({"type": 5, "payload": {"ticket": ticket}}), None
    else:
        frame, expected_reason = json.dumps({"type": "rtc.join", "payload": "x"}), "invalid join ticket"
    denials_before = len(hub.denials)
    eve = await server.connect()
    await eve.send_raw(frame)
    code, frames = await eve.wait_closed()
    assert code is None, "a failed join ends with a bare drop (1006), no close frame"
    assert frames == [], "rtc_join_denied is queued but never delivered"
    assert len(hub.denials) == denials_before + 1
    if expected_reason is not None:
        assert hub.denials[-1] == expected_reason
    # Nobody in the room heard about eve, and the server still serves joins.
    await member.assert_quiet()
    if case not in ("replayed", "expired", "forged"):
        late = await server.connect()
        await late.send("rtc.join", {"ticket": ticket})
        assert (await late.recv())["type"] == "rtc.joined"
        await member.recv_type("rtc.participant.joined")
        await late.close()
        await member.recv_type("rtc.participant.left")
    await member.close()


async def test_join_timeout_drops_silent_socket(server: Devserver) -> None:
    hub = server.hub
    saved = hub.tuning.join_timeout_s
    hub.tuning.join_timeout_s = 0.4
    try:
        started = time.monotonic()
        idle = await server.connect()
        code, frames = await idle.wait_closed()
        elapsed = time.monotonic() - started
    finally:
        hub.tuning.join_timeout_s = saved
    assert (code, frames) == (None, [])
    assert 0.35 <= elapsed < 3.0
    assert hub.denials[-1] == "i/o timeout"


# ------------------------------------------------------------------------------ limits and bad input


def padded_ping(request_id: str, size: int) -> str:
    """An ``rtc.ping`` frame of exactly ``size`` UTF-8 bytes."""
    head = json.dumps({"type": "rtc.ping", "request_id": request_id, "payload": {"pad": ""}})
    return head.replace('"pad": ""', '"pad": "' + "x" * (size - len(head)) + '"')


async def test_frame_cap_is_1_mib(server: Devserver) -> None:
    alice = await server.join("uid_alice", "vc_general")
    bob = await server.join("uid_bob", "vc_general")
    await alice.recv_type("rtc.participant.joined")
    exactly = padded_ping("at_cap", MIB)
    assert len(exactly.encode()) == MIB
    await alice.send_raw(exactly)
    assert (await alice.recv_type("rtc.pong"))["request_id"] == "at_cap"
    await alice.send_raw(padded_ping("over_cap", MIB + 1))
    code, frames = await alice.wait_closed()
    assert code == 1009 and frames == []
    left = await bob.recv_type("rtc.participant.left")
    assert left["payload"]["participant"]["participant_id"] == alice.participant_id
    await bob.assert_quiet()
    # Before the join as well: an oversized first frame closes with 1009.
    early = await server.connect()
    await early.send_raw(padded_ping("early", MIB + 1))
    assert (await early.wait_closed()) == (1009, [])
    await bob.close()


async def test_relayed_payloads_are_encoded_like_go(server: Devserver) -> None:
    alice = await server.join("uid_alice", "vc_general")
    bob = await server.join("uid_bob", "vc_general")
    await alice.recv_type("rtc.participant.joined")
    a = alice.participant_id
    await alice.send_raw(
        '{"type":"rtc.ice.candidate","request_id":"n","payload":{"z":{"b":1,"a":[{"y":1,"x":2}]},'
        '"a":1.0,"b":1e-7,"c":12345678901234567890,"d":0.00001,"e":-0.0,"f":1e21,"g":"<&>\\u2028",'
        '"h":"\\ud800","i":1.5e300,"i2":100000000000000000000,"dup":1,"dup":2,"t":true,"n":null}}'
    )
    assert await bob.recv_raw() == (
        '{"type":"rtc.ice.candidate","request_id":"n","channel_id":"vc_general","payload":{'
        '"a":1,"b":1e-7,"c":12345678901234567000,"d":0.00001,"dup":2,"e":-0,"f":1e+21,'
        f'"from_participant_id":"{a}","g":"\\u003c\\u0026\\u003e\\u2028","h":"\ufffd","i":1.5e+300,'
        '"i2":100000000000000000000,"n":null,"t":true,"z":{"a":[{"x":2,"y":1}],"b":1}}}\n'
    )
    # A payload that is not an object (or that Go cannot decode) is relayed as {}.
    for payload in ("[1,2]", '"text"', "null", '{"x":1e400}'):
        await alice.send_raw(f'{{"type":"rtc.offer.publish","payload":{payload}}}')
        expected = f'{{"type":"rtc.offer.publish","channel_id":"vc_general","payload":{{"from_participant_id":"{a}"}}}}\n'
        assert await bob.recv_raw() == expected
    await alice.send_raw('{"type":"rtc.offer.publish","request_id":"no_payload"}')
    assert json.loads(await bob.recv_raw())["payload"] == {"from_participant_id": a}
    # A client cannot spoof the sender fields.
    await alice.send("rtc.offer.publish", {"from_participant_id": "spoof"}, request_id="spoof")
    assert (await bob.recv())["payload"]["from_participant_id"] == a
    await alice.send("rtc.media.state", {"participant_id": "spoof", "user_uid": "uid_spoof"}, request_id="m")
    for client in (alice, bob):
        media = await client.recv_type("rtc.media.state")
        assert media["payload"] == {"participant_id": a, "user_uid": "uid_alice"}
    # Missing type → rtc_unknown_event without request_id; binary frames and trailing bytes are read like Go.
    await alice.send_raw("{}")
    assert await alice.recv_raw() == (
        '{"type":"rtc.error","channel_id":"vc_general","payload":{"code":"rtc_unknown_event",'
        '"message":"unsupported signaling event type","retryable":false}}\n'
    )
    await alice.send_raw(b'{"type":"rtc.ping","request_id":"bin"}')
    pong = await alice.recv_type("rtc.pong")
    assert pong["request_id"] == "bin" and list(pong) == ["type", "request_id", "channel_id", "payload"]
    assert list(pong["payload"]) == ["ts"]
    await alice.send_raw('  {"TYPE":"rtc.ping","Request_ID":"folded"} and then garbage')
    assert (await alice.recv_type("rtc.pong"))["request_id"] == "folded"
    await alice.assert_quiet()
    await bob.assert_quiet()
    await alice.close()
    await bob.close()


@pytest.mark.parametrize(
    "frame",
    ["hello", '{"type":5}', '{"type":"rtc.ping","request_id":7}', "[1]", "", "[" * 100_000, b"\xff\xfe"],
    ids=["text", "type_int", "request_id_int", "array", "empty", "deep", "bad_utf8"],
)
async def test_malformed_frame_after_join_drops_only_that_socket(
    server: Devserver, frame: str | bytes
) -> None:
    alice = await server.join("uid_alice", "vc_general")
    bob = await server.join("uid_bob", "vc_general")
    await alice.recv_type("rtc.participant.joined")
    await alice.send_raw(frame)
    code, frames = await alice.wait_closed()
    assert (code, frames) == (None, [])
    left = await bob.recv_type("rtc.participant.left")
    assert left["payload"] == {
        "participant": {"participant_id": alice.participant_id, "user_uid": "uid_alice"}
    }
    await bob.assert_quiet()
    await bob.close()


async def test_routing_quirks(server: Devserver) -> None:
    # Rooms are keyed by channel id alone: tickets naming different servers meet in one room.
    alice = await server.join("uid_alice", "vc_general")
    ticket = await server.ticket("uid_bob", "dev_bob", "vc_general", server_id="srv_testlab")
    bob = await server.connect()
    await bob.send("rtc.join", {"ticket": ticket}, request_id="join_bob")
    joined = await bob.recv_type("rtc.joined")
    bob.participant_id = joined["payload"]["participant_id"]
    assert [p["participant_id"] for p in joined["payload"]["participants"]] == [alice.participant_id]
    await alice.recv_type("rtc.participant.joined")
    carol = await server.join("uid_carol", "vc_party")  # another room: hears nothing below

    # A frame targeted at yourself comes back to you only.
    await alice.send("rtc.ice.candidate", {"target_participant_id": alice.participant_id}, request_id="self")
    assert (await alice.recv_type("rtc.ice.candidate"))["payload"][
        "from_participant_id"
    ] == alice.participant_id
    await bob.assert_quiet("b1")
    # media.state ignores target_participant_id: everyone in the room, sender included.
    await alice.send("rtc.media.state", {"mic_muted": True, "target_participant_id": "nope"}, request_id="ms")
    for client in (alice, bob):
        media = await client.recv_type("rtc.media.state")
        assert media["payload"]["target_participant_id"] == "nope" and media["request_id"] == "ms"
    # A channel_id sent by the client is ignored; the server fills in the ticket's.
    await bob.send_raw('{"type":"rtc.offer.publish","request_id":"o","channel_id":"vc_party","payload":{}}')
    assert (await alice.recv_type("rtc.offer.publish"))["channel_id"] == "vc_general"
    await carol.assert_quiet()
    # rtc.leave: the server drops the socket without a close frame; the others see the leave.
    await bob.send("rtc.leave", {"reason": "user"}, request_id="leave")
    assert (await bob.wait_closed()) == (None, [])
    left = await alice.recv_type("rtc.participant.left")
    assert left["payload"]["participant"]["participant_id"] == bob.participant_id
    assert "request_id" not in left
    await alice.assert_quiet()
    for client in (alice, carol):
        await client.close()


# ------------------------------------------------------------------------------ sfu_events


def track_frame(
    kind: str, participant_id: str, stream_id: str, stream_kind: str, track_id: str, media: str
) -> str:
    return (
        f'{{"type":"{kind}","channel_id":"vc_general","payload":{{"media_kind":"{media}",'
        f'"participant_id":"{participant_id}","stream_id":"{stream_id}","stream_kind":"{stream_kind}",'
        f'"track_id":"{track_id}"}}}}\n'
    )


async def capabilities(devserver: Devserver) -> dict[str, Any] | None:
    if devserver.kind != "real":
        return None
    async with httpx.AsyncClient(base_url=devserver.base_url, trust_env=False) as client:
        response = await client.get("/v1/client/capabilities")
    assert response.status_code == 200
    doc = response.json()
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("kind", APP_KINDS)
async def test_sfu_events_off_is_the_public_backend(kind: str) -> None:
    skip_unless_available(kind)
    with run_devserver(kind) as devserver:
        assert rtc_capabilities_patch(devserver.cfg) == {}
        doc = await capabilities(devserver)
        if doc is not None:
            assert "sfu_events" not in json.dumps(doc)
            assert doc["rtc"]["topologies"] == ["p2p"]
        alice = await devserver.join("uid_alice")
        bob = await devserver.join("uid_bob")
        await alice.recv_type("rtc.participant.joined")
        await alice.send(
            "rtc.media.state",
            {"action": "start", "stream_kind": "audio_microphone", "track_id": "t1", "stream_id": "s1"},
        )
        await alice.recv_type("rtc.media.state")
        await bob.recv_type("rtc.media.state")
        await bob.assert_quiet()  # no rtc.track.published
        await alice.close()
        await bob.recv_type("rtc.participant.left")  # no rtc.track.unpublished before it
        await bob.assert_quiet()
        await bob.close()


@pytest.mark.parametrize("kind", APP_KINDS)
async def test_sfu_events_on_announces_tracks(kind: str) -> None:
    skip_unless_available(kind)
    with run_devserver(kind, features=frozenset({"sfu_events"})) as devserver:
        assert rtc_capabilities_patch(devserver.cfg) == {"rtc": {"features": {"sfu_events": True}}}
        doc = await capabilities(devserver)
        if doc is not None:
            assert doc["rtc"]["features"]["sfu_events"] is True
            assert doc["rtc"]["topologies"] == ["p2p"]  # still no SFU media path
        alice = await devserver.join("uid_alice")
        bob = await devserver.join("uid_bob")
        await alice.recv_type("rtc.participant.joined")
        a, b = alice.participant_id, bob.participant_id

        await alice.send(
            "rtc.media.state",
            {
                "action": "start",
                "stream_kind": "audio_microphone",
                "track_id": "t1",
                "stream_id": "s1",
                "mic_muted": False,
            },
            request_id="start_mic",
        )
        assert (await alice.recv_type("rtc.media.state"))["request_id"] == "start_mic"
        await alice.assert_quiet()  # the publisher is not told about its own track
        assert (await bob.recv_type("rtc.media.state"))["request_id"] == "start_mic"
        assert await bob.recv_raw() == track_frame(
            "rtc.track.published", a, "s1", "audio_microphone", "t1", "audio"
        )

        await alice.send(
            "rtc.media.state",
            {"action": "start", "stream_kind": "video_screen", "track_id": "v2", "stream_id": "s2"},
        )
        await alice.recv_type("rtc.media.state")
        await bob.recv_type("rtc.media.state")
        assert await bob.recv_raw() == track_frame(
            "rtc.track.published", a, "s2", "video_screen", "v2", "video"
        )

        # Frames without start/stop (mute flags, PCM chunks) announce nothing.
        await alice.send(
            "rtc.media.state", {"mic_muted": True, "stream_kind": "audio_microphone", "track_id": "t1"}
        )
        await alice.recv_type("rtc.media.state")
        await bob.recv_type("rtc.media.state")
        await bob.assert_quiet()

        # A newcomer learns the tracks already published, right after rtc.joined.
        carol = await devserver.join("uid_carol")
        late = {await carol.recv_raw(), await carol.recv_raw()}
        assert late == {
            track_frame("rtc.track.published", a, "s1", "audio_microphone", "t1", "audio"),
            track_frame("rtc.track.published", a, "s2", "video_screen", "v2", "video"),
        }
        for client in (alice, bob):
            await client.recv_type("rtc.participant.joined")

        await alice.send(
            "rtc.media.state",
            {"action": "stop", "stream_kind": "audio_microphone", "track_id": "t1", "stream_id": "s1"},
        )
        for client in (alice, bob, carol):
            await client.recv_type("rtc.media.state")
        for client in (bob, carol):
            assert await client.recv_raw() == track_frame(
                "rtc.track.unpublished", a, "s1", "audio_microphone", "t1", "audio"
            )

        # Clients still cannot send server events.
        await bob.send("rtc.track.published", {}, request_id="x")
        error = await bob.recv_type("rtc.error")
        assert error["payload"]["code"] == "rtc_unknown_event" and error["request_id"] == "x"

        # Leaving unpublishes what is still published, then the leave itself.
        await alice.close()
        for client in (bob, carol):
            assert await client.recv_raw() == track_frame(
                "rtc.track.unpublished", a, "s2", "video_screen", "v2", "video"
            )
            left = await client.recv_type("rtc.participant.left")
            assert left["payload"]["participant"]["participant_id"] == a
            await client.assert_quiet()
        assert b != a
        await bob.close()
        await carol.close()


# ------------------------------------------------------------------------------ keep-alive and queue


class RawSignalingClient:
    """A client whose I/O the test drives by hand, so that it can refuse to answer pings."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.protocol = ClientProtocol(parse_uri(url))
        self.pings = 0
        self.close_frames = 0
        self.texts: list[str] = []

    async def open(self) -> None:
        parts = urlsplit(self.url)
        self.reader, self.writer = await asyncio.open_connection(parts.hostname, parts.port)
        self.protocol.send_request(self.protocol.connect())
        self.writer.write(b"".join(self.protocol.data_to_send()))
        while not any(isinstance(event, Response) for event in await self._read()):
            pass

    async def _read(self) -> list[object]:
        data = await asyncio.wait_for(self.reader.read(65536), 10)
        if data:
            self.protocol.receive_data(data)
        else:
            self.protocol.receive_eof()
        events: list[object] = list(self.protocol.events_received())
        for event in events:
            if isinstance(event, Frame):
                if event.opcode is Opcode.PING:
                    self.pings += 1
                elif event.opcode is Opcode.CLOSE:
                    self.close_frames += 1
                elif event.opcode is Opcode.TEXT:
                    self.texts.append(bytes(event.data).decode())
        if not data:
            raise EOFError
        return events

    def send_text(self, text: str) -> None:
        self.protocol.send_text(text.encode())
        self.writer.write(b"".join(self.protocol.data_to_send()))

    async def read_until_eof(self) -> None:
        """Read (never answering pings: nothing is written back) until the server drops us."""
        try:
            while True:
                await self._read()
        except (EOFError, ConnectionResetError):
            return

    def close(self) -> None:
        self.writer.close()


async def test_silent_socket_is_pinged_then_dropped(server: Devserver) -> None:
    hub = server.hub
    saved = (hub.tuning.ping_interval_s, hub.tuning.idle_timeout_s)
    hub.tuning.ping_interval_s, hub.tuning.idle_timeout_s = 0.1, 0.6
    try:
        bob = await server.join("uid_bob", "vc_party")  # a normal client: it answers pings
        raw = RawSignalingClient(server.ws_url)
        await raw.open()
        raw.send_text(
            json.dumps(
                {
                    "type": "rtc.join",
                    "payload": {"ticket": await server.ticket("uid_mute", "dev_mute", "vc_party")},
                }
            )
        )
        joined_at = time.monotonic()
        await bob.recv_type("rtc.participant.joined")
        await raw.read_until_eof()
        silent_for = time.monotonic() - joined_at
        left = await bob.recv_type("rtc.participant.left")
    finally:
        hub.tuning.ping_interval_s, hub.tuning.idle_timeout_s = saved
    assert json.loads(raw.texts[0])["type"] == "rtc.joined"
    assert raw.pings >= 2, "the server pings on its own schedule"
    assert raw.close_frames == 0, "a silent socket is dropped without a close frame"
    assert 0.5 <= silent_for < 5.0
    assert left["payload"]["participant"]["user_uid"] == "uid_mute"
    # Bob, connected longer than the idle timeout, stayed because his client answered the pings.
    await bob.assert_quiet()
    raw.close()
    await bob.close()


async def test_outbound_queue_drops_frames_for_a_slow_reader(server: Devserver) -> None:
    total = 120
    chunk = "x" * (256 * 1024)
    alice = await server.join("uid_alice", "tl_vc_huddle")
    # Bob stops reading: a tiny receive buffer and a one-message client queue.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", server.port))
    bob = await server.connect(sock=sock, max_queue=1)
    await bob.send("rtc.join", {"ticket": await server.ticket("uid_bob", "dev_bob", "tl_vc_huddle")})
    bob.participant_id = (await bob.recv_type("rtc.joined"))["payload"]["participant_id"]
    await alice.recv_type("rtc.participant.joined")

    # Untargeted relay frames go to the others only, so alice's own queue stays empty.
    for seq in range(total):
        await alice.send("rtc.offer.publish", {"seq": seq, "blob": chunk}, request_id=f"o{seq}")
    await alice.assert_quiet("done")  # the server has processed every frame above
    bob_state = next(p for p in server.hub.room("tl_vc_huddle") if p.participant_id == bob.participant_id)
    dropped = bob_state.dropped
    assert 0 < dropped < total, "a slow reader loses frames instead of stalling the room"
    seqs = [(await bob.recv(timeout=20))["payload"]["seq"] for _ in range(total - dropped)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)  # drops never reorder
    await bob.assert_quiet()  # exactly total - dropped frames were delivered
    await alice.close()
    await bob.close()
