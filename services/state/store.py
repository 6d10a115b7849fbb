"""Redis adapter of the state service: key layout, executing the reducer's ops, reading views.

Every key starts with ``ocs:<stream>:`` (one view per events stream) and is keyed by member and
server — never by channel id alone::

    ocs:<stream>:epoch                       which rebuild of the view this is (+ stream identity)
    ocs:<stream>:seq                         the stream sequence the view reflects (applied_seq)
    ocs:<stream>:rebuilding                  present while a rebuild has not caught up
    ocs:<stream>:m:<member>:servers          hash server_id -> ServerRecord JSON (the registry)
    ocs:<stream>:m:<member>:s:<server>:meta  hash conn|caps|groups|members -> JSON
    ocs:<stream>:m:<member>:s:<server>:win   zset (score 0, lex order) "<channel>\\x1f<sort key>"
    ocs:<stream>:m:<member>:s:<server>:msg   hash "<channel>\\x1f<message id>" -> ChatMessage JSON
    ocs:<stream>:m:<member>:s:<server>:prev  hash "<channel>\\x1f<message id>" -> JSON list of
                                             LinkPreview (``message.previews``: replaces the
                                             message's ``link_previews`` when read)
    ocs:<stream>:m:<member>:s:<server>:pres  hash channel -> JSON list of PresenceEntry
    ocs:<stream>:m:<member>:s:<server>:typ   hash "<channel>\\x1f<uid>\\x1f<device>" -> Typing JSON
    ocs:<stream>:m:<member>:s:<server>:prof  hash user_uid -> UserProfile JSON

Writes happen only in ``apply``: one MULTI/EXEC per batch of events that also sets ``seq``, under
WATCH of the epoch key, so a view is never half-applied and a FLUSHALL in between is noticed.
Reads that must be consistent (``read_consistent``) check that epoch and seq did not move.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

import redis.asyncio as aioredis
from pydantic import ValidationError
from redis.exceptions import WatchError

from services.core.contracts.chat import (
    CapabilitySnapshot,
    ChannelGroupInfo,
    ChannelsUpdated,
    ChatMessage,
    ConnectionState,
    LinkPreview,
    MembersUpdated,
    PresenceEntry,
    ServerRecord,
    ServerStatus,
    ServerView,
    Typing,
    UserProfile,
)
from services.core.contracts.media import VoiceStatus
from services.state.domain import (
    SEP,
    DelTyping,
    DropServer,
    Op,
    PutMeta,
    PutPresence,
    PutPreviews,
    PutProfile,
    PutServer,
    PutTyping,
    ServerIndex,
    WindowPut,
    WindowRemove,
    channel_of_typing_key,
    message_id_of,
    typing_visible,
)

T = TypeVar("T")
SERVER_PARTS = ("meta", "win", "msg", "prev", "pres", "typ", "prof")
DEFAULT_CONNECTION = ConnectionState(state="connecting", reason="no connection state yet")


class EpochChanged(Exception):
    """The view in Redis is not the one this writer was building (flushed, lost, rebuilt)."""


class SeqMoved(Exception):
    """Another writer applied events meanwhile (a second replica): reload from Redis."""


class ViewBusy(Exception):
    """A consistent read kept racing with writes."""


@dataclass(frozen=True)
class Marker:
    epoch: str | None
    seq: int
    rebuilding: bool


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _with_previews(raw: bytes | str, cards: bytes | str | None) -> ChatMessage:
    """A stored message with the link previews fetched after it (``message.previews``)."""
    msg = ChatMessage.model_validate_json(raw)
    if cards is None:
        return msg
    previews = [LinkPreview.model_validate(c) for c in json.loads(cards)]
    return msg.model_copy(update={"link_previews": previews})


class ViewStore:
    def __init__(self, redis: aioredis.Redis, stream: str) -> None:
        self.redis = redis
        self.prefix = f"ocs:{stream}"
        self.k_epoch = f"{self.prefix}:epoch"
        self.k_seq = f"{self.prefix}:seq"
        self.k_rebuilding = f"{self.prefix}:rebuilding"

    # -- keys -----------------------------------------------------------------------------------
    def k_servers(self, member: str) -> str:
        return f"{self.prefix}:m:{member}:servers"

    def k_server(self, member: str, server_id: str, part: str) -> str:
        return f"{self.prefix}:m:{member}:s:{server_id}:{part}"

    # -- marker and reset -------------------------------------------------------------------------
    async def marker(self) -> Marker:
        epoch, seq, rebuilding = await self.redis.mget([self.k_epoch, self.k_seq, self.k_rebuilding])
        return Marker(
            epoch=_s(epoch) if epoch is not None else None,
            seq=int(seq) if seq is not None else 0,
            rebuilding=rebuilding is not None,
        )

    async def reset(self, stream_identity: str) -> str:
        """Delete the whole view and start a new epoch at seq 0, marked as rebuilding."""
        keys: list[bytes | str] = []
        async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000):
            keys.append(key)
            if len(keys) >= 1000:
                await self.redis.unlink(*keys)
                keys.clear()
        if keys:
            await self.redis.unlink(*keys)
        epoch = f"{uuid.uuid4().hex}|{stream_identity}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.k_seq, 0)
            pipe.set(self.k_rebuilding, 1)
            pipe.set(self.k_epoch, epoch)
            await pipe.execute()
        return epoch

    # -- writes ---------------------------------------------------------------------------------
    async def apply(self, epoch: str, ops: list[Op], seq: int, *, expected_seq: int, caught_up: bool) -> None:
        """Execute ``ops`` and set ``seq`` atomically, unless the epoch changed (``EpochChanged``)
        or the stored seq is not ``expected_seq`` (``SeqMoved``: someone else applied events)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            try:
                await pipe.watch(self.k_epoch, self.k_seq)
                current, current_seq = await pipe.mget([self.k_epoch, self.k_seq])
                if current is None or _s(current) != epoch:
                    raise EpochChanged
                if int(current_seq or 0) != expected_seq:
                    raise SeqMoved
                pipe.multi()  # type: ignore[no-untyped-call]
                for op in ops:
                    self._queue(pipe, op)
                pipe.set(self.k_seq, seq)
                if caught_up:
                    pipe.delete(self.k_rebuilding)
                await pipe.execute()
            except WatchError as exc:
                raise SeqMoved from exc  # the next attempt tells whether the epoch changed too

    def _queue(self, pipe: aioredis.client.Pipeline, op: Op) -> None:
        if isinstance(op, PutServer):
            pipe.hset(self.k_servers(op.member), op.server_id, op.record_json)
        elif isinstance(op, DropServer):
            pipe.hdel(self.k_servers(op.member), op.server_id)
            pipe.delete(*(self.k_server(op.member, op.server_id, part) for part in SERVER_PARTS))
        elif isinstance(op, PutMeta):
            pipe.hset(self.k_server(op.member, op.server_id, "meta"), op.name, op.value)
        elif isinstance(op, WindowPut):
            pipe.zadd(
                self.k_server(op.member, op.server_id, "win"), {f"{op.channel_id}{SEP}{op.sort_key}": 0}
            )
            pipe.hset(
                self.k_server(op.member, op.server_id, "msg"),
                f"{op.channel_id}{SEP}{op.message_id}",
                op.value,
            )
        elif isinstance(op, WindowRemove):
            pipe.zrem(self.k_server(op.member, op.server_id, "win"), f"{op.channel_id}{SEP}{op.sort_key}")
            pipe.hdel(self.k_server(op.member, op.server_id, "msg"), f"{op.channel_id}{SEP}{op.message_id}")
            if not op.keep_previews:
                pipe.hdel(
                    self.k_server(op.member, op.server_id, "prev"), f"{op.channel_id}{SEP}{op.message_id}"
                )
        elif isinstance(op, PutPreviews):
            pipe.hset(
                self.k_server(op.member, op.server_id, "prev"),
                f"{op.channel_id}{SEP}{op.message_id}",
                op.value,
            )
        elif isinstance(op, PutPresence):
            pipe.hset(self.k_server(op.member, op.server_id, "pres"), op.channel_id, op.value)
        elif isinstance(op, PutTyping):
            pipe.hset(self.k_server(op.member, op.server_id, "typ"), op.key, op.value)
        elif isinstance(op, DelTyping):
            pipe.hdel(self.k_server(op.member, op.server_id, "typ"), op.key)
        elif isinstance(op, PutProfile):
            pipe.hset(self.k_server(op.member, op.server_id, "prof"), op.user_uid, op.value)

    async def load_index(self, member: str, server_id: str) -> ServerIndex:
        """The reducer's index of one (member, server), read back from the view."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrange(self.k_server(member, server_id, "win"), 0, -1)
            pipe.hgetall(self.k_server(member, server_id, "pres"))
            pipe.hgetall(self.k_server(member, server_id, "prof"))
            pipe.hgetall(self.k_server(member, server_id, "typ"))
            win, pres, prof, typ = await pipe.execute()
        index = ServerIndex()
        for raw in win:
            channel_id, key = _s(raw).split(SEP, 1)
            index.add_window_key(channel_id, key)
        for ch, value in pres.items():
            entries = [PresenceEntry.model_validate(e) for e in json.loads(value)]
            index.presence[_s(ch)] = {e.client_id: e for e in entries}
        for uid, value in prof.items():
            index.profile_versions[_s(uid)] = UserProfile.model_validate_json(value).profile_version
        for key, value in typ.items():
            t = Typing.model_validate_json(value)
            if t.expires_at is not None:
                index.typing_expiry[_s(key)] = t.expires_at
        return index

    # -- reads ----------------------------------------------------------------------------------
    async def read_consistent(self, read: Callable[[], Awaitable[T]], attempts: int = 5) -> tuple[int, T]:
        """Run ``read`` between two marker reads that agree: the result reflects exactly ``seq``."""
        for _ in range(attempts):
            before = await self.marker()
            if before.epoch is None or before.rebuilding:
                raise ViewBusy("the view is being rebuilt")
            value = await read()
            after = await self.marker()
            if after == before:
                return before.seq, value
        raise ViewBusy("the view kept changing")

    async def view_missing(self) -> bool:
        """True while there is no complete view to answer from (lost, or rebuilding): a server
        missing from it is not a server the member left."""
        marker = await self.marker()
        return marker.epoch is None or marker.rebuilding

    async def servers(self, member: str) -> dict[str, ServerRecord]:
        raw = await self.redis.hgetall(self.k_servers(member))
        out: dict[str, ServerRecord] = {}
        for sid, value in raw.items():
            try:
                out[_s(sid)] = ServerRecord.model_validate_json(value)
            except ValidationError:
                continue
        return dict(sorted(out.items(), key=lambda kv: (kv[1].joined_at, kv[0])))

    async def server(self, member: str, server_id: str) -> ServerRecord | None:
        raw = await self.redis.hget(self.k_servers(member), server_id)
        return ServerRecord.model_validate_json(raw) if raw is not None else None

    async def statuses(self, member: str) -> list[ServerStatus]:
        servers = await self.servers(member)
        async with self.redis.pipeline(transaction=True) as pipe:
            for sid in servers:
                pipe.hget(self.k_server(member, sid, "meta"), "conn")
            conns = await pipe.execute()
        return [
            ServerStatus(
                server=record,
                connection=ConnectionState.model_validate_json(c) if c is not None else DEFAULT_CONNECTION,
            )
            for record, c in zip(servers.values(), conns, strict=True)
        ]

    async def groups(self, member: str, server_id: str) -> list[ChannelGroupInfo]:
        raw = await self.redis.hget(self.k_server(member, server_id, "meta"), "groups")
        return ChannelsUpdated.model_validate_json(raw).groups if raw is not None else []

    async def window(
        self, member: str, server_id: str, channel_id: str, limit: int
    ) -> tuple[list[ChatMessage], bool]:
        """The newest ``limit`` messages of a channel, oldest first, and whether older ones exist."""
        key = self.k_server(member, server_id, "win")
        lo, hi = f"[{channel_id}{SEP}", f"({channel_id}\x20"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrevrangebylex(key, hi, lo, start=0, num=limit + 1)
            (members,) = await pipe.execute()
        has_more = len(members) > limit
        ordered = [_s(x).split(SEP, 1)[1] for x in reversed(members[:limit])]
        return await self._messages(member, server_id, channel_id, ordered), has_more

    async def _messages(
        self, member: str, server_id: str, channel_id: str, keys: list[str]
    ) -> list[ChatMessage]:
        if not keys:
            return []
        fields = [f"{channel_id}{SEP}{message_id_of(k)}" for k in keys]
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(self.k_server(member, server_id, "msg"), fields)
            pipe.hmget(self.k_server(member, server_id, "prev"), fields)
            values, cards = await pipe.execute()
        return [_with_previews(v, c) for v, c in zip(values, cards, strict=True) if v is not None]

    async def message(
        self, member: str, server_id: str, channel_id: str, message_id: str
    ) -> ChatMessage | None:
        field = f"{channel_id}{SEP}{message_id}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hget(self.k_server(member, server_id, "msg"), field)
            pipe.hget(self.k_server(member, server_id, "prev"), field)
            raw, cards = await pipe.execute()
        return _with_previews(raw, cards) if raw is not None else None

    async def profile(self, member: str, server_id: str, user_uid: str) -> UserProfile | None:
        raw = await self.redis.hget(self.k_server(member, server_id, "prof"), user_uid)
        return UserProfile.model_validate_json(raw) if raw is not None else None

    async def server_view(
        self, member: str, record: ServerRecord, messages_per_channel: int, now: datetime
    ) -> ServerView:
        sid = record.server_id
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hgetall(self.k_server(member, sid, "meta"))
            pipe.zrange(self.k_server(member, sid, "win"), 0, -1)
            pipe.hgetall(self.k_server(member, sid, "pres"))
            pipe.hgetall(self.k_server(member, sid, "typ"))
            pipe.hgetall(self.k_server(member, sid, "prof"))
            meta, win, pres, typ, prof = await pipe.execute()
        meta = {_s(k): v for k, v in meta.items()}
        per_channel: dict[str, list[str]] = {}
        for raw in win:
            channel_id, key = _s(raw).split(SEP, 1)
            per_channel.setdefault(channel_id, []).append(key)
        messages: dict[str, list[ChatMessage]] = {}
        if messages_per_channel > 0:
            for channel_id, keys in sorted(per_channel.items()):
                messages[channel_id] = await self._messages(
                    member, sid, channel_id, keys[-messages_per_channel:]
                )
        typing: dict[str, list[Typing]] = {}
        for key, value in sorted(typ.items()):
            t = Typing.model_validate_json(value)
            if typing_visible(t, now):
                typing.setdefault(channel_of_typing_key(_s(key)), []).append(t)
        return ServerView(
            server=record,
            connection=(
                ConnectionState.model_validate_json(meta["conn"]) if "conn" in meta else DEFAULT_CONNECTION
            ),
            capabilities=CapabilitySnapshot.model_validate_json(meta["caps"]) if "caps" in meta else None,
            groups=ChannelsUpdated.model_validate_json(meta["groups"]).groups if "groups" in meta else [],
            messages=messages,
            presence={
                _s(ch): [PresenceEntry.model_validate(e) for e in json.loads(v)]
                for ch, v in sorted(pres.items())
            },
            typing=typing,
            profiles={_s(uid): UserProfile.model_validate_json(v) for uid, v in sorted(prof.items())},
            members=MembersUpdated.model_validate_json(meta["members"]).members if "members" in meta else [],
            voice=VoiceStatus.model_validate_json(meta["voice"]) if "voice" in meta else None,
        )
