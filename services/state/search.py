"""Message search in the state service: the index file, its indexer, and the ``search`` command.

The state service owns the index because it already consumes every stored event of every
member; the index lives in the data volume (``$OPENCHAT_HOME/data/search/index.sqlite3``). See
``search_index`` (the file), ``search_indexer`` (stream → index) and ADR 0014 (why FTS5, how CJK
and Hangul are tokenized).
"""

from __future__ import annotations

import asyncio
import logging

from services.core.bus import Bus, CommandError
from services.core.contracts.search import SearchArgs, SearchHit, SearchResult, Span
from services.core.paths import HomeLayout
from services.core.search_query import QueryError, parse_query, snippet
from services.state.materializer import Materializer
from services.state.search_feed import FeedSender
from services.state.search_files import index_path, open_index, seed_from_view
from services.state.search_index import Filters, SearchIndex, SearchTimeout
from services.state.search_indexer import INDEXED_KINDS, SearchIndexer
from services.state.search_worker import IndexWorker
from services.state.settings import StateSettings
from services.state.store import ViewStore

log = logging.getLogger("openchat.state.search")


class SearchRuntime:
    """The index of the state service. ``worker`` (``STATE_SEARCH_WORKER``, the service's default):
    the indexer runs in a child process (``search_worker``), fed over a socket by this process's
    view (``search_feed``, unless ``STATE_SEARCH_WORKER_FED=false``: its own consumer), and this
    process only reads the file. Else the indexer runs here and is fed by the view's
    materializer (``source``): one read and decode of the stream for both (ADR 0014); it reads
    the stream itself only to catch up."""

    def __init__(
        self,
        bus: Bus,
        store: ViewStore,
        settings: StateSettings,
        stream: str,
        *,
        worker: bool = False,
        source: Materializer | None = None,
    ) -> None:
        self.settings = settings
        self.index = open_index(index_path(settings))
        self.indexer: SearchIndexer | None = None
        self.worker: IndexWorker | None = None
        if worker:
            feed = (
                FeedSender(source, INDEXED_KINDS)
                if source is not None and settings.state_search_worker_fed
                else None
            )
            self.worker = IndexWorker(settings.model_copy(update={"events_stream": stream}), feed)
            return

        async def seed(index: SearchIndex) -> int:
            return await seed_from_view(store, index)

        self.indexer = SearchIndexer(
            bus,
            self.index,
            stream,
            registry_db=HomeLayout(settings.home).registry_db,
            reconcile_s=settings.state_search_reconcile_s,
            seed=seed,
            source=source,
        )

    def start(self) -> None:
        if self.worker is not None:
            self.worker.start()
        elif self.indexer is not None:
            self.indexer.start()

    async def stop(self) -> None:
        if self.worker is not None:
            await self.worker.stop()
        if self.indexer is not None:
            await self.indexer.stop()
        await asyncio.to_thread(self.index.close)

    def status(self) -> dict[str, int]:
        """``seq``, ``caught_up``, ``skipped``, ``rebuilds`` of the indexer (here or in the worker)."""
        ix = self.indexer
        if ix is not None:
            return {
                "seq": ix.applied_seq,
                "caught_up": int(ix.caught_up),
                "skipped": ix.skipped,
                "rebuilds": ix.rebuilds,
            }
        return self.index.status()

    async def search(self, member: str, args: SearchArgs) -> SearchResult:
        try:
            query = parse_query(args.query)
        except QueryError as exc:
            raise CommandError("invalid_query", str(exc)) from None
        if args.after and args.before and args.after >= args.before:
            raise CommandError("invalid_query", "after must be earlier than before")
        filters = Filters(
            server_id=args.server_id,
            channel_id=args.channel_id,
            authors=(args.from_uid,) if args.from_uid else (),
            after=args.after,
            before=args.before,
        )
        try:
            rows, has_more = await asyncio.to_thread(
                self.index.search, member, query, filters, args.limit, self.settings.state_search_budget_s
            )
        except SearchTimeout as exc:
            raise CommandError(
                "search_timeout", f"{exc}; narrow it down (more words, --server, --after)"
            ) from None
        hits = []
        for row in rows:
            snip = snippet(row.body, query.terms)
            hits.append(
                SearchHit(
                    server_id=row.server_id,
                    channel_id=row.channel_id,
                    message_id=row.message_id,
                    author_uid=row.author_uid,
                    created_at=row.created_at,
                    snippet=snip.marked,
                    excerpt=snip.excerpt,
                    spans=[Span(start=s, end=e) for s, e in snip.spans],
                )
            )
        status = await asyncio.to_thread(self.status)
        return SearchResult(
            hits=hits,
            has_more=has_more,
            indexed_seq=status.get("seq", 0),
            caught_up=bool(status.get("caught_up", 0)),
        )
