"""``openchat status``: each component's health; non-zero exit when any is down."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlparse

import httpx

from services.cli.home import Endpoints, Home
from services.core.contracts.subjects import SERVICES


@dataclass(frozen=True)
class Row:
    component: str
    healthy: bool
    where: str
    detail: str


async def _tcp_ok(url: str) -> bool:
    parsed = urlparse(url)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 0
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _redis_ok(url: str) -> tuple[bool, str]:
    parsed = urlparse(url)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 6379), 1.0
        )
        writer.write(b"PING\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), 1.0)
        writer.close()
    except (OSError, TimeoutError) as exc:
        return False, f"unreachable ({exc.__class__.__name__})"
    ok = line.startswith((b"+PONG", b"-NOAUTH"))
    return ok, "PONG" if ok else line.decode(errors="replace").strip()


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
        if ep.nats_monitor_url:
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
        else:
            ok = await _tcp_ok(ep.nats_url)
            rows.append(Row("nats", ok, ep.nats_url, "reachable" if ok else "unreachable"))
        ok, detail = await _redis_ok(ep.redis_url)
        rows.append(Row("redis", ok, ep.redis_url, detail))
        for name in SERVICES:
            base = ep.services.get(name)
            if base is None:
                rows.append(Row(name, False, "-", "not started"))
                continue
            try:
                resp = await client.get(f"{base}/healthz", timeout=2.0)
                doc = resp.json()
                checks = ", ".join(f"{k}={'ok' if v else 'DOWN'}" for k, v in doc.get("checks", {}).items())
                rows.append(Row(name, resp.status_code == 200, base, checks or doc.get("status", "")))
            except (httpx.HTTPError, ValueError) as exc:
                rows.append(Row(name, False, base, f"unreachable ({exc.__class__.__name__})"))
        for name, base in ep.devservers.items():
            try:
                resp = await client.get(f"{base}/healthz", timeout=2.0)
                rows.append(Row(f"devserver {name}", resp.status_code == 200, base, "demo backend"))
            except httpx.HTTPError as exc:
                rows.append(Row(f"devserver {name}", False, base, f"unreachable ({exc.__class__.__name__})"))
    return rows


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
