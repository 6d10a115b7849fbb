"""Local server ids and uid scopes (issue #14, ADR 0018): the pure rules, and the registry's
migration that keeps existing installations' ids and uids unchanged."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.core.contracts.chat import ServerRecord
from services.core.identity import project_uid
from services.core.local_ids import (
    LocalIdError,
    derived_local_id,
    host_slug,
    origin_scope,
    plan_join,
    propose_local_id,
    valid_local_id,
)
from services.core.servers import SCHEMA_VERSION, ServerExists, ServerStore

ROOT = "identity_abc12345"
A, B = "https://chat.pennylabs.com", "http://127.0.0.1:8082"


def rec(local: str, url: str, backend: str | None = None, scope: str | None = None) -> ServerRecord:
    return ServerRecord(
        server_id=local,
        backend_server_id=backend,
        uid_scope=scope,
        base_url=url,
        display_name="Harbor Guild",
        icon_text="HG",
        user_uid=project_uid(ROOT, scope or backend or local),
        device_id="desktop_abc12345",
        joined_at=datetime(2026, 12, 1, tzinfo=UTC),
    )


def test_host_slug_and_derived_id_are_readable_tokens() -> None:
    assert host_slug(A) == "chat-pennylabs-com"
    assert host_slug(B) == "127-0-0-1-8082"
    assert host_slug("https://Chat.Example.org:443/openchat") == "chat-example-org"
    assert host_slug("not a url") == "backend"
    assert derived_local_id("srv_harbor", A) == "srv_harbor-chat-pennylabs-com"
    long = derived_local_id("s" * 128, A)
    assert len(long) == 128 and long.endswith("-chat-pennylabs-com") and valid_local_id(long)


def test_proposal_is_the_backend_id_when_free_else_derived_and_stable() -> None:
    assert propose_local_id("srv_harbor", B, []) == "srv_harbor"
    assert propose_local_id("srv_harbor", B, ["srv_harbor"]) == "srv_harbor-127-0-0-1-8082"
    # stable: the same backend gets the same proposal; a taken derived id gets a counter
    assert propose_local_id("srv_harbor", B, ["srv_harbor"]) == "srv_harbor-127-0-0-1-8082"
    taken = ["srv_harbor", "srv_harbor-127-0-0-1-8082", "srv_harbor-127-0-0-1-8082-2"]
    assert propose_local_id("srv_harbor", B, taken) == "srv_harbor-127-0-0-1-8082-3"


def test_plan_first_server_keeps_the_reference_projection() -> None:
    plan = plan_join("srv_harbor", A, [])
    assert (plan.local_id, plan.uid_scope, plan.projection_scope) == ("srv_harbor", None, "srv_harbor")
    # features 1.4's vector: an imported identity is the same user there as in the reference client
    assert project_uid(ROOT, plan.projection_scope) == "uid_09de3cdc"


def test_plan_colliding_server_gets_a_derived_id_and_an_origin_scope() -> None:
    first = rec("srv_harbor", A)
    plan = plan_join("srv_harbor", B + "/", [first])
    assert plan.local_id == "srv_harbor-127-0-0-1-8082"
    assert plan.uid_scope == origin_scope("srv_harbor", B) == "srv_harbor@http://127.0.0.1:8082"
    assert project_uid(ROOT, plan.projection_scope) != project_uid(ROOT, "srv_harbor")
    # --as: the member's id; the scope is the same (it follows the backend, not the local name)
    chosen = plan_join("srv_harbor", B, [first], "harbor-b")
    assert (chosen.local_id, chosen.uid_scope) == ("harbor-b", plan.uid_scope)
    # a server of another id is not a collision
    assert plan_join("srv_testlab", B, [first]).uid_scope is None


def test_plan_refuses_the_same_backend_server_a_taken_or_invalid_local_id() -> None:
    first = rec("srv_harbor", A)
    with pytest.raises(LocalIdError, match="Server already added: srv_harbor") as exc:
        plan_join("srv_harbor", A + "/", [first], "other")
    assert exc.value.code == "server_exists"
    with pytest.raises(LocalIdError, match="already in use: srv_harbor") as exc:
        plan_join("srv_harbor", B, [first], "srv_harbor")
    assert exc.value.code == "server_exists"
    for bad in ("", "has space", "dot.ted", "x" * 129):
        with pytest.raises(LocalIdError) as exc:
            plan_join("srv_harbor", B, [first], bad)
        assert exc.value.code == "invalid_server_id"
    # a probe is not refused: for a joined server it reports that server's own id and scope
    second = rec("srv_harbor-2", B, "srv_harbor", origin_scope("srv_harbor", B))
    probed = plan_join("srv_harbor", A, [first, second], check_taken=False)
    assert (probed.local_id, probed.uid_scope) == ("srv_harbor", None)
    probed = plan_join("srv_harbor", B, [first, second], check_taken=False)
    assert (probed.local_id, probed.uid_scope) == ("srv_harbor-2", origin_scope("srv_harbor", B))


def test_after_leaving_the_first_the_reference_projection_is_free_again() -> None:
    second = rec("srv_harbor-127-0-0-1-8082", B, "srv_harbor", origin_scope("srv_harbor", B))
    assert plan_join("srv_harbor", A, [second]).uid_scope is None
    # and a third backend still collides with nobody holding the reference: reference
    assert plan_join("srv_harbor", "http://c.example:1", [second]).uid_scope is None


def test_old_records_read_as_local_equals_backend() -> None:
    """A record stored before #14 has neither field: backend id = local id, reference scope."""
    old = rec("srv_harbor", A).model_dump(mode="json")
    del old["backend_server_id"], old["uid_scope"]
    parsed = ServerRecord.model_validate(old)
    assert parsed.backend_id == "srv_harbor" and parsed.projection_scope == "srv_harbor"
    assert parsed.user_uid == project_uid(ROOT, "srv_harbor")


