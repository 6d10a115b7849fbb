"""The connector's commands and its session supervisor, independent of the bus.

``Connector`` owns the member identities (created on first use or by ``identity_create``,
imported by ``identity_import``, encrypted at rest; a UID mode switch or an import re-binds every
joined server to the newly projected uid), the
durable joined-server list (``ServerStore``), the durable gap-fill anchors (``AnchorStore``, same
registry database), the member's own profile (``ProfileStore``, same database; published by
``ProfilePublisher`` only to servers the member agreed to share it with: docs/product-rules.md
D18) and one ``Session`` per
(member, server). Its command
methods take ``(member, args)`` and return result contracts, raising ``CommandError`` for every
failure (backend errors are mapped with their code and whether a retry can help). ``app.py``
binds them to ``oc.<member>.cmd.connector.<verb>``; tests may call them directly.

Events go to an ``EventSink`` (``bus.publish_event`` in the service).

Link previews (features 5.9, 14.5, P6; ``previews.py``): for each message a session publishes for
the first time (live, or gap-filled and at most 10 minutes old) on a server whose record is
``verified``, while the member's switch is on (``connector.previews``, default on, kept in
``PreviewPrefs``), and when the backend sent no ``link_previews`` of its own, up to 3 URLs of the
body are fetched in the background and ``message.previews`` (event id ``previews:<message id>``)
is published when at least one card was found. ``message.created`` never waits for it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import httpx

from services.connector import domain
from services.connector.anchors import AnchorStore
from services.connector.backend import (
    BackendClient,
    BackendError,
    Identity,
    Unreachable,
    Unsupported,
    normalize_base_url,
)
from services.connector.leases import SessionLeases
from services.connector.previews import PreviewFetcher, PreviewPrefs, extract_urls
from services.connector.profile import ProfilePublisher, ProfileStore, apply_change, current_state
from services.connector.quota import StorageQuota
from services.connector.session import BatchSink, EventSink, Session, Timing
from services.connector.uploads import UploadStager
from services.core.bus import CommandError
from services.core.contracts import events as ev
from services.core.contracts import subjects
from services.core.contracts.blobs import UploadChunkArgs, UploadChunkResult
from services.core.contracts.bus import EventEnvelope, utcnow
from services.core.contracts.chat import (
    Ack,
    ChatMessage,
    ConsentArgs,
    DeleteMessageArgs,
    DirectoryEntry,
    DiscoverArgs,
    DiscoverResult,
    HistoryArgs,
    HistoryResult,
    IdentityCreateArgs,
    IdentityGetArgs,
    IdentityImportArgs,
    IdentityInfo,
    JoinArgs,
    JoinResult,
    LeaveArgs,
    LeaveResult,
    MembersArgs,
    MembersUpdated,
    MessageDeleted,
    MessagePreviews,
    PreviewsArgs,
    PreviewsResult,
    ProbeArgs,
    ProbeResult,
    ProfileGetArgs,
    ProfileGetResult,
    ProfilesArgs,
    ProfileSetArgs,
    ProfilesResult,
    ProfileSyncState,
    RehydrateRequest,
    SendArgs,
    SendResult,
    ServerJoined,
    ServerLeft,
    ServerRecord,
    ServerUpdated,
    TypingArgs,
    UidModeArgs,
)
from services.core.contracts.cluster import lease_key, parse_lease_key
from services.core.contracts.notify import ReadAckGetArgs, ReadAckPutArgs, ReadAckResult
from services.core.contracts.search import (
    MAX_PAGE_MESSAGES,
    HistoryPage,
)
from services.core.identity import (
    IdentityError,
    IdentityStore,
    UidMode,
    check_root,
    device_id,
    directory_server_id,
    load_or_create_key,
    project_uid,
)
from services.core.local_ids import LocalIdError, plan_join
from services.core.members import MemberRegistry
from services.core.paths import HomeLayout
from services.core.servers import ServerExists, ServerNotJoined, ServerStore

log = logging.getLogger("openchat.connector")

P = ParamSpec("P")
T = TypeVar("T")


def backend_errors(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Turn a ``BackendError`` escaping a command into the member's ``CommandError``."""

    @wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except BackendError as exc:
            raise exc.to_command_error() from exc

    return wrapper


def icon_text(name: str) -> str:
    """First 2 characters of the name, upper-cased; ``SV`` when empty (numbers.md §2)."""
    return name.strip()[:2].upper() or "SV"


