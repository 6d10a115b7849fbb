"""``openchat status``: each component's health; non-zero exit when any is down."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass, replace
from urllib.parse import urlparse

import httpx
import nats
from nats.aio.client import Client as NATS

from services.cli.home import Endpoints, Home
from services.core.contracts.subjects import SERVICES


@dataclass(frozen=True)
class Row:
    component: str
    healthy: bool
    where: str
    detail: str
    pid: int | None = None  # for a component `openchat up` supervises
    restarts: int | None = None  # how often the supervisor restarted it
    kind: str = ""  # nats, redis, connector, state, notification, media, devserver
    node: str = ""  # the machine it runs on (this one for `openchat up`)
    sessions: list[str] | None = None  # a connector replica with leases: the sessions it holds
    role: str = ""  # active/standby replicas: which one this is

    def to_json(self) -> dict[str, object]:
        """``openchat status --json``: every field, plus ``name`` and ``health`` (issue 16)."""
        return {**self.__dict__, "name": self.component, "health": "up" if self.healthy else "down"}


async def _tcp_ok(url: str) -> bool:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 0
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def _resp(*parts: str) -> bytes:
    """A Redis command in RESP (safe for any password)."""
    out = [f"*{len(parts)}\r\n".encode()]
    for part in parts:
        raw = part.encode()
        out += [f"${len(raw)}\r\n".encode(), raw, b"\r\n"]
    return b"".join(out)


async def _redis_ok(url: str, password: str | None = None) -> tuple[bool, str]:
    parsed = urlparse(url)
    password = parsed.password or password
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 6379), 2.0
        )
        auth = b""
        if password:
            writer.write(_resp("AUTH", *([parsed.username] if parsed.username else []), password))
        writer.write(_resp("PING"))
        await writer.drain()
        if password:
            auth = await asyncio.wait_for(reader.readline(), 2.0)
        line = await asyncio.wait_for(reader.readline(), 2.0)
        writer.close()
    except (OSError, TimeoutError) as exc:
        return False, f"unreachable ({exc.__class__.__name__})"
    if password and not auth.startswith(b"+OK"):
        return False, "password refused"
    if line.startswith(b"-NOAUTH"):
        return True, "PONG (needs a password: set OPENCHAT_REDIS_PASSWORD to check more)"
    ok = line.startswith(b"+PONG")
    return ok, ("PONG, password required" if password else "PONG") if ok else line.decode(
        errors="replace"
    ).strip()


async def _sys_connect(url: str, user: str, password: str) -> NATS:
    """One short connection over the system account: no reconnects, 2 s to connect."""
    return await nats.connect(
        url,
        user=user,
        password=password,
        connect_timeout=2,
        max_reconnect_attempts=0,
        allow_reconnect=False,
    )


async def _nats_sys_ok(url: str, user: str, password: str) -> tuple[bool, str]:
    """JetStream health over the system account (``$SYS.REQ.SERVER.PING.HEALTHZ``): what the
    HTTP monitoring port would say, without a port that shows connections to anyone local."""
    try:
        nc = await _sys_connect(url, user, password)
    except Exception as exc:
        return False, f"unreachable ({exc.__class__.__name__})"
    try:
        reply = await nc.request(
            "$SYS.REQ.SERVER.PING.HEALTHZ", json.dumps({"js-enabled-only": True}).encode(), timeout=2.0
        )
        status = str(json.loads(reply.data).get("data", {}).get("status", "?"))
    except Exception as exc:
        return False, f"no health answer ({exc.__class__.__name__})"
    finally:
        await nc.close()
    return status == "ok", f"JetStream {status}"


async def stack_status(home: Home) -> list[Row]:
    ep = home.endpoints() or _endpoints_from_settings(home)
    if ep is None:
        return [
            Row(
                "stack",
                False,
                str(home.layout.endpoints),
                "not running (no endpoints file; start it with: openchat up)",
            )
        ]
    rows: list[Row] = []
    async with httpx.AsyncClient() as client:
        if ep.nats_nodes and home.settings.sys_password is not None:
            # --nats-cluster: each node's own health over the system account
            for node, url in ep.nats_nodes.items():
                ok, detail = await _nats_node_ok(
                    url, home.settings.sys_user, home.settings.sys_password.get_secret_value()
                )
                rows.append(Row(node, ok, url, detail, kind="nats"))
        elif ep.nats_monitor_url:
            try:
                resp = await client.get(f"{ep.nats_monitor_url}/healthz?js-enabled-only=true", timeout=1.0)
                rows.append(
                    Row(
                        "nats",
                        resp.status_code == 200,
                        ep.nats_url,
                        f"JetStream {resp.json().get('status', '?')}",
                    )
                )
            except (httpx.HTTPError, ValueError) as exc:
                rows.append(Row("nats", False, ep.nats_url, f"unreachable ({exc.__class__.__name__})"))
        elif "nats" in ep.managed and home.settings.sys_password is not None:
            # The embedded NATS of `openchat up` has no monitoring port; its system account answers.
            ok, detail = await _nats_sys_ok(
                ep.nats_url, home.settings.sys_user, home.settings.sys_password.get_secret_value()
            )
            rows.append(Row("nats", ok, ep.nats_url, detail, kind="nats"))
        else:
            ok = await _tcp_ok(ep.nats_url)
            rows.append(Row("nats", ok, ep.nats_url, "reachable" if ok else "unreachable"))
        ok, detail = await _redis_ok(ep.redis_url, home.settings.redis_auth())
        rows.append(Row("redis", ok, ep.redis_url, detail, kind="redis"))
        for service in SERVICES:
            names = [n for n in ep.services if n == service or _replica_of(n) == service] or [service]
            for name in names:
                base = ep.services.get(name)
                if base is None:
                    rows.append(Row(name, False, "-", "not started", kind=service))
                    continue
                try:
                    resp = await client.get(f"{base}/healthz", timeout=2.0)
                    doc = resp.json()
                    checks = ", ".join(
                        f"{k}={'ok' if v else 'DOWN'}" for k, v in doc.get("checks", {}).items()
                    )
                    sessions = doc.get("sessions")
                    role = str(doc.get("role", ""))
                    detail = checks or doc.get("status", "")
                    if role:
                        detail += f"; {role}"
                    if isinstance(sessions, list):
                        detail += f"; {len(sessions)} sessions"
                    rows.append(
                        Row(
                            name,
                            resp.status_code == 200,
                            base,
                            detail,
                            kind=service,
                            sessions=[str(s) for s in sessions] if isinstance(sessions, list) else None,
                            role=role,
                        )
                    )
                except (httpx.HTTPError, ValueError) as exc:
                    rows.append(
                        Row(name, False, base, f"unreachable ({exc.__class__.__name__})", kind=service)
                    )
        for name, base in ep.devservers.items():
            try:
                resp = await client.get(f"{base}/healthz", timeout=2.0)
                rows.append(
                    Row(f"devserver {name}", resp.status_code == 200, base, "demo backend", kind="devserver")
                )
            except httpx.HTTPError as exc:
                rows.append(Row(f"devserver {name}", False, base, f"unreachable ({exc.__class__.__name__})"))
    node = socket.gethostname() if ep.supervisor_pid else ""
    return [_supervised(replace(row, node=row.node or node), ep) for row in rows]


def _replica_of(component: str) -> str | None:
    base, _, index = component.rpartition("-")
    return base if base in SERVICES and index.isdigit() else None


async def _nats_node_ok(url: str, user: str, password: str) -> tuple[bool, str]:
    """One node of a cluster: its own JetStream health (``$SYS.REQ.SERVER.<id>.HEALTHZ``) and
    how many routes it has to the others."""
    try:
        nc = await _sys_connect(url, user, password)
    except Exception as exc:
        return False, f"unreachable ({exc.__class__.__name__})"
    try:
        server_id = str(nc._server_info.get("server_id", ""))
        reply = await nc.request(f"$SYS.REQ.SERVER.{server_id}.HEALTHZ", b"", timeout=2.0)
        status = str(json.loads(reply.data).get("data", {}).get("status", "?"))
        routez = await nc.request(f"$SYS.REQ.SERVER.{server_id}.ROUTEZ", b"", timeout=2.0)
        routes = int(json.loads(routez.data).get("data", {}).get("num_routes", 0))
    except Exception as exc:
        return False, f"no health answer ({exc.__class__.__name__})"
    finally:
        await nc.close()
    return status == "ok", f"JetStream {status}, {routes} routes"


def _supervised(row: Row, ep: Endpoints) -> Row:
    """Add the pid and restart count of a component the supervisor runs."""
    key = row.component.replace("devserver ", "devserver-")
    if key not in ep.managed:
        return row
    restarts = ep.restarts.get(key, 0)
    return replace(
        row,
        pid=ep.managed[key],
        restarts=restarts,
        detail=f"{row.detail}; pid {ep.managed[key]}, restarted {restarts}x",
    )


def _endpoints_from_settings(home: Home) -> Endpoints | None:
    """docker compose: no supervisor, but the environment names every component."""
    s = home.settings
    if not (s.nats_url and s.redis_url and s.status_service_urls):
        return None
    return Endpoints(
        supervisor_pid=0,
        started_at="",
        nats_url=s.nats_url,
        nats_monitor_url=s.nats_monitor_url,
        redis_url=s.redis_url,
        services=dict(s.status_service_urls),
    )


def render_table(rows: list[Row]) -> str:
    width = max(len(r.component) for r in rows)
    where_w = max(len(r.where) for r in rows)
    lines = [f"{'COMPONENT':<{width}}  {'STATE':<7}  {'ENDPOINT':<{where_w}}  DETAIL"]
    for r in rows:
        lines.append(
            f"{r.component:<{width}}  {'up' if r.healthy else 'DOWN':<7}  {r.where:<{where_w}}  {r.detail}"
        )
    return "\n".join(lines)
