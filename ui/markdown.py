"""Markdown-lite (features 5.2/5.3) parsed into a formatting model; never HTML.

``parse(text)`` returns a list of ``Block`` objects whose ``spans`` carry plain text plus style
flags. Nothing is ever interpreted as markup by the renderer: the view draws each span with a
native text widget. Only ``http``/``https`` URLs become ``Span.url``; any other scheme
(``javascript:``, ``data:``) stays visible as literal text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlsplit

# A subset of the reference catalogue (29 + 5 aliases); unknown shortcodes stay literal text.
EMOJI: dict[str, str] = {
    "smile": "😄",
    "grin": "😁",
    "joy": "😂",
    "wink": "😉",
    "heart": "❤️",
    "thumbsup": "👍",
    "+1": "👍",
    "thumbsdown": "👎",
    "-1": "👎",
    "fire": "🔥",
    "rocket": "🚀",
    "tada": "🎉",
    "eyes": "👀",
    "wave": "👋",
    "clap": "👏",
    "pray": "🙏",
    "thinking": "🤔",
    "cry": "😢",
    "sob": "😭",
    "sunglasses": "😎",
    "ok_hand": "👌",
    "100": "💯",
    "star": "⭐",
    "sparkles": "✨",
    "check": "✅",
    "white_check_mark": "✅",
    "x": "❌",
    "warning": "⚠️",
    "bug": "🐛",
    "coffee": "☕",
    "zap": "⚡",
    "laughing": "😆",
    "satisfied": "😆",
    "slightly_smiling_face": "🙂",
}

_ESCAPABLE = set("\\`*_~:[]()!<>")
_TRAILING = ".,!?;:"
_URL_RE = re.compile(r"https?://[^\s<>]+", re.IGNORECASE)
_SHORTCODE_RE = re.compile(r":([a-z0-9_+\-]+):")
_HEADING_RE = re.compile(r"^(#{1,6})\s+(.*)$")
_ULIST_RE = re.compile(r"^([ \t]*)([-+*])\s+(.*)$")
_OLIST_RE = re.compile(r"^([ \t]*)(\d{1,9})([.)])\s+(.*)$")
_FENCE_RE = re.compile(r"^(`{3,}|~{3,})\s*([^`\s]*)\s*$")
_DIVIDER_RE = re.compile(r"^\s*(\*{3,}|-{3,}|_{3,})\s*$")
MAX_LIST_DEPTH = 6


def safe_url(url: str) -> str | None:
    """The URL when it is an absolute http(s) URL with a host; otherwise ``None``."""
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    if any(c.isspace() or ord(c) < 32 for c in url):
        return None
    return url.strip()


@dataclass(frozen=True)
class Span:
    text: str
    bold: bool = False
    italic: bool = False
    strike: bool = False
    code: bool = False
    url: str | None = None
    # "@uid_…", "@here", "@channel": a pill with the display name (explicit tokens only, rules D9, D14)
    mention: str | None = None


_MENTION_RE = re.compile(r"(?<![A-Za-z0-9_.\-])@(uid_[A-Za-z0-9_]+|here|channel)\b")


def split_mentions(spans: list[Span]) -> list[Span]:
    """Mark explicit mention tokens (outside code and links) so the view can draw pills."""
    out: list[Span] = []
    for sp in spans:
        if sp.code or sp.url or "@" not in sp.text:
            out.append(sp)
            continue
        pos = 0
        for m in _MENTION_RE.finditer(sp.text):
            if m.start() > pos:
                out.append(replace(sp, text=sp.text[pos : m.start()]))
            out.append(replace(sp, text=m.group(0), mention=m.group(0)))
            pos = m.end()
        if pos < len(sp.text):
            out.append(replace(sp, text=sp.text[pos:]))
    return out


@dataclass
class Block:
    kind: Literal["paragraph", "heading", "quote", "list_item", "code", "divider"]
    spans: list[Span] = field(default_factory=list)
    level: int = 0  # heading level, or list nesting depth
    marker: str = ""  # list marker ("•" or "1.")
    lang: str = ""  # code block language label


def plain_text(blocks: list[Block]) -> str:
    return "\n".join("".join(s.text for s in b.spans) for b in blocks)


_PLAIN_STOP = frozenset("\\`*_~[<>#\n\r")


def _plain_line(text: str) -> list[Block] | None:
    """The common case without markup (one line, no markup characters, no list marker, no
    link): parsed without the general machinery. None when the general parser is needed."""
    head = text.lstrip()[:1]
    if not head or head in "-+0123456789" or "http" in text.lower() or not _PLAIN_STOP.isdisjoint(text):
        return None
    if ":" in text and _SHORTCODE_RE.search(text):
        return None
    return [Block("paragraph", [Span(text)])]


def parse(text: str) -> list[Block]:
    plain = _plain_line(text)
    if plain is not None:
        return plain
    return _parse(text)


def _parse(text: str) -> list[Block]:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    blocks: list[Block] = []
    i = 0
    para: list[str] = []

    def flush() -> None:
        if para:
            blocks.append(Block("paragraph", parse_inline("\n".join(para))))
            para.clear()

    while i < len(lines):
        line = lines[i]
        fence = _FENCE_RE.match(line)
        if fence:
            marker = fence.group(1)
            end = next(
                (
                    j
                    for j in range(i + 1, len(lines))
                    if lines[j].strip().startswith(marker[0] * len(marker))
                    and set(lines[j].strip()) == {marker[0]}
                ),
                None,
            )
            if end is not None:
                flush()
                lang = fence.group(2).upper()[:20]
                blocks.append(Block("code", [Span("\n".join(lines[i + 1 : end]), code=True)], lang=lang))
                i = end + 1
                continue
        if _DIVIDER_RE.match(line):
            flush()
            blocks.append(Block("divider"))
            i += 1
            continue
        heading = _HEADING_RE.match(line)
        if heading:
            flush()
            blocks.append(Block("heading", parse_inline(heading.group(2)), level=len(heading.group(1))))
            i += 1
            continue
        if line.startswith(">"):
            flush()
            quoted: list[str] = []
            while i < len(lines) and lines[i].startswith(">"):
                quoted.append(lines[i][1:].lstrip(" "))
                i += 1
            blocks.append(Block("quote", parse_inline("\n".join(quoted))))
            continue
        item = _ULIST_RE.match(line) or _OLIST_RE.match(line)
        if item:
            flush()
            indent = item.group(1).replace("\t", "  ")
            depth = min(len(indent) // 2, MAX_LIST_DEPTH - 1)
            if item.re is _ULIST_RE:
                marker_text, body = "•", item.group(3)
            else:
                marker_text, body = f"{item.group(2)}.", item.group(4)
            i += 1
            # continuation lines: indented deeper than the marker and not a new item
            while i < len(lines) and lines[i].startswith(" " * (len(indent) + 2)) and lines[i].strip():
                if _ULIST_RE.match(lines[i]) or _OLIST_RE.match(lines[i]):
                    break
                body += "\n" + lines[i].strip()
                i += 1
            blocks.append(Block("list_item", parse_inline(body), level=depth, marker=marker_text))
            continue
        if not line.strip():
            flush()
            i += 1
            continue
        para.append(line)
        i += 1
    flush()
    return blocks


def parse_inline(text: str) -> list[Span]:
    spans: list[Span] = []
    _inline(text, Span(""), spans)
    return _merge(spans)


def _merge(spans: list[Span]) -> list[Span]:
    out: list[Span] = []
    for s in spans:
        if not s.text:
            continue
        if out and replace(out[-1], text="") == replace(s, text=""):
            out[-1] = replace(s, text=out[-1].text + s.text)
        else:
            out.append(s)
    return out


def _emit_text(text: str, style: Span, out: list[Span]) -> None:
    """Plain text: bare URLs become links, shortcodes become emoji."""
    pos = 0
    for m in _URL_RE.finditer(text):
        url = m.group(0)
        while url and url[-1] in _TRAILING:
            url = url[:-1]
        _emit_emoji(text[pos : m.start()], style, out)
        if safe_url(url):
            out.append(replace(style, text=url, url=url))
        else:
            out.append(replace(style, text=url))
        pos = m.start() + len(url)
    _emit_emoji(text[pos:], style, out)


def _emit_emoji(text: str, style: Span, out: list[Span]) -> None:
    def sub(m: re.Match[str]) -> str:
        return EMOJI.get(m.group(1), m.group(0))

    out.append(replace(style, text=_SHORTCODE_RE.sub(sub, text)))


def _find_closing(text: str, start: int, delim: str) -> int:
    j = start
    while True:
        j = text.find(delim, j)
        if j < 0:
            return -1
        if j > 0 and text[j - 1] == "\\":
            j += 1
            continue
        if j == start:
            return -1
        return j


def _inline(text: str, style: Span, out: list[Span]) -> None:
    buf: list[str] = []
    i = 0

    def flush() -> None:
        if buf:
            _emit_text("".join(buf), style, out)
            buf.clear()

    while i < len(text):
        c = text[i]
        if c == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            flush()
            out.append(replace(style, text=text[i + 1]))
            i += 2
            continue
        if c == "`":
            run = len(text[i:]) - len(text[i:].lstrip("`"))
            ticks = text[i : i + run]
            end = text.find(ticks, i + run)
            if end > 0:
                flush()
                out.append(replace(style, text=text[i + run : end], code=True))
                i = end + run
                continue
            buf.append(ticks)
            i += run
            continue
        if c == "!" and text.startswith("![", i):
            link = _link_at(text, i + 1)
            if link:
                label, url, end = link
                flush()
                ok = safe_url(url)
                out.append(
                    replace(style, text=label or url, url=ok) if ok else replace(style, text=text[i:end])
                )
                i = end
                continue
        if c == "[":
            link = _link_at(text, i)
            if link:
                label, url, end = link
                flush()
                ok = safe_url(url)
                if ok:
                    inner: list[Span] = []
                    _inline(label, style, inner)
                    out.extend(replace(s, url=ok) for s in inner)
                else:
                    out.append(replace(style, text=text[i:end]))
                i = end
                continue
        if c == "<":
            end = text.find(">", i)
            if end > 0:
                candidate = text[i + 1 : end]
                ok = safe_url(candidate)
                if ok:
                    flush()
                    out.append(replace(style, text=candidate, url=ok))
                    i = end + 1
                    continue
        for delim, attr in (
            ("**", "bold"),
            ("__", "bold"),
            ("~~", "strike"),
            ("*", "italic"),
            ("_", "italic"),
        ):
            if text.startswith(delim, i):
                if delim == "_" and i > 0 and text[i - 1].isalnum():
                    continue
                end = _find_closing(text, i + len(delim), delim)
                if end > 0 and not text[i + len(delim)].isspace():
                    flush()
                    _inline(text[i + len(delim) : end], _styled(style, attr), out)
                    i = end + len(delim)
                    break
        else:
            buf.append(c)
            i += 1
            continue
    flush()


def _link_at(text: str, i: int) -> tuple[str, str, int] | None:
    """``[label](url)`` starting at ``i``: (label, url, end index)."""
    close = text.find("](", i)
    if close < 0 or "\n" in text[i:close]:
        return None
    end = text.find(")", close + 2)
    if end < 0:
        return None
    return text[i + 1 : close], text[close + 2 : end].strip(), end + 1


def _styled(style: Span, attr: str) -> Span:
    if attr == "bold":
        return replace(style, bold=True)
    if attr == "strike":
        return replace(style, strike=True)
    return replace(style, italic=True)
