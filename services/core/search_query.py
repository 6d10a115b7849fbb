"""Message search: query syntax, CJK/Hangul segmentation and match highlighting (pure, no I/O).

Shared by the state service (which owns the SQLite FTS5 index, ADR 0014) and by clients (the CLI;
the desktop's search box later), so every one of them reads a query the same way.

Query syntax (``parse_query``):

- ``word word``: every word must match (a word matches a whole token: ``chat`` finds "chat",
  not "chatter"; case and diacritics are ignored: ``cafe`` finds "Café");
- ``"exact phrase"``: the tokens in this order, adjacent;
- ``prefix*``: any token starting with it (also ``"a phra"*``);
- ``from:<uid>``: only messages of this author (several: any of them);
- ``in:<channel>``, ``in:<server>/<channel>``, ``in:<server>/``: only there (several: any of them).

Everything the user types ends up inside a quoted FTS5 string (``to_fts5``), so FTS5 operators
(``AND``/``OR``/``NOT``/``NEAR``, ``column:``, ``^``, parentheses) are plain words, never syntax.

Segmentation (``segment``): FTS5's ``unicode61`` tokenizer splits on spaces and punctuation, but
Chinese and Japanese are written without spaces and Korean attaches particles to words, so a
run of such characters would be one long token and a word inside it would never be found. Every
run of Han, Hiragana, Katakana or Hangul is therefore rewritten, before indexing, as overlapping
bigrams plus its last character (``東京都`` → ``東京 京都 都``), and a query run the same way
(a phrase of bigrams; a single character as a prefix). ADR 0014 measures this against
FTS5's ``trigram`` tokenizer.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from dataclasses import dataclass

MAX_QUERY_CHARS = 512
MAX_TERMS = 16
MAX_FILTER_VALUES = 8
MAX_FILTER_CHARS = 256
MAX_INDEXED_CHARS = 4000  # a longer body is indexed (and searched) by its first 4,000 characters
SNIPPET_CHARS = 160
MARK_OPEN = "«"
MARK_CLOSE = "»"
SEGMENTATION_VERSION = f"bigram1-{unicodedata.unidata_version}"  # in the index file: rebuilt on change

_CJK = (
    "\u1100-\u11ff"  # Hangul Jamo
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3130-\u318f"  # Hangul compatibility Jamo
    "\u31f0-\u31ff"  # Katakana phonetic extensions
    "\u3400-\u4dbf"  # CJK extension A
    "\u4e00-\u9fff"  # CJK unified ideographs
    "\ua960-\ua97f"  # Hangul Jamo extended A
    "\uac00-\ud7af"  # Hangul syllables
    "\ud7b0-\ud7ff"  # Hangul Jamo extended B
    "\uf900-\ufaff"  # CJK compatibility ideographs
    "\uff66-\uff9f"  # halfwidth Katakana (NFKC maps it to fullwidth first)
    "\U00020000-\U0003134f"  # CJK extensions B-G
)
CJK_RUN = re.compile(f"[{_CJK}]+")
_CJK_CHAR = re.compile(f"[{_CJK}]")
_WORD = f"[^\\W_{_CJK}]"  # a letter or digit outside CJK runs (a token character of unicode61)


class QueryError(ValueError):
    """A query that cannot be searched (empty, too long, a filter without a value)."""


@dataclass(frozen=True)
class Term:
    text: str  # NFKC-normalized, as typed (without quotes and the trailing ``*``)
    phrase: bool = False
    prefix: bool = False


@dataclass(frozen=True)
class Scope:
    """An ``in:`` filter: a channel (of any server), a server, or a server's channel."""

    server_id: str | None
    channel_id: str | None


@dataclass(frozen=True)
class Query:
    terms: tuple[Term, ...] = ()
    authors: tuple[str, ...] = ()
    scopes: tuple[Scope, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.terms or self.authors or self.scopes)


# -- normalization and segmentation -----------------------------------------------------------------
def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _bigrams(run: str, *, final: bool) -> list[str]:
    if len(run) == 1:
        return [run]
    grams = [run[i : i + 2] for i in range(len(run) - 1)]
    return [*grams, run[-1]] if final else grams


