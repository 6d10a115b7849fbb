"""The search query syntax, CJK/Hangul segmentation and highlighting (pure), checked against a
real SQLite FTS5 table where the meaning of an expression matters."""

from __future__ import annotations

import sqlite3

import pytest

from services.core.search_query import (
    MAX_QUERY_CHARS,
    QueryError,
    Scope,
    Term,
    parse_query,
    segment,
    snippet,
    to_fts5,
)

DOCS = {
    1: "Hello world, the chat is open",
    2: "chatter about the café on Friday",
    3: "私は東京都に住んでいます",
    4: "한국어를 공부합니다",
    5: 'a "quoted" NEAR(x y) OR text: col:umn ^start',
    6: "京都の夏",
    7: "prefix matching: preview, prepare",
}


@pytest.fixture
def fts() -> sqlite3.Connection:
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE VIRTUAL TABLE f USING fts5(body, content='', tokenize='unicode61 remove_diacritics 2')"
    )
    for rowid, body in DOCS.items():
        db.execute("INSERT INTO f(rowid, body) VALUES (?, ?)", (rowid, segment(body)))
    return db


def hits(db: sqlite3.Connection, text: str) -> set[int]:
    expr = to_fts5(parse_query(text).terms)
    return {r[0] for r in db.execute("SELECT rowid FROM f WHERE body MATCH ?", (expr,))}


def test_words_phrases_prefixes_and_filters_are_parsed() -> None:
    q = parse_query('hello "big world" pre* from:uid_bob in:general in:srv_a/ in:srv_b/random')
    assert q.terms == (Term("hello"), Term("big world", phrase=True), Term("pre", prefix=True))
    assert q.authors == ("uid_bob",)
    assert q.scopes == (Scope(None, "general"), Scope("srv_a", None), Scope("srv_b", "random"))


def test_an_unclosed_quote_runs_to_the_end_and_a_quoted_filter_is_a_phrase() -> None:
    q = parse_query('"from:bob is here')
    assert q.terms == (Term("from:bob is here", phrase=True),) and q.authors == ()


@pytest.mark.parametrize(
    ("text", "why"),
    [("", "nothing"), ("   !!! ", "nothing"), ("from:", "needs a value"), ("in:/general", "server")],
)
def test_unusable_queries_are_refused(text: str, why: str) -> None:
    with pytest.raises(QueryError, match=why):
        parse_query(text)


def test_bounds() -> None:
    with pytest.raises(QueryError, match="longer"):
        parse_query("a" * (MAX_QUERY_CHARS + 1))
    with pytest.raises(QueryError, match="at most"):
        parse_query(" ".join(f"w{i}" for i in range(17)))
    with pytest.raises(QueryError, match="control"):
        parse_query("a\x00b")


def test_all_words_must_match_whole_tokens_case_and_diacritics_ignored(fts: sqlite3.Connection) -> None:
    assert hits(fts, "chat") == {1}  # not "chatter"
    assert hits(fts, "CHAT open") == {1}
    assert hits(fts, "chat friday") == set()
    assert hits(fts, "cafe") == {2}
    assert hits(fts, "chat*") == {1, 2}


def test_phrases_need_adjacent_tokens_in_order(fts: sqlite3.Connection) -> None:
    assert hits(fts, '"hello world"') == {1}
    assert hits(fts, '"world hello"') == set()
    assert hits(fts, '"prefix match"*') == {7}


@pytest.mark.parametrize(
    "text",
    ["NEAR(x y)", "OR", "text: col:umn", "^start", '"quoted"', 'a" OR "1', "col:umn*", "AND NOT", "x)", "(x"],
)
def test_fts5_syntax_is_always_literal_text(fts: sqlite3.Connection, text: str) -> None:
    # never a syntax error, never an operator: each of these only finds the document containing it
    assert hits(fts, text) <= {5}


def test_operators_are_searched_as_words(fts: sqlite3.Connection) -> None:
    assert hits(fts, "NEAR OR") == {5}
    assert hits(fts, "hello OR chatter") == set()  # "OR" is a word that must match, not an operator


def test_japanese_words_inside_unspaced_text_are_found(fts: sqlite3.Connection) -> None:
    assert hits(fts, "東京") == {3}
    assert hits(fts, "東京都") == {3}
    assert hits(fts, "京都") == {3, 6}  # inside 東京都, and on its own
    assert hits(fts, "住んで") == {3}
    assert hits(fts, "都") == {3, 6}  # one character: a prefix of the bigrams
    assert hits(fts, "大阪") == set()


def test_korean_stems_with_particles_attached_are_found(fts: sqlite3.Connection) -> None:
    assert hits(fts, "한국어") == {4}  # written 한국어를 (with the object particle)
    assert hits(fts, "공부") == {4}
    assert hits(fts, "영어") == set()


def test_a_cjk_run_followed_by_more_of_the_phrase() -> None:
    db = sqlite3.connect(":memory:")
    db.execute(
        "CREATE VIRTUAL TABLE f USING fts5(body, content='', tokenize='unicode61 remove_diacritics 2')"
    )
    db.execute("INSERT INTO f(rowid, body) VALUES (1, ?)", (segment("東京都 abc tokyo"),))
    for text in ('"京都 abc"', '"都 abc"', '"abc tokyo"', "東京都abc"):
        expr = to_fts5(parse_query(text).terms)
        assert db.execute("SELECT rowid FROM f WHERE body MATCH ?", (expr,)).fetchall() == [(1,)], text


def test_segmentation_is_bounded_and_leaves_latin_text_alone() -> None:
    assert segment("plain text") == "plain text"
    assert segment("\uff48\uff45\uff4c\uff4c\uff4f") == "hello"  # fullwidth letters: NFKC
    assert segment("東京都").split() == ["東京", "京都", "都"]
    assert len(segment("x" * 10_000)) == 4000


def test_snippet_marks_every_match_and_stays_bounded() -> None:
    q = parse_query('cafe "big world" pre* 東京')
    s = snippet("Big World: the Café is preparing 東京都 things", q.terms)
    assert s.marked == "«Big» «World»: the «Café» is «preparing» «東京»都 things"
    assert [s.excerpt[a:b] for a, b in s.spans] == ["Big", "World", "Café", "preparing", "東京"]
    long = "word " * 200 + "needle" + " word" * 200
    cut = snippet(long, parse_query("needle").terms, width=80)
    assert "«needle»" in cut.marked and cut.excerpt.startswith("…") and cut.excerpt.endswith("…")
    assert len(cut.excerpt) <= 82


def test_whole_word_highlighting_matches_the_index() -> None:
    s = snippet("chat chatter chat", parse_query("chat").terms)
    assert s.marked == "«chat» chatter «chat»"
