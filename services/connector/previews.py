"""Link previews fetched by the home stack (features 5.9, 14.5, rule D17, P6).

Pure parts (unit-tested without I/O):

- ``extract_urls``: up to 3 distinct http(s) URLs of a message body, as a reader sees them (bare
  URLs, ``<url>`` autolinks, ``[label](url)``; code spans and fences are not links), trailing
  punctuation ``.,!?;:`` (and an unbalanced closing bracket or quote) stripped;
- ``parse_preview``: OpenGraph / Twitter card / ``<title>`` / ``<meta name=description>`` of an
  HTML text → ``LinkPreview``: the HTML cut to 512,000 characters and the ``<head>`` to 256,000,
  entities decoded exactly once (``&amp;lt;`` → ``&lt;``), whitespace collapsed, title ≤ 220,
  description ≤ 420, site name ≤ 120 characters (cut to N-1 + "…"), site name defaulting to the
  host without ``www.``, title to the URL, the image resolved against the final page URL and
  kept only when http(s);
- ``address_allowed``: whether an IP address may be fetched (never loopback, private, link-local,
  multicast, reserved, unspecified or otherwise non-global unless ``allow_private``);
- ``previews_from_wire``: a backend's own ``link_previews[]`` (Profile B, field names not pinned
  down) → ``LinkPreview`` records, cleaned and bounded the same way.

I/O: ``PreviewFetcher`` fetches with its own ``httpx`` client (``Accept: text/html``, redirects
followed by hand — at most 5 — with the host of every hop resolved and checked, non-HTML refused,
the body streamed and reading stopped after 512,000 characters, 8 s in total per URL), behind a
bounded cache (LRU, 500 entries, successes kept 24 h, failures 10 min; rule D17 / numbers.md §10), a
de-duplication of in-flight fetches (the same URL twice → one request) and a concurrency limit
(4 fetches at a time). ``PreviewPrefs`` keeps each member's switch (default on) in the registry
database.

Privacy: logs name the host and a reason only — never a path, a query string or page content.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import html
import ipaddress
import logging
import re
import socket
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from services.core.contracts.chat import (
    LINK_PREVIEW_DESCRIPTION_MAX,
    LINK_PREVIEW_SITE_NAME_MAX,
    LINK_PREVIEW_TITLE_MAX,
    LINK_PREVIEW_URL_MAX,
    LinkPreview,
)
from services.core.db import SqliteStore

log = logging.getLogger("openchat.connector.previews")

MAX_URLS = 3
MAX_HTML_CHARS = 512_000
MAX_HEAD_CHARS = 256_000
FETCH_TIMEOUT_S = 8.0
MAX_REDIRECTS = 5
CACHE_ENTRIES = 500
CACHE_OK_TTL_S = 24 * 3600.0
CACHE_FAIL_TTL_S = 600.0
MAX_CONCURRENT = 4
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TRAILING_PUNCTUATION = ".,!?;:"
USER_AGENT = "OpenChat-LinkPreview/1.0 (+home stack)"

# -- URL extraction ------------------------------------------------------------------------------
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINKS = re.compile(
    r"\[[^\]\n]*\]\(\s*<?(?P<md>https?://[^\s)>]+)>?\s*\)"
    r"|<(?P<angle>https?://[^\s<>]+)>"
    r"|(?P<bare>https?://[^\s<>\"'`]+)",
    re.I,
)
_PAIRS = {")": "(", "]": "[", "}": "{"}


def _strip_trailing(url: str) -> str:
    """Drop what a reader does not see as part of the link: ``.,!?;:`` and quotes at the end, and
    a closing bracket that has no opening one inside the URL (``(see https://x.y/a)``)."""
    while url:
        last = url[-1]
        if (
            last in TRAILING_PUNCTUATION
            or last in "'\"*_~"
            or (last in _PAIRS and url.count(last) > url.count(_PAIRS[last]))
        ):
            url = url[:-1]
        else:
            break
    return url


def is_http_url(url: str) -> bool:
    if len(url) > LINK_PREVIEW_URL_MAX:
        return False
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def extract_urls(body: str, limit: int = MAX_URLS) -> list[str]:
    """Up to ``limit`` distinct http(s) URLs of ``body``, in reading order."""
    text = _CODE_SPAN.sub(" ", _FENCE.sub(" ", body))
    found: list[str] = []
    for match in _LINKS.finditer(text):
        url = match.group("md") or match.group("angle") or _strip_trailing(match.group("bare") or "")
        if url and is_http_url(url) and url not in found:
            found.append(url)
            if len(found) >= limit:
                break
    return found


# -- text rules ----------------------------------------------------------------------------------
def collapse(text: str) -> str:
    return " ".join(text.split())


def cut(text: str, limit: int) -> str:
    """At most ``limit`` characters: a longer text becomes its first ``limit - 1`` and "…"."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def clean_text(raw: str, limit: int, *, decode: bool = True) -> str:
    """Entities decoded exactly once (``decode``), whitespace collapsed, cut to ``limit``."""
    return cut(collapse(html.unescape(raw) if decode else raw), limit)


def site_of(url: str) -> str:
    host = (urlsplit(url).hostname or "").lower()
    return host[4:] if host.startswith("www.") else host


# -- HTML parsing --------------------------------------------------------------------------------
_HEAD = re.compile(r"<head(?:\s[^>]*)?>(.*?)</head\s*>", re.I | re.S)
_META = re.compile(r"""<meta\b((?:[^>"']|"[^"]*"|'[^']*')*)>""", re.I | re.S)
_ATTR = re.compile(r"""([a-zA-Z_:][-a-zA-Z0-9_:.]*)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+))""", re.S)
_TITLE = re.compile(r"<title(?:\s[^>]*)?>(.*?)</title\s*>", re.I | re.S)

TITLE_KEYS = ("og:title", "twitter:title")
DESCRIPTION_KEYS = ("og:description", "twitter:description", "description")
SITE_KEYS = ("og:site_name",)
IMAGE_KEYS = ("og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src")


def head_of(document: str) -> str:
    """The ``<head>`` of the first 512,000 characters (the whole slice without one), ≤ 256,000."""
    doc = document[:MAX_HTML_CHARS]
    match = _HEAD.search(doc)
    return (match.group(1) if match else doc)[:MAX_HEAD_CHARS]


def meta_tags(head: str) -> dict[str, str]:
    """``property``/``name`` (lower case) → raw ``content`` of the first tag of each key."""
    tags: dict[str, str] = {}
    for match in _META.finditer(head):
        attrs: dict[str, str] = {}
        for name, dq, sq, bare in _ATTR.findall(match.group(1)):
            attrs.setdefault(name.lower(), dq or sq or bare)
        key = (attrs.get("property") or attrs.get("name") or "").strip().lower()
        if key and "content" in attrs:
            tags.setdefault(key, attrs["content"])
    return tags


def _first(tags: dict[str, str], keys: Iterable[str], limit: int) -> str:
    for key in keys:
        value = clean_text(tags.get(key, ""), limit)
        if value:
            return value
    return ""


def image_url(raw: str, page_url: str) -> str | None:
    """``raw`` (entities decoded once) resolved against the page; only http(s) is kept."""
    value = html.unescape(raw).strip()
    if not value:
        return None
    try:
        resolved = urljoin(page_url, value)
    except ValueError:
        return None
    return resolved if is_http_url(resolved) else None


def parse_preview(document: str, url: str, final_url: str | None = None) -> LinkPreview:
    """The preview card of ``url`` whose HTML (after redirects: at ``final_url``) is ``document``."""
    page = final_url or url
    head = head_of(document)
    tags = meta_tags(head)
    title = _first(tags, TITLE_KEYS, LINK_PREVIEW_TITLE_MAX)
    if not title:
        match = _TITLE.search(head)
        title = clean_text(match.group(1), LINK_PREVIEW_TITLE_MAX) if match else ""
    image = None
    for key in IMAGE_KEYS:
        image = image_url(tags.get(key, ""), page)
        if image is not None:
            break
    return LinkPreview(
        url=url,
        site_name=_first(tags, SITE_KEYS, LINK_PREVIEW_SITE_NAME_MAX)
        or cut(site_of(page), LINK_PREVIEW_SITE_NAME_MAX),
        title=title or cut(url, LINK_PREVIEW_TITLE_MAX),
        description=_first(tags, DESCRIPTION_KEYS, LINK_PREVIEW_DESCRIPTION_MAX),
        image_url=image,
    )


# -- a backend's own previews (Profile B "rich message fields") ----------------------------------
def _wire_text(item: dict[str, Any], keys: Iterable[str], limit: int) -> str:
    for key in keys:
        value = item.get(key)
        if isinstance(value, str) and value.strip():
            return clean_text(value, limit, decode=False)
    return ""


def previews_from_wire(raw: Any) -> list[LinkPreview]:
    """A backend's ``link_previews[]`` (field names vary: ``site_name``/``siteName``,
    ``image_url``/``imageUrl``/``image``…) → at most 3 bounded cards; entries without an http(s)
    ``url`` are dropped. Texts are taken as plain text (no entity decoding)."""
    if not isinstance(raw, list):
        return []
    out: list[LinkPreview] = []
    for item in raw:
        if not isinstance(item, dict):
            continue
        url = item.get("url") or item.get("href") or item.get("link")
        if not isinstance(url, str) or not is_http_url(url.strip()):
            continue
        url = url.strip()
        image: Any = item.get("image_url") or item.get("imageUrl") or item.get("image")
        if isinstance(image, dict):
            image = image.get("url")
        image_ok = image.strip() if isinstance(image, str) and is_http_url(image.strip()) else None
        out.append(
            LinkPreview(
                url=url,
                site_name=_wire_text(item, ("site_name", "siteName", "site"), LINK_PREVIEW_SITE_NAME_MAX)
                or cut(site_of(url), LINK_PREVIEW_SITE_NAME_MAX),
                title=_wire_text(item, ("title",), LINK_PREVIEW_TITLE_MAX)
                or cut(url, LINK_PREVIEW_TITLE_MAX),
                description=_wire_text(item, ("description", "desc"), LINK_PREVIEW_DESCRIPTION_MAX),
                image_url=image_ok,
            )
        )
        if len(out) >= MAX_URLS:
            break
    return out


# -- SSRF guard ----------------------------------------------------------------------------------
class PreviewRefused(Exception):
    """The URL may not (or could not) be previewed; ``reason`` is safe to log (no URL)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def address_allowed(address: str, *, allow_private: bool = False) -> bool:
    """Only globally routable unicast addresses, unless ``allow_private``."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if allow_private:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
        or not ip.is_global
    )


async def check_host(url: str, *, allow_private: bool) -> None:
    """Refuse ``url`` unless it is http(s) and every address its host resolves to is allowed."""
    if not is_http_url(url):
        raise PreviewRefused("not an http(s) URL")
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise PreviewRefused("host does not resolve") from exc
    addresses = {str(info[4][0]) for info in infos}
    if not addresses:
        raise PreviewRefused("host does not resolve")
    if not all(address_allowed(a, allow_private=allow_private) for a in addresses):
        raise PreviewRefused("host resolves to a private or reserved address")


# -- the bounded cache: LRU plus expiry, failures kept briefly (D17) -----------------------------------------
@dataclass
class _Entry:
    preview: LinkPreview | None
    expires: float


class PreviewCache:
    """LRU of at most ``max_entries`` URLs; a success expires after ``ok_ttl_s``, a failure
    (``None``) after ``fail_ttl_s``."""

    def __init__(
        self,
        max_entries: int = CACHE_ENTRIES,
        ok_ttl_s: float = CACHE_OK_TTL_S,
        fail_ttl_s: float = CACHE_FAIL_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = max(1, max_entries)
        self.ok_ttl_s = ok_ttl_s
        self.fail_ttl_s = fail_ttl_s
        self.clock = clock
        self._items: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def get(self, url: str) -> tuple[bool, LinkPreview | None]:
        """``(hit, preview)``; an expired entry is dropped and is a miss."""
        entry = self._items.get(url)
        if entry is None:
            return False, None
        if entry.expires <= self.clock():
            del self._items[url]
            return False, None
        self._items.move_to_end(url)
        return True, entry.preview

    def put(self, url: str, preview: LinkPreview | None) -> None:
        ttl = self.ok_ttl_s if preview is not None else self.fail_ttl_s
        self._items[url] = _Entry(preview, self.clock() + ttl)
        self._items.move_to_end(url)
        while len(self._items) > self.max_entries:
            self._items.popitem(last=False)


# -- fetching ------------------------------------------------------------------------------------
def _content_type(response: httpx.Response) -> tuple[str, str | None]:
    raw = response.headers.get("content-type", "")
    mime = raw.split(";", 1)[0].strip().lower()
    charset = None
    for param in raw.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("\"'") or None
    return mime, charset


class PreviewFetcher:
    """Fetches and caches preview cards. One per connector process (shared by every member: a
    card depends on the URL only, and no identity or cookie is ever sent)."""

    def __init__(
        self,
        *,
        allow_private: bool = False,
        timeout_s: float = FETCH_TIMEOUT_S,
        max_concurrent: int = MAX_CONCURRENT,
        cache: PreviewCache | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.timeout_s = timeout_s
        self.cache = cache or PreviewCache()
        self._limit = asyncio.Semaphore(max(1, max_concurrent))
        self._inflight: dict[str, asyncio.Task[LinkPreview | None]] = {}
        self.http = http or httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy or netrc from the environment
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),  # never keep a cookie
            timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
            limits=httpx.Limits(max_connections=16, max_keepalive_connections=4),
            headers={"User-Agent": USER_AGENT},
        )
        self.fetches = 0  # network fetches started (cache misses not joined to one in flight)

    async def close(self) -> None:
        tasks, self._inflight = list(self._inflight.values()), {}
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
        await self.http.aclose()

    async def previews(self, urls: Iterable[str]) -> list[LinkPreview]:
        """The cards of ``urls`` (fetched concurrently), in order; failures left out."""
        wanted = list(dict.fromkeys(urls))[:MAX_URLS]
        found = await asyncio.gather(*(self.preview(u) for u in wanted))
        return [p for p in found if p is not None]

    async def preview(self, url: str) -> LinkPreview | None:
        hit, cached = self.cache.get(url)
        if hit:
            return cached
        task = self._inflight.get(url)
        if task is None:
            task = asyncio.create_task(self._fetch_and_cache(url), name="link-preview")
            self._inflight[url] = task
        return await asyncio.shield(task)

    async def _fetch_and_cache(self, url: str) -> LinkPreview | None:
        try:
            async with self._limit:
                self.fetches += 1
                try:
                    result: LinkPreview | None = await asyncio.wait_for(self.fetch(url), self.timeout_s)
                except PreviewRefused as exc:
                    log.info("link preview refused", extra={"host": _host(url), "reason": exc.reason})
                    result = None
                except TimeoutError:
                    log.info("link preview refused", extra={"host": _host(url), "reason": "timeout"})
                    result = None
                except (httpx.HTTPError, OSError, ValueError) as exc:
                    log.info(
                        "link preview refused",
                        extra={"host": _host(url), "reason": f"fetch failed: {type(exc).__name__}"},
                    )
                    result = None
            self.cache.put(url, result)
            return result
        finally:
            self._inflight.pop(url, None)

    async def fetch(self, url: str) -> LinkPreview:
        """One fetch, no cache: redirects followed by hand (every hop checked), HTML only."""
        current = url
        for _ in range(MAX_REDIRECTS + 1):
            await check_host(current, allow_private=self.allow_private)
            request = self.http.build_request("GET", current, headers={"Accept": "text/html"})
            response = await self.http.send(request, stream=True)
            try:
                self._check_peer(response)
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    if not location:
                        raise PreviewRefused("redirect without a location")
                    current = urljoin(current, location)
                    continue
                if not response.is_success:
                    raise PreviewRefused(f"status {response.status_code}")
                mime, charset = _content_type(response)
                if mime not in HTML_TYPES:
                    raise PreviewRefused("not an HTML response")
                document = await _read_text(response, charset)
            finally:
                await response.aclose()
            return parse_preview(document, url, current)
        raise PreviewRefused("too many redirects")

    def _check_peer(self, response: httpx.Response) -> None:
        """The address actually connected to must be allowed too: a host that resolved to a
        public address for ``check_host`` and to a private one for the connection (DNS
        rebinding) gets nothing read from it."""
        if self.allow_private:
            return
        stream = response.extensions.get("network_stream")
        peer = stream.get_extra_info("server_addr") if stream is not None else None
        if isinstance(peer, tuple) and peer and not address_allowed(str(peer[0])):
            raise PreviewRefused("connected to a private or reserved address")


async def _read_text(response: httpx.Response, charset: str | None) -> str:
    """At most ``MAX_HTML_CHARS`` characters of the body; reading stops as soon as they are in."""
    try:
        decoder = codecs.getincrementaldecoder(charset or "utf-8")(errors="replace")
    except LookupError:
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    parts: list[str] = []
    size = 0
    async for chunk in response.aiter_bytes():
        text = decoder.decode(chunk)
        parts.append(text)
        size += len(text)
        if size >= MAX_HTML_CHARS:
            break
    else:
        parts.append(decoder.decode(b"", final=True))
    return "".join(parts)[:MAX_HTML_CHARS]


def _host(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "?")[:255]
    except ValueError:
        return "?"


# -- the member's switch (registry database) -----------------------------------------------------
SCHEMA = """
CREATE TABLE IF NOT EXISTS connector_preview_prefs (
    member TEXT PRIMARY KEY,
    enabled INTEGER NOT NULL
);
"""


class PreviewPrefs(SqliteStore):
    """Per member: link previews on (the default) or off everywhere."""

    SCHEMA = SCHEMA
    MEMBER_TABLES = ("connector_preview_prefs",)

    def enabled(self, member: str) -> bool:
        """Read each time (connector replicas share the database); asked only for messages
        that hold a URL."""
        with self._db() as db:
            row = db.execute(
                "SELECT enabled FROM connector_preview_prefs WHERE member = ?", (member,)
            ).fetchone()
        return True if row is None else bool(row[0])

    def set(self, member: str, enabled: bool) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO connector_preview_prefs (member, enabled) VALUES (?, ?) "
                "ON CONFLICT(member) DO UPDATE SET enabled = excluded.enabled",
                (member, int(enabled)),
            )
