"""The member's own profile through the connector, on real devservers and a real NATS (D18).

Published only after consent: the devserver's ``GET /v1/profile/me`` for the member's uid is the
witness; the request recorder proves nothing is written without consent.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from services.core.bus import CommandError
from services.core.contracts.chat import (
    ConsentArgs,
    JoinArgs,
    JoinResult,
    ProfileGetArgs,
    ProfileGetResult,
    ProfileSetArgs,
    UploadedImage,
)
from services.devserver.runner import DevserverHandle
from tests.connector_harness import Harness, connector_harness

SERVER = "srv_family"


async def join(h: Harness, member: str, srv: DevserverHandle) -> JoinResult:
    joined = await h.call(
        member, "join", JoinArgs(url=srv.base_url, server_id=SERVER, confirmed=True), JoinResult
    )
    session = h.connector.sessions[(member, SERVER)]
    await session.hydrated.wait()
    await session.profile_settled()
    return joined


async def remote_profile(srv: DevserverHandle, uid: str, device: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=srv.base_url) as client:
        response = await client.get(
            "/v1/profile/me", headers={"X-OpenChat-User-UID": uid, "X-OpenChat-Device-ID": device}
        )
        response.raise_for_status()
        doc: dict[str, Any] = response.json()
        return doc


def profile_writes(h: Harness) -> list[httpx.Request]:
    return [
        r
        for r in h.requests.requests
        if r.url.path.startswith("/v1/profile") and (r.method == "PUT" or r.url.path == "/v1/profile/avatar")
    ]


def own_profile_event(uid: str, **expected: Any) -> Any:
    def check(events: list[dict[str, Any]]) -> dict[str, Any] | None:
        for e in reversed(events):
            if e["type"] != "profile.updated":
                continue
            profile: dict[str, Any] = e["payload"]["profile"]
            if profile["user_uid"] == uid and all(profile.get(k) == v for k, v in expected.items()):
                return profile
        return None

    return check


def image_b64(fmt: str, size: tuple[int, int]) -> UploadedImage:
    img = Image.linear_gradient("L").resize(size).convert("RGB")
    out = io.BytesIO()
    img.save(out, format=fmt)
    ctype = {"WEBP": "image/webp", "PNG": "image/png", "GIF": "image/gif"}[fmt]
    return UploadedImage(
        file_name=f"me.{fmt.lower()}", content_type=ctype, data_b64=base64.b64encode(out.getvalue()).decode()
    )


async def test_consent_then_change_publishes_with_if_match(harness: Harness, family: DevserverHandle) -> None:
    events = await harness.events("alice")
    await harness.call(
        "alice",
        "profile_set",
        ProfileSetArgs(display_name="  Alice B.  ", avatar_preset_id="reef"),
        ProfileGetResult,
    )
    joined = await join(harness, "alice", family)
    uid, device = joined.server.user_uid, joined.server.device_id
    # not asked yet: UID-only — not even our own profile is read
    assert not [r for r in harness.requests.requests if r.url.path == "/v1/profile/me"]
    shown = await harness.call("alice", "profile_get", ProfileGetArgs(), ProfileGetResult)
    assert shown.profile is not None and shown.profile.display_name == "Alice B."
    assert [(s.server_id, s.state) for s in shown.servers] == [(SERVER, "private")]

    await harness.call("alice", "consent", ConsentArgs(server_id=SERVER, share_profile=True), JoinResult)
    published = await events.wait_for(own_profile_event(uid, display_name="Alice B."))
    assert published["avatar_mode"] == "generated" and published["avatar_preset_id"] == "reef"
    remote = await remote_profile(family, uid, device)
    assert (remote["display_name"], remote["avatar_mode"], remote["avatar_preset_id"]) == (
        "Alice B.",
        "generated",
        "reef",
    )
    assert remote["profile_version"] == 2  # created on our GET (1), then our PUT
    put = [r for r in profile_writes(harness) if r.method == "PUT"]
    assert len(put) == 1 and put[0].headers["If-Match"] == "1"
    await harness.connector.sessions[("alice", SERVER)].profile_settled()
    shown = await harness.call("alice", "profile_get", ProfileGetArgs(), ProfileGetResult)
    assert [(s.state, s.profile_version) for s in shown.servers] == [("published", 2)]

    # a change while consented is published again, conditional on the version the server showed
    await harness.call(
        "alice",
        "profile_set",
        ProfileSetArgs(display_name="Alice Ç", avatar_preset_id="mint"),
        ProfileGetResult,
    )
    await events.wait_for(own_profile_event(uid, display_name="Alice Ç", avatar_preset_id="mint"))
    remote = await remote_profile(family, uid, device)
    assert (remote["display_name"], remote["avatar_preset_id"], remote["profile_version"]) == (
        "Alice Ç",
        "mint",
        3,
    )
    put = [r for r in profile_writes(harness) if r.method == "PUT"]
    assert [r.headers["If-Match"] for r in put] == ["1", "2"]

    # a stale cache (another device changed the profile unseen): 409, read again, retry once
    session = harness.connector.sessions[("alice", SERVER)]
    await session.profile_settled()
    assert session.own_profile is not None
    session.own_profile = session.own_profile.model_copy(update={"profile_version": 1})
    await harness.call("alice", "profile_set", ProfileSetArgs(display_name="Alice D"), ProfileGetResult)
    await events.wait_for(own_profile_event(uid, display_name="Alice D"))
    tail = [
        (r.method, r.headers.get("If-Match"))
        for r in harness.requests.requests
        if r.url.path == "/v1/profile/me"
    ]
    assert tail[-3:] == [("PUT", "1"), ("GET", None), ("PUT", "3")]
    assert (await remote_profile(family, uid, device))["profile_version"] == 4

    # a change to something the server already shows costs no write
    await session.profile_settled()
    writes = len(profile_writes(harness))
    session.request_profile_sync()
    await session.profile_settled()
    assert len(profile_writes(harness)) == writes


async def test_webp_avatar_is_converted_scaled_and_uploaded(
    harness: Harness, family: DevserverHandle
) -> None:
    events = await harness.events("bob")
    joined = await join(harness, "bob", family)
    uid = joined.server.user_uid
    await harness.call("bob", "consent", ConsentArgs(server_id=SERVER, share_profile=True), JoinResult)
    webp = image_b64("WEBP", (1600, 1200))
    result = await harness.call(
        "bob", "profile_set", ProfileSetArgs(display_name="Bob", avatar=webp), ProfileGetResult
    )
    assert result.profile is not None and result.profile.avatar_content_type == "image/webp"
    published = await events.wait_for(own_profile_event(uid, display_name="Bob", avatar_mode="uploaded"))
    assert published["avatar_preset_id"] is None and published["avatar_asset_id"]

    uploads = [r for r in profile_writes(harness) if r.url.path == "/v1/profile/avatar"]
    assert len(uploads) == 1
    # multipart (the devserver takes the image only from the part ``file``)
    assert uploads[0].headers["content-type"].startswith("multipart/form-data")
    async with httpx.AsyncClient(base_url=family.base_url) as client:
        stored = await client.get(f"/v1/profile/avatar/{published['avatar_asset_id']}")
    stored.raise_for_status()
    assert stored.headers["content-type"].startswith("image/png")
    assert len(stored.content) <= 2 * 1024 * 1024
    with Image.open(io.BytesIO(stored.content)) as img:
        assert img.format == "PNG"
        assert img.size == (1024, 768)  # scaled to the advertised 1024x1024, aspect kept

    # the same image again (a hydrate, a rename): never uploaded twice
    await harness.call("bob", "profile_set", ProfileSetArgs(display_name="Bobby"), ProfileGetResult)
    await events.wait_for(own_profile_event(uid, display_name="Bobby", avatar_mode="uploaded"))
    assert len([r for r in profile_writes(harness) if r.url.path == "/v1/profile/avatar"]) == 1
    got = await harness.call("bob", "profile_get", ProfileGetArgs(include_avatar=True), ProfileGetResult)
    assert got.profile is not None and got.profile.avatar_b64 == webp.data_b64


async def test_no_consent_no_publish_even_after_restart(
    nats_url: str, tmp_path: Path, family: DevserverHandle
) -> None:
    async with connector_harness(nats_url, tmp_path) as h:
        await h.call(
            "carol",
            "profile_set",
            ProfileSetArgs(display_name="Carol", avatar=image_b64("PNG", (64, 64))),
            ProfileGetResult,
        )
        await join(h, "carol", family)
        await h.call("carol", "consent", ConsentArgs(server_id=SERVER, share_profile=False), JoinResult)
        await h.call("carol", "profile_set", ProfileSetArgs(display_name="Carol K"), ProfileGetResult)
        session = h.connector.sessions[("carol", SERVER)]
        await session.profile_settled()
        assert not profile_writes(h)
        assert not [r for r in h.requests.requests if r.url.path == "/v1/profile/me"]
        shown = await h.call("carol", "profile_get", ProfileGetArgs(), ProfileGetResult)
        assert [(s.consent, s.state) for s in shown.servers] == [(False, "private")]
    async with connector_harness(nats_url, tmp_path) as h:  # "Keep private" survives a restart
        session = h.connector.sessions[("carol", SERVER)]
        await session.hydrated.wait()
        await session.profile_settled()
        assert not profile_writes(h)
        shown = await h.call("carol", "profile_get", ProfileGetArgs(), ProfileGetResult)
        assert shown.profile is not None and shown.profile.display_name == "Carol K"


async def test_invalid_profile_is_a_typed_error(harness: Harness) -> None:
    cases: list[tuple[ProfileSetArgs, str]] = [
        (ProfileSetArgs(display_name="A"), "display_name_invalid"),
        (ProfileSetArgs(display_name="Ann 🎉"), "display_name_invalid"),
        (ProfileSetArgs(display_name="x" * 33), "display_name_invalid"),
        (ProfileSetArgs(avatar_preset_id="reef"), "display_name_invalid"),  # no name yet
        (ProfileSetArgs(display_name="Ann", avatar_preset_id="preset_01"), "avatar_invalid"),
        (ProfileSetArgs(display_name="Ann", avatar=image_b64("GIF", (8, 8))), "avatar_invalid"),
        (ProfileSetArgs(display_name="Ann", avatar_mode="uploaded"), "avatar_invalid"),
    ]
    for args, code in cases:
        with pytest.raises(CommandError) as err:
            await harness.call("dave", "profile_set", args, ProfileGetResult)
        assert err.value.code == code, args
        assert not err.value.retryable
    shown = await harness.call("dave", "profile_get", ProfileGetArgs(), ProfileGetResult)
    assert shown.profile is None  # nothing half-stored


async def test_hydrate_after_restart_republishes(
    nats_url: str, tmp_path: Path, family: DevserverHandle
) -> None:
    """Consent is durable: a connector started later publishes on hydrate when the server shows
    something else (here: the server's profile was changed behind the member's back)."""
    async with connector_harness(nats_url, tmp_path) as h:
        events = await h.events("erin")
        await h.call(
            "erin",
            "profile_set",
            ProfileSetArgs(display_name="Erin", avatar_preset_id="violet"),
            ProfileGetResult,
        )
        joined = await join(h, "erin", family)
        await h.call("erin", "consent", ConsentArgs(server_id=SERVER, share_profile=True), JoinResult)
        await events.wait_for(own_profile_event(joined.server.user_uid, display_name="Erin"))
    uid, device = joined.server.user_uid, joined.server.device_id
    async with httpx.AsyncClient(base_url=family.base_url) as client:
        response = await client.put(
            "/v1/profile/me",
            headers={"X-OpenChat-User-UID": uid, "X-OpenChat-Device-ID": device},
            json={"display_name": "Someone Else", "avatar_mode": "generated", "avatar_preset_id": "slate"},
        )
        response.raise_for_status()
    async with connector_harness(nats_url, tmp_path, events_of=("erin",)) as h:
        await h.logs["erin"].wait_for(own_profile_event(uid, display_name="Erin", avatar_preset_id="violet"))
        remote = await remote_profile(family, uid, device)
        assert (remote["display_name"], remote["avatar_preset_id"], remote["profile_version"]) == (
            "Erin",
            "violet",
            4,
        )
