# ruff: noqa: S608  (table names are "msg:<member>"/"fts:<member>", member checked by MEMBER_RE; values are bound)
"""SQLite FTS5 adapter of the message search index (ADR 0014). Synchronous: call it from a thread.

One file, ``$OPENCHAT_HOME/data/search/index.sqlite3`` (directory 0700, file 0600, WAL), holds:

- ``meta``: ``format`` (segmentation version: another one → the file is rebuilt), ``stream`` (the
  events stream incarnation it was built from) and ``seq`` (the last stream sequence applied —
  written in the same transaction as the entries of that batch, so a crash never loses or
  doubles a batch);
- ``members``: the members that have tables;
- per member ``"msg:<member>"`` (one row per message: server, channel, message id, author,
  time, body cut to ``MAX_INDEXED_CHARS``; unique per (server, channel, message id)) and
  ``"fts:<member>"``, a contentless FTS5 table over the segmented body (``unicode61``,
  diacritics removed). A member's search reads only that member's two tables.

Row ids are ``created_at`` in milliseconds shifted left by 16 bits, plus the arrival order among
messages of the same millisecond, so FTS5 walks matches newest first (``ORDER BY rowid DESC`` with a
``LIMIT`` stops early) and ``--after``/``--before`` are rowid ranges FTS5 applies itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import NamedTuple

from services.core.contracts import subjects
from services.core.search_query import (
    MAX_INDEXED_CHARS,
    SEGMENTATION_VERSION,
    Query,
    segment,
    to_fts5,
)

log = logging.getLogger("openchat.state.search")
ID_SHIFT = 16
ID_SLOTS = 1 << ID_SHIFT
MAX_TS_MS = (1 << (63 - ID_SHIFT)) - 1
DEFAULT_QUERY_BUDGET_S = 2.0
TOKENIZER = "unicode61 remove_diacritics 2"
# a prefix index of 3-character prefixes: ``pre*`` reads one doclist instead of merging every term
# that starts with it (at 200k messages p99 of prefix queries 667 -> 79 ms, +28 % file size)
FTS_OPTIONS = "prefix='3', "
INDEX_FORMAT = f"{SEGMENTATION_VERSION}+meta1+p3+seq"  # another value: the file is rebuilt
# a run of new messages spread over more than this is written slot by slot (``_put_many``)
MAX_RANGE_READ_MS = 6 * 3600 * 1000


def _h(kind: str, value: str) -> str:
    return kind + hashlib.blake2b(value.encode(), digest_size=8).hexdigest()


@lru_cache(maxsize=16384)  # few distinct (server, channel, author): hashed once, not per message
def meta_tokens(server_id: str, channel_id: str, author_uid: str) -> str:
    """The filter tokens of a message, in the FTS ``meta`` column: server, channel of the server,
    channel id alone (``in:<channel>``) and author, hashed into plain alphanumeric tokens. Filters
    then are FTS5 lookups intersected with the words (newest first, stopping at the limit)
    rather than a check of every matching row; the SQL equality checks stay as a guard."""
    return " ".join(
        (
            _h("xs", server_id),
            _h("xc", f"{server_id}\x1f{channel_id}"),
            _h("xk", channel_id),
            _h("xa", author_uid),
        )
    )


def _any(tokens: list[str]) -> str:
    return "(" + " OR ".join(f'meta:"{t}"' for t in tokens) + ")"


class SearchTimeout(Exception):
    """A query ran past its time budget (interrupted)."""


class PutMessage(NamedTuple):
    """A message to index (a tuple: made for every message in the view's pass, so it is cheap)."""

    member: str
    server_id: str
    channel_id: str
    message_id: str
    author_uid: str
    created_at: datetime
    body: str


@dataclass(frozen=True)
class DeleteMessage:
    member: str
    server_id: str
    channel_id: str
    message_id: str


@dataclass(frozen=True)
class DropServer:
    member: str
    server_id: str


@dataclass(frozen=True)
class DropMember:
    member: str


IndexOp = PutMessage | DeleteMessage | DropServer | DropMember


@dataclass(frozen=True)
class Row:
    server_id: str
    channel_id: str
    message_id: str
    author_uid: str
    created_at: datetime
    body: str


@dataclass(frozen=True)
class Filters:
    server_id: str | None = None
    channel_id: str | None = None
    authors: tuple[str, ...] = ()
    after: datetime | None = None
    before: datetime | None = None


def ts_ms(when: datetime) -> int:
    aware = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    return max(0, min(MAX_TS_MS, int(aware.timestamp() * 1000)))


def _tables(member: str) -> tuple[str, str]:
    subjects.check_member(member)  # a-z0-9_- only: safe inside a quoted identifier
    return f'"msg:{member}"', f'"fts:{member}"'


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA temp_store=MEMORY")
    return conn


class SearchIndex:
    """The index file. Writes are serialized (one writer connection); reads use their own
    connection, so a search never waits for a batch being written (WAL)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))  # -wal/-shm inherit the mode
        os.chmod(path, 0o600)
        self._wlock = threading.Lock()
        self._rlock = threading.Lock()
        self._w = _connect(path)
        self._init_schema()
        self._r = _connect(path)
        self._members: set[str] = {r[0] for r in self._w.execute("SELECT member FROM members")}

    def close(self) -> None:
        with self._wlock, self._rlock:
            self._r.close()
            self._w.close()

    # -- schema -----------------------------------------------------------------------------------
    def _init_schema(self) -> None:
        w = self._w
        w.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        w.execute("CREATE TABLE IF NOT EXISTS members (member TEXT PRIMARY KEY)")
        row = w.execute("SELECT value FROM meta WHERE key = 'format'").fetchone()
        if row is not None and row[0] != INDEX_FORMAT:
            self._drop_everything()  # indexed with another segmentation: rebuilt from the stream
        w.execute("INSERT OR REPLACE INTO meta VALUES ('format', ?)", (INDEX_FORMAT,))

    def _drop_everything(self) -> None:
        w = self._w
        for (member,) in w.execute("SELECT member FROM members").fetchall():
            self._drop_member_tables(member)
        w.execute("DELETE FROM members")
        w.execute("DELETE FROM meta WHERE key IN ('stream', 'seq')")

    def _ensure_member(self, member: str) -> None:
        if member in self._members:
            return
        msg, fts = _tables(member)
        self._w.execute(
            f"CREATE TABLE IF NOT EXISTS {msg} (id INTEGER PRIMARY KEY, server TEXT NOT NULL, "
            "channel TEXT NOT NULL, message_id TEXT NOT NULL, author TEXT NOT NULL, "
            "body TEXT NOT NULL, UNIQUE (server, channel, message_id))"
        )
        self._w.execute(
            f"CREATE VIRTUAL TABLE IF NOT EXISTS {fts} USING fts5(body, meta, content='', columnsize=0, "
            f"{FTS_OPTIONS}tokenize='{TOKENIZER}')"
        )
        self._w.execute("INSERT OR IGNORE INTO members VALUES (?)", (member,))
        self._members.add(member)

    def _drop_member_tables(self, member: str) -> None:
        msg, fts = _tables(member)
        self._w.execute(f"DROP TABLE IF EXISTS {fts}")
        self._w.execute(f"DROP TABLE IF EXISTS {msg}")

    # -- progress ---------------------------------------------------------------------------------
    def progress(self) -> tuple[str | None, int]:
        """``(stream identity, last applied sequence)``; ``(None, 0)`` for a new (or lost) file."""
        with self._wlock:
            rows = dict(self._w.execute("SELECT key, value FROM meta WHERE key IN ('stream', 'seq')"))
        return rows.get("stream"), int(rows.get("seq", 0))

    def set_progress(self, stream: str, seq: int) -> None:
        with self._wlock, self._transaction():
            self._set_progress(stream, seq)

    def _set_progress(self, stream: str, seq: int) -> None:
        self._w.execute("INSERT OR REPLACE INTO meta VALUES ('stream', ?)", (stream,))
        self._w.execute("INSERT OR REPLACE INTO meta VALUES ('seq', ?)", (str(seq),))

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._w.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._w.execute("ROLLBACK")
            raise
        self._w.execute("COMMIT")

    # -- writes -----------------------------------------------------------------------------------
    def apply(self, ops: Sequence[IndexOp], stream: str | None = None, seq: int | None = None) -> None:
        """Apply ``ops`` (and set the progress) in one transaction. Runs of new messages of one
        member are written with one statement per table (``_put_many``); anything else, and a run
        in which any message is already indexed, one by one (``_put``)."""
        with self._wlock, self._transaction():
            run: list[PutMessage] = []
            for op in ops:
                if isinstance(op, PutMessage):
                    if run and run[-1].member != op.member:
                        self._put_many(run)
                        run = []
                    run.append(op)
                    continue
                if run:
                    self._put_many(run)
                    run = []
                if isinstance(op, DeleteMessage):
                    self._delete(op.member, op.server_id, op.channel_id, op.message_id)
                elif isinstance(op, DropServer):
                    self._drop_server(op.member, op.server_id)
                else:
                    self._drop_member(op.member)
            if run:
                self._put_many(run)
            if stream is not None and seq is not None:
                self._set_progress(stream, seq)

    def _put_many(self, ops: list[PutMessage]) -> None:
        """New messages of one member: row ids from one range read of the ``msg`` table, then one
        ``executemany`` per table inside a savepoint. If any row is refused (a message indexed
        already: a replay, an edit, the same message twice in the run) the savepoint is rolled
        back and the run goes through ``_put`` one by one — same result, only slower."""
        if len(ops) < 2:
            for op in ops:
                self._put(op)
            return
        member = ops[0].member
        self._ensure_member(member)
        msg, fts = _tables(member)
        w = self._w
        bases = [ts_ms(op.created_at) << ID_SHIFT for op in ops]
        lo, hi = min(bases), max(bases) | (ID_SLOTS - 1)
        if (hi - lo) >> ID_SHIFT > MAX_RANGE_READ_MS:
            for op in ops:  # a run spread over a long time (history pages): slot by slot
                self._put(op)
            return
        # the last row id in use in every millisecond the run touches: arrival order among
        # messages of the same millisecond continues after them (as ``_put`` does)
        taken: dict[int, int] = dict(
            w.execute(
                f"SELECT id >> {ID_SHIFT} << {ID_SHIFT}, max(id) FROM {msg} WHERE id BETWEEN ? AND ? "
                f"GROUP BY id >> {ID_SHIFT}",
                (lo, hi),
            ).fetchall()
        )
        rows: list[tuple[int, str, str, str, str, str]] = []
        for op, base in zip(ops, bases, strict=True):
            last = taken.get(base)
            rowid = base if last is None else last + 1
            if rowid > base | (ID_SLOTS - 1):
                for one in ops:
                    self._put(one)  # the rare overflow case is logged there
                return
            taken[base] = rowid
            rows.append(
                (
                    rowid,
                    op.server_id,
                    op.channel_id,
                    op.message_id,
                    op.author_uid,
                    op.body[:MAX_INDEXED_CHARS],
                )
            )
        w.execute("SAVEPOINT put_many")
        before = w.total_changes
        w.executemany(
            f"INSERT OR IGNORE INTO {msg} (id, server, channel, message_id, author, body) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        if w.total_changes - before != len(rows):
            w.execute("ROLLBACK TO put_many")
            w.execute("RELEASE put_many")
            for op in ops:
                self._put(op)
            return
        w.executemany(
            f"INSERT INTO {fts}(rowid, body, meta) VALUES (?, ?, ?)",
            ((r[0], segment(r[5]), meta_tokens(r[1], r[2], r[4])) for r in rows),
        )
        w.execute("RELEASE put_many")

    def _put(self, op: PutMessage) -> None:
        """Insert (two statements in the common case: a new message), or replace a changed one."""
        self._ensure_member(op.member)
        msg, fts = _tables(op.member)
        body = op.body[:MAX_INDEXED_CHARS]
        ms = ts_ms(op.created_at)
        base = ms << ID_SHIFT
        w = self._w
        for _ in range(3):
            # after the last message of the same millisecond: arrival (stream) order among messages
            # that share a timestamp (backends often have whole seconds)
            top = w.execute(
                f"SELECT max(id) FROM {msg} WHERE id BETWEEN ? AND ?", (base, base | (ID_SLOTS - 1))
            )
            last = top.fetchone()[0]
            rowid = base if last is None else last + 1
            if rowid > base | (ID_SLOTS - 1):
                log.warning("search index: more than 65,536 messages in one millisecond; one not indexed")
                return
            try:
                w.execute(
                    f"INSERT INTO {msg} (id, server, channel, message_id, author, body) VALUES (?, ?, ?, ?, ?, ?)",
                    (rowid, op.server_id, op.channel_id, op.message_id, op.author_uid, body),
                )
                break
            except sqlite3.IntegrityError as exc:
                if exc.sqlite_errorname == "SQLITE_CONSTRAINT_PRIMARYKEY":
                    continue
                if not self._replace(op, msg, fts, ms, body):
                    return  # the same message again (replay, gap fill, rehydrate)
        else:
            return
        w.execute(
            f"INSERT INTO {fts}(rowid, body, meta) VALUES (?, ?, ?)",
            (rowid, segment(body), meta_tokens(op.server_id, op.channel_id, op.author_uid)),
        )

    def _replace(self, op: PutMessage, msg: str, fts: str, ms: int, body: str) -> bool:
        """A message already indexed: False when nothing changed, else its entry is removed (the
        caller inserts the new one)."""
        old = self._w.execute(
            f"SELECT id, author, body FROM {msg} WHERE server = ? AND channel = ? AND message_id = ?",
            (op.server_id, op.channel_id, op.message_id),
        ).fetchone()
        if old[0] >> ID_SHIFT == ms and old[1] == op.author_uid and old[2] == body:
            return False
        self._fts_delete(fts, [(old[0], op.server_id, op.channel_id, old[1], old[2])])
        self._w.execute(f"DELETE FROM {msg} WHERE id = ?", (old[0],))
        return True

    def _fts_delete(self, fts: str, rows: list[tuple[int, str, str, str, str]]) -> None:
        """Remove entries of the contentless FTS table: it needs the very values it indexed."""
        self._w.executemany(
            f"INSERT INTO {fts}({fts}, rowid, body, meta) VALUES ('delete', ?, ?, ?)",
            (
                (rid, segment(body), meta_tokens(server, channel, author))
                for rid, server, channel, author, body in rows
            ),
        )

    def _delete(self, member: str, server_id: str, channel_id: str, message_id: str) -> None:
        if member not in self._members:
            return
        msg, fts = _tables(member)
        row = self._w.execute(
            f"SELECT id, server, channel, author, body FROM {msg} WHERE server = ? AND channel = ? AND message_id = ?",
            (server_id, channel_id, message_id),
        ).fetchone()
        if row is not None:
            self._fts_delete(fts, [row])
            self._w.execute(f"DELETE FROM {msg} WHERE id = ?", (row[0],))

    def _drop_server(self, member: str, server_id: str) -> None:
        if member not in self._members:
            return
        msg, fts = _tables(member)
        rows = self._w.execute(
            f"SELECT id, server, channel, author, body FROM {msg} WHERE server = ?", (server_id,)
        ).fetchall()
        self._fts_delete(fts, rows)
        self._w.execute(f"DELETE FROM {msg} WHERE server = ?", (server_id,))

    def _drop_member(self, member: str) -> None:
        if member not in self._members:
            return
        self._drop_member_tables(member)
        self._w.execute("DELETE FROM members WHERE member = ?", (member,))
        self._members.discard(member)

    # -- reads ------------------------------------------------------------------------------------
    def members(self) -> set[str]:
        with self._wlock:
            return set(self._members)

    def _known(self, member: str) -> bool:
        """Whether ``member`` has tables — asking the file when the writer is another process
        (the search worker) and this process has not seen the member yet."""
        if member in self._members:
            return True
        with self._rlock:
            found = self._r.execute("SELECT 1 FROM members WHERE member = ?", (member,)).fetchone()
        if found is not None:
            self._members.add(member)
        return found is not None

    # -- status shared with another process ------------------------------------------------------
    def set_status(self, **values: int) -> None:
        """Counters of the indexer (``caught_up``, ``skipped``, ``rebuilds``) for readers in other
        processes (the state service when the indexer runs as its worker)."""
        with self._wlock, self._transaction():
            for key, value in values.items():
                self._w.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"status.{key}", str(value)))

    def status(self) -> dict[str, int]:
        """``seq`` and the indexer's counters, read from the file."""
        with self._rlock:
            rows = self._r.execute("SELECT key, value FROM meta WHERE key = 'seq' OR key LIKE 'status.%'")
            return {k.removeprefix("status."): int(v) for k, v in rows}

    def servers(self, member: str) -> set[str]:
        """Servers with indexed messages of ``member``."""
        if member not in self.members():
            return set()
        msg, _ = _tables(member)
        with self._rlock:
            return {r[0] for r in self._r.execute(f"SELECT DISTINCT server FROM {msg}")}

    def count(self, member: str) -> int:
        if member not in self.members():
            return 0
        msg, _ = _tables(member)
        with self._rlock:
            return int(self._r.execute(f"SELECT count(*) FROM {msg}").fetchone()[0])

    def search(
        self,
        member: str,
        query: Query,
        filters: Filters,
        limit: int,
        budget_s: float = DEFAULT_QUERY_BUDGET_S,
    ) -> tuple[list[Row], bool]:
        """Messages of ``member`` matching ``query`` and ``filters``, newest first, and whether
        more than ``limit`` match. Raises ``SearchTimeout`` past ``budget_s``."""
        if not self._known(member):
            return [], False
        msg, fts = _tables(member)
        where: list[str] = []
        params: list[object] = []
        match: list[str] = []  # FTS5: the words in ``body``, the filters as ``meta`` tokens
        if query.terms:
            match.append(f"body:({to_fts5(query.terms)})")
        if filters.after is not None:
            where.append("f.rowid >= ?")
            params.append(ts_ms(filters.after) << ID_SHIFT)
        if filters.before is not None:
            where.append("f.rowid < ?")
            params.append(ts_ms(filters.before) << ID_SHIFT)
        if filters.server_id is not None:
            where.append("m.server = ?")
            params.append(filters.server_id)
            if filters.channel_id is None:
                match.append(_any([_h("xs", filters.server_id)]))
        if filters.channel_id is not None:
            where.append("m.channel = ?")
            params.append(filters.channel_id)
            if filters.server_id is not None:
                match.append(_any([_h("xc", f"{filters.server_id}\x1f{filters.channel_id}")]))
            else:
                match.append(_any([_h("xk", filters.channel_id)]))
        authors = tuple(dict.fromkeys((*filters.authors, *query.authors)))
        if filters.authors and query.authors:  # both given: only those in both
            authors = tuple(a for a in filters.authors if a in query.authors) or ("\x00",)
        if authors:
            where.append(f"m.author IN ({','.join('?' * len(authors))})")
            params.extend(authors)
            match.append(_any([_h("xa", a) for a in authors]))
        if query.scopes:
            ors = []
            tokens = []
            for scope in query.scopes:
                parts = []
                if scope.server_id is not None:
                    parts.append("m.server = ?")
                    params.append(scope.server_id)
                if scope.channel_id is not None:
                    parts.append("m.channel = ?")
                    params.append(scope.channel_id)
                ors.append("(" + " AND ".join(parts) + ")")
                if scope.server_id is not None and scope.channel_id is not None:
                    tokens.append(_h("xc", f"{scope.server_id}\x1f{scope.channel_id}"))
                elif scope.server_id is not None:
                    tokens.append(_h("xs", scope.server_id))
                elif scope.channel_id is not None:
                    tokens.append(_h("xk", scope.channel_id))
            where.append("(" + " OR ".join(ors) + ")")
            match.append(_any(tokens))
        if not match:
            return [], False  # nothing to look for (``parse_query`` refuses such queries)
        where.insert(0, f"f.{fts} MATCH ?")
        params.insert(0, " AND ".join(match))
        source = f"{fts} AS f JOIN {msg} AS m ON m.id = f.rowid"
        rowid = "f.rowid"
        sql = (
            f"SELECT {rowid}, m.server, m.channel, m.message_id, m.author, m.body FROM {source}"
            + (" WHERE " + " AND ".join(where) if where else "")
            + f" ORDER BY {rowid} DESC LIMIT ?"
        )
        params.append(limit + 1)
        deadline = time.monotonic() + budget_s
        with self._rlock:
            self._r.set_progress_handler(lambda: int(time.monotonic() > deadline), 2000)
            try:
                rows = self._r.execute(sql, params).fetchall()
            except sqlite3.OperationalError as exc:
                if "interrupted" in str(exc):
                    raise SearchTimeout(f"the search took longer than {budget_s:g} s") from None
                if "no such table" in str(exc):  # dropped by the worker meanwhile
                    self._members.discard(member)
                    return [], False
                raise
            finally:
                self._r.set_progress_handler(None, 0)
        out = [
            Row(
                server_id=r[1],
                channel_id=r[2],
                message_id=r[3],
                author_uid=r[4],
                created_at=datetime.fromtimestamp((r[0] >> ID_SHIFT) / 1000, UTC),
                body=r[5],
            )
            for r in rows[:limit]
        ]
        return out, len(rows) > limit

    def size_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            p = Path(f"{self.path}{suffix}")
            if p.exists():
                total += p.stat().st_size
        return total
