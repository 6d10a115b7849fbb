"""The desktop's search state (``ui/state/search.py``, issue 17), pure: no display, no bus.

The panel (query, scope, stale answers, grouping and highlighted segments) and the jump plan
(compact pages first, then older pages from the stack, context above the message, the bounds).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.core.contracts.chat import ChatMessage
from services.core.contracts.search import SearchHit, SearchResult, Span
from services.core.search_query import snippet
from ui.state.search import (
    CONTEXT,
    JUMP_MAX_PAGES,
    FetchOlder,
    Found,
    JumpPlan,
    Missing,
    SearchPanel,
    as_scope,
    format_hit_time,
    segments,
)
from ui.state.store import PAGE, MessageLog

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def msg(i: int, ch: str = "ch_general") -> ChatMessage:
    return ChatMessage(
        id=f"msg_{i:06d}",
        server_id="srv_a",
        channel_id=ch,
        author_uid="uid_bob",
        body=f"message {i}",
        created_at=T0 + timedelta(seconds=i),
    )


def hit(sid: str, ch: str, mid: str, body: str, query: str, at: datetime = T0) -> SearchHit:
    from services.core.search_query import parse_query

    snip = snippet(body, parse_query(query).terms)
    return SearchHit(
        server_id=sid,
        channel_id=ch,
        message_id=mid,
        author_uid="uid_bob",
        created_at=at,
        snippet=snip.marked,
        excerpt=snip.excerpt,
        spans=[Span(start=s, end=e) for s, e in snip.spans],
    )


def result(*hits: SearchHit, caught_up: bool = True) -> SearchResult:
    return SearchResult(hits=list(hits), has_more=False, indexed_seq=10, caught_up=caught_up)


# -- the panel ----------------------------------------------------------------------------------------
def test_scope_decides_server_and_channel_of_the_request() -> None:
    p = SearchPanel()
    p.set_query('"lake trip" pack* from:uid_bob in:ch_plans')
    cmd = p.submit("srv_a", "ch_general")
    assert cmd is not None and p.status == "searching"
    assert (cmd.args.server_id, cmd.args.channel_id) == (None, None)
    assert cmd.args.query == '"lake trip" pack* from:uid_bob in:ch_plans'  # the syntax goes as typed
    p.set_scope("server")
    cmd = p.submit("srv_a", "ch_general")
    assert cmd is not None and (cmd.args.server_id, cmd.args.channel_id) == ("srv_a", None)
    p.set_scope("channel")
    cmd = p.submit("srv_a", "ch_general")
    assert cmd is not None and (cmd.args.server_id, cmd.args.channel_id) == ("srv_a", "ch_general")
    assert p.submit(None, None) is None and "Open a channel" in p.error


def test_bad_query_is_refused_before_any_request() -> None:
    p = SearchPanel()
    p.set_query("from:")
    assert p.submit("srv_a", None) is None
    assert p.status == "error" and "from: needs a value" in p.summary()
    p.set_query("   ")
    assert p.submit("srv_a", None) is None
    assert p.summary().startswith("Words")  # back to the hint (status idle)


def test_stale_answer_is_dropped() -> None:
    p = SearchPanel()
    p.set_query("lake")
    first = p.submit(None, None)
    p.set_query("lake trip")
    second = p.submit(None, None)
    assert first is not None and second is not None
    old = hit("srv_a", "ch_general", "m1", "the lake", "lake")
    assert not p.answered(first.request, result(old), None)
    assert p.status == "searching" and p.hits == []
    new = hit("srv_a", "ch_general", "m2", "the lake trip", "lake trip")
    assert p.answered(second.request, result(new, caught_up=False), None)
    assert [h.message_id for h in p.hits] == ["m2"]
    assert p.summary() == "1 result (the index is still catching up: results may be incomplete)"


def test_error_answer_is_shown() -> None:
    p = SearchPanel()
    p.set_query("lake")
    req = p.submit(None, None)
    assert req is not None
    p.answered(req.request, None, "search_timeout: too broad")
    assert p.status == "error" and p.summary() == "Search failed: search_timeout: too broad"


def test_groups_by_server_and_channel_newest_first_with_marked_segments() -> None:
    p = SearchPanel()
    p.set_query("token")
    req = p.submit(None, None)
    assert req is not None
    hits = [
        hit("srv_a", "ch_general", "m3", "while away: token!", "token", T0 + timedelta(3)),
        hit("srv_b", "ch_design", "m2", "token sketches are up", "token", T0 + timedelta(2)),
        hit("srv_a", "ch_general", "m1", "pack the token for the lake", "token", T0 + timedelta(1)),
    ]
    p.answered(req.request, result(*hits), None)
    groups = p.groups(
        lambda sid: {"srv_a": "Family", "srv_b": "Harbor"}[sid],
        lambda sid, ch: ch.removeprefix("ch_"),
        lambda sid, uid: "Bob",
        T0 + timedelta(3),
    )
    assert [(g.title, [r.hit.message_id for r in g.hits]) for g in groups] == [
        ("Family / # general", ["m3", "m1"]),
        ("Harbor / # design", ["m2"]),
    ]
    assert groups[0].hits[0].segments == (("while away: ", False), ("token", True), ("!", False))
    assert groups[1].hits[0].segments == (("token", True), (" sketches are up", False))
    assert groups[0].hits[0].author == "Bob"


def test_segments_of_cjk_match() -> None:
    h = hit("srv_a", "ch_general", "m1", "私は東京都に住んでいます", "東京")
    assert segments(h) == (("私は", False), ("東京", True), ("都に住んでいます", False))


def test_deleted_message_and_left_server_leave_the_results() -> None:
    p = SearchPanel()
    p.set_query("token")
    req = p.submit(None, None)
    assert req is not None
    p.answered(
        req.request,
        result(
            hit("srv_a", "ch_general", "m1", "token", "token"),
            hit("srv_b", "ch_general", "m2", "token", "token"),
            hit("srv_b", "ch_general", "m3", "token", "token"),
        ),
        None,
    )
    v = p.version
    p.drop_message("srv_a", "m1")
    assert [h.message_id for h in p.hits] == ["m2", "m3"] and p.version > v
    p.drop_message("srv_a", "m2")  # another server's id: kept
    assert len(p.hits) == 2
    p.drop_server("srv_b")
    assert p.hits == []


def test_scope_names_and_time_labels() -> None:
    assert as_scope("channel") == "channel" and as_scope("everything") is None
    now = datetime(2026, 11, 5, 15, 0, tzinfo=UTC)
    assert format_hit_time(now - timedelta(minutes=5), now).startswith("Today at ")
    assert format_hit_time(datetime(2019, 1, 2, 3, 4, tzinfo=UTC), now).startswith("2019-01-0")


# -- the jump -----------------------------------------------------------------------------------------
def plan_for(i: int) -> JumpPlan:
    m = msg(i)
    return JumpPlan("srv_a", "ch_general", m.id, m.created_at)


def test_jump_finds_a_message_in_the_window() -> None:
    log = MessageLog(msg(i) for i in range(100))
    plan = plan_for(60)
    assert plan.step(log, has_more=True) == Found()
    assert plan.pages == 0


def test_jump_unpacks_compact_pages_before_asking_the_stack() -> None:
    log = MessageLog(msg(i) for i in range(3 * PAGE))
    log.trim(len(log) - 10, len(log), following=True)  # spill older pages, as while following
    assert log.older and log.find(msg(5).id) is None
    plan = plan_for(5 + CONTEXT)
    assert plan.step(log, has_more=False) == Found()
    assert log.find(msg(5 + CONTEXT).id) is not None and plan.pages == 0


def test_jump_fetches_older_pages_then_context() -> None:
    log = MessageLog(msg(i) for i in range(900, 1000))
    plan = plan_for(500)
    step = plan.step(log, has_more=True)
    assert step == FetchOlder(msg(900).id)
    log.prepend(msg(i) for i in range(700, 900))
    assert plan.step(log, has_more=True) == FetchOlder(msg(700).id)
    log.prepend(msg(i) for i in range(495, 700))  # found, but only 5 messages above it
    assert plan.step(log, has_more=True) == FetchOlder(msg(495).id)  # one page of context
    log.prepend(msg(i) for i in range(295, 495))
    assert plan.step(log, has_more=True) == Found()
    assert plan.pages == 3


def test_jump_with_nothing_loaded_asks_for_the_newest_page() -> None:
    assert plan_for(3).step(MessageLog(), has_more=True) == FetchOlder(None)


def test_jump_to_a_deleted_message_stops() -> None:
    log = MessageLog(msg(i) for i in range(0, 100) if i != 50)
    step = plan_for(50).step(log, has_more=True)
    assert isinstance(step, Missing) and "deleted" in step.reason
    short = MessageLog(msg(i) for i in range(60, 100))
    step = plan_for(50).step(short, has_more=False)
    assert isinstance(step, Missing) and "no longer" in step.reason


def test_jump_is_bounded() -> None:
    log = MessageLog(msg(i) for i in range(100_000, 100_010))
    plan = plan_for(1)
    for _ in range(JUMP_MAX_PAGES):
        assert isinstance(plan.step(log, has_more=True), FetchOlder)
    step = plan.step(log, has_more=True)
    assert isinstance(step, Missing) and "messages back" in step.reason
