"""Link previews as plain code: HTML parsing (features 14.5), URL extraction, the SSRF guard,
the bounded cache (D17), the member's switch and a backend's own cards (Profile B)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.connector import domain
from services.connector.previews import (
    PreviewCache,
    PreviewPrefs,
    PreviewRefused,
    address_allowed,
    check_host,
    extract_urls,
    head_of,
    parse_preview,
    previews_from_wire,
)
from services.core.contracts import wire
from services.core.contracts.chat import LinkPreview
from services.core.settings import Settings

URL = "https://www.example.org/articles/one?x=1"


def page(head: str, body: str = "<p>body</p>") -> str:
    return f"<!doctype html><html><head>{head}</head><body>{body}</body></html>"


# -- parsing -------------------------------------------------------------------------------------
def test_opengraph_wins_over_twitter_and_title() -> None:
    doc = page(
        '<title>Plain title</title><meta name="twitter:title" content="Tw title">'
        '<meta property="og:title" content="Hello"><meta property="og:site_name" content="Example">'
        '<meta name="description" content="plain desc"><meta property="og:description" content="OG desc">'
        '<meta property="og:image" content="https://cdn.example.org/i.png">'
    )
    card = parse_preview(doc, URL)
    assert card == LinkPreview(
        url=URL,
        site_name="Example",
        title="Hello",
        description="OG desc",
        image_url="https://cdn.example.org/i.png",
    )


def test_twitter_card_then_title_and_meta_description_fallbacks() -> None:
    doc = page(
        "<title>Plain title</title>"
        "<meta name='twitter:title' content='Tw title'>"
        "<meta name='twitter:description' content='Tw desc'>"
        "<meta name='twitter:image' content='/t.png'>"
    )
    card = parse_preview(doc, URL)
    assert (card.title, card.description) == ("Tw title", "Tw desc")
    assert card.image_url == "https://www.example.org/t.png"
    assert card.site_name == "example.org"  # the host without www.

    bare = parse_preview(page('<TITLE> Only\n  a   title </TITLE><META NAME="Description" CONTENT="d">'), URL)
    assert (bare.title, bare.description, bare.image_url) == ("Only a title", "d", None)

    quoted = parse_preview(page("<meta content='a > b' property=\"og:title\"/>"), URL)
    assert quoted.title == "a > b"  # attribute order and a ">" inside quotes


def test_title_defaults_to_the_url_and_site_to_the_host() -> None:
    card = parse_preview("<html><body>nothing here</body></html>", "http://news.test/a")
    assert card.title == "http://news.test/a"
    assert card.site_name == "news.test"
    assert card.description == ""


def test_entities_are_decoded_exactly_once() -> None:
    doc = page(
        '<meta property="og:title" content="&amp;lt;script&amp;gt;">'
        '<meta property="og:description" content="Tom &amp; Jerry &#8212; &quot;q&quot; &lt;b&gt;">'
    )
    card = parse_preview(doc, URL)
    assert card.title == "&lt;script&gt;"  # literally: never "<script>"
    assert "<" not in card.title
    assert card.description == 'Tom & Jerry — "q" <b>'
    titled = parse_preview(page("<title>&amp;amp; A &amp;lt;i&amp;gt;</title>"), URL)
    assert titled.title == "&amp; A &lt;i&gt;"


def test_whitespace_collapsed_and_lengths_cut_with_an_ellipsis() -> None:
    long_title = "word " * 100
    doc = page(
        f'<meta property="og:title" content="  {long_title}\n\t">'
        f'<meta property="og:description" content="{"d" * 1000}">'
        f'<meta property="og:site_name" content="{"s" * 300}">'
    )
    card = parse_preview(doc, URL)
    assert len(card.title) == 220 and card.title.endswith("…") and "  " not in card.title
    assert card.title[:-1] == " ".join(long_title.split())[:219]
    assert card.description == "d" * 419 + "…"
    assert card.site_name == "s" * 119 + "…"
    exact = parse_preview(page(f'<meta property="og:title" content="{"t" * 220}">'), URL)
    assert exact.title == "t" * 220  # exactly at the limit: not cut


def test_image_resolved_against_the_final_page_and_only_http() -> None:
    rel = page('<meta property="og:image" content="../img/a.png?x=1&amp;y=2">')
    card = parse_preview(rel, URL, "https://final.example.net/dir/sub/page")
    assert card.image_url == "https://final.example.net/dir/img/a.png?x=1&y=2"
    assert card.url == URL  # the card links to what the message said
    assert card.site_name == "final.example.net"
    for bad in ("javascript:alert(1)", "data:image/png;base64,AAAA", "ftp://x.test/a.png"):
        doc = page(f'<meta property="og:image" content="{bad}">')
        assert parse_preview(doc, URL).image_url is None, bad
    protocol_relative = page('<meta property="og:image" content="//img.test/p.png">')
    assert parse_preview(protocol_relative, "http://a.test/").image_url == "http://img.test/p.png"


def test_html_and_head_slices() -> None:
    filler = "x" * 600_000
    late = f'<html><head>{filler}<meta property="og:title" content="late"></head></html>'
    assert parse_preview(late, URL).title == URL  # beyond 512,000 characters: never seen
    big_head = "<html><head>" + "y" * 300_000 + '<meta property="og:title" content="far"></head></html>'
    assert len(head_of(big_head)) == 256_000
    assert parse_preview(big_head, URL).title == URL
    no_head = '<meta property="og:title" content="headless">'
    assert parse_preview(no_head, URL).title == "headless"


# -- URLs of a message ---------------------------------------------------------------------------
def test_extract_urls_as_a_reader_sees_them() -> None:
    body = (
        "see https://a.test/x. and <https://b.test/y> or [docs](https://c.test/z?q=1), "
        "again https://a.test/x! also https://d.test/4"
    )
    assert extract_urls(body) == ["https://a.test/x", "https://b.test/y", "https://c.test/z?q=1"]
    assert extract_urls("(see https://w.test/wiki/A_(b)) and https://e.test/p?;:!") == [
        "https://w.test/wiki/A_(b)",
        "https://e.test/p",
    ]
    assert extract_urls("ftp://x.test javascript:alert(1) mailto:a@b.test http:// no") == []
    assert extract_urls("`https://code.test/a` ```\nhttps://fence.test/b\n``` https://ok.test") == [
        "https://ok.test"
    ]
    assert extract_urls("HTTP://UPPER.test/A") == ["HTTP://UPPER.test/A"]
    assert extract_urls("x " + "https://long.test/" + "a" * 3000) == []


# -- the SSRF guard ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.10",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "ff02::1",
        "::ffff:192.168.0.1",
        "not an ip",
    ],
)
def test_private_and_reserved_addresses_refused(address: str) -> None:
    assert not address_allowed(address)


def test_public_addresses_allowed_and_private_ones_when_the_setting_says_so() -> None:
    assert address_allowed("93.184.216.34")
    assert address_allowed("2606:2800:220:1:248:1893:25c8:1946")
    assert address_allowed("127.0.0.1", allow_private=True)
    assert address_allowed("192.168.1.10", allow_private=True)


async def test_check_host_refuses_the_household_network() -> None:
    for url in ("http://127.0.0.1:8080/admin", "http://localhost/", "https://[::1]/", "http://10.0.0.1/"):
        with pytest.raises(PreviewRefused) as err:
            await check_host(url, allow_private=False)
        assert "private" in err.value.reason and "/" not in err.value.reason  # no URL in the reason
    await check_host("http://127.0.0.1:8080/", allow_private=True)
    with pytest.raises(PreviewRefused):
        await check_host("file:///etc/passwd", allow_private=True)


def test_setting_allows_private_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENCHAT_PREVIEW_ALLOW_PRIVATE", raising=False)
    assert Settings().preview_allow_private is False
    monkeypatch.setenv("OPENCHAT_PREVIEW_ALLOW_PRIVATE", "true")
    assert Settings().preview_allow_private is True


# -- the bounded cache (D17) ---------------------------------------------------------------------
def test_cache_is_lru_bounded_and_expires() -> None:
    now = [0.0]
    cache = PreviewCache(max_entries=500, ok_ttl_s=24 * 3600, fail_ttl_s=600, clock=lambda: now[0])
    card = LinkPreview(url="https://x.test/0", title="t")
    for i in range(600):
        cache.put(f"https://x.test/{i}", card)
    assert len(cache) == 500
    assert cache.get("https://x.test/0") == (False, None)  # the least recently used went first
    assert cache.get("https://x.test/100")[0]
    cache.put("https://fail.test/", None)
    assert cache.get("https://fail.test/") == (True, None)  # a failure is remembered …
    now[0] = 601.0
    assert cache.get("https://fail.test/") == (False, None)  # … briefly
    assert cache.get("https://x.test/100") == (True, card)
    now[0] = 24 * 3600 + 1.0
    assert cache.get("https://x.test/100") == (False, None)  # a success older than 24 h: fetched again


# -- the member's switch -------------------------------------------------------------------------
def test_switch_defaults_on_and_persists(tmp_path: Path) -> None:
    db = tmp_path / "registry.sqlite3"
    prefs = PreviewPrefs(db)
    assert prefs.enabled("alice") is True
    prefs.set("alice", False)
    assert prefs.enabled("alice") is False
    assert PreviewPrefs(db).enabled("alice") is False  # a restarted connector reads it back
    assert PreviewPrefs(db).enabled("bob") is True


# -- a backend's own previews (Profile B rich message fields) ------------------------------------
def test_backend_link_previews_are_mapped_and_bounded() -> None:
    raw = {
        "id": "m1",
        "channel_id": "ch",
        "author_uid": "u",
        "body": "see https://a.test",
        "created_at": "2026-01-01T00:00:00Z",
        "link_previews": [
            {
                "url": "https://a.test",
                "siteName": "A",
                "title": "  A\n title ",
                "description": "&lt;kept&gt;",
                "imageUrl": "https://a.test/i.png",
            },
            {"url": "javascript:alert(1)", "title": "dropped"},
            {"url": "https://b.test/x", "title": "t" * 500, "image": {"url": "data:x"}},
            {"url": "https://c.test/"},
            {"url": "https://d.test/", "title": "fourth: beyond the limit"},
            "junk",
        ],
    }
    msg = domain.message_of(wire.Message.model_validate(raw), "srv", "http://127.0.0.1:1")
    assert [p.url for p in msg.link_previews] == ["https://a.test", "https://b.test/x", "https://c.test/"]
    first, second, third = msg.link_previews
    assert (first.site_name, first.title, first.description) == ("A", "A title", "&lt;kept&gt;")
    assert first.image_url == "https://a.test/i.png"
    assert second.title == "t" * 219 + "…" and second.image_url is None and second.site_name == "b.test"
    assert third.title == "https://c.test/"
    assert previews_from_wire(None) == [] and previews_from_wire({"url": "x"}) == []
    plain = domain.message_of(
        wire.Message.model_validate({k: v for k, v in raw.items() if k != "link_previews"}), "srv", "http://h"
    )
    assert plain.link_previews == []
