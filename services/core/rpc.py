"""Commands over the bus, typed by the commands table (``services.core.contracts.commands``).

- ``serve(bus, spec, handler)``: a service binds a handler to one row; the handler's signature
  ``(member, args: spec.args) -> spec.result`` is checked by mypy against the row.
- ``StackCommands``: the one typed client of a member's stack, used by the desktop app and the
  CLI (each adds only what it alone needs: the desktop's media bytes, the CLI's tail).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, cast

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from pydantic import BaseModel, ValidationError

from services.core.bus import Bus, CommandError, decode
from services.core.contracts import commands as cmd
from services.core.contracts.bus import CommandEnvelope, Empty, ErrorBody, ReplyEnvelope
from services.core.contracts.chat import Ack as AckResult
from services.core.contracts.chat import (
    ConsentArgs,
    DeleteMessageArgs,
    DiscoverArgs,
    DiscoverResult,
    HistoryArgs,
    HistoryResult,
    HttpToken,
    IdentityCreateArgs,
    IdentityGetArgs,
    IdentityImportArgs,
    IdentityInfo,
    JoinArgs,
    JoinResult,
    LeaveArgs,
    LeaveResult,
    PreviewsArgs,
    PreviewsResult,
    ProbeArgs,
    ProbeResult,
    ProfileGetArgs,
    ProfileGetResult,
    ProfileSetArgs,
    SendArgs,
    SendResult,
    Snapshot,
    SnapshotArgs,
    SyncArgs,
    SyncResult,
    TypingArgs,
    UidModeArgs,
    UidModeName,
    ViewHistoryArgs,
    ViewHistoryResult,
)
from services.core.contracts.commands import CommandSpec
from services.core.contracts.members import (
    MEMBER_DATA_SERVICES,
    MEMBER_REMOVE_TIMEOUT_S,
    MemberRemoveArgs,
    MemberRemoved,
    member_remove_subject,
)
from services.core.contracts.notify import (
    FocusArgs,
    MarkReadArgs,
    NotifyPrefs,
    SetMuteArgs,
    UnreadArgs,
    UnreadResult,
)

log = logging.getLogger("openchat.rpc")
A = TypeVar("A", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


def serve(bus: Bus, spec: CommandSpec[A, R], handler: Callable[[str, A], Awaitable[R]]) -> None:
    """Register ``handler`` for ``spec`` (subscribed by ``Bus.serve_commands``, in the queue group
    of the row's service)."""
    bus.command(spec.service, spec.verb, spec.args)(handler)


async def serve_now(
    bus: Bus, spec: CommandSpec[A, R], handler: Callable[[str, A], Awaitable[R]]
) -> Subscription:
    """Subscribe ``handler`` for ``spec`` at once (a service that manages its own subscriptions)."""
    return await bus.serve(spec.wildcard(), spec.service, spec.args, handler)


class StackCommands:
    """The member's commands, typed by the commands table (runs on the caller's event loop)."""

    def __init__(self, bus: Bus, member: str, *, timeout_s: float | None = None) -> None:
        """``timeout_s``: one wait for every command (the CLI's); ``None``: each row's own."""
        self.bus = bus
        self.member = member
        self.timeout_s = timeout_s

    async def call(self, spec: CommandSpec[A, R], args: A, timeout: float | None = None) -> R:
        wait = (
            timeout
            if timeout is not None
            else self.timeout_s
            if self.timeout_s is not None
            else spec.timeout_s
        )
        return await self.bus.request(spec.subject(self.member), args, spec.result, wait)

    # -- state ------------------------------------------------------------------------------------
    async def snapshot(self, server_id: str | None = None, messages_per_channel: int = 50) -> Snapshot:
        args = SnapshotArgs(server_id=server_id, messages_per_channel=messages_per_channel)
        return await self.call(cmd.SNAPSHOT, args)

    async def sync(self, since_seq: int, limit: int = 1000) -> SyncResult:
        return await self.call(cmd.SYNC, SyncArgs(since_seq=since_seq, limit=limit))

    async def window(self, server_id: str, channel_id: str, limit: int = 150) -> ViewHistoryResult:
        """A channel's newest ``limit`` messages as the state service keeps them."""
        args = ViewHistoryArgs(server_id=server_id, channel_id=channel_id, limit=limit)
        return await self.call(cmd.VIEW_HISTORY, args)

    async def http_token(self) -> HttpToken:
        return await self.call(cmd.HTTP_TOKEN, Empty())

    # -- connector --------------------------------------------------------------------------------
    async def discover(self, url: str) -> DiscoverResult:
        return await self.call(cmd.DISCOVER, DiscoverArgs(url=url))

    async def probe(self, url: str, server_id: str | None = None) -> ProbeResult:
        return await self.call(cmd.PROBE, ProbeArgs(url=url, server_id=server_id))

    async def join(self, url: str, server_id: str, local_id: str | None = None) -> JoinResult:
        """Join ``server_id`` (the backend's id) as ``local_id`` (None: the connector picks it)."""
        args = JoinArgs(url=url, server_id=server_id, confirmed=True, local_id=local_id)
        return await self.call(cmd.JOIN, args)

    async def leave(self, server_id: str) -> LeaveResult:
        return await self.call(cmd.LEAVE, LeaveArgs(server_id=server_id))

    async def send(self, args: SendArgs) -> SendResult:
        return await self.call(cmd.SEND, args)

    async def older(self, server_id: str, channel_id: str, before: str, limit: int = 50) -> HistoryResult:
        """Messages older than ``before``, from the server (through the connector)."""
        args = HistoryArgs(server_id=server_id, channel_id=channel_id, before=before, limit=limit)
        return await self.call(cmd.HISTORY, args)

    async def typing(self, server_id: str, channel_id: str, is_typing: bool) -> AckResult:
        args = TypingArgs(server_id=server_id, channel_id=channel_id, is_typing=is_typing)
        return await self.call(cmd.TYPING, args)

    async def delete(self, server_id: str, channel_id: str, message_id: str) -> AckResult:
        args = DeleteMessageArgs(server_id=server_id, channel_id=channel_id, message_id=message_id)
        return await self.call(cmd.DELETE, args)

    async def consent(self, server_id: str, share: bool) -> JoinResult:
        return await self.call(cmd.CONSENT, ConsentArgs(server_id=server_id, share_profile=share))

    async def previews(self, enabled: bool | None = None) -> PreviewsResult:
        return await self.call(cmd.PREVIEWS, PreviewsArgs(enabled=enabled))

    async def identity_get(self, reveal: bool = False) -> IdentityInfo:
        return await self.call(cmd.IDENTITY_GET, IdentityGetArgs(reveal=reveal))

    async def identity_create(self) -> IdentityInfo:
        return await self.call(cmd.IDENTITY_CREATE, IdentityCreateArgs())

    async def identity_import(self, root: str) -> IdentityInfo:
        return await self.call(cmd.IDENTITY_IMPORT, IdentityImportArgs(root=root))

    async def uid_mode(self, mode: UidModeName) -> IdentityInfo:
        return await self.call(cmd.UID_MODE, UidModeArgs(mode=mode))

    async def profile_get(self, include_avatar: bool = False) -> ProfileGetResult:
        return await self.call(cmd.PROFILE_GET, ProfileGetArgs(include_avatar=include_avatar))

    async def profile_set(self, args: ProfileSetArgs) -> ProfileGetResult:
        return await self.call(cmd.PROFILE_SET, args)

    # -- notification -----------------------------------------------------------------------------
    async def unread(self, server_id: str | None = None, timeout: float | None = None) -> UnreadResult:
        return await self.call(cmd.UNREAD, UnreadArgs(server_id=server_id), timeout)

    async def mark_read(self, server_id: str, channel_id: str | None) -> UnreadResult:
        return await self.call(cmd.MARK_READ, MarkReadArgs(server_id=server_id, channel_id=channel_id))

    async def focus(self, args: FocusArgs) -> UnreadResult:
        return await self.call(cmd.FOCUS, args)

    async def prefs(self) -> NotifyPrefs:
        return await self.call(cmd.PREFS, Empty())

    async def set_mute(self, server_id: str, muted: bool) -> NotifyPrefs:
        return await self.call(cmd.SET_MUTE, SetMuteArgs(server_id=server_id, muted=muted))


async def serve_member_removal(
    bus: Bus, service: str, forget: Callable[[str], Awaitable[dict[str, int]]]
) -> Subscription:
    """Answer ``oc.sys.member.remove.<service>``: ``forget(member)`` deletes everything this
    service keeps of the member and says what went (``services.core.contracts.members``)."""
    envelope_model = cast(Any, CommandEnvelope)[MemberRemoveArgs]

    async def on_msg(msg: Msg) -> None:
        try:
            args: MemberRemoveArgs = decode(envelope_model, msg.data).args
            removed = await forget(args.member)
            reply: ReplyEnvelope[Any] = ReplyEnvelope[MemberRemoved](
                ok=True, result=MemberRemoved(service=service, member=args.member, removed=removed)
            )
        except (ValidationError, ValueError) as exc:
            reply = ReplyEnvelope[Any](
                ok=False, error=ErrorBody(code="invalid_payload", message=str(exc)[:300], retryable=False)
            )
        except Exception:
            log.exception("member removal failed", extra={"service": service})
            reply = ReplyEnvelope[Any](
                ok=False,
                error=ErrorBody(
                    code="internal_error", message="the service failed to forget the member", retryable=True
                ),
            )
        if msg.reply:
            await bus.nc.publish(msg.reply, reply.model_dump_json().encode())

    return await bus.nc.subscribe(member_remove_subject(service), queue=service, cb=on_msg)


async def remove_member_everywhere(bus: Bus, member: str) -> dict[str, MemberRemoved | str]:
    """Ask every service that keeps member data to forget ``member``; per service the answer,
    or why there is none (not running, failed)."""
    out: dict[str, MemberRemoved | str] = {}
    for service in MEMBER_DATA_SERVICES:
        try:
            out[service] = await bus.request(
                member_remove_subject(service),
                MemberRemoveArgs(member=member),
                MemberRemoved,
                MEMBER_REMOVE_TIMEOUT_S,
            )
        except CommandError as exc:
            out[service] = exc.code
    return out
