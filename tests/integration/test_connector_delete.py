"""``connector.delete`` (features 5.8) against real devservers and a real NATS: the author deletes
their message where the server advertises ``message_delete``; others' messages are refused by the
backend; a server without the feature gets a clear ``unsupported``."""

from __future__ import annotations

import pytest

from services.core.bus import CommandError
from services.core.contracts.chat import (
    Ack,
    DeleteMessageArgs,
    JoinArgs,
    JoinResult,
    SendArgs,
    SendResult,
)
from services.devserver.config import DevserverConfig
from services.devserver.runner import DevserverHandle, arunning_devserver
from tests.connector_harness import Harness
from tests.integration.test_connector_chat import admin_post

CHANNEL = "ch_general"


async def _joined(h: Harness, srv: DevserverHandle) -> None:
    await h.call(
        "alice", "join", JoinArgs(url=srv.base_url, server_id="srv_harbor", confirmed=True), JoinResult
    )


async def test_author_deletes_where_advertised(harness: Harness) -> None:
    cfg = DevserverConfig(
        port=0, host="127.0.0.1", seed="harbor", admin=True, features=frozenset({"message_delete"})
    )
    async with arunning_devserver(cfg) as dev:
        events = await harness.events("alice")
        await _joined(harness, dev)
        sent = await harness.call(
            "alice", "send", SendArgs(server_id="srv_harbor", channel_id=CHANNEL, body="oops"), SendResult
        )
        mid = sent.message.id
        await events.wait_for(lambda ev: mid in events.message_ids("srv_harbor", CHANNEL))
        ack = await harness.call(
            "alice",
            "delete",
            DeleteMessageArgs(server_id="srv_harbor", channel_id=CHANNEL, message_id=mid),
            Ack,
        )
        assert ack.ok
        await events.wait_for(
            lambda ev: any(
                e["payload"]["message_id"] == mid for e in events.of("message.deleted", "srv_harbor")
            )
        )
        # the backend no longer has it
        other = await admin_post(dev, CHANNEL, "uid_bob", "after the delete")
        await events.wait_for(lambda ev: other in events.message_ids("srv_harbor", CHANNEL))
        # someone else's message: refused by the backend (author only), nothing published
        with pytest.raises(CommandError) as refused:
            await harness.call(
                "alice",
                "delete",
                DeleteMessageArgs(server_id="srv_harbor", channel_id=CHANNEL, message_id=other),
                Ack,
            )
        assert refused.value.code == "message_delete_forbidden"
        deleted = [e["payload"]["message_id"] for e in events.of("message.deleted", "srv_harbor")]
        assert deleted.count(mid) >= 1 and other not in deleted


async def test_delete_is_unsupported_without_the_feature(harness: Harness) -> None:
    async with arunning_devserver(seed="harbor", admin=True) as dev:
        await _joined(harness, dev)
        sent = await harness.call(
            "alice", "send", SendArgs(server_id="srv_harbor", channel_id=CHANNEL, body="stays"), SendResult
        )
        with pytest.raises(CommandError) as err:
            await harness.call(
                "alice",
                "delete",
                DeleteMessageArgs(server_id="srv_harbor", channel_id=CHANNEL, message_id=sent.message.id),
                Ack,
            )
        assert err.value.code == "unsupported"
