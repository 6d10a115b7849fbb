"""``sync``: every stored event of one member after a stream sequence, read from the stream.

Members never get the JetStream API; state reads on their behalf with a short-lived ephemeral
pull consumer filtered to ``oc.sys.ev.<member>.>`` and starting at ``since_seq + 1``. The reply is
bounded by ``limit`` and by the bus contract's ``MAX_REPLY_RESULT_BYTES`` — never by nats-server's
larger ``max_payload``, which clients would refuse (``complete=False``: ask again from
``last_seq``). An event that alone is over the budget is passed over and named in ``oversized``
(the client takes a snapshot), so a page always makes progress. ``truncated=True`` when the stream no longer holds every event after
``since_seq`` (it starts later, or ``since_seq`` belongs to another incarnation of the stream):
the client must take a snapshot.
"""

from __future__ import annotations

import contextlib

from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from services.core.bus import Bus
from services.core.contracts import subjects
from services.core.contracts.bus import MAX_REPLY_RESULT_BYTES
from services.core.contracts.chat import SyncedEvent, SyncResult
from services.state.domain import InvalidEvent, parse_ingest_subject

FETCH_BATCH = 256
FETCH_TIMEOUT_S = 2.0
RESULT_OVERHEAD = 1024  # SyncResult's own fields around the events


async def sync_events(bus: Bus, stream: str, member: str, since_seq: int, limit: int) -> SyncResult:
    info = await bus.js.stream_info(stream)
    first, last = info.state.first_seq, info.state.last_seq
    if since_seq > last:
        return SyncResult(events=[], last_seq=since_seq, complete=True, truncated=True)
    truncated = since_seq + 1 < first
    if since_seq >= last:
        return SyncResult(events=[], last_seq=since_seq, complete=True, truncated=truncated)
    budget = MAX_REPLY_RESULT_BYTES - RESULT_OVERHEAD
    filter_subject = f"{subjects.INGEST_PREFIX}.{subjects.check_member(member)}.>"
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=max(since_seq + 1, first),
        ack_policy=AckPolicy.NONE,
        inactive_threshold=10.0,
        mem_storage=True,
        num_replicas=1,
    )
    sub = await bus.js.pull_subscribe(filter_subject, stream=stream, config=config)
    events: list[SyncedEvent] = []
    oversized: list[int] = []
    size = 0
    last_seen = since_seq
    try:
        pending = (await sub.consumer_info()).num_pending or 0
        want = min(pending, limit)
        complete = pending <= limit
        while len(events) < want:
            msgs = await sub.fetch(min(FETCH_BATCH, want - len(events)), timeout=FETCH_TIMEOUT_S)
            for msg in msgs:
                seq = msg.metadata.sequence.stream
                try:
                    msg_member, server_id, kind = parse_ingest_subject(msg.subject)
                except InvalidEvent:
                    continue
                if msg_member != member:
                    continue
                event = SyncedEvent(
                    seq=seq,
                    subject=subjects.event(member, server_id, kind),
                    type=kind,
                    server_id=server_id,
                    data=msg.data.decode("utf-8", errors="replace"),
                )
                cost = len(event.model_dump_json().encode()) + 1
                if cost > budget:  # alone over the limit: pass over it, say so
                    oversized.append(seq)
                    size += len(str(seq)) + 1
                    last_seen = seq
                    want -= 1
                    continue
                if size + cost > budget:
                    complete = False
                    want = len(events)
                    break
                size += cost
                events.append(event)
                last_seen = seq
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
        with contextlib.suppress(Exception):
            if config.name:
                await bus.js.delete_consumer(stream, config.name)
    return SyncResult(
        events=events, last_seq=last_seen, complete=complete, truncated=truncated, oversized=oversized
    )
