"""Read-acks on and off against the devserver, end to end: devserver ↔ connector ↔ notification.

The connector serves ``oc.<member>.cmd.connector.read_ack_get`` / ``read_ack_put`` and forwards
realtime ``chat.read_ack.updated`` as the event kind ``read_ack.updated`` (contracts/notify.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from pathlib import Path

import httpx
import pytest

from services.cli.chat import MemberClient
from services.cli.members import add_member
from services.core.bus import Bus, CommandError, ConnectOptions
from services.core.contracts import commands as cmd
from services.core.contracts.notify import (
    MarkReadArgs,
    ReadAckGetArgs,
    UnreadArgs,
)
from services.core.members import ConnectionFile
from services.devserver.config import DevserverConfig
from services.devserver.runner import arunning_devserver
from services.notification.service import NotificationService
from tests.integration.conftest import StackNats, connector_running, until

CHANNEL = "ch_general"
BOB = "uid_bob"


async def counts(client: MemberClient, server_id: str) -> tuple[int, int] | None:
    """(unread, mentions) of ``CHANNEL``; None while the service has not seen the channel yet."""
    res = await client.call(cmd.UNREAD, UnreadArgs(server_id=server_id))
    for server in res.servers:
        for ch in server.channels:
            if ch.channel_id == CHANNEL:
                return ch.unread, ch.mentions
    return None


@pytest.mark.parametrize("read_acks", [True, False], ids=["read_acks_on", "read_acks_off"])
async def test_read_acks_against_devserver(stack_nats: StackNats, tmp_path: Path, read_acks: bool) -> None:
    await asyncio.to_thread(add_member, stack_nats.home, "kim", out=lambda _: None)
    cf = ConnectionFile.read(stack_nats.home.layout.connection_file("kim"))
    features = frozenset({"read_acks", "mentions"} if read_acks else set())
    cfg = DevserverConfig(port=0, host="127.0.0.1", seed="harbor", admin=True, features=features)
    svc_bus = await Bus.connect(
        ConnectOptions(url=stack_nats.url, user="svc", password=stack_nats.service_password), first_attempts=3
    )
    await svc_bus.ensure_events_stream("OC_EVENTS", duplicate_window_s=60)
    notify = NotificationService(svc_bus, stack_nats.home.layout.registry_db)
    await notify.start()
    try:
        async with (
            arunning_devserver(cfg) as dev,
            connector_running(stack_nats),
            MemberClient.connect(cf) as kim,
        ):
            with pytest.raises(CommandError) as not_joined:  # served, and answers for joined servers only
                await kim.call(
                    cmd.READ_ACK_GET, ReadAckGetArgs(server_id="srv_harbor", channel_id=CHANNEL), timeout=3
                )
            assert not_joined.value.code == "server_not_joined"
            joined = await kim.join(dev.base_url, "srv_harbor")
            uid = joined.server.user_uid
            got = await kim.call(cmd.READ_ACK_GET, ReadAckGetArgs(server_id="srv_harbor", channel_id=CHANNEL))
            assert got.supported is read_acks  # 404 without the feature: unsupported, not an error
            assert got.last_read_message_id is None
            async with httpx.AsyncClient(base_url=dev.base_url) as http:
                # The seed messages predate the join: history, not unread. Only what comes after counts.
                for body in ("one", f"@{uid} two"):
                    r = await http.post(
                        "/_admin/messages", json={"channel_id": CHANNEL, "user_uid": BOB, "body": body}
                    )
                    assert r.status_code < 300
                await until(lambda: _eq(counts(kim, "srv_harbor"), (2, 1)))
                await kim.call(cmd.MARK_READ, MarkReadArgs(server_id="srv_harbor", channel_id=CHANNEL))
                headers = {"X-OpenChat-User-UID": uid, "X-OpenChat-Device-ID": "desktop_other"}
                if read_acks:
                    # The PUT reached the backend...
                    async def acked() -> bool:
                        got = await http.get(f"/v1/channels/{CHANNEL}/read-ack", headers=headers)
                        return bool(got.json()["read_ack"].get("last_read_message_id"))

                    await until(acked)
                    # ...and another client of the same uid acking a newer message clears our badge.
                    r = await http.post(
                        "/_admin/messages", json={"channel_id": CHANNEL, "user_uid": BOB, "body": "3"}
                    )
                    newest = r.json()["message"]["id"]
                    await until(lambda: _eq(counts(kim, "srv_harbor"), (1, 0)))
                    put = await http.put(
                        f"/v1/channels/{CHANNEL}/read-ack",
                        json={"last_read_message_id": newest},
                        headers=headers,
                    )
                    assert put.status_code == 200
                    await until(lambda: _eq(counts(kim, "srv_harbor"), (0, 0)))
                else:
                    assert await counts(kim, "srv_harbor") == (0, 0)  # local cursor
                    missing = await http.get(f"/v1/channels/{CHANNEL}/read-ack", headers=headers)
                    assert missing.status_code == 404
    finally:
        await notify.stop()
        await svc_bus.close()


async def _eq(coro: Awaitable[tuple[int, int] | None], expected: tuple[int, int]) -> bool:
    return await coro == expected
