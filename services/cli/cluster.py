"""``openchat up --nats-cluster N --replicas R`` (issue 16, ADR 0021): the clustered shape on
one machine, for trying and testing.

- N real nats-server nodes (``nats-1`` … ``nats-N``), each with its own client port (4222,
  4223, … when free), its own JetStream store (``OPENCHAT_HOME/nats/jetstream/node-<i>``) and
  a cluster route port on loopback (6222, … when free); every node includes the same generated
  accounts file, and a member change is reloaded on every node (``natsconf.request_reload``
  pings the whole cluster). The services get every node's URL, comma-separated, and the
  events stream and KV buckets are created with ``min(3, N)`` replicas.
- R replicas of every service (``connector-1`` …): connector sessions follow leases in NATS KV
  (``services/connector/leases.py``); state replicas compete per batch under Redis WATCH and
  share one bearer-token key; notification and media replicas are active/standby behind a
  lease (``services/core/standby.py``).
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path

import nats

from services.core.natsconf import render_local_conf
from services.core.procs import pick_port

DEFAULT_CLIENT_PORT = 4222
DEFAULT_ROUTE_PORT = 6222
CLUSTER_NAME = "openchat"


@dataclass(frozen=True)
class Node:
    name: str  # nats-1
    conf: Path
    port: int
    route_port: int
    store_dir: Path


def plan_nodes(count: int, conf_dir: Path, jetstream_dir: Path, local_host: str) -> list[Node]:
    """Ports for ``count`` nodes (the defaults when free). Configuration files sit beside the
    accounts file (nats-server resolves ``include`` relative to the including file)."""
    nodes: list[Node] = []
    taken: set[int] = set()

    def port(preferred: int, host: str) -> int:
        chosen = pick_port(preferred, host)
        while chosen in taken:
            chosen = pick_port(0, host)
        taken.add(chosen)
        return chosen

    for i in range(1, count + 1):
        nodes.append(
            Node(
                name=f"nats-{i}",
                conf=conf_dir / f"nats-{i}.conf",
                port=port(DEFAULT_CLIENT_PORT + i - 1, local_host),
                route_port=port(DEFAULT_ROUTE_PORT + i - 1, "127.0.0.1"),
                store_dir=jetstream_dir / f"node-{i}",
            )
        )
    return nodes


def render_node_conf(
    node: Node, nodes: list[Node], host: str, accounts_file: Path, tls_block: str | None
) -> str:
    """One node: the single-node configuration plus its name and the cluster block (routes on
    loopback only: the route port is never exposed)."""
    base = render_local_conf(host, node.port, None, node.store_dir, accounts_file, tls_block)
    routes = [f"nats://127.0.0.1:{other.route_port}" for other in nodes if other is not node]
    return base + "\n".join(
        [
            f"server_name: {json.dumps(node.name)}",
            "cluster {",
            f"  name: {json.dumps(CLUSTER_NAME)}",
            f"  listen: {json.dumps(f'127.0.0.1:{node.route_port}')}",
            f"  routes: {json.dumps(routes)}",
            "}",
            "",
        ]
    )


async def wait_jetstream(
    url: str, user: str, password: str, timeout: float = 60.0, *, ca_pem: str | None = None
) -> None:
    """Until the cluster's JetStream answers (its meta group has a leader)."""
    tls: dict[str, object] = {}
    if ca_pem:
        from services.core.tls import client_context

        tls = {"tls": client_context(ca_pem), "tls_handshake_first": True}
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            nc = await nats.connect(
                [u.strip() for u in url.split(",") if u.strip()],
                user=user,
                password=password,
                connect_timeout=2,
                max_reconnect_attempts=0,
                allow_reconnect=False,
                **tls,
            )
        except Exception as exc:
            last = exc
            await asyncio.sleep(0.25)
            continue
        try:
            await nc.jetstream().account_info()
            return
        except Exception as exc:
            last = exc
        finally:
            await nc.close()
        await asyncio.sleep(0.25)
    raise TimeoutError(f"JetStream of the NATS cluster did not come up within {timeout:g} s: {last!r}")
