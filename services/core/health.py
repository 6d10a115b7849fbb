"""The small HTTP app every service mounts: ``/healthz`` and Prometheus ``/metrics``."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, ProcessCollector, generate_latest

from services.core.version import package_version

Check = Callable[[], Awaitable[bool]]
CHECK_TIMEOUT_S = 1.0


class HealthState:
    """Named dependency checks (``bus``, ``redis``…) evaluated on every ``/healthz``."""

    def __init__(self, service: str) -> None:
        self.service = service
        self.started = time.monotonic()
        self.checks: dict[str, Check] = {}
        self.role = ""  # active/standby replicas (services/core/standby.py): "active" or "standby"
        # more for /healthz (the connector's replica and sessions); a callable is called per request
        self.info: dict[str, object] = {}
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        self.up = Gauge(
            "openchat_dependency_up",
            "1 when a dependency check passes",
            ["service", "check"],
            registry=self.registry,
        )

    def add(self, name: str, check: Check) -> None:
        self.checks[name] = check

    async def evaluate(self) -> dict[str, bool]:
        async def run(check: Check) -> bool:
            try:
                return await asyncio.wait_for(check(), CHECK_TIMEOUT_S)
            except Exception:
                return False

        names = list(self.checks)
        values = await asyncio.gather(*(run(self.checks[n]) for n in names))
        result = dict(zip(names, values, strict=True))
        for name, ok in result.items():
            self.up.labels(self.service, name).set(1 if ok else 0)
        return result


def health_app(state: HealthState) -> FastAPI:
    app = FastAPI(title=f"openchat {state.service}", docs_url=None, redoc_url=None)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        checks = await state.evaluate()
        ok = all(checks.values())
        body = {
            "service": state.service,
            "status": "ok" if ok else "unavailable",
            "checks": checks,
            "uptime_s": round(time.monotonic() - state.started, 1),
            "version": package_version(),
            **({"role": state.role} if state.role else {}),
            **{k: (v() if callable(v) else v) for k, v in state.info.items()},
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        await state.evaluate()
        return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

    return app


class HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: the embedding process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @property
    def bound_port(self) -> int:
        """The port actually bound (useful with port 0), once started."""
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port