def segment(text: str) -> str:
    """The text FTS5 indexes for a message body: NFKC, bounded, CJK/Hangul runs as bigrams."""
    text = normalize(text[:MAX_INDEXED_CHARS])
    if not _CJK_CHAR.search(text):
        return text  # the common case costs one regex scan
    return CJK_RUN.sub(lambda m: " " + " ".join(_bigrams(m.group(), final=True)) + " ", text)


def _has_token(text: str) -> bool:
    return any(c.isalnum() for c in text)


# -- parsing ----------------------------------------------------------------------------------------
def _split(text: str) -> list[tuple[str, bool, bool]]:
    """Raw pieces ``(text, quoted, prefix)``: whitespace separates, ``"..."`` groups (an unclosed
    quote runs to the end), a trailing ``*`` marks a prefix."""
    out: list[tuple[str, bool, bool]] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c.isspace():
            i += 1
            continue
        if c == '"':
            end = text.find('"', i + 1)
            end = n if end < 0 else end
            body = text[i + 1 : end]
            i = end + 1
            prefix = i < n and text[i] == "*"
            if prefix:
                i += 1
            out.append((body, True, prefix))
            continue
        j = i
        while j < n and not text[j].isspace() and text[j] != '"':
            j += 1
        word = text[i:j]
        i = j
        prefix = word.endswith("*")
        out.append((word.rstrip("*"), False, prefix))
    return out


def parse_query(text: str) -> Query:
    """Parse what a member typed. Raises ``QueryError`` for an unusable query."""
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is longer than {MAX_QUERY_CHARS} characters")
    if any(ord(c) < 0x20 and not c.isspace() for c in text):
        raise QueryError("the query contains control characters")
    terms: list[Term] = []
    authors: list[str] = []
    scopes: list[Scope] = []
    for piece, quoted, prefix in _split(normalize(text)):
        key, sep, value = piece.partition(":")
        if not quoted and sep and key.lower() in ("from", "in"):
            if not value:
                raise QueryError(f"{key.lower()}: needs a value (e.g. {key.lower()}:general)")
            if len(value) > MAX_FILTER_CHARS:
                raise QueryError(f"the {key.lower()}: value is too long")
            if key.lower() == "from":
                authors.append(value)
            else:
                scopes.append(parse_scope(value))
            continue
        if not _has_token(piece):
            continue  # punctuation only: FTS5 would see an empty phrase that matches nothing
        terms.append(Term(piece, phrase=quoted, prefix=prefix))
    if len(terms) > MAX_TERMS:
        raise QueryError(f"at most {MAX_TERMS} words or phrases")
    if len(authors) > MAX_FILTER_VALUES or len(scopes) > MAX_FILTER_VALUES:
        raise QueryError(f"at most {MAX_FILTER_VALUES} from: and in: filters each")
    query = Query(tuple(terms), tuple(dict.fromkeys(authors)), tuple(dict.fromkeys(scopes)))
    if query.empty:
        raise QueryError("nothing to search for")
    return query


def parse_scope(value: str) -> Scope:
    """``in:`` values: ``channel``, ``server/channel`` or ``server/`` (a whole server)."""
    server, sep, channel = value.partition("/")
    if not sep:
        return Scope(None, value)
    if not server:
        raise QueryError("in: needs a server before '/' (in:server/channel)")
    return Scope(server, channel or None)


# -- FTS5 expression ----------------------------------------------------------------------------------
def _query_tokens(text: str, *, at_end: bool) -> tuple[str, bool]:
    """The text of one FTS5 phrase for ``text`` and whether its last token must be a prefix.

    CJK runs become bigrams like the indexed text; a run that is followed by more of the term
    also gets its final character (the index has it there), and a single character at the very
    end is a prefix (it may be the first half of an indexed bigram)."""
    pieces: list[str] = []
    pos = 0
    prefix = False
    for m in CJK_RUN.finditer(text):
        pieces.append(text[pos : m.start()])
        run = m.group()
        last = at_end and not _has_token(text[m.end() :])
        pieces.append(" " + " ".join(_bigrams(run, final=not last)) + " ")
        prefix = last and len(run) == 1
        pos = m.end()
    pieces.append(text[pos:])
    return "".join(pieces), prefix


