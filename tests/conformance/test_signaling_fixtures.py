"""Golden-fixture conformance for the devserver's RTC part (wire §11).

Every RTC fixture of ``/work/shared/protocol/examples`` is replayed against a real devserver
(uvicorn on a free port): join-ticket requests, signaling error frames, the complete SDP pair
and the two frame logs.  Checked: status, content type and length, keys and key order, value
types, exact values for everything that is not generated, and per-connection event order.
Generated values (participant ids, tickets, timestamps) are checked for shape and consistency:
participant ids are unified with the recorded ones (one-to-one), then every server frame must
equal the recorded bytes.

Runs against the ``stub`` app (``install_rtc`` alone) and the ``real`` app
(``services.devserver.app.create_app``) when it exists.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.devserver.rtc_wire import go_time
from tests.integration.test_devserver_rtc_harness import (
    APP_KINDS,
    Devserver,
    SigClient,
    decode_claims,
    real_app_available,
    run_devserver,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "shared" / "protocol" / "examples"

HTTP_FIXTURES = (
    "join_ticket.json",
    "join_ticket_no_body.json",
    "join_ticket_server_mismatch.json",
    "error_channel_not_found_404_join_ticket.json",
    "error_server_not_found_404_join_ticket.json",
    "error_invalid_channel_type_400.json",
)
WS_ERROR_FIXTURES = ("error_ws_rtc_target_not_found.json", "error_ws_rtc_unknown_event.json")
FRAME_LOGS = ("signaling_frames.jsonl", "signaling_sdp_exchange.jsonl")
SDP_FIXTURES = ("sdp_offer_full.json", "sdp_answer_full.json")

COVERED_FIXTURES: set[str] = {
    *HTTP_FIXTURES,
    "join_ticket_claims_decoded.json",
    *WS_ERROR_FIXTURES,
    *FRAME_LOGS,
    *SDP_FIXTURES,
}

UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
TS = re.compile(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"')
TS_NANOS = re.compile(r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{1,9}Z"')
PID_KEYS = frozenset({"participant_id", "from_participant_id", "target_participant_id"})
RECORDED_ORIGIN = "http://127.0.0.1:18080"


def fixture(name: str) -> dict[str, Any]:
    value = json.loads((EXAMPLES / name).read_text())
    assert isinstance(value, dict)
    return value


def frame_log(name: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (EXAMPLES / name).read_text().splitlines() if line.strip()]


def compact(value: Any) -> bytes:
    return (json.dumps(value, separators=(",", ":"), ensure_ascii=False) + "\n").encode()


def ordered(raw: str | bytes) -> Any:
    """Parse keeping key order visible (objects become lists of pairs)."""
    return json.loads(raw, object_pairs_hook=lambda pairs: ("obj", pairs))


def assert_same_shape(
    expected: Any, actual: Any, path: str, generated: dict[str, re.Pattern[str] | None]
) -> None:
    """Same keys in the same order, same types; exact values except at ``generated`` paths."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple), f"{path}: expected an object, got {actual!r}"
        exp_keys = [key for key, _ in expected[1]]
        act_keys = [key for key, _ in actual[1]]
        assert act_keys == exp_keys, f"{path}: keys {act_keys} != {exp_keys}"
        for (key, exp_value), (_, act_value) in zip(expected[1], actual[1], strict=True):
            assert_same_shape(exp_value, act_value, f"{path}.{key}", generated)
        return
    if isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{path}: {actual!r}"
        for index, (exp_item, act_item) in enumerate(zip(expected, actual, strict=True)):
            assert_same_shape(exp_item, act_item, f"{path}[{index}]", generated)
        return
    assert type(actual) is type(expected), (
        f"{path}: type {type(actual).__name__} != {type(expected).__name__}"
    )
    if path in generated:
        pattern = generated[path]
        if pattern is not None:
            assert pattern.match(str(actual)), f"{path}: {actual!r} does not match {pattern.pattern}"
        return
    assert actual == expected, f"{path}: {actual!r} != {expected!r}"


@pytest.fixture(scope="module", params=APP_KINDS)
def server(request: pytest.FixtureRequest) -> Iterator[Devserver]:
    if request.param == "real" and not real_app_available():
        pytest.skip("services.devserver.app.create_app does not exist yet")
    with run_devserver(request.param) as devserver:
        yield devserver


