"""The Add Server flow's local id (issue #14) and "Probe Backend" without "Discover" (rule D1):
pure state, no stack (``tests/unit/test_ui_controller.py`` and the real-stack tests drive it
through the controller)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.core.contracts.chat import (
    CapabilitySnapshot,
    Disclosure,
    ProbeResult,
    ServerRecord,
    TrustAssessment,
)
from ui.state.add_server import AddServerFlow, JoinCmd

URL = "http://127.0.0.1:8082"


def probe(backend: str, local: str, warnings: list[str] | None = None) -> ProbeResult:
    return ProbeResult(
        url=URL,
        capabilities_path="/v1/client/capabilities",
        capabilities=CapabilitySnapshot(server_name="OpenChat Harbor", fetched_at=datetime.now(UTC)),
        trust=TrustAssessment(
            transport_secure=False,
            local_host=True,
            https_required_mismatch=False,
            verified=False,
            warnings=warnings or [],
        ),
        disclosure=Disclosure(
            user_uid="uid_1",
            device_id="desktop_1",
            uid_mode="server_scoped",
            profile_shared=False,
            summary="This server sees only a server-scoped UID (uid_1) and this device's id (desktop_1).",
        ),
        backend_server_id=backend,
        in_directory=False,
        local_id=local,
    )


def record(local: str, url: str, backend: str) -> ServerRecord:
    return ServerRecord(
        server_id=local,
        backend_server_id=backend,
        base_url=url,
        display_name="Harbor",
        icon_text="H",
        user_uid="uid_0",
        device_id="desktop_1",
        joined_at=datetime.now(UTC),
    )


def test_probe_without_discover_joins_the_capabilities_id_as_the_proposed_local_id() -> None:
    flow = AddServerFlow()
    flow.open(URL)
    cmd = flow.probe_cmd(URL)
    assert cmd is not None and cmd.server_id is None  # no directory entry picked
    flow.probed(probe("srv_harbor", "srv_harbor-127-0-0-1-8082", ["srv_harbor is not listed …"]), None)
    assert flow.backend_id == "srv_harbor" and flow.local_id == "srv_harbor-127-0-0-1-8082"
    summary, warnings, _ = flow.summary()
    assert "server id srv_harbor" in summary and "not listed" in warnings
    joined = {"srv_harbor": record("srv_harbor", "http://127.0.0.1:8081", "srv_harbor")}
    assert flow.join(URL, joined) == JoinCmd(URL, "srv_harbor", "srv_harbor-127-0-0-1-8082")
    assert flow.error == ""


def test_the_member_edits_the_local_id_and_a_new_probe_keeps_it() -> None:
    flow = AddServerFlow()
    flow.open(URL)
    flow.probed(probe("srv_harbor", "srv_harbor"), None)
    assert flow.local_id == "srv_harbor" and not flow.local_edited
    flow.set_local_id("  harbor-two ")
    assert flow.local_id == "harbor-two" and flow.local_edited
    flow.probed(probe("srv_harbor", "srv_harbor"), None)  # probed again: the typed id stays
    assert flow.join(URL, {}) == JoinCmd(URL, "srv_harbor", "harbor-two")
    flow.set_local_id("")  # cleared: back to the proposal
    assert flow.local_id == "srv_harbor" and not flow.local_edited
    flow.set_url("http://elsewhere.test")  # another backend: everything learnt is dropped
    assert flow.local_id == "" and flow.probe is None


def test_join_refuses_the_same_backend_server_and_a_taken_local_id() -> None:
    flow = AddServerFlow()
    flow.open(URL)
    flow.probed(probe("srv_harbor", "srv_harbor"), None)
    same = {"harbor": record("harbor", URL + "/", "srv_harbor")}
    assert flow.join(URL, same) is None and flow.error == "Server already added: srv_harbor"
    other = {"srv_harbor": record("srv_harbor", "http://127.0.0.1:8081", "srv_harbor")}
    assert flow.join(URL, other) is None and flow.error == "Local server id already in use: srv_harbor"
    flow.set_local_id("two words")
    assert flow.join(URL, other) is None and flow.error.startswith("Local server id: use")