def to_fts5(terms: tuple[Term, ...] | list[Term]) -> str:
    """An FTS5 MATCH expression (all terms ANDed); every user character is inside a string."""
    parts: list[str] = []
    for term in terms:
        body, single_cjk_end = _query_tokens(term.text, at_end=True)
        quoted = '"' + body.replace('"', '""') + '"'
        parts.append(quoted + (" *" if term.prefix or single_cjk_end else ""))
    return " AND ".join(parts)


# -- highlighting -------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=65536)
def _fold(c: str) -> str:
    """What FTS5's unicode61 (remove_diacritics 2) compares: NFKC, case-folded, no diacritics."""
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", c).casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _needles(terms: tuple[Term, ...] | list[Term]) -> list[tuple[str, bool, bool]]:
    """``(folded token, is_cjk, prefix)`` for every token of every term."""
    out: list[tuple[str, bool, bool]] = []
    for term in terms:
        folded = "".join(_fold(c) for c in term.text)
        tokens = re.findall(f"[{_CJK}]+|{_WORD}+", folded)
        for i, tok in enumerate(tokens):
            last = i == len(tokens) - 1
            out.append((tok, bool(_CJK_CHAR.match(tok)), term.prefix and last))
    return out


def find_spans(body: str, terms: tuple[Term, ...] | list[Term]) -> list[tuple[int, int]]:
    """Ranges of ``body`` that match a token of the query (merged, sorted)."""
    if body.isascii():  # the common case: folding is lower-casing, offsets do not move
        folded = body.lower()
        origin = list(range(len(body) + 1))
    else:
        folded_parts: list[str] = []
        origin = []  # index in ``body`` of each folded character
        for i, c in enumerate(body):
            f = _fold(c)
            folded_parts.append(f)
            origin.extend([i] * len(f))
        folded = "".join(folded_parts)
        origin.append(len(body))
    spans: list[tuple[int, int]] = []
    for tok, cjk, prefix in _needles(terms):
        if cjk:
            pattern = re.escape(tok)
        else:
            pattern = f"(?<!{_WORD}){re.escape(tok)}" + (f"{_WORD}*" if prefix else f"(?!{_WORD})")
        for m in re.finditer(pattern, folded):
            if m.end() > m.start():
                spans.append((origin[m.start()], origin[m.end() - 1] + 1))
    spans.sort()
    merged: list[tuple[int, int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged


@dataclass(frozen=True)
class Snippet:
    excerpt: str  # a window of the body ("…" where it was cut)
    spans: tuple[tuple[int, int], ...]  # matches in ``excerpt``
    marked: str  # ``excerpt`` with every match between MARK_OPEN and MARK_CLOSE


def snippet(body: str, terms: tuple[Term, ...] | list[Term], width: int = SNIPPET_CHARS) -> Snippet:
    """A window of ``body`` around its first match, matches marked. Pure, bounded by ``width``."""
    text = " ".join(body[: MAX_INDEXED_CHARS + width].split())  # one line
    spans = find_spans(text, terms)
    start = 0
    if spans and spans[0][1] > width:
        start = max(0, spans[0][0] - width // 4)
    end = min(len(text), start + width)
    lead = "…" if start > 0 else ""
    tail = "…" if end < len(text) else ""
    excerpt = lead + text[start:end] + tail
    shift = len(lead) - start
    inside = tuple((max(s, start) + shift, min(e, end) + shift) for s, e in spans if s < end and e > start)
    out: list[str] = []
    pos = 0
    for s, e in inside:
        out += [excerpt[pos:s], MARK_OPEN, excerpt[s:e], MARK_CLOSE]
        pos = e
    out.append(excerpt[pos:])
    return Snippet(excerpt, inside, "".join(out))