class KeyedLocks:
    """One ``asyncio.Lock`` per key (a member), created on first use and dropped once nobody
    holds or waits for it (a family instance's 1,000 members leave no 1,000 locks behind)."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    def __len__(self) -> int:
        return len(self._locks)

    def locked(self, key: str) -> bool:
        entry = self._locks.get(key)
        return entry is not None and entry[0].locked()

    @contextlib.asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key) or (asyncio.Lock(), 0)
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


class Connector:
    def __init__(
        self,
        sink: EventSink,
        home: Path,
        key_file: Path,
        *,
        timing: Timing | None = None,
        http: httpx.AsyncClient | None = None,
        request_timeout_s: float = 30.0,
        batch_sink: BatchSink | None = None,
        previews: PreviewFetcher | None = None,
        preview_allow_private: bool = False,
        quota: StorageQuota | None = None,
    ) -> None:
        self.sink = sink
        self.batch_sink = batch_sink  # gap fill: many events per acked batch (None: one by one)
        self.timing = timing or Timing()
        registry = self.registry_db = HomeLayout(home).registry_db
        registry.parent.mkdir(parents=True, exist_ok=True)
        self.servers = ServerStore(registry)
        self.identities = IdentityStore(registry, load_or_create_key(key_file))
        self.anchors = AnchorStore(registry, interval_s=self.timing.anchor_flush_s)
        self.profile_store = ProfileStore(registry)
        self.publisher = ProfilePublisher(self.profile_store)
        self.preview_prefs = PreviewPrefs(registry)
        self.uploads = UploadStager(HomeLayout(home).root / "cache" / "uploads")
        # ``preview_allow_private``: OPENCHAT_PREVIEW_ALLOW_PRIVATE (tests, local demos)
        self.previews = previews or PreviewFetcher(allow_private=preview_allow_private)
        self._preview_tasks: set[asyncio.Task[None]] = set()
        # One connection pool per backend (``_http_of``): httpx checks every pooled connection on
        # each request, so a pool shared by all backends costs each request in proportion to all
        # of their connections (issue 16). ``http`` (tests): one client for every backend.
        self._shared_http = http
        self.request_timeout_s = request_timeout_s
        self._pools: dict[str, httpx.AsyncClient] = {}
        self.http = http or self._new_http()
        self.sessions: dict[tuple[str, str], Session] = {}
        self.rate = domain.RateLimiter()
        self.quota = quota  # storage quotas of the shared stream (ADR 0009); None: none
        self._roots: dict[str, tuple[str, UidMode]] = {}
        # joins, identity changes and re-binds of one member exclude each other; other members'
        # run concurrently (issue 16: one lock for everyone serialized 1,000 hydrates)
        self._member_locks = KeyedLocks()
        self._profile_lock = asyncio.Lock()
        # Several replicas (issue 16, ADR 0021): sessions start and stop only with their lease
        # (``leases.SessionLeases`` drives ``wanted_keys`` / ``start_key`` / ``stop_key``).
        self.leases: SessionLeases | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Forget members removed while the connector was down; start a session for every
        (member, server) in the durable store."""
        for member in MemberRegistry(self.registry_db).removed():
            self._forget_stores(member)
        self.anchors.start()
        if self.leases is not None:
            self.leases.start()
            log.info("connector sessions follow their leases", extra={"replica": self.leases.replica})
            return
        for member, record in self.servers.everything():
            self._start_session(member, record)
        log.info("connector sessions started", extra={"sessions": len(self.sessions)})

    # -- sessions spread over replicas (issue 16) --------------------------------------------------
    def wanted_keys(self) -> set[str]:
        """Every session that exists: the joined servers of the members not removed."""
        removed = set(MemberRegistry(self.registry_db).removed())
        return {lease_key(m, r.server_id) for m, r in self.servers.everything() if m not in removed}

    async def start_key(self, key: str) -> bool:
        """The lease of ``key`` was acquired: start its session (False: it no longer exists)."""
        parsed = parse_lease_key(key)
        if parsed is None:
            return False
        member, server_id = parsed
        if (member, server_id) in self.sessions:
            return True
        try:
            record = self.servers.get(member, server_id)
        except ServerNotJoined:
            return False
        self._start_session(member, record)
        return True

    async def stop_key(self, key: str) -> None:
        """The lease of ``key`` goes: stop its session and write its anchors before it is given
        back (the next holder gap-fills from them)."""
        parsed = parse_lease_key(key)
        session = self.sessions.pop(parsed, None) if parsed is not None else None
        if session is not None:
            await session.stop()
        with contextlib.suppress(Exception):
            await self.anchors.flush()

    async def follow_records(self) -> None:
        """A held session whose stored record got another identity (a re-bind made on another
        replica): restart it under the new one, continuing the old one's history."""
        for (member, server_id), session in list(self.sessions.items()):
            try:
                stored = self.servers.get(member, server_id)
            except ServerNotJoined:
                continue
            if (stored.user_uid, stored.device_id) == (session.record.user_uid, session.record.device_id):
                continue
            if self.sessions.get((member, server_id)) is not session:
                continue
            del self.sessions[(member, server_id)]
            await session.stop()
            record = session.record.model_copy(
                update={"user_uid": stored.user_uid, "device_id": stored.device_id}
            )
            self._start_session(member, record, previous=session)
            log.info("session re-bound on its holder", extra={"member": member, "server_id": server_id})

    async def forget_member(self, member: str) -> dict[str, int]:
        """A member was removed (``oc.sys.member.remove.connector``): stop its sessions and delete
        everything the connector keeps of it."""
        keys = [key for key in self.sessions if key[0] == member]
        for key in keys:
            await self.sessions.pop(key).stop()
            self.rate.forget(key)
        removed = self._forget_stores(member)
        removed["sessions"] = len(keys)
        if self.leases is not None:
            self.leases.kick()  # the other replicas drop theirs on their next tick
        log.info("member forgotten", extra={"member": member, **removed})
        return removed

    def _forget_stores(self, member: str) -> dict[str, int]:
        return {
            "joined_servers": self.servers.forget_member(member),
            "profiles": self.profile_store.forget_member(member),
            "anchors": self.anchors.forget_member(member),
            "preview_prefs": self.preview_prefs.forget_member(member),
        }

    async def close(self) -> None:
        if self.leases is not None:
            await self.leases.close()  # stops the held sessions, then gives their leases back
        sessions, self.sessions = list(self.sessions.values()), {}
        await asyncio.gather(*(s.stop() for s in sessions), return_exceptions=True)
        tasks, self._preview_tasks = list(self._preview_tasks), set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.previews.close()
        try:
            await self.anchors.close()
        except Exception as exc:
            log.warning("anchor write failed at close", extra={"error": type(exc).__name__})
        await self.http.aclose()
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()

    def _new_http(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            timeout=httpx.Timeout(self.request_timeout_s, connect=5.0),
            # idle connections are checked on every request of the pool: keep few per backend
            limits=httpx.Limits(max_connections=200, max_keepalive_connections=16),
            follow_redirects=False,
        )

    def _http_of(self, base_url: str) -> httpx.AsyncClient:
        """The HTTP client (connection pool) of one backend origin."""
        if self._shared_http is not None:
            return self._shared_http
        origin = httpx.URL(base_url).copy_with(path="/", query=None, fragment=None)
        key = str(origin)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = self._new_http()
        return pool

    def _session_count(self) -> int:
        return len(self.sessions)

    def _start_session(
        self,
        member: str,
        record: ServerRecord,
        previous: Session | None = None,
    ) -> Session:
        """Start the session of ``record`` (``previous``: the stopped session it continues, a re-bind)."""
        client = self._client(record.base_url, Identity(record.user_uid, record.device_id))

        def persist(changed: ServerRecord) -> None:
            with contextlib.suppress(ServerNotJoined):
                self.servers.update(member, changed)

        session = Session(
            member,
            record,
            client,
            self.sink,
            self.timing,
            anchors=self.anchors,
            on_record=persist,
            batch_sink=self.batch_sink,
            profile_sync=self.publisher.sync,
            on_new_message=self._on_new_message,
            quota=self.quota,
            peers=self._session_count,
        )
        if previous is not None:
            session.continue_from(previous)
        self.sessions[(member, record.server_id)] = session
        session.start()
        return session

    # -- link previews, fetched by the stack into a bounded cache (features 5.9, 14.5; D17) ------------------
    def wants_previews(self, session: Session, msg: ChatMessage) -> list[str]:
        """The URLs to fetch for ``msg`` (empty: none). The backend's own cards win; otherwise
        only on a verified server and while the member's switch is on."""
        if msg.link_previews or session.record.trust_state != "verified":
            return []
        urls = extract_urls(msg.body)
        if not urls or not self.preview_prefs.enabled(session.member):
            return []
        return urls

    def _on_new_message(self, session: Session, msg: ChatMessage) -> None:
        urls = self.wants_previews(session, msg)
        if not urls:
            return
        task = asyncio.create_task(self._publish_previews(session, msg, urls), name="link-previews")
        self._preview_tasks.add(task)
        task.add_done_callback(self._preview_tasks.discard)

    async def _publish_previews(self, session: Session, msg: ChatMessage, urls: list[str]) -> None:
        try:
            cards = await self.previews.previews(urls)
            current = self.sessions.get((session.member, session.server_id))
            if not cards or current is None or not self.preview_prefs.enabled(session.member):
                return  # nothing found, the server was left, or the switch went off meanwhile
            await current.publish(
                ev.MESSAGE_PREVIEWS,
                MessagePreviews(channel_id=msg.channel_id, message_id=msg.id, previews=cards),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # never the URL or the body
            log.warning(
                "link previews failed",
                extra={"member": session.member, "server_id": session.server_id, "error": type(exc).__name__},
            )

    async def previews_settled(self) -> None:
        """Wait until no preview fetch is running (tests, benchmarks)."""
        while self._preview_tasks:
            await asyncio.gather(*list(self._preview_tasks), return_exceptions=True)

    async def previews_switch(self, member: str, args: PreviewsArgs) -> PreviewsResult:
        """``connector.previews``: read (``enabled`` None) or set the member's switch."""
        if args.enabled is not None:
            await asyncio.to_thread(self.preview_prefs.set, member, args.enabled)
            log.info("link previews switched", extra={"member": member, "enabled": args.enabled})
        return PreviewsResult(enabled=await asyncio.to_thread(self.preview_prefs.enabled, member))

    # -- identity --------------------------------------------------------------------------------
    def _stored_identity(self, member: str) -> tuple[str, UidMode] | None:
        """The member's root and uid mode as stored (``None``: none yet); never creates one."""
        try:
            root = self.identities.root(member)
        except IdentityError as exc:
            if "has no identity" not in str(exc):
                raise CommandError("identity_unavailable", str(exc)) from exc
            return None
        return root, self.identities.uid_mode(member)

    def _identity(self, member: str) -> tuple[str, UidMode]:
        cached = self._roots.get(member)
        if cached is not None:
            return cached
        found = self._stored_identity(member)
        if found is None:
            try:
                root, mode, created = self.identities.create_if_absent(member)
            except IdentityError as exc:
                raise CommandError("identity_unavailable", str(exc)) from exc
            found = (root, mode)
            if created:
                log.info("identity created", extra={"member": member})
        self._roots[member] = found
        return found

    def server_identity(self, member: str, server_id: str) -> Identity:
        root, mode = self._identity(member)
        return Identity(project_uid(root, server_id, mode), device_id(root))

    def directory_identity(self, member: str, base_url: str) -> Identity:
        root, mode = self._identity(member)
        return Identity(project_uid(root, directory_server_id(base_url), mode), device_id(root))

    def _client(self, base_url: str, ident: Identity) -> BackendClient:
        return BackendClient(self._http_of(base_url), base_url, ident, total_timeout_s=self.request_timeout_s)

    def _session(self, member: str, server_id: str) -> Session:
        session = self.sessions.get((member, server_id))
        if session is None:
            raise CommandError("server_not_joined", f"You have not joined server {server_id}.")
        return session

    async def _emit(self, member: str, envelope: EventEnvelope[Any]) -> None:
        """Publish an envelope built by the events table (``EventSpec.envelope``)."""
        await self.sink(member, envelope)

    # -- servers ---------------------------------------------------------------------------------
    @backend_errors
    async def discover(self, member: str, args: DiscoverArgs) -> DiscoverResult:
        base = normalize_base_url(args.url)
        ident = self.directory_identity(member, base)
        directory = await self._client(base, ident).directory()
        entries = [
            DirectoryEntry(
                server_id=s.server_id,
                display_name=s.display_name,
                icon_text=s.icon_text or icon_text(s.display_name),
                description=s.description,
                trust_state=s.trust_state or "unverified",
            )
            for s in directory.servers
        ]
        return DiscoverResult(url=base, directory_uid=ident.user_uid, servers=entries)

    @backend_errors
    async def probe(self, member: str, args: ProbeArgs) -> ProbeResult:
        """Capabilities, trust and disclosure of the server a join would use: the picked entry,
        else the capabilities' id (rule D1) — with a warning when the directory does not list it
        — and the local id proposed for it (issue #14)."""
        base = normalize_base_url(args.url)
        client = self._client(base, self.directory_identity(member, base))
        caps, path = await client.capabilities()
        backend_id = args.server_id or caps.server_id
        trust_state: str | None = None
        in_directory: bool | None = None
        with contextlib.suppress(BackendError):
            listed = (await client.directory()).servers
            in_directory = False
            for entry in listed:
                if entry.server_id == backend_id:
                    in_directory = True
                    if args.server_id is not None:  # picked from the directory; a manual probe
                        trust_state = entry.trust_state  # counts as unverified (features 2.4)
        trust = domain.assess_trust(base, caps.security.https_required, trust_state)
        if in_directory is False:
            note = (
                f"{backend_id} is not listed in this backend's directory ({base}/v1/servers); "
                "joining uses the id its capabilities give."
            )
            trust = trust.model_copy(update={"warnings": [*trust.warnings, note]})
        joined = self.servers.of_member(member)
        plan = plan_join(backend_id, base, joined, check_taken=False)
        _, mode = self._identity(member)
        ident = self.server_identity(member, plan.projection_scope)
        shared = any(r.profile_consent for r in joined if r.backend_id == backend_id and r.base_url == base)
        return ProbeResult(
            url=base,
            capabilities_path=path,
            capabilities=domain.snapshot_of(caps),
            trust=trust,
            disclosure=domain.disclosure(
                ident.user_uid, ident.device_id, mode, shared, base if plan.uid_scope else None
            ),
            backend_server_id=backend_id,
            in_directory=in_directory,
            local_id=plan.local_id,
        )

    @backend_errors
    async def join(self, member: str, args: JoinArgs) -> JoinResult:
        if not args.confirmed:
            raise CommandError(
                "confirmation_required", "Joining needs the member's explicit confirmation (confirmed=true)."
            )
        try:
            subjects.check_token(args.server_id, "server id")
        except subjects.SubjectError as exc:
            raise CommandError("invalid_server_id", str(exc)) from exc
        base = normalize_base_url(args.url)
        async with self._member_locks.hold(member):
            # issue #14: the local id (every key of the stack) and the uid's projection scope
            # the member's identity (created on a first join) and joined servers are read off the
            # event loop: SQLite (and a WAL checkpoint on close) would stall every session
            await asyncio.to_thread(self._identity, member)
            joined = await asyncio.to_thread(self.servers.of_member, member)
            try:
                plan = plan_join(args.server_id, base, joined, args.local_id)
            except LocalIdError as exc:
                raise CommandError(exc.code, str(exc)) from exc
            if (member, plan.local_id) in self.sessions:
                raise CommandError("server_exists", f"Local server id already in use: {plan.local_id}")
            dir_client = self._client(base, self.directory_identity(member, base))
            directory = await dir_client.directory()
            entry = next((s for s in directory.servers if s.server_id == args.server_id), None)
            ident = self.server_identity(member, plan.projection_scope)
            caps, _ = await self._client(base, ident).capabilities()
            if entry is None and caps.server_id != args.server_id:
                raise CommandError(
                    "server_not_found", f"{base} lists no server {args.server_id} in its directory."
                )
            name = entry.display_name if entry is not None else caps.server_name
            record = ServerRecord(
                server_id=plan.local_id,
                backend_server_id=plan.backend_id,
                uid_scope=plan.uid_scope,
                base_url=base,
                display_name=name,
                icon_text=(entry.icon_text if entry is not None else "") or icon_text(name),
                trust_state=(entry.trust_state if entry is not None else "") or "unverified",
                user_uid=ident.user_uid,
                device_id=ident.device_id,
                profile_consent=None,
                joined_at=utcnow(),
            )
            try:  # off the event loop: a durable write (fsync) would stall every session
                await asyncio.to_thread(self.servers.add, member, record)
            except ServerExists as exc:
                raise CommandError("server_exists", str(exc)) from exc
            await self._emit(member, ev.SERVER_JOINED.envelope(record.server_id, ServerJoined(server=record)))
            if self.leases is not None:
                self.leases.kick()  # the replica the placement picks starts it
            else:
                self._start_session(member, record)
        log.info(
            "server joined",
            extra={
                "member": member,
                "server_id": record.server_id,
                "backend_server_id": record.backend_id,
                "origin_scoped": record.uid_scope is not None,
            },
        )
        return JoinResult(server=record)

    async def leave(self, member: str, args: LeaveArgs) -> LeaveResult:
        try:
            record = self.servers.get(member, args.server_id)
        except ServerNotJoined as exc:
            raise CommandError("server_not_joined", f"You have not joined server {args.server_id}.") from exc
        client = self._client(record.base_url, Identity(record.user_uid, record.device_id))
        backend_left = False
        try:
            await client.leave(record.backend_id)  # the backend's own id on the wire (issue #14)
            backend_left, detail = True, "Left server."
        except Unreachable:
            detail = f"Removed unreachable server {record.server_id}."
        except BackendError as exc:
            if exc.status != 404:
                raise CommandError(
                    exc.code, f"Failed to leave server {record.server_id}: {exc.message}", exc.retryable
                ) from exc
            detail = f"Removed missing server {record.server_id}."
        session = self.sessions.pop((member, record.server_id), None)
        if session is not None:
            await session.stop()
        with contextlib.suppress(ServerNotJoined):
            self.servers.remove(member, record.server_id)
        self.anchors.forget(member, record.server_id)
        self.profile_store.forget_server(member, record.server_id)
        self.rate.forget((member, record.server_id))
        if self.quota is not None:
            self.quota.forget(member, record.server_id)
        left = ServerLeft(server_id=record.server_id)
        await self._emit(member, ev.SERVER_LEFT.envelope(record.server_id, left))
        log.info(
            "server left",
            extra={"member": member, "server_id": record.server_id, "backend_left": backend_left},
        )
        return LeaveResult(server_id=record.server_id, backend_left=backend_left, detail=detail)

    @backend_errors
    async def consent(self, member: str, args: ConsentArgs) -> JoinResult:
        session = self._session(member, args.server_id)
        record = session.record.model_copy(update={"profile_consent": args.share_profile})
        self.servers.update(member, record)
        session.record = record
        await self._emit(member, ev.SERVER_UPDATED.envelope(record.server_id, ServerUpdated(server=record)))
        if args.share_profile:
            session.request_profile_sync()  # the member agreed: publish the profile now
        return JoinResult(server=record)

    # -- the member's own profile, published only with consent (features 1.1, 11; D18) -----------------------
    async def profile_get(self, member: str, args: ProfileGetArgs) -> ProfileGetResult:
        stored = await asyncio.to_thread(self.profile_store.get, member)
        profile = None
        if stored is not None:
            profile = stored.with_image() if args.include_avatar else stored.profile
        return ProfileGetResult(profile=profile, servers=self._sync_states(member))

    async def profile_set(self, member: str, args: ProfileSetArgs) -> ProfileGetResult:
        """Validate and store the profile, then publish it to the consented servers (background)."""
        async with self._profile_lock:
            current = await asyncio.to_thread(self.profile_store.get, member)
            stored = await asyncio.to_thread(apply_change, current, args, utcnow())
            if stored is not current:
                await asyncio.to_thread(self.profile_store.put, member, stored)
                log.info("profile changed", extra={"member": member, "revision": stored.profile.revision})
        for (owner, _), session in list(self.sessions.items()):
            if owner == member:
                session.request_profile_sync()
        return ProfileGetResult(profile=stored.profile, servers=self._sync_states(member))

    def _sync_states(self, member: str) -> list[ProfileSyncState]:
        return [current_state(s) for (m, _), s in self.sessions.items() if m == member]

    # -- the member's identity (features 1.3-1.6; issue #5) --------------------------------------
    def _identity_info(self, member: str, *, reveal: bool = False) -> IdentityInfo:
        found = self._stored_identity(member)
        if found is None:
            return IdentityInfo(exists=False)
        root, mode = found
        return IdentityInfo(
            exists=True,
            uid_mode=mode,
            device_id=device_id(root),
            root=root if reveal else None,
            servers=self.servers.of_member(member),
        )

    async def identity_get(self, member: str, args: IdentityGetArgs) -> IdentityInfo:
        """The member's identity; never creates one (``exists`` False on a first run)."""
        return self._identity_info(member, reveal=args.reveal)

    async def identity_create(self, member: str, args: IdentityCreateArgs) -> IdentityInfo:
        """A new random root when the member has none; an existing one is kept (idempotent)."""
        async with self._member_locks.hold(member):
            if self._stored_identity(member) is None:
                self.identities.create(member)
                log.info("identity created", extra={"member": member})
                # Joined servers without an identity (it was deleted by hand): bind them to it.
                await self._rebind(member)
        return self._identity_info(member)

    async def identity_import(self, member: str, args: IdentityImportArgs) -> IdentityInfo:
        """Replace the root (the uid mode is kept) and re-bind every joined server to it. The
        same root changes nothing (sessions already bound to its uids are left alone)."""
        try:
            root = check_root(args.root)
        except IdentityError as exc:
            raise CommandError("invalid_identity_root", str(exc)) from exc
        async with self._member_locks.hold(member):
            found = self._stored_identity(member)
            if found is None or found[0] != root:
                # ``put`` keeps the stored uid mode (server_scoped for a new identity)
                self.identities.put(member, root)
                log.info("identity imported", extra={"member": member})
            await self._rebind(member)
        return self._identity_info(member)

    async def uid_mode(self, member: str, args: UidModeArgs) -> IdentityInfo:
        """Project every server's uid in ``args.mode`` (features 1.5) and re-bind what changed."""
        async with self._member_locks.hold(member):
            found = self._stored_identity(member)
            if found is None:
                raise CommandError(
                    "identity_not_found", "There is no identity yet: create or import one first."
                )
            if found[1] != args.mode:
                self.identities.set_uid_mode(member, args.mode)
                log.info("uid mode changed", extra={"member": member, "uid_mode": args.mode})
            await self._rebind(member)
        return self._identity_info(member)

    async def _rebind(self, member: str) -> list[ServerRecord]:
        """Re-bind every joined server whose projected uid or device id changed (features 1.5):
        stop its session (closing the realtime socket), store and publish the new record
        (``server.updated``), and start a new session under the new identity — it hydrates again
        and continues the old one's history (``Session.continue_from``: nothing re-published).
        Call with the member's lock held (``self._member_locks.hold(member)``). Returns the records that changed."""
        self._roots.pop(member, None)  # the cache may hold the old root or mode
        root, mode = self._identity(member)
        device = device_id(root)
        changed: list[ServerRecord] = []
        for stored in self.servers.of_member(member):
            uid = project_uid(root, stored.projection_scope, mode)  # issue #14: scope kept
            if stored.user_uid == uid and stored.device_id == device:
                continue
            key = (member, stored.server_id)
            old = self.sessions.pop(key, None)
            if old is not None:
                await old.stop()
            # the running session's record may be newer than the stored one (renamed meanwhile)
            current = old.record if old is not None else stored
            record = current.model_copy(update={"user_uid": uid, "device_id": device})
            try:
                self.servers.update(member, record)
            except ServerNotJoined:  # left meanwhile
                continue
            # an avatar uploaded under the old uid belongs to it: upload again under the new one
            self.profile_store.forget_server(member, record.server_id)
            try:
                updated = ServerUpdated(server=record)
                await self._emit(member, ev.SERVER_UPDATED.envelope(record.server_id, updated))
            finally:  # the server stays connected even when the bus refused the event
                if old is not None or self.leases is None:
                    self._start_session(member, record, previous=old)
                # else: held by another replica, which restarts it (``follow_records``)
            changed.append(record)
            log.info(
                "server re-bound",
                extra={"member": member, "server_id": record.server_id, "uid_mode": mode},
            )
        return changed

    # -- chat ------------------------------------------------------------------------------------
    @backend_errors
    async def send(self, member: str, args: SendArgs) -> SendResult:
        session = self._session(member, args.server_id)
        caps = session.caps or await session.refresh_capabilities()
        if session.groups and not session.is_text_channel(args.channel_id):
            raise CommandError(
                "channel_not_found", f"{args.channel_id} is not a text channel of {args.server_id}."
            )
        staged = [i.upload_id for i in args.images if i.upload_id]
        if staged:  # images staged with connector.upload (ADR 0010): inline them for the check
            inline = []
            for image in args.images:
                if image.upload_id:
                    data = await self.uploads.take(member, image.upload_id)
                    image = image.model_copy(update={"data_b64": base64.b64encode(data).decode()})
                inline.append(image)
            args = args.model_copy(update={"images": inline})
        text, images = domain.check_send(args.body, args.images, caps)
        per_minute = caps.rate_limit_per_minute
        wait = self.rate.check((member, args.server_id), per_minute)
        if wait > 0 and per_minute:
            raise domain.rate_limited_error(wait, per_minute)
        msg = await session.backend.post_message(args.channel_id, text, args.reply_to, images)
        self.uploads.discard(member, [u for u in staged if u])
        chat = domain.message_of(msg, args.server_id, session.backend.base_url)
        await session.ensure_published(chat)
        return SendResult(message=chat)

    async def upload(self, member: str, args: UploadChunkArgs) -> UploadChunkResult:
        """One chunk of an image staged for a later send (``connector.upload``)."""
        return await self.uploads.append(member, args)

    @backend_errors
    async def delete(self, member: str, args: DeleteMessageArgs) -> Ack:
        """Delete a message (features 5.8) where the server advertises ``message_delete``."""
        session = self._session(member, args.server_id)
        caps = session.caps or await session.refresh_capabilities()
        if not caps.features.get("message_delete"):
            raise CommandError("unsupported", "This server does not support deleting messages.")
        if session.groups and not session.is_text_channel(args.channel_id):
            raise CommandError(
                "channel_not_found", f"{args.channel_id} is not a text channel of {args.server_id}."
            )
        await session.backend.delete_message(args.channel_id, args.message_id)
        await session.publish(
            ev.MESSAGE_DELETED, MessageDeleted(channel_id=args.channel_id, message_id=args.message_id)
        )
        return Ack(ok=True, detail="deleted")

    @backend_errors
    async def typing(self, member: str, args: TypingArgs) -> Ack:
        session = self._session(member, args.server_id)
        if not session.is_text_channel(args.channel_id):
            raise CommandError(
                "channel_not_found", f"{args.channel_id} is not a text channel of {args.server_id}."
            )
        sent = await session.send_typing(args.channel_id, args.is_typing)
        return Ack(ok=True, detail="sent" if sent else "throttled")

    @backend_errors
    async def history(self, member: str, args: HistoryArgs) -> HistoryResult:
        session = self._session(member, args.server_id)
        if session.caps is None:
            await session.refresh_capabilities()
        client = session.backend

        def convert(items: list[Any]) -> list[Any]:
            converted = []
            for m in items:
                if m.channel_id != args.channel_id:
                    continue
                try:
                    converted.append(domain.message_of(m, args.server_id, client.base_url))
                except ValueError:  # the contracts refuse it (ValidationError): left out
                    log.info("history item left out", extra={"server_id": args.server_id})
            return converted

        result = await self._history_page(session, args, convert)
        await self._index_history(session, args.channel_id, result.messages)
        return result

    async def _history_page(
        self, session: Session, args: HistoryArgs, convert: Callable[[list[Any]], list[Any]]
    ) -> HistoryResult:
        client = session.backend
        if session.cursors:
            listing = await client.messages(args.channel_id, args.limit, args.before)
            return HistoryResult(messages=convert(listing.messages), has_more=listing.next_cursor is not None)
        if args.before is None:
            page = (await client.messages(args.channel_id, args.limit + 1)).messages
            return HistoryResult(messages=convert(page[-args.limit :]), has_more=len(page) > args.limit)
        size = args.limit + self.timing.history_window
        cap = self.timing.max_gap_fetch
        while True:
            page = (await client.messages(args.channel_id, size)).messages
            index = next((i for i, m in enumerate(page) if m.id == args.before), None)
            truncated = len(page) >= size
            if truncated and size < cap and (index is None or index < args.limit):
                size = min(size * self.timing.gap_growth, cap)
                continue
            if index is None:
                raise CommandError("message_not_found", f"{args.before} is not in {args.channel_id}.")
            start = max(0, index - args.limit)
            return HistoryResult(messages=convert(page[start:index]), has_more=start > 0 or truncated)

    async def _index_history(self, session: Session, channel_id: str, messages: list[ChatMessage]) -> None:
        """Publish a fetched page as ``history.page`` events (search indexes them, issue 17); a
        failure is logged and never fails the member's history command."""
        for start in range(0, len(messages), MAX_PAGE_MESSAGES):
            chunk = messages[start : start + MAX_PAGE_MESSAGES]
            try:
                await session.publish(ev.HISTORY_PAGE, HistoryPage(channel_id=channel_id, messages=chunk))
            except Exception as exc:
                log.warning(
                    "could not publish a history page for search",
                    extra={
                        "member": session.member,
                        "server_id": session.server_id,
                        "error": type(exc).__name__,
                    },
                )
                return

    @backend_errors
    async def members(self, member: str, args: MembersArgs) -> MembersUpdated:
        session = self._session(member, args.server_id)
        listing = await session.backend.members(args.server_id)
        return MembersUpdated(
            members=[{"id": m.id, "name": m.name, "status": m.status} for m in listing.members]
        )

    @backend_errors
    async def profiles(self, member: str, args: ProfilesArgs) -> ProfilesResult:
        session = self._session(member, args.server_id)
        out = []
        for chunk in domain.chunks(list(dict.fromkeys(args.user_uids)), 100):
            batch = await session.backend.profiles(chunk)
            out += [domain.profile_of(p, session.backend.base_url) for p in batch.profiles]
        return ProfilesResult(profiles=out)

    # -- read-acks (Profile B, wire §0.2; contracts/notify.py) ----------------------------------
    async def read_ack_get(self, member: str, args: ReadAckGetArgs) -> ReadAckResult:
        session = self._session(member, args.server_id)
        return await self._read_ack(session, args.channel_id, None)

    async def read_ack_put(self, member: str, args: ReadAckPutArgs) -> ReadAckResult:
        session = self._session(member, args.server_id)
        return await self._read_ack(session, args.channel_id, args.last_read_message_id)

    async def _read_ack(self, session: Session, channel_id: str, put: str | None) -> ReadAckResult:
        """GET (``put`` None) or PUT the member's read-ack. A server without read-acks (404, 405,
        501 — rule 2: not called again until its build changes) answers ``supported=False``."""
        unsupported = ReadAckResult(server_id=session.server_id, channel_id=channel_id, supported=False)
        if session.read_acks_unsupported:
            return unsupported
        if session.groups and not session.is_text_channel(channel_id):
            raise CommandError(
                "channel_not_found", f"{channel_id} is not a text channel of {session.server_id}."
            )
        try:
            if put is None:
                response = await session.backend.read_ack(channel_id)
            else:
                response = await session.backend.put_read_ack(channel_id, put)
        except Unsupported:
            session.read_acks_unsupported = True
            log.info(
                "read-acks unsupported", extra={"member": session.member, "server_id": session.server_id}
            )
            return unsupported
        except BackendError as exc:
            if exc.status in (404, 405, 501):
                return unsupported
            raise exc.to_command_error() from exc
        ack = response.read_ack
        return ReadAckResult(
            server_id=session.server_id,
            channel_id=channel_id,
            last_read_message_id=ack.last_read_message_id,
            cursor_index=ack.cursor_index,
            applied=response.applied,
        )

    async def rehydrate(self, request: RehydrateRequest) -> None:
        """Re-publish the view of one member's sessions (every member's with ``member=None``)."""
        targets = [s for (m, _), s in self.sessions.items() if request.member in (None, m)]
        for session in targets:
            try:
                await session.republish()
            except Exception as exc:
                log.warning(
                    "rehydrate failed",
                    extra={
                        "member": session.member,
                        "server_id": session.server_id,
                        "error": type(exc).__name__,
                    },
                )
