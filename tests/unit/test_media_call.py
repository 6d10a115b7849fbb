"""Join failures of the media service's ``Call`` that the devserver cannot produce.

The devserver always advertises ``rtc`` with ``topologies: ["p2p"]`` (like the public backend), so
a server without RTC, an SFU-only server and a refused ticket are played here by an
``httpx.MockTransport`` answering the two HTTP requests of a join (a fake, for that reason only).
The call must end in ``error`` with the reference client's message and never retry (8.1, 8.2).
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.core.contracts.chat import ServerRecord
from services.core.contracts.media import NO_P2P_MESSAGE, NO_RTC_MESSAGE, VoicePrefs
from services.media.call import Call, signaling_url_for

CAPS: dict[str, Any] = {"server_name": "X", "server_id": "srv_x"}


def record() -> ServerRecord:
    return ServerRecord(
        server_id="srv_x",
        base_url="http://backend.test",
        display_name="X",
        icon_text="X",
        user_uid="uid_member",
        device_id="desktop_test",
        joined_at=datetime.now(UTC),
    )


async def run_call(handler: Any) -> tuple[Call, list[httpx.Request], str]:
    seen: list[httpx.Request] = []

    def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response: httpx.Response = handler(request)
        return response

    states: list[str] = []
    async with httpx.AsyncClient(transport=httpx.MockTransport(recording)) as http:
        call = Call(
            member="alice",
            server_id="srv_x",
            channel_id="vc_x",
            record=record,
            http=http,
            prefs=VoicePrefs,
            on_change=lambda c: states.append(c.machine.state),
            on_speaking=lambda *a: None,
        )
        status = await call.start(wait_s=10)
        await asyncio.sleep(0)  # let the run task finish its bookkeeping
        assert status.state == "error"
        assert states[0] == "joining" and states[-1] == "error" and "reconnecting" not in states
        reason = call.machine.reason
        await call.leave()
    return call, seen, reason


async def test_no_rtc_block_is_a_clear_error_without_a_ticket() -> None:
    call, seen, reason = await run_call(lambda r: httpx.Response(200, json=CAPS))
    assert reason == NO_RTC_MESSAGE and call.error_code == "rtc_unsupported"
    assert [r.url.path for r in seen] == ["/v1/client/capabilities"]
    assert seen[0].headers["X-OpenChat-User-UID"] == "uid_member"


async def test_sfu_only_server_is_not_supported() -> None:
    caps = {**CAPS, "rtc": {"topologies": ["sfu"], "signaling_url": "ws://backend.test/x"}}
    call, _, reason = await run_call(lambda r: httpx.Response(200, json=caps))
    assert reason == NO_P2P_MESSAGE and call.error_code == "p2p_unsupported"


@pytest.mark.parametrize("status", [400, 404, 500])
async def test_refused_ticket_is_an_error_with_the_servers_message(status: int) -> None:
    caps = {**CAPS, "rtc": {"topologies": ["p2p"], "signaling_url": "ws://backend.test/x"}}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/join-ticket"):
            assert json.loads(request.content) == {"server_id": "srv_x"}
            assert request.headers["X-OpenChat-Device-ID"] == "desktop_test"
            return httpx.Response(
                status, json={"code": "x", "message": "unknown voice channel", "retryable": False}
            )
        return httpx.Response(200, json=caps)

    call, seen, reason = await run_call(handler)
    assert call.error_code == "ticket_refused"
    assert reason == f"join ticket refused (HTTP {status}: unknown voice channel)"
    assert [r.url.path for r in seen] == ["/v1/client/capabilities", "/v1/rtc/channels/vc_x/join-ticket"]


def test_signaling_url_is_rewritten_only_for_a_loopback_default() -> None:
    assert (
        signaling_url_for("ws://localhost:8080/v1/rtc/signaling", "http://127.0.0.1:5000")
        == "ws://127.0.0.1:5000/v1/rtc/signaling"
    )
    assert (
        signaling_url_for("ws://localhost:8080/v1/rtc/signaling", "https://chat.example.org")
        == "wss://chat.example.org/v1/rtc/signaling"
    )
    assert (
        signaling_url_for("wss://rtc.example.org/sig", "https://chat.example.org")
        == "wss://rtc.example.org/sig"
    )