def test_covered_fixtures_exist() -> None:
    for name in COVERED_FIXTURES:
        assert (EXAMPLES / name).is_file(), name
    rtc_like = {
        p.name
        for p in EXAMPLES.iterdir()
        if p.name.startswith(("join_ticket", "sdp_", "signaling_", "error_ws_rtc_"))
        or "join_ticket" in p.name
    }
    assert rtc_like | {"error_invalid_channel_type_400.json"} <= COVERED_FIXTURES


# ---------------------------------------------------------------------------------- HTTP


@pytest.mark.parametrize("name", HTTP_FIXTURES)
async def test_join_ticket_http_fixture(server: Devserver, name: str) -> None:
    fx = fixture(name)
    req = fx["_request"]
    assert req["method"] == "POST"
    channel_id = req["path"].split("/")[4]
    headers = dict(req.get("headers", {}))
    uid = headers.pop("X-OpenChat-User-UID", None)
    device = headers.pop("X-OpenChat-Device-ID", None)
    headers.pop("Content-Type", None)
    before = int(time.time())
    response = await server.post_ticket(channel_id, uid=uid, device=device, body=req.get("json"))
    after = int(time.time())

    assert response.status_code == fx["_status"]
    recorded_headers = fx["_response_headers"]
    assert response.headers["content-type"] == recorded_headers["content-type"]
    assert response.headers["access-control-allow-origin"] == "*"
    assert int(response.headers["content-length"]) == len(response.content)
    assert response.content == compact(response.json()), "not compact JSON with one trailing newline"

    expected_body = fx["body"]
    if fx["_status"] != 200:
        assert response.content == compact(expected_body)
        assert response.headers["content-length"] == recorded_headers["content-length"]
        return

    # Success: rewrite the recorded origin, then compare everything but generated values.
    assert expected_body["signaling_url"] == RECORDED_ORIGIN.replace("http", "ws", 1) + "/v1/rtc/signaling"
    expected_body["signaling_url"] = server.ws_url
    rfc3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
    generated: dict[str, re.Pattern[str] | None] = {
        "body.expires_at": rfc3339,
        "body.ice_servers[1].expires_at": rfc3339,
        "body.ticket": re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$"),
    }
    assert_same_shape(ordered(compact(expected_body)), ordered(response.content), "body", generated)
    length_delta = len(server.ws_url) - len("ws://127.0.0.1:18080/v1/rtc/signaling")
    assert int(recorded_headers["content-length"]) + length_delta == len(response.content)

    body = response.json()
    claims_fx = fixture("join_ticket_claims_decoded.json")
    first, signature = body["ticket"].split(".")
    raw_claims = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))
    claims = json.loads(raw_claims)
    assert list(claims) == list(claims_fx["claims"]), "claim key order"
    assert raw_claims == compact(claims)[:-1], "claims are compact JSON without a newline"
    assert len(signature) == 43 and "=" not in body["ticket"]
    for key in ("server_id", "channel_id", "user_uid", "device_id"):
        assert claims[key] == body[key]
    assert list(claims["permissions"].items()) == list(claims_fx["claims"]["permissions"].items())
    if name == "join_ticket.json":
        for key in ("server_id", "channel_id", "user_uid", "device_id"):
            assert claims[key] == claims_fx["claims"][key]
    assert claims["exp"] - claims["iat"] == claims_fx["claims"]["exp"] - claims_fx["claims"]["iat"] == 60
    assert before <= claims["iat"] <= after
    assert UUID4.match(claims["jti"])
    assert body["expires_at"] == go_time(claims["exp"])
    assert body["ice_servers"][1]["expires_at"] == go_time(claims["iat"] + 30 * 60)


# ---------------------------------------------------------------------------------- WebSocket