OLD_SCHEMA = """
CREATE TABLE joined_servers (
    member TEXT NOT NULL,
    server_id TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (member, server_id)
);
"""


def test_registry_migration_is_a_no_op_for_existing_installations(tmp_path: Path) -> None:
    """A registry written before #14 (old table, records without the new fields): opening it
    migrates the table, and every member keeps the same servers, ids, uids and records."""
    db_path = tmp_path / "registry.sqlite3"
    olds: list[tuple[str, dict[str, object]]] = []
    for member, sid, url in (
        ("alice", "srv_harbor", A),
        ("alice", "srv_family", "http://127.0.0.1:18081"),
        ("bob", "srv_harbor", B),
    ):
        doc = rec(sid, url).model_dump(mode="json")
        del doc["backend_server_id"], doc["uid_scope"]
        olds.append((member, doc))
    db = sqlite3.connect(db_path)
    db.executescript(OLD_SCHEMA)
    import json

    for member, doc in olds:
        db.execute(
            "INSERT INTO joined_servers (member, server_id, record) VALUES (?, ?, ?)",
            (member, doc["server_id"], json.dumps(doc)),
        )
    db.commit()
    raw_before = db.execute("SELECT member, server_id, record FROM joined_servers ORDER BY rowid").fetchall()
    db.close()

    store = ServerStore(db_path)
    got = store.everything()
    assert [(m, r.server_id, r.backend_id, r.user_uid, r.uid_scope) for m, r in got] == [
        ("alice", "srv_harbor", "srv_harbor", project_uid(ROOT, "srv_harbor"), None),
        ("alice", "srv_family", "srv_family", project_uid(ROOT, "srv_family"), None),
        ("bob", "srv_harbor", "srv_harbor", project_uid(ROOT, "srv_harbor"), None),
    ]
    db = sqlite3.connect(db_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    # the records themselves are untouched; the new columns hold the backend id and URL
    rows = db.execute(
        "SELECT member, server_id, record, backend_server_id, base_url FROM joined_servers ORDER BY rowid"
    ).fetchall()
    db.close()
    assert [r[:3] for r in rows] == raw_before
    assert [(r[3], r[4]) for r in rows] == [
        ("srv_harbor", A),
        ("srv_family", "http://127.0.0.1:18081"),
        ("srv_harbor", B),
    ]
    # opening again (another service at start) changes nothing
    assert ServerStore(db_path).everything() == got
    # one row per backend server and member: the same backend server under another local id is refused
    with pytest.raises(ServerExists):
        store.add("alice", rec("harbor-again", A, "srv_harbor"))
    # the same id on another backend is fine (issue #14)
    store.add("alice", rec("srv_harbor-127-0-0-1-8082", B, "srv_harbor", origin_scope("srv_harbor", B)))
    assert [r.server_id for r in store.of_member("alice")] == [
        "srv_harbor",
        "srv_family",
        "srv_harbor-127-0-0-1-8082",
    ]


def test_the_disclosure_sentence_says_which_projection() -> None:
    from services.connector.domain import disclosure
    from ui.account import disclosure_sentence

    plain = disclosure("uid_09de3cdc", "desktop_abc12345", "server_scoped", False)
    assert plain.origin_scope is None
    assert plain.summary.startswith("This server sees only a server-scoped UID (uid_09de3cdc) and")
    scoped = disclosure("uid_1", "desktop_abc12345", "server_scoped", False, B)
    assert scoped.origin_scope == B
    assert scoped.summary.startswith(
        f"This server sees only a server-scoped UID (uid_1; scoped to this backend's address, {B}, "
        "as well, because another server you joined uses the same server id) and this device's id"
    )
    # global mode: one uid everywhere, as the member chose; nothing is scoped
    assert disclosure("uid_1", "d", "global", False, B).origin_scope is None
    assert disclosure_sentence("server_scoped", B) == (
        f"This server sees only a server-scoped UID (scoped to its backend, {B}) and proof."
    )
    assert disclosure_sentence("global", B) == "This server sees only a global UID and proof."
