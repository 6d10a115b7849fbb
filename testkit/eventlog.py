"""Every event of one member as it arrives on the bus (with its stream sequence), awaited by
predicate: for the connector tests (``tests/connector_harness``) and the benchmarks."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from nats.aio.msg import Msg

from services.core.bus import Bus
from services.core.contracts import subjects

T = TypeVar("T")


@dataclass
class EventLog:
    events: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cond = asyncio.Condition()

    async def attach(self, bus: Bus, member: str) -> None:
        async def on_msg(msg: Msg) -> None:
            doc = json.loads(msg.data)
            doc["_seq"] = int((msg.headers or {}).get("Nats-Sequence", "0"))
            async with self._cond:
                self.events.append(doc)
                self._cond.notify_all()

        await bus.nc.subscribe(subjects.events_of_member(member), cb=on_msg)

    async def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], T | None], timeout: float = 10.0
    ) -> T:
        result: list[T] = []

        def check() -> bool:
            value = predicate(self.events)
            if value is None or value is False:
                return False
            result.append(value)
            return True

        async with self._cond:
            await asyncio.wait_for(self._cond.wait_for(check), timeout)
        return result[0]

    def of(self, kind: str, server_id: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e["type"] == kind and server_id in (None, e["server_id"])]

    def message_ids(self, server_id: str, channel_id: str) -> list[str]:
        return [
            e["payload"]["message"]["id"]
            for e in self.of("message.created", server_id)
            if e["channel_id"] == channel_id
        ]

    def last_connection(self, server_id: str) -> str | None:
        states = self.of("server.connection", server_id)
        return str(states[-1]["payload"]["state"]) if states else None