class PidMap:
    """One-to-one mapping between recorded participant ids and this run's ids."""

    def __init__(self) -> None:
        self.ours: dict[str, str] = {}
        self.recorded: dict[str, str] = {}

    def unify(self, recorded: str, ours: str) -> None:
        if recorded in self.ours:
            assert self.ours[recorded] == ours, f"participant id {recorded} maps to two ids"
            return
        assert ours not in self.recorded, f"our id {ours} maps to two recorded ids"
        assert UUID4.match(ours), ours
        self.ours[recorded] = ours
        self.recorded[ours] = recorded

    def walk(self, expected: Any, actual: Any) -> None:
        if isinstance(expected, dict) and isinstance(actual, dict):
            for key, value in expected.items():
                if key in PID_KEYS and isinstance(value, str) and isinstance(actual.get(key), str):
                    self.unify(value, actual[key])
                elif key in actual:
                    self.walk(value, actual[key])
        elif isinstance(expected, list) and isinstance(actual, list):
            for exp_item, act_item in zip(expected, actual, strict=False):
                self.walk(exp_item, act_item)

    def to_recorded(self, raw: str) -> str:
        for ours, recorded in self.recorded.items():
            raw = raw.replace(ours, recorded)
        return raw

    def to_ours(self, raw: str) -> str:
        for recorded, ours in self.ours.items():
            raw = raw.replace(recorded, ours)
        return raw


def normalise_times(raw: str) -> str:
    return TS.sub('"<ts>"', TS_NANOS.sub('"<ts-nanos>"', raw))


def assert_frame_matches(expected_raw: str, actual_raw: str, pids: PidMap) -> None:
    pids.walk(json.loads(expected_raw), json.loads(actual_raw))
    assert normalise_times(pids.to_recorded(actual_raw)) == normalise_times(expected_raw)


class Replay:
    """Replays a recorded frame log against the devserver, connection by connection."""

    def __init__(self, server: Devserver) -> None:
        self.server = server
        self.conns: dict[str, SigClient] = {}
        self.pids = PidMap()
        self.owner: dict[str, str] = {}  # our participant id -> connection label
        self.left_sent: set[str] = set()
        self.closed: set[str] = set()
        self.connected_at: dict[str, float] = {}
        self.issued: dict[str, str] = {}  # recorded jti -> our genuine ticket
        self.elapsed = 0.0  # connect-to-drop time of the last dropped socket

    async def open(self, label: str) -> SigClient:
        if label not in self.conns:
            self.conns[label] = await self.server.connect()
            self.connected_at[label] = time.monotonic()
        return self.conns[label]

    async def translate_ticket(self, recorded: str) -> str:
        first, _, _signature = recorded.partition(".")
        raw = base64.urlsafe_b64decode(first + "=" * (-len(first) % 4))
        claims = json.loads(raw)
        jti = claims["jti"]
        if jti not in self.issued:
            self.issued[jti] = await self.server.ticket(
                claims["user_uid"], claims["device_id"], claims["channel_id"], claims["server_id"]
            )
        ours = self.issued[jti]
        if raw == compact(claims)[:-1]:
            return ours
        # A forged ticket: the same claim edits applied to our ticket, keeping our signature.
        mine = decode_claims(ours)
        forged = {**claims, "exp": mine["exp"], "iat": mine["iat"], "jti": mine["jti"]}
        assert forged != mine
        first_forged = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        return f"{first_forged}.{ours.split('.')[1]}"

    async def client_frame(self, line: dict[str, Any]) -> None:
        label = line["conn"]
        conn = await self.open(label)
        raw: str = line["raw"]
        frame = line["frame"]
        if (
            isinstance(frame, dict)
            and frame.get("type") == "rtc.join"
            and "ticket" in frame.get("payload", {})
        ):
            recorded_ticket = frame["payload"]["ticket"]
            raw = raw.replace(recorded_ticket, await self.translate_ticket(recorded_ticket))
        if isinstance(frame, dict) and frame.get("type") == "rtc.leave":
            self.left_sent.add(label)
        await conn.send_raw(self.pids.to_ours(raw))

    async def server_frame(self, line: dict[str, Any]) -> None:
        label = line["conn"]
        expected = line["raw"]
        frame = line["frame"]
        if frame["type"] == "rtc.participant.left":
            # The recorded client closed its socket; close ours before expecting the event.
            leaver = self.pids.ours[frame["payload"]["participant"]["participant_id"]]
            owner = self.owner[leaver]
            if owner not in self.left_sent and owner not in self.closed:
                await self.conns[owner].close()
                self.closed.add(owner)
        actual = await self.conns[label].recv_raw()
        if frame["type"] == "rtc.joined":
            ours = json.loads(actual)["payload"]["participant_id"]
            self.owner[ours] = label
        assert_frame_matches(expected, actual, self.pids)

    async def event(self, line: dict[str, Any]) -> None:
        label = line["conn"]
        event = line["event"]
        if event == "connected":
            assert line["url"].endswith("/v1/rtc/signaling")
            await self.open(label)
        elif event == "closed":
            conn = self.conns[label]
            if line["close_code"] == 1000:
                if label not in self.closed:
                    await conn.close()
                    self.closed.add(label)
                assert conn.ws.protocol.close_rcvd is not None and conn.ws.protocol.close_rcvd.code == 1000
            else:
                assert line["close_code"] == 1006
                code, frames = await conn.wait_closed()
                assert code is None, "the server must drop the socket without a close frame"
                assert frames == [], f"{label} received {frames} before the drop"
                self.closed.add(label)
                self.elapsed = time.monotonic() - self.connected_at[label]
        elif event == "observation":
            text: str = line["text"]
            quiet = re.match(r"^(\w+) \(.*\) received during all of the above: \[\]$", text)
            if quiet:
                await self.conns[quiet.group(1)].assert_quiet()
            elif text.startswith("socket ended/errored after"):
                timeout = self.server.hub.tuning.join_timeout_s
                assert timeout * 0.9 <= self.elapsed < timeout + 3.0

    async def run(self, lines: list[dict[str, Any]]) -> None:
        for line in lines:
            direction = line["dir"]
            if direction == "c2s":
                await self.client_frame(line)
            elif direction == "s2c":
                await self.server_frame(line)
            elif direction == "event":
                await self.event(line)
        # Nothing unexpected is left on any live connection.
        for label, conn in self.conns.items():
            if label not in self.closed:
                await conn.assert_quiet(f"end_{label}")
                await conn.close()


