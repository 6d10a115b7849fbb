"""Seed data of every devserver seed (``--seed``).

``public`` is the public backend's seed exactly (wire §3): ``srv_harbor`` + ``srv_testlab``, ten
channels, six messages at fixed offsets from the start time, static member lists.  ``harbor`` and
``testlab`` keep one of those servers; ``family`` is a small "Family" server whose channel ids
deliberately reuse ``ch_general`` (two instances side by side prove that a client keys channel
state by server); ``empty`` is one server with one empty text channel.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ENTRY_DEFAULTS = {
    "trust_state": "verified",
    "identity_handshake_strategy": "challenge_signature",
    "user_identifier_policy": "server_scoped",
}


@dataclass
class SeedServer:
    server_id: str
    display_name: str
    icon_text: str
    groups: list[dict[str, Any]]
    members: list[dict[str, str]]
    # channel id -> [(message id, author uid, body, minutes before start)]
    messages: dict[str, list[tuple[str, str, str, int]]] = field(default_factory=dict)
    description: str = ""
    banner_preset: str = ""


@dataclass
class Seed:
    servers: list[SeedServer]
    capabilities_server_id: str
    capabilities_server_name: str


def _group(gid: str, label: str, kind: str, channels: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "id": gid,
        "label": label,
        "kind": kind,
        "channels": [{"id": cid, "name": name, "type": ctype} for cid, name, ctype in channels],
    }


def _members(*rows: tuple[str, str, str]) -> list[dict[str, str]]:
    return [{"id": mid, "name": name, "status": status} for mid, name, status in rows]


def harbor() -> SeedServer:
    return SeedServer(
        server_id="srv_harbor",
        display_name="Harbor Guild",
        icon_text="HG",
        groups=[
            _group(
                "grp_general",
                "general",
                "text",
                [
                    ("ch_general", "general", "text"),
                    ("ch_design", "design", "text"),
                    ("ch_release", "release-notes", "text"),
                ],
            ),
            _group("grp_ops", "ops", "text", [("ch_outage", "outage-watch", "text")]),
            _group(
                "grp_voice",
                "Voice Channels",
                "voice",
                [("vc_general", "General Voice", "voice"), ("vc_party", "Party Chat", "voice")],
            ),
        ],
        members=_members(
            ("mem_1", "Lyra", "online"),
            ("mem_2", "Orin", "idle"),
            ("mem_3", "Mira", "online"),
            ("mem_4", "Calix", "dnd"),
        ),
        messages={
            "ch_general": [
                ("msg_seed_01", "uid_seed_1", "Welcome to OpenChat Harbor.", 30),
                ("msg_seed_02", "uid_seed_2", "Realtime messaging is enabled.", 24),
            ],
            "ch_design": [("msg_seed_11", "uid_seed_3", "Design channel ready for discussion.", 18)],
        },
        description="Core OpenChat workspace for day-to-day collaboration.",
        banner_preset="ocean",
    )


def testlab() -> SeedServer:
    return SeedServer(
        server_id="srv_testlab",
        display_name="TestLab Server",
        icon_text="TL",
        groups=[
            _group(
                "grp_test_text",
                "test boards",
                "text",
                [("tl_ch_general", "test-general", "text"), ("tl_ch_qa", "qa-playground", "text")],
            ),
            _group(
                "grp_test_voice",
                "Voice Channels",
                "voice",
                [("tl_vc_huddle", "Huddle Room", "voice"), ("tl_vc_pairing", "Pairing Booth", "voice")],
            ),
        ],
        members=_members(
            ("mem_t1", "Devon", "online"), ("mem_t2", "Rhea", "idle"), ("mem_t3", "Pax", "online")
        ),
        messages={
            "tl_ch_general": [
                ("msg_tl_01", "uid_tl_1", "TestLab server online.", 22),
                ("msg_tl_02", "uid_tl_2", "Use this channel for integration testing.", 15),
            ],
            "tl_ch_qa": [("msg_tl_11", "uid_tl_3", "QA board ready for smoke checks.", 9)],
        },
        description="Experimental server used for integration and QA checks.",
        banner_preset="slate",
    )


def family() -> SeedServer:
    return SeedServer(
        server_id="srv_family",
        display_name="Family",
        icon_text="FA",
        groups=[
            _group(
                "grp_general",
                "general",
                "text",
                [
                    ("ch_general", "general", "text"),
                    ("ch_photos", "photos", "text"),
                    ("ch_plans", "plans", "text"),
                ],
            ),
            _group("grp_voice", "Voice Channels", "voice", [("vc_family", "Family Call", "voice")]),
        ],
        members=_members(("mem_f1", "Mum", "online"), ("mem_f2", "Dad", "idle"), ("mem_f3", "Sam", "online")),
        messages={
            "ch_general": [
                ("msg_fam_01", "uid_mum", "Dinner at 7 on Sunday?", 45),
                ("msg_fam_02", "uid_dad", "I'll bring dessert.", 40),
            ],
            "ch_plans": [("msg_fam_11", "uid_sam", "Lake trip in June: who is in?", 20)],
        },
        description="Family chat.",
        banner_preset="sunset",
    )


def empty() -> SeedServer:
    return SeedServer(
        server_id="srv_empty",
        display_name="Empty Server",
        icon_text="ES",
        groups=[_group("grp_general", "general", "text", [("ch_general", "general", "text")])],
        members=[],
        description="",
        banner_preset="",
    )


def derive_icon_text(display_name: str, fallback: str = "") -> str:
    """Icon text from a display name: initials of the first two words, else its first two letters."""
    display_name = display_name.strip()
    if not display_name:
        fallback = fallback.strip().upper()
        return fallback[:2] if fallback else "SV"
    parts = display_name.split()
    if len(parts) >= 2:
        return (parts[0][0] + parts[1][0]).upper()
    return display_name.upper()[:2]


def build_seed(name: str, server_id: str | None = None, display_name: str | None = None) -> Seed:
    """The seed ``name`` with the single server's id / display name overridden when given."""
    if name == "public":
        if server_id is not None:
            raise ValueError("--server-id needs a single-server seed (harbor, testlab, family or empty)")
        return Seed([harbor(), testlab()], "srv_harbor", display_name or "OpenChat Harbor")
    builders = {"harbor": harbor, "testlab": testlab, "family": family, "empty": empty}
    if name not in builders:
        raise ValueError(f"unknown seed {name!r}")
    server = builders[name]()
    caps_name = {"harbor": "OpenChat Harbor"}.get(name, server.display_name)
    if server_id:
        server.server_id = server_id
    if display_name:
        server.display_name = display_name
        server.icon_text = derive_icon_text(display_name, server.icon_text)
        caps_name = display_name
    return Seed([server], server.server_id, caps_name)
