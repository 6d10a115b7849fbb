"""Table-driven tests of the notification domain: mentions (D14), policy (7.6/7.7/D9), content
(7.6), quiet hours, and the counting engine (7.1, 7.5, D4, D5, D6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from services.core.contracts.chat import (
    AttachmentRef,
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChannelInfo,
    ChatMessage,
    MentionRef,
    ServerRecord,
    UserProfile,
)
from services.core.contracts.notify import (
    FocusArgs,
    QuietHours,
    ReadAckResult,
    ReadAckUpdated,
)
from services.notification.domain import (
    MAX_ENTRIES_PER_CHANNEL,
    Engine,
    MentionContext,
    PolicyInput,
    audience_tokens,
    decide,
    in_quiet_hours,
    is_mention,
    notification_body,
)

ME = "uid_1234abcd"
OTHER = "uid_feedbeef"
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
AUD = audience_tokens({})


def mref(type_: str, token: str, target: str = "") -> MentionRef:
    return MentionRef(type=type_, token=token, target_id=target)


# -- mentions ------------------------------------------------------------------------------------
MENTION_CASES = [
    # (id, body, mentions metadata, display name (consented) or None, audience, expected)
    ("uid token", f"hi @{ME}", None, None, AUD, True),
    ("uid without @ is not a mention", f"see {ME}", None, None, AUD, False),
    ("uid prefix of a longer token", f"see @{ME}5678", None, None, AUD, False),
    ("uid inside a word (e-mail)", f"mail x@{ME} now", None, None, AUD, False),
    ("uid followed by punctuation", f"@{ME}, look", None, None, AUD, True),
    ("uid at end after newline", f"look\n@{ME}", None, None, AUD, True),
    ("uid case differs", f"@{ME.upper()}", None, None, AUD, False),
    ("other uid", f"@{OTHER}", None, None, AUD, False),
    ("display name consented", "hey @Alice!", None, "Alice", AUD, True),
    ("display name case-insensitive", "hey @alice", None, "Alice", AUD, True),
    ("display name with space", "hey @Alice Smith.", None, "Alice Smith", AUD, True),
    ("display name not consented", "hey @Alice", None, None, AUD, False),
    ("display name as prefix", "hey @Alicea", None, "Alice", AUD, False),
    ("display name without @", "hey Alice", None, "Alice", AUD, False),
    ("@here", "@here standup", None, None, AUD, True),
    ("@channel", "ping @Channel", None, None, AUD, True),
    ("@everyone not listed", "@everyone hi", None, None, AUD, False),
    ("@everyone listed", "@everyone hi", None, None, audience_tokens({"mention_everyone": True}), True),
    ("@hereby is not @here", "@hereby decree", None, None, AUD, False),
    ("metadata user target", "hi @x", [mref("user", "@x", ME)], None, AUD, True),
    ("metadata user token", "hi", [mref("user", f"@{ME}")], None, AUD, True),
    ("metadata other user", f"hi @{ME}", [mref("user", "@x", OTHER)], None, AUD, False),
    ("metadata empty list wins over body", f"hi @{ME}", [], None, AUD, False),
    ("metadata channel @here", "x", [mref("channel", "@here", "here")], None, AUD, True),
    ("metadata channel @everyone unlisted", "x", [mref("channel", "@everyone")], None, AUD, False),
]


@pytest.mark.parametrize(
    ("body", "mentions", "name", "audience", "expected"),
    [c[1:] for c in MENTION_CASES],
    ids=[c[0] for c in MENTION_CASES],
)
def test_mentions(
    body: str, mentions: list[MentionRef] | None, name: str | None, audience: frozenset[str], expected: bool
) -> None:
    assert is_mention(body, mentions, MentionContext(ME, name, audience)) is expected


# -- policy --------------------------------------------------------------------------------------
POLICY_CASES = [
    ("plain message notifies", PolicyInput(), (True, "message")),
    ("mention notifies", PolicyInput(mention=True), (True, "mention")),
    ("own message never", PolicyInput(own=True, mention=True), (False, "own_message")),
    ("voice channel never", PolicyInput(text_channel=False), (False, "not_text_channel")),
    ("stale backlog never", PolicyInput(stale=True, mention=True), (False, "stale")),
    ("server muted", PolicyInput(server_muted=True, mention=True), (False, "server_muted")),
    ("channel muted", PolicyInput(channel_muted=True, mention=True), (False, "channel_muted")),
    ("server level nothing", PolicyInput(server_level="nothing", mention=True), (False, "level_nothing")),
    ("server level mentions, plain", PolicyInput(server_level="mentions"), (False, "level_mentions")),
    ("server level mentions, mention", PolicyInput(server_level="mentions", mention=True), (True, "mention")),
    (
        "channel level overrides server (all over nothing)",
        PolicyInput(server_level="nothing", channel_level="all"),
        (True, "message"),
    ),
    (
        "channel level overrides server (mentions over all)",
        PolicyInput(server_level="all", channel_level="mentions"),
        (False, "level_mentions"),
    ),
    ("focused active, plain", PolicyInput(focused_active=True), (False, "focused_active_channel")),
    ("focused active, mention", PolicyInput(focused_active=True, mention=True), (True, "mention")),
    ("dnd", PolicyInput(dnd=True, mention=True), (False, "dnd")),
    ("quiet hours", PolicyInput(quiet=True, mention=True), (False, "quiet_hours")),
]


@pytest.mark.parametrize(("p", "expected"), [c[1:] for c in POLICY_CASES], ids=[c[0] for c in POLICY_CASES])
def test_policy(p: PolicyInput, expected: tuple[bool, str]) -> None:
    assert decide(p) == expected


def att(n: int) -> list[AttachmentRef]:
    return [
        AttachmentRef(attachment_id=f"a{i}", file_name="a.png", content_type="image/png", bytes=1, url="u")
        for i in range(n)
    ]


BODY_CASES = [
    ("short text", "hello", 0, "hello"),
    ("trimmed", "  hello  ", 0, "hello"),
    ("exactly 120", "x" * 120, 0, "x" * 120),
    ("121 → 117 + ...", "y" * 121, 0, "y" * 117 + "..."),
    ("one image", "", 1, "Sent an image."),
    ("three attachments", "", 3, "Sent 3 attachments."),
    ("text wins over images", "look", 2, "look"),
    ("nothing", "   ", 0, "New message."),
]


@pytest.mark.parametrize(
    ("body", "n", "expected"), [c[1:] for c in BODY_CASES], ids=[c[0] for c in BODY_CASES]
)
def test_notification_body(body: str, n: int, expected: str) -> None:
    assert notification_body(body, att(n)) == expected


QUIET_CASES = [
    ("disabled", QuietHours(enabled=False), "UTC", "23:00", False),
    ("inside overnight window", QuietHours(enabled=True, start="22:00", end="07:00"), "UTC", "23:30", True),
    ("after midnight", QuietHours(enabled=True, start="22:00", end="07:00"), "UTC", "06:59", True),
    ("end is exclusive", QuietHours(enabled=True, start="22:00", end="07:00"), "UTC", "07:00", False),
    ("daytime outside", QuietHours(enabled=True, start="22:00", end="07:00"), "UTC", "12:00", False),
    ("same-day window", QuietHours(enabled=True, start="13:00", end="14:00"), "UTC", "13:15", True),
    ("empty window", QuietHours(enabled=True, start="13:00", end="13:00"), "UTC", "13:00", False),
    # 21:30 UTC is 22:30 in Berlin (winter, UTC+1): inside the member's 22:00-07:00.
    (
        "member's time zone",
        QuietHours(enabled=True, start="22:00", end="07:00"),
        "Europe/Berlin",
        "21:30",
        True,
    ),
    ("member's time zone, outside", QuietHours(enabled=True), "America/New_York", "23:30", False),
]


@pytest.mark.parametrize(
    ("quiet", "tz", "utc_hhmm", "expected"), [c[1:] for c in QUIET_CASES], ids=[c[0] for c in QUIET_CASES]
)
def test_quiet_hours(quiet: QuietHours, tz: str, utc_hhmm: str, expected: bool) -> None:
    hh, mm = map(int, utc_hhmm.split(":"))
    now = datetime(2026, 1, 15, hh, mm, tzinfo=UTC)
    assert in_quiet_hours(now, quiet, tz) is expected


# -- engine scenarios ----------------------------------------------------------------------------
@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class World:
    engine: Engine
    clock: Clock
    notes: list[str] = field(default_factory=list)  # "channel:title:body:mention"
    puts: list[tuple[str, str]] = field(default_factory=list)
    gets: list[str] = field(default_factory=list)
    seq: int = 0


def record(server: str = "s1", uid: str = ME, consent: bool | None = None) -> ServerRecord:
    return ServerRecord(
        server_id=server,
        base_url="http://x",
        display_name=server,
        icon_text="S",
        user_uid=uid,
        device_id="desktop_x",
        profile_consent=consent,
        joined_at=T0,
    )


def groups(*chans: tuple[str, str, int | None]) -> list[ChannelGroupInfo]:
    return [
        ChannelGroupInfo(
            id="g",
            label="G",
            kind="text",
            channels=[
                ChannelInfo(id=c, name=f"{c}-name", type=t, group_id="g", unread_count=u) for c, t, u in chans
            ],
        )
    ]


def new_world(read_acks: bool = False, consent: bool | None = None) -> World:
    clock = Clock()
    w = World(Engine(clock=clock), clock)
    w.engine.on_server_joined("m", record(consent=consent))
    features = {"read_acks": True} if read_acks else {}
    w.engine.on_capabilities("m", "s1", CapabilitySnapshot(server_name="S", features=features, fetched_at=T0))
    fx = w.engine.on_channels(
        "m", "s1", groups(("c1", "text", None), ("c2", "text", None), ("v1", "voice", None))
    )
    w.gets += [c for _, _, c in fx.ack_gets]
    return w


def step(w: World, action: str, *a: object) -> None:
    e = w.engine
    if action == "msg":  # channel, author, body[, mentions]
        w.seq += 1
        channel, author, body = a[0], a[1], a[2]
        mentions = a[3] if len(a) > 3 else None
        fx = e.on_message(
            "m",
            ChatMessage(
                id=f"msg{w.seq}",
                server_id="s1",
                channel_id=str(channel),
                author_uid=str(author),
                body=str(body),
                created_at=w.clock.now,
                mentions=mentions,
            ),
        )
    elif action == "focus":  # client, channel|None, focused, visible
        fx = e.focus(
            "m",
            FocusArgs(
                client_id=str(a[0]),
                server_id="s1" if a[1] else None,
                channel_id=a[1],
                focused=bool(a[2]),
                visible=bool(a[3]),
            ),
        )
    elif action == "read":  # channel|None[, message id]
        fx = e.mark_read("m", "s1", a[0], a[1] if len(a) > 1 else None)  # type: ignore[arg-type]
    elif action == "wait":  # seconds
        w.clock.now += timedelta(seconds=float(a[0]))  # type: ignore[arg-type]
        return
    elif action == "ack":  # channel, uid, message id, cursor
        fx = e.on_read_ack(
            "m",
            "s1",
            ReadAckUpdated(
                channel_id=str(a[0]),
                user_uid=str(a[1]),
                last_read_message_id=str(a[2]),
                cursor_index=a[3],
            ),
        )
    elif action == "ackresult":  # channel, message id, cursor, supported
        fx = e.on_read_ack_result(
            "m",
            ReadAckResult(
                server_id="s1",
                channel_id=str(a[0]),
                last_read_message_id=str(a[1]),
                cursor_index=a[2],
                supported=bool(a[3]),
            ),
        )
    elif action == "channels":  # (id, type, unread_count)...
        fx = e.on_channels("m", "s1", groups(*a))  # type: ignore[arg-type]
    elif action == "delete":
        fx = e.on_message_deleted("m", "s1", str(a[0]), str(a[1]))
    elif action == "mute":  # channel|None, muted[, minutes]
        duration = timedelta(minutes=float(a[2])) if len(a) > 2 else None  # type: ignore[arg-type]
        fx = e.set_mute("m", "s1", a[0], bool(a[1]), duration)  # type: ignore[arg-type]
    elif action == "expire":
        fx = e.expire_mutes()
    elif action == "level":
        fx = e.set_level("m", "s1", a[0], a[1])  # type: ignore[arg-type]
    elif action == "dnd":
        e.set_dnd("m", bool(a[0]))
        return
    elif action == "status":
        e.set_status("m", a[0])  # type: ignore[arg-type]
        return
    elif action == "quiet":  # start, end, tz
        e.set_quiet_hours("m", QuietHours(enabled=True, start=str(a[0]), end=str(a[1])), str(a[2]))
        return
    elif action == "profile":  # uid, name
        fx = e.on_profile("m", "s1", UserProfile(user_uid=str(a[0]), display_name=str(a[1])))
    else:
        raise AssertionError(action)
    for _, n in fx.notifications:
        w.notes.append(f"{n.channel_id}:{n.title}:{n.body}:{n.mention}")
        assert n.tag == f"openchat:s1:{n.channel_id}"
    w.puts += [(c, mid) for _, _, c, mid in fx.ack_puts]
    w.gets += [c for _, _, c in fx.ack_gets]


def counts(w: World) -> dict[str, tuple[int, int]]:
    res = w.engine.unread("m", "s1").servers[0]
    return {c.channel_id: (c.unread, c.mentions) for c in res.channels if c.unread or c.mentions}


Steps = list[tuple[object, ...]]
SCENARIOS: list[tuple[str, dict[str, object], Steps, dict[str, tuple[int, int]], list[str]]] = [
    # (id, world options, steps, expected non-zero counts, expected notifications)
    (
        "others' messages count and notify",
        {},
        [("msg", "c1", OTHER, "hi"), ("msg", "c1", OTHER, "again")],
        {"c1": (2, 0)},
        [f"c1:{OTHER} in #c1-name:hi:False", f"c1:{OTHER} in #c1-name:again:False"],
    ),
    (
        "own messages never count or notify (D5), and mark the channel read",
        {},
        [("msg", "c1", OTHER, "hi"), ("msg", "c1", ME, f"@{ME} me")],
        {},
        [f"c1:{OTHER} in #c1-name:hi:False"],
    ),
    ("voice channels never count", {}, [("msg", "v1", OTHER, "hi")], {}, []),
    (
        "title uses the author's display name",
        {},
        [("profile", OTHER, "Bob"), ("msg", "c2", OTHER, "yo")],
        {"c2": (1, 0)},
        ["c2:Bob in #c2-name:yo:False"],
    ),
    (
        "mention counts and notifies",
        {},
        [("msg", "c1", OTHER, f"hey @{ME}"), ("msg", "c1", OTHER, "@here all")],
        {"c1": (2, 2)},
        [f"c1:{OTHER} in #c1-name:hey @{ME}:True", f"c1:{OTHER} in #c1-name:@here all:True"],
    ),
    (
        "mention via metadata",
        {},
        [("msg", "c1", OTHER, "hey @x", [mref("user", "@x", ME)])],
        {"c1": (1, 1)},
        [f"c1:{OTHER} in #c1-name:hey @x:True"],
    ),
    (
        "display name mention only with consent",
        {"consent": True},
        [("profile", ME, "Zed"), ("msg", "c1", OTHER, "@zed hi")],
        {"c1": (1, 1)},
        [f"c1:{OTHER} in #c1-name:@zed hi:True"],
    ),
    (
        "display name without consent is not a mention",
        {"consent": False},
        [("profile", ME, "Zed"), ("msg", "c1", OTHER, "@zed hi")],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:@zed hi:False"],
    ),
    (
        "focused active channel: read at once, no notification for a non-mention (D4)",
        {},
        [("focus", "d1", "c1", True, True), ("msg", "c1", OTHER, "hi"), ("msg", "c2", OTHER, "x")],
        {"c2": (1, 0)},
        [f"c2:{OTHER} in #c2-name:x:False"],
    ),
    (
        "focused active channel: a mention still notifies but is not counted",
        {},
        [("focus", "d1", "c1", True, True), ("msg", "c1", OTHER, f"@{ME}")],
        {},
        [f"c1:{OTHER} in #c1-name:@{ME}:True"],
    ),
    (
        "blurred window counts",
        {},
        [("focus", "d1", "c1", False, True), ("msg", "c1", OTHER, "hi")],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:hi:False"],
    ),
    (
        "focused but hidden window counts",
        {},
        [("focus", "d1", "c1", True, False), ("msg", "c1", OTHER, "hi")],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:hi:False"],
    ),
    (
        "expired focus report counts",
        {},
        [("focus", "d1", "c1", True, True), ("wait", 200), ("msg", "c1", OTHER, "hi")],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:hi:False"],
    ),
    (
        "refocus clears the active channel (D4)",
        {},
        [
            ("focus", "d1", "c1", False, True),
            ("msg", "c1", OTHER, "a"),
            ("msg", "c1", OTHER, f"@{ME}"),
            ("msg", "c2", OTHER, "b"),
            ("focus", "d1", "c1", True, True),
        ],
        {"c2": (1, 0)},
        [
            f"c1:{OTHER} in #c1-name:a:False",
            f"c1:{OTHER} in #c1-name:@{ME}:True",
            f"c2:{OTHER} in #c2-name:b:False",
        ],
    ),
    (
        "a second desktop focused on the channel makes it read",
        {},
        [("focus", "d1", "c2", True, True), ("focus", "d2", "c1", True, True), ("msg", "c1", OTHER, "a")],
        {},
        [],
    ),
    (
        "mark channel read",
        {},
        [("msg", "c1", OTHER, "a"), ("msg", "c2", OTHER, "b"), ("read", "c1")],
        {"c2": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False", f"c2:{OTHER} in #c2-name:b:False"],
    ),
    (
        "mark channel read up to a message",
        {},
        [
            ("msg", "c1", OTHER, "a"),
            ("msg", "c1", OTHER, f"@{ME}"),
            ("msg", "c1", OTHER, "c"),
            ("read", "c1", "msg2"),
        ],
        {"c1": (1, 0)},
        [
            f"c1:{OTHER} in #c1-name:a:False",
            f"c1:{OTHER} in #c1-name:@{ME}:True",
            f"c1:{OTHER} in #c1-name:c:False",
        ],
    ),
    (
        "mark server read",
        {},
        [("mute", None, True), ("msg", "c1", OTHER, "a"), ("msg", "c2", OTHER, "b"), ("read", None)],
        {},
        [],
    ),
    (
        "muted server: counts, no notification",
        {},
        [("mute", None, True), ("msg", "c1", OTHER, f"@{ME}")],
        {"c1": (1, 1)},
        [],
    ),
    (
        "muted channel: neither counts nor notifies (issue 18), not even a mention",
        {},
        [("mute", "c1", True), ("msg", "c1", OTHER, "a"), ("msg", "c1", OTHER, f"@{ME}")],
        {},
        [],
    ),
    (
        "muting a channel clears its badge; others keep counting",
        {},
        [("msg", "c1", OTHER, "a"), ("msg", "c2", OTHER, "b"), ("mute", "c1", True)],
        {"c2": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False", f"c2:{OTHER} in #c2-name:b:False"],
    ),
    (
        "a muted channel ignores the server's unread seed",
        {},
        [("mute", "c9", True), ("channels", ("c9", "text", 3))],
        {},
        [],
    ),
    (
        "a timed mute holds until it is over, then the channel counts and notifies again",
        {},
        [
            ("mute", "c1", True, 15),
            ("wait", 14 * 60),
            ("msg", "c1", OTHER, "a"),
            ("wait", 61),
            ("msg", "c1", OTHER, "b"),
        ],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:b:False"],
    ),
    (
        "a timed server mute ends by itself",
        {},
        [("mute", None, True, 60), ("msg", "c1", OTHER, "a"), ("wait", 3601), ("msg", "c1", OTHER, "b")],
        {"c1": (2, 0)},
        [f"c1:{OTHER} in #c1-name:b:False"],
    ),
    (
        "status dnd silences, badges count; online notifies again",
        {},
        [
            ("status", "dnd"),
            ("msg", "c1", OTHER, f"@{ME}"),
            ("status", "online"),
            ("msg", "c1", OTHER, "b"),
        ],
        {"c1": (2, 1)},
        [f"c1:{OTHER} in #c1-name:b:False"],
    ),
    (
        "idle and invisible still notify",
        {},
        [("status", "idle"), ("msg", "c1", OTHER, "a"), ("status", "invisible"), ("msg", "c2", OTHER, "b")],
        {"c1": (1, 0), "c2": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False", f"c2:{OTHER} in #c2-name:b:False"],
    ),
    (
        "unmuted channel notifies again",
        {},
        [("mute", "c1", True), ("mute", "c1", False), ("msg", "c1", OTHER, "a")],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False"],
    ),
    (
        "level mentions on the server, all on a channel",
        {},
        [
            ("level", None, "mentions"),
            ("level", "c2", "all"),
            ("msg", "c1", OTHER, "a"),
            ("msg", "c2", OTHER, "b"),
        ],
        {"c1": (1, 0), "c2": (1, 0)},
        [f"c2:{OTHER} in #c2-name:b:False"],
    ),
    ("level nothing", {}, [("level", None, "nothing"), ("msg", "c1", OTHER, f"@{ME}")], {"c1": (1, 1)}, []),
    ("dnd suppresses, badges count", {}, [("dnd", True), ("msg", "c1", OTHER, f"@{ME}")], {"c1": (1, 1)}, []),
    (
        "quiet hours in the member's zone suppress",
        {},
        [("quiet", "12:30", "14:00", "Europe/Berlin"), ("msg", "c1", OTHER, "a")],  # 12:00 UTC = 13:00 Berlin
        {"c1": (1, 0)},
        [],
    ),
    (
        "quiet hours outside the window",
        {},
        [("quiet", "13:30", "14:00", "Europe/Berlin"), ("msg", "c1", OTHER, "a")],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False"],
    ),
    (
        "deleted message is no longer unread",
        {},
        [("msg", "c1", OTHER, "a"), ("msg", "c1", OTHER, f"@{ME}"), ("delete", "c1", "msg2")],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False", f"c1:{OTHER} in #c1-name:@{ME}:True"],
    ),
    (
        "server unread_count seeds a channel seen for the first time (D6)",
        {},
        [("channels", ("c9", "text", 3))],
        {"c9": (3, 0)},
        [],
    ),
    (
        "without read-acks the local count wins over a later server count",
        {},
        [("msg", "c1", OTHER, "a"), ("read", "c1"), ("channels", ("c1", "text", 7))],
        {},
        [f"c1:{OTHER} in #c1-name:a:False"],
    ),
    (
        "with read-acks the server count is honoured on every hydrate",
        {"read_acks": True},
        [("msg", "c1", OTHER, "a"), ("read", "c1"), ("channels", ("c1", "text", 2))],
        {"c1": (2, 0)},
        [f"c1:{OTHER} in #c1-name:a:False"],
    ),
    (
        "read-ack from another client of mine clears up to its message",
        {"read_acks": True},
        [("msg", "c1", OTHER, "a"), ("msg", "c1", OTHER, "b"), ("ack", "c1", ME, "msg1", 5)],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False", f"c1:{OTHER} in #c1-name:b:False"],
    ),
    (
        "read-ack of another uid is ignored",
        {"read_acks": True},
        [("msg", "c1", OTHER, "a"), ("ack", "c1", OTHER, "msg1", 5)],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False"],
    ),
    (
        "stale read-ack (lower cursor) is ignored",
        {"read_acks": True},
        [
            ("ackresult", "c1", "old", 9, True),
            ("msg", "c1", OTHER, "a"),
            ("ack", "c1", ME, "msg1", 3),
        ],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False"],
    ),
    (
        "GET read-ack answer past everything we hold clears the channel",
        {"read_acks": True},
        [("msg", "c1", OTHER, "a"), ("ackresult", "c1", "msg_unknown", 4, True)],
        {},
        [f"c1:{OTHER} in #c1-name:a:False"],
    ),
    (
        "unsupported read-ack answer changes nothing",
        {"read_acks": True},
        [("msg", "c1", OTHER, "a"), ("ackresult", "c1", "msg1", 4, False)],
        {"c1": (1, 0)},
        [f"c1:{OTHER} in #c1-name:a:False"],
    ),
]


@pytest.mark.parametrize(
    ("opts", "steps", "expected_counts", "expected_notes"),
    [s[1:] for s in SCENARIOS],
    ids=[s[0] for s in SCENARIOS],
)
def test_engine_scenarios(
    opts: dict[str, object],
    steps: Steps,
    expected_counts: dict[str, tuple[int, int]],
    expected_notes: list[str],
) -> None:
    w = new_world(**opts)  # type: ignore[arg-type]
    for s in steps:
        step(w, str(s[0]), *s[1:])
    assert counts(w) == expected_counts
    assert w.notes == expected_notes


def test_stale_message_is_measured_against_now() -> None:
    w = new_world()
    w.clock.now = T0 + timedelta(hours=1)
    fx = w.engine.on_message(
        "m",
        ChatMessage(id="old", server_id="s1", channel_id="c1", author_uid=OTHER, body="x", created_at=T0),
    )
    assert fx.notifications == [] and counts(w) == {"c1": (1, 0)}


def test_read_acks_drive_puts_and_gets_only_when_advertised() -> None:
    on, off = new_world(read_acks=True), new_world(read_acks=False)
    assert sorted(on.gets) == ["c1", "c2"]  # GET on hydrate, text channels only
    assert off.gets == []
    for w in (on, off):
        step(w, "msg", "c1", OTHER, "a")
        step(w, "read", "c1")
        step(w, "focus", "d1", "c2", True, True)
        step(w, "msg", "c2", OTHER, "b")
        step(w, "msg", "c2", ME, "mine")
    assert on.puts == [("c1", "msg1"), ("c2", "msg2"), ("c2", "msg3")]
    assert off.puts == []


def test_revisions_grow_and_unread_updated_reports_absolute_counts() -> None:
    w = new_world()
    r0 = w.engine.unread("m", "s1").servers[0].channels[0].revision
    step(w, "msg", "c1", OTHER, "a")
    step(w, "msg", "c1", OTHER, f"@{ME}")
    upd = w.engine.unread_updated("m", "s1", {"c1"})
    assert upd is not None and upd.unread == 2 and upd.mentions == 1
    assert [(c.channel_id, c.unread, c.mentions) for c in upd.channels] == [("c1", 2, 1)]
    assert upd.channels[0].revision == r0 + 2


def test_counts_exist_for_joined_server_before_any_channel_list() -> None:
    e = Engine(clock=Clock())
    e.on_server_joined("m", record("s7"))
    res = e.unread("m")
    assert [(s.server_id, s.unread, s.mentions, s.channels) for s in res.servers] == [("s7", 0, 0, [])]


def test_servers_and_members_are_isolated() -> None:
    e = Engine(clock=Clock())
    for member in ("m", "n"):
        for server in ("s1", "s2"):
            e.on_server_joined(member, record(server))
    e.on_message(
        "m", ChatMessage(id="x", server_id="s1", channel_id="ch_1", author_uid=OTHER, body="a", created_at=T0)
    )
    assert e.unread("m", "s1").servers[0].unread == 1
    assert e.unread("m", "s2").servers[0].unread == 0  # same channel id on another server (D3)
    assert e.unread("n", "s1").servers[0].unread == 0  # another member


def test_overflow_keeps_exact_counts() -> None:
    w = new_world()
    for i in range(MAX_ENTRIES_PER_CHANNEL + 5):
        step(w, "msg", "c1", OTHER, f"@{ME}" if i == 0 else "x")
    assert counts(w) == {"c1": (MAX_ENTRIES_PER_CHANNEL + 5, 1)}
    ch = w.engine.member("m").servers["s1"].channels["c1"]
    assert len(ch.entries) == MAX_ENTRIES_PER_CHANNEL
    step(w, "read", "c1")
    assert counts(w) == {}


def test_duplicate_message_is_counted_once() -> None:
    w = new_world()
    msg = ChatMessage(id="dup", server_id="s1", channel_id="c1", author_uid=OTHER, body="a", created_at=T0)
    w.engine.on_message("m", msg)
    fx = w.engine.on_message("m", msg)
    assert not fx.notifications and counts(w) == {"c1": (1, 0)}


def test_server_left_forgets_counts_and_prefs() -> None:
    w = new_world()
    step(w, "mute", None, True)
    step(w, "msg", "c1", OTHER, "a")
    w.engine.on_server_left("m", "s1")
    assert w.engine.unread("m").servers == []
    assert ("m", "s1") in w.engine.deleted_servers
    w.engine.on_server_joined("m", record())
    assert w.engine.prefs("m").servers[0].muted is False


def test_history_found_on_joining_is_not_unread() -> None:
    from datetime import UTC, datetime, timedelta

    from services.core.contracts.chat import ChannelGroupInfo, ChannelInfo, ChatMessage, ServerRecord
    from services.notification.domain import Engine

    joined = datetime(2026, 11, 28, 12, 0, 0, 500_000, tzinfo=UTC)
    engine = Engine(clock=lambda: joined + timedelta(minutes=1))
    record = ServerRecord(
        server_id="srv_a", base_url="http://a", display_name="A", icon_text="A",
        user_uid="uid_me", device_id="desktop_x", joined_at=joined,
    )  # fmt: skip
    engine.on_server_joined("alice", record)
    group = ChannelGroupInfo(
        id="g",
        label="g",
        kind="text",
        channels=[ChannelInfo(id="ch", name="general", type="text", group_id="g")],
    )
    engine.on_channels("alice", "srv_a", [group])

    def msg(mid: str, at: datetime) -> ChatMessage:
        return ChatMessage(
            id=mid, server_id="srv_a", channel_id="ch", author_uid="uid_bob", body="hi", created_at=at
        )

    old = engine.on_message("alice", msg("m_old", joined - timedelta(minutes=30)))
    assert old.notifications == []
    same_second = engine.on_message("alice", msg("m_same", joined.replace(microsecond=0)))
    assert len(same_second.notifications) == 1
    ch = engine.server("alice", "srv_a").channel("ch")
    assert ch.unread == 1


# -- issue 18: timed mutes, status, hide muted channels ---------------------------------------------
def test_timed_mute_expiry_turns_the_mute_off_and_reports_the_server() -> None:
    w = new_world()
    step(w, "mute", "c1", True, 60)
    step(w, "mute", None, True)  # an untimed server mute never expires
    prefs = w.engine.prefs("m").servers[0]
    assert prefs.channels[0].muted_until == T0 + timedelta(minutes=60)
    assert w.engine.next_mute_expiry() == T0 + timedelta(minutes=60)
    assert not w.engine.expire_mutes()  # not due yet
    w.clock.now += timedelta(minutes=60)
    fx = w.engine.expire_mutes()
    assert fx.prefs_changed == {("m", "s1")}
    prefs = w.engine.prefs("m").servers[0]
    assert prefs.channels == [] and prefs.muted is True and prefs.muted_until is None
    assert w.engine.next_mute_expiry() is None


def test_unmute_drops_the_end_and_dnd_follows_the_status() -> None:
    w = new_world()
    step(w, "mute", "c1", True, 15)
    step(w, "mute", "c1", False)
    assert w.engine.prefs("m").servers[0].channels == []
    e = w.engine
    fx = e.set_dnd("m", True)
    assert fx.member_prefs_changed == {"m"}
    assert (e.prefs("m").status, e.prefs("m").dnd) == ("dnd", True)
    e.set_status("m", "idle")
    assert (e.prefs("m").status, e.prefs("m").dnd) == ("idle", False)
    e.set_dnd("m", False)  # off keeps a status other than dnd
    assert e.prefs("m").status == "idle"
    e.set_dnd("m", True)
    e.set_dnd("m", False)
    assert e.prefs("m").status == "online"
    e.set_hide_muted("m", True)
    assert e.prefs("m").hide_muted_channels is True
    assert e.member("m").prefs.public().hide_muted_channels is True


def test_member_prefs_stored_before_the_status_read_dnd_as_status() -> None:
    from services.notification.domain import MemberPrefs

    assert MemberPrefs.model_validate_json('{"dnd": true}').status == "dnd"
    assert MemberPrefs.model_validate_json('{"dnd": false}').status == "online"
