"""A contract-faithful stand-in for the state and connector services on a REAL NATS server.

It serves the bus commands the desktop uses (``state.snapshot``/``sync``/``history``,
``connector.send``/``typing``/``history``/``discover``/``probe``/``join``/``leave``) with the
contract models, and publishes events through the real JetStream events stream (so the UI gets
real ``Nats-Sequence`` headers). Used only where the real service is not there yet; each test
says so. It runs on its own asyncio thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import subjects
from services.core.contracts.bus import EventEnvelope
from services.core.contracts.chat import (
    Ack,
    DirectoryEntry,
    Disclosure,
    DiscoverArgs,
    DiscoverResult,
    HistoryArgs,
    HistoryResult,
    IdentityCreateArgs,
    IdentityGetArgs,
    IdentityInfo,
    JoinArgs,
    JoinResult,
    LeaveArgs,
    LeaveResult,
    MemberProfile,
    MessageCreated,
    ProbeArgs,
    ProbeResult,
    ProfileGetArgs,
    ProfileGetResult,
    ProfileSetArgs,
    SendArgs,
    SendResult,
    ServerJoined,
    ServerLeft,
    ServerView,
    Snapshot,
    SnapshotArgs,
    SyncArgs,
    SyncedEvent,
    SyncResult,
    TrustAssessment,
    TypingArgs,
    ViewHistoryArgs,
    ViewHistoryResult,
)
from services.core.local_ids import propose_local_id
from testkit import fakes


class FakeStack:
    def __init__(self, nats_url: str, member: str, snapshot: Snapshot) -> None:
        self.url = nats_url
        self.member = member
        self.views: dict[str, ServerView] = {v.server.server_id: v for v in snapshot.servers}
        self.events: list[SyncedEvent] = []
        self.seq = 0
        self.sent: list[SendArgs] = []
        self.typing: list[TypingArgs] = []
        self.loop = asyncio.new_event_loop()
        self.bus: Bus | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sync_calls = 0
        self.older_calls: list[HistoryArgs] = []
        self.snapshot_calls = 0
        self.identity: IdentityInfo | None = None  # None: the identity commands are not served
        self.profile: MemberProfile | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self.run(self._start())

    def stop(self) -> None:
        if self.bus is not None:
            with contextlib.suppress(Exception):
                self.run(self.bus.close(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)

    def run(self, coro: Any, timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def _start(self) -> None:
        self.bus = bus = await Bus.connect(ConnectOptions(url=self.url, name="fake-stack"), first_attempts=5)
        # Other suites' harnesses may leave a stream on the same ingest subjects: drop those.
        for info in await bus.js.streams_info():
            name = info.config.name
            if name and name != "OC_EVENTS" and subjects.INGEST_WILDCARD in (info.config.subjects or []):
                await bus.js.delete_stream(name)
        await bus.ensure_events_stream()
        # Commands of THIS member only (other tests share the server).
        handlers: list[tuple[str, str, type[Any], Any]] = [
            ("state", "snapshot", SnapshotArgs, self._snapshot),
            ("state", "sync", SyncArgs, self._sync),
            ("state", "history", ViewHistoryArgs, self._window),
            ("connector", "send", SendArgs, self._send),
            ("connector", "typing", TypingArgs, self._typing),
            ("connector", "history", HistoryArgs, self._older),
            ("connector", "discover", DiscoverArgs, self._discover),
            ("connector", "probe", ProbeArgs, self._probe),
            ("connector", "join", JoinArgs, self._join),
            ("connector", "leave", LeaveArgs, self._leave),
            ("connector", "identity_get", IdentityGetArgs, self._identity_get),
            ("connector", "identity_create", IdentityCreateArgs, self._identity_create),
            ("connector", "profile_get", ProfileGetArgs, self._profile_get),
            ("connector", "profile_set", ProfileSetArgs, self._profile_set),
        ]
        for service, verb, model, fn in handlers:
            await bus.serve(f"oc.{self.member}.cmd.{service}.{verb}", service, model, fn)

    # -- events ---------------------------------------------------------------------------------
    def publish(self, kind: str, server_id: str, payload: BaseModel, event_id: str | None = None) -> int:
        return int(self.run(self._publish(kind, server_id, payload, event_id)))

    async def _publish(self, kind: str, server_id: str, payload: BaseModel, event_id: str | None) -> int:
        assert self.bus is not None
        env = EventEnvelope[Any](
            event_id=event_id or f"{kind}:{uuid.uuid4().hex}", server_id=server_id, type=kind, payload=payload
        )
        ack = await self.bus.publish_event(self.member, env)
        self.seq = ack.seq
        self.events.append(
            SyncedEvent(
                seq=ack.seq,
                subject=f"oc.{self.member}.evt.{server_id}.{kind}",
                type=kind,
                server_id=server_id,
                data=env.model_dump_json(),
            )
        )
        if isinstance(payload, MessageCreated):
            v = self.views.get(server_id)
            if v is not None:
                msgs = dict(v.messages)
                msgs[payload.message.channel_id] = [
                    *msgs.get(payload.message.channel_id, []),
                    payload.message,
                ]
                self.views[server_id] = v.model_copy(update={"messages": msgs})
        return int(ack.seq)

    def post(self, server_id: str, channel_id: str, author: str, body: str, mid: str | None = None) -> int:
        mid = mid or f"m_{uuid.uuid4().hex[:10]}"
        m = fakes.msg(server_id, channel_id, mid, author, body, datetime.now(UTC))
        return self.publish("message.created", server_id, MessageCreated(message=m), f"msg:{mid}")

    # -- commands -------------------------------------------------------------------------------
    async def _snapshot(self, member: str, args: SnapshotArgs) -> BaseModel:
        self.snapshot_calls += 1
        return Snapshot(seq=self.seq, servers=list(self.views.values()))

    async def _sync(self, member: str, args: SyncArgs) -> BaseModel:
        self.sync_calls += 1
        evs = [e for e in self.events if e.seq > args.since_seq][: args.limit]
        last = evs[-1].seq if evs else max(args.since_seq, self.seq)
        complete = len([e for e in self.events if e.seq > args.since_seq]) <= args.limit
        return SyncResult(events=evs, last_seq=last, complete=complete)

    async def _window(self, member: str, args: ViewHistoryArgs) -> BaseModel:
        v = self.views[args.server_id]
        msgs = v.messages.get(args.channel_id, [])[-args.limit :]
        return ViewHistoryResult(seq=self.seq, messages=msgs, has_more=False)

    async def _older(self, member: str, args: HistoryArgs) -> BaseModel:
        """One page of 30 older messages before the oldest known, then nothing more."""
        self.older_calls.append(args)
        if len(self.older_calls) > 1:
            return HistoryResult(messages=[], has_more=False)
        base = datetime(2020, 1, 1, tzinfo=UTC)
        msgs = [
            fakes.msg(
                args.server_id,
                args.channel_id,
                f"old{i:03d}",
                "uid_tl_2",
                f"older message {i}",
                base.replace(minute=i),
            )
            for i in range(30)
        ]
        return HistoryResult(messages=msgs, has_more=False)

    async def _send(self, member: str, args: SendArgs) -> BaseModel:
        self.sent.append(args)
        v = self.views[args.server_id]
        mid = f"m_{uuid.uuid4().hex[:10]}"
        m = fakes.msg(args.server_id, args.channel_id, mid, v.server.user_uid, args.body, datetime.now(UTC))
        await self._publish("message.created", args.server_id, MessageCreated(message=m), f"msg:{mid}")
        return SendResult(message=m)

    async def _typing(self, member: str, args: TypingArgs) -> BaseModel:
        self.typing.append(args)
        return Ack()

    async def _discover(self, member: str, args: DiscoverArgs) -> BaseModel:
        return DiscoverResult(
            url=args.url,
            directory_uid="uid_25560615",
            servers=[
                DirectoryEntry(
                    server_id="srv_devlab", display_name="Dev Lab", icon_text="DL", description="A lab"
                ),
                DirectoryEntry(server_id="srv_other", display_name="Other", icon_text="OT"),
            ],
        )

    async def _probe(self, member: str, args: ProbeArgs) -> BaseModel:
        insecure = args.url.startswith("http://")
        warnings = (
            ["Connection is not HTTPS. Network operators and server admins may inspect traffic metadata."]
            if insecure
            else []
        )
        return ProbeResult(
            url=args.url,
            capabilities_path="/v1/client/capabilities",
            capabilities=fakes.caps("Dev Lab"),
            trust=TrustAssessment(
                transport_secure=not insecure,
                local_host=False,
                https_required_mismatch=False,
                verified=False,
                warnings=warnings,
            ),
            disclosure=Disclosure(
                user_uid="uid_0badf00d",
                device_id="desktop_abcd1234",
                uid_mode="server_scoped",
                profile_shared=False,
                summary="This server sees only a server-scoped UID and proof.",
            ),
            # as the connector: the picked entry else the capabilities' id, and a free local id
            backend_server_id=args.server_id or "srv_devlab",
            in_directory=True,
            local_id=propose_local_id(args.server_id or "srv_devlab", args.url, self.views),
        )

    async def _join(self, member: str, args: JoinArgs) -> BaseModel:
        local = args.local_id or args.server_id
        rec = fakes.record(local, "Dev Lab", "DL", "uid_0badf00d", url=args.url).model_copy(
            update={"backend_server_id": args.server_id}
        )
        view = fakes.harbor_view().model_copy(update={"server": rec, "messages": {}})
        self.views[local] = view
        await self._publish("server.joined", local, ServerJoined(server=rec), f"joined:{local}")
        return JoinResult(server=rec)

    async def _leave(self, member: str, args: LeaveArgs) -> BaseModel:
        self.views.pop(args.server_id, None)
        await self._publish(
            "server.left", args.server_id, ServerLeft(server_id=args.server_id), f"left:{args.server_id}"
        )
        return LeaveResult(server_id=args.server_id, backend_left=True)

    # -- the member's identity and profile (only when a test sets ``identity``) -------------------
    async def _identity_get(self, member: str, args: IdentityGetArgs) -> BaseModel:
        if self.identity is None:
            raise CommandError("service_unavailable", "identity commands are not served here")
        return self.identity

    async def _identity_create(self, member: str, args: IdentityCreateArgs) -> BaseModel:
        self.identity = IdentityInfo(exists=True, device_id="desktop_abcd1234", servers=[])
        return self.identity

    async def _profile_get(self, member: str, args: ProfileGetArgs) -> BaseModel:
        return ProfileGetResult(profile=self.profile)

    async def _profile_set(self, member: str, args: ProfileSetArgs) -> BaseModel:
        self.profile = MemberProfile(
            display_name=args.display_name or "",
            avatar_mode="generated",
            avatar_preset_id=args.avatar_preset_id or "horizon",
            updated_at=datetime.now(UTC),
        )
        return ProfileGetResult(profile=self.profile)
