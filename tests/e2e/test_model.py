"""The pure view model, markdown-lite and composer (no display needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.core.contracts.chat import (
    ChannelsUpdated,
    ConnectionState,
    MentionRef,
    MessageCreated,
    ReplyRef,
    Typing,
)
from testkit import fakes
from ui.markdown import parse, parse_inline, safe_url
from ui.state.composer import Composer
from ui.state.model import ViewModel, fuzzy_score, header_time, typing_label


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def vm(clock: Clock | None = None) -> ViewModel:
    m = ViewModel(clock=clock or Clock())
    m.apply_snapshot(fakes.snapshot(seq=10))
    m.set_stack_online(True)
    return m


def created(
    mid: str, author: str, body: str, *, sid: str = "srv_testlab", ch: str = "ch_qa", **kw: object
) -> dict[str, Any]:
    m = fakes.msg(sid, ch, mid, author, body, fakes.NOW, **kw)  # type: ignore[arg-type]
    return fakes.event("message.created", sid, MessageCreated(message=m), f"msg:{mid}", ch)


def test_snapshot_selects_first_text_channel() -> None:
    m = vm()
    assert m.active_server == "srv_testlab"
    assert m.channel_id == "ch_general"
    assert [s for s in m.order] == ["srv_testlab", "srv_harbor"]
    assert m.build_label() == "build main · a5ab8f8885bc"


def test_events_apply_once_in_order() -> None:
    m = vm()
    assert m.apply_event(11, created("x1", "uid_other", "one"))
    assert not m.apply_event(11, created("x1", "uid_other", "one"))  # duplicate seq
    assert not m.apply_event(5, created("x0", "uid_other", "old"))  # older than the snapshot
    assert m.apply_event(12, created("x2", "uid_other", "two"))
    assert [x.id for x in m.messages("srv_testlab", "ch_qa")] == ["x1", "x2"]
    # the same message again under a new seq (replay) is de-duplicated by id
    assert m.apply_event(13, created("x2", "uid_other", "two"))
    assert len(m.messages("srv_testlab", "ch_qa")) == 2


def test_grouping_and_dates() -> None:
    m = vm()
    rows = m.rows()
    by_id = {r.message.id: r for r in rows}
    assert not by_id["m3"].compact and by_id["m4"].compact and by_id["m5"].compact
    assert not by_id["m6"].compact  # a reply is never compact
    assert by_id["m1"].time_text.startswith("Yesterday at ")
    # m3 is half an hour old: "Today at", or "Yesterday at" in the first half hour after midnight
    m3_day = by_id["m3"].message.created_at.astimezone().date()
    today = datetime.now().astimezone().date()
    assert by_id["m3"].time_text.startswith("Today at " if m3_day == today else "Yesterday at ")
    assert by_id["m6"].quote is not None and by_id["m6"].quote.startswith("@Vinnie Whats going on")
    # 6-minute gap → new header; older than yesterday → a date
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    old = now - timedelta(days=3)
    assert "at" not in header_time(old, now) and old.astimezone().strftime("%x") in header_time(old, now)


def test_six_minute_gap_starts_a_group() -> None:
    m = vm()
    base = fakes.NOW
    for i, minutes in enumerate([0, 4, 10]):
        msg = fakes.msg("srv_testlab", "ch_qa", f"g{i}", "uid_a", f"m{i}", base + timedelta(minutes=minutes))
        m.add_message(msg)
    rows = m.rows("srv_testlab", "ch_qa")
    assert [r.compact for r in rows] == [False, True, False]


def test_unread_mentions_and_own_messages() -> None:
    m = vm()
    m.apply_event(11, created("u1", "uid_other", "hello"))  # ch_qa is not active
    assert m.channel_badge("srv_testlab", "ch_qa") == ("1", False)
    m.apply_event(12, created("u2", fakes.ME_TL, "my own from another device"))  # D5
    assert m.channel_badge("srv_testlab", "ch_qa") == ("1", False)
    m.apply_event(13, created("u3", "uid_other", "see uid_2c203bed"))  # D14: no @, no mention
    assert m.servers["srv_testlab"].mentions.get("ch_qa", 0) == 0
    m.apply_event(14, created("u4", "uid_other", "hey @uid_2c203bed look"))
    m.apply_event(15, created("u5", "uid_other", "@here standup"))
    mentions = [MentionRef(type="user", token="@x", target_id=fakes.ME_TL)]
    m.apply_event(16, created("u6", "uid_other", "pill", mentions=mentions))
    assert m.servers["srv_testlab"].mentions["ch_qa"] == 3
    assert m.rail_badge("srv_testlab") == ("3", True)
    m.select_channel("ch_qa")
    assert m.channel_badge("srv_testlab", "ch_qa") == ("", False)
    # D4: unfocused → counts; regaining focus clears the active channel
    m.set_focus(False)
    m.apply_event(17, created("u7", "uid_other", "while away"))
    assert m.channel_badge("srv_testlab", "ch_qa") == ("1", False)
    m.set_focus(True)
    assert m.channel_badge("srv_testlab", "ch_qa") == ("", False)


def test_badges_cap_at_99() -> None:
    m = vm()
    for i in range(120):
        m.apply_event(100 + i, created(f"c{i}", "uid_other", "x", sid="srv_harbor", ch="ch_ops"))
    assert m.rail_badge("srv_harbor") == ("99+", False)
    assert m.channel_badge("srv_harbor", "ch_ops") == ("120", False)  # channel unread is not capped


def test_typing_labels_and_expiry() -> None:
    clock = Clock()
    m = vm(clock)
    assert typing_label(["A"]) == "A is typing..."
    assert typing_label(["A", "B"]) == "A and B are typing..."
    assert typing_label(["A", "B", "C"]) == "A, B, and C are typing..."
    assert typing_label(list("ABCDEFG")) == "A and B plus 5 others are typing..."
    ev = fakes.event(
        "typing", "srv_testlab", Typing(channel_id="ch_general", user_uid="uid_tl_1", is_typing=True)
    )
    m.apply_event(11, ev)
    own = fakes.event(
        "typing", "srv_testlab", Typing(channel_id="ch_general", user_uid=fakes.ME_TL, is_typing=True)
    )
    m.apply_event(12, own)
    assert m.typing_text() == "User tl_1 is typing..."
    clock.t += 6.1
    m.tick()
    assert m.typing_text() == ""


def test_chip_states() -> None:
    m = vm()
    assert m.chip().label == "Live"
    retry = datetime.now(UTC) + timedelta(seconds=4.2)
    st = ConnectionState(state="reconnecting", attempt=2, next_retry_at=retry)
    m.apply_event(11, fakes.event("server.connection", "srv_testlab", st))
    chip = m.chip()
    assert (
        chip.label == "Reconnecting in 5s" and chip.tooltip == "Realtime disconnected. Reconnecting in 5s..."
    )
    off = ConnectionState(state="offline", reason="connection refused", next_retry_at=retry)
    m.apply_event(12, fakes.event("server.connection", "srv_testlab", off))
    assert m.chip().label == "Offline" and m.chip().tooltip == "connection refused"
    assert any(
        b.key == "offline:srv_testlab" and "TestLab Server is unreachable" in b.text
        for b in m.visible_banners()
    )
    m.set_stack_online(False, "cannot reach the home stack")
    assert m.chip().label == "Offline" and m.read_only
    assert any("Home stack unreachable" in b.text for b in m.visible_banners())


def test_navigation_and_quick_switcher() -> None:
    m = vm()
    assert m.move_channel(1) and m.channel_id == "ch_qa"
    assert m.move_channel(1) and m.channel_id == "ch_general"  # wraps, skips voice
    assert m.move_server(1) and m.active_server == "srv_harbor"
    assert m.move_server(1) and m.active_server == "srv_testlab"
    m.apply_event(11, created("n1", "uid_other", "x", sid="srv_harbor", ch="ch_ops"))
    assert m.move_channel(1, unread_only=True)
    assert (m.active_server, m.channel_id) == ("srv_harbor", "ch_ops")
    assert m.active_channel["srv_testlab"] == "ch_general"  # remembered per server
    items = m.quick_switch("qa")
    assert items[0].channel_id == "ch_qa"
    assert fuzzy_score("tgn", "test-general") is not None and fuzzy_score("zz", "test-general") is None
    m.choose(items[0])
    assert (m.active_server, m.channel_id) == ("srv_testlab", "ch_qa")


def test_collapse_filter_and_channel_updates() -> None:
    m = vm()
    m.toggle_collapsed("grp_voice")
    groups = dict((g.id, c) for g, c in m.visible_channels())
    assert groups["grp_voice"] == []
    m.set_filter("QA")
    assert [(g.id, [c.id for c in cs]) for g, cs in m.visible_channels()] == [("grp_text", ["ch_qa"])]
    # equal channel ids on two servers never mix (D3)
    assert m.messages("srv_harbor", "ch_general")[0].id == "h1"
    upd = ChannelsUpdated(groups=fakes.harbor_view().groups[:1])
    m.apply_event(11, fakes.event("channels.updated", "srv_testlab", upd))
    assert m.channel_id == "ch_general"


def test_server_left_and_joined() -> None:
    m = vm()
    m.apply_event(11, fakes.event("server.left", "srv_testlab", {"server_id": "srv_testlab"}))
    assert m.order == ["srv_harbor"] and m.active_server == "srv_harbor"
    rec = fakes.record("srv_new", "New Place", "NP", "uid_n")
    m.apply_event(12, fakes.event("server.joined", "srv_new", {"server": rec.model_dump(mode="json")}))
    assert m.order == ["srv_harbor", "srv_new"]


def test_reply_unavailable_and_snapshot_roundtrip(tmp_path: Path) -> None:
    m = vm()
    gone = ReplyRef(message_id="nope", is_unavailable=True)
    m.apply_event(11, created("r1", "uid_other", "re", ch="ch_general", reply_to=gone))
    row = m.rows()[-1]
    assert row.quote == "Original message unavailable"
    snap = m.to_snapshot()
    m2 = ViewModel()
    m2.apply_snapshot(snap, from_cache=True)
    assert m2.last_seq == 11 and len(m2.messages("srv_testlab", "ch_general")) == len(m.messages())


# -- markdown-lite -----------------------------------------------------------------------------
def test_markdown_inline_styles() -> None:
    spans = parse_inline("**b** _i_ ~~s~~ `c` :fire:")
    styled = {(s.text, s.bold, s.italic, s.strike, s.code) for s in spans}
    assert ("b", True, False, False, False) in styled
    assert ("i", False, True, False, False) in styled
    assert ("s", False, False, True, False) in styled
    assert ("c", False, False, False, True) in styled
    assert any("🔥" in s.text for s in spans)


@pytest.mark.parametrize(
    "text",
    [
        "<img src=x onerror=alert(1)>",
        "[x](javascript:alert(1))",
        "<javascript:alert(1)>",
        "![a](data:image/png;base64,xx)",
    ],
)
def test_markdown_never_links_unsafe(text: str) -> None:
    spans = [s for b in parse(text) for s in b.spans]
    assert all(s.url is None for s in spans)
    assert "".join(s.text for s in spans).strip()  # shown literally


def test_markdown_links_and_blocks() -> None:
    spans = parse_inline("see https://example.org/a. and [site](https://x.test) <http://y.test>")
    assert [s.url for s in spans if s.url] == ["https://example.org/a", "https://x.test", "http://y.test"]
    blocks = parse("# Title\n> quoted\n- one\n  - nested\n1. first\n```py\ncode\n```\n---\ntext")
    kinds = [b.kind for b in blocks]
    assert kinds == [
        "heading",
        "quote",
        "list_item",
        "list_item",
        "list_item",
        "code",
        "divider",
        "paragraph",
    ]
    assert blocks[3].level == 1 and blocks[5].lang == "PY"
    assert parse("```\nunclosed")[0].kind == "paragraph"
    assert safe_url("javascript:alert(1)") is None and safe_url("https://ok.test/x") == "https://ok.test/x"


# -- composer ------------------------------------------------------------------------------------
def test_composer_typing_heartbeat_and_limits(tmp_path: Path) -> None:
    clock = Clock()
    c = Composer(clock=clock)
    assert c.on_draft("h") is True
    clock.t += 1
    assert c.on_draft("he") is None
    clock.t += 2
    assert c.on_draft("hel") is True  # again after 2.5 s
    assert c.on_draft("") is False
    c.draft = "hello world!"
    assert c.build("s", "c", max_message=10, max_upload=100) is None
    assert c.error == "Message is too large. Max 10 B."
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG" + b"0" * 200)
    assert c.add_files([tmp_path / "x.txt"], 1000) == "Paste or choose an image file."
    assert c.add_files([png], 100).startswith("Image is too large. Max 100 B")
    assert c.add_files([png] * 5, 10_000) == "Only the first 4 images were added."
    assert len(c.attachments) == 4
    assert c.add_files([png], 10_000) == "Up to 4 images per message."
    c.draft = "ok"
    assert c.build("s", "c", max_message=1000, max_upload=500) is None
    assert c.error.startswith("Attachments are too large together.")
    c.set_reply("m1", "Vinnie", "uid_2c203bed")
    args = c.build("s", "c", max_message=10_000, max_upload=10_000)
    assert args is not None and args.reply_to == "m1" and args.body.startswith("@uid_2c203bed ")
    assert len(args.images) == 4


def test_plain_line_fast_path_equals_the_parser() -> None:
    """``parse`` skips the general parser for one plain line: same blocks on every input the
    shortcut takes (random lines over an alphabet rich in markup), and the shortcut is taken."""
    import random

    from ui import fonts
    from ui.markdown import _parse, _plain_line, parse

    rng = random.Random(7)
    alphabet = [*"ab cd12.-+)*_~`[]()<>#:!\\/\n\t", "http://x.y", "HTTPS://", "ö", "😀", "中", " - "]
    taken = 0
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        fast = _plain_line(text)
        if fast is not None:
            taken += 1
            assert fast == _parse(text), repr(text)
        assert parse(text) == _parse(text), repr(text)
        assert fonts.has_emoji(text) == any(fonts.script_of(c) for c in text), repr(text)
    assert taken > 1_000