@pytest.mark.parametrize("name", FRAME_LOGS)
async def test_frame_log_replay(server: Devserver, name: str) -> None:
    hub = server.hub
    saved = hub.tuning.join_timeout_s
    hub.tuning.join_timeout_s = 1.0  # the recorded 12 s join timeout, shortened
    replay = Replay(server)
    try:
        await replay.run(frame_log(name))
    finally:
        hub.tuning.join_timeout_s = saved
        for conn in replay.conns.values():
            await conn.close()
    assert hub.room("vc_general") == [] and hub.room("vc_party") == []
    if name == "signaling_frames.jsonl":
        assert list(hub.denials)[-5:] == [
            "join ticket replayed",
            "invalid join ticket",
            "first signaling message must be rtc.join",
            list(hub.denials)[-2],  # the JSON error text of the non-JSON frame
            "i/o timeout",
        ]


@pytest.mark.parametrize("name", WS_ERROR_FIXTURES)
async def test_ws_error_fixture(server: Devserver, name: str) -> None:
    fx = fixture(name)
    alice = await server.join("uid_alice", "vc_general")
    try:
        await alice.send_raw(json.dumps(fx["client_sent"]))
        raw = await alice.recv_raw()
        assert raw == fx["_raw"]
        assert json.loads(raw) == fx["body"]
        await alice.assert_quiet()
    finally:
        await alice.close()


async def test_sdp_fixtures(server: Devserver) -> None:
    offer_fx = fixture("sdp_offer_full.json")
    answer_fx = fixture("sdp_answer_full.json")
    pids = PidMap()
    alice = await server.join("uid_alice", "vc_general", device="dev_alice_laptop")
    bob = await server.join("uid_bob", "vc_general", device="dev_bob_phone")
    try:
        await alice.recv_type("rtc.participant.joined")
        recorded_alice = answer_fx["body"]["payload"]["from_participant_id"]
        recorded_bob = offer_fx["body"]["payload"]["from_participant_id"]
        pids.unify(recorded_alice, alice.participant_id)
        pids.unify(recorded_bob, bob.participant_id)

        await bob.send_raw(pids.to_ours(offer_fx["client_sent_raw"]))
        assert_frame_matches(offer_fx["_raw"], await alice.recv_raw(), pids)
        await alice.send_raw(pids.to_ours(answer_fx["client_sent_raw"]))
        assert_frame_matches(answer_fx["_raw"], await bob.recv_raw(), pids)
        # The SDP itself is relayed untouched.
        relayed_sdp = answer_fx["body"]["payload"]["sdp"]
        assert relayed_sdp == answer_fx["client_sent"]["payload"]["sdp"]
        await bob.assert_quiet()
        await alice.assert_quiet()
    finally:
        await alice.close()
        await bob.close()
