"""The devserver ASGI application: ``create_app(cfg)``.

Wires the state (``store.py``), the realtime hub (``realtime.py``), the public routes
(``http_api.py``), the switched-on Profile B routes (``features.py``), the admin surface
(``admin.py``, only with ``cfg.admin``) and the RTC part (``rtc.install_rtc``) into one FastAPI app,
and replaces Starlette's routing with the public backend's (chi) semantics:

* unknown path → ``404`` ``text/plain; charset=utf-8`` ``404 page not found\\n``;
* known path, other method (HEAD included) → ``405`` with an empty body;
* plain (non-upgrade) ``GET`` on a WebSocket path → ``400`` ``Bad Request\\n``;
* **any** ``OPTIONS`` → ``204``, empty; CORS headers on every response (``WireMiddleware``);
* the admin ``delay`` knob holds non-admin HTTP responses back.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route, Router, WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.devserver import admin, features, http_api
from services.devserver.config import DevserverConfig
from services.devserver.http_api import Context
from services.devserver.realtime import Hub
from services.devserver.rtc import install_rtc
from services.devserver.store import Store
from services.devserver.wire_http import CORS_HEADERS, empty_response, method_not_allowed, not_found_text

_CORS_RAW = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in CORS_HEADERS.items()]


class GoRouter:
    """Dispatch over ``router.routes`` with chi's 404 / 405 / WebSocket-path rules."""

    def __init__(self, router: Router) -> None:
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        router = self.router
        if scope["type"] == "lifespan":
            await router.lifespan(scope, receive, send)
            return
        scope.setdefault("router", router)
        partial: Any = None
        for route in router.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:
                scope.update(child)
                scope["route"] = route
                await route.handle(scope, receive, send)
                return
            if match is Match.PARTIAL and partial is None:
                partial = route
        if scope["type"] == "websocket":
            # An upgrade request to a path without a WebSocket route: answer like the HTTP router.
            response = method_not_allowed() if partial is not None else not_found_text()
            await _websocket_http_response(scope, send, response)
            return
        if partial is not None:
            await method_not_allowed()(scope, receive, send)
            return
        ws_path = any(
            isinstance(route, WebSocketRoute) and route.path_regex.match(scope["path"])
            for route in router.routes
        )
        if ws_path:
            if scope["method"] == "GET":
                response = Response(
                    b"Bad Request\n",
                    400,
                    headers={**CORS_HEADERS, "X-Content-Type-Options": "nosniff"},
                    media_type="text/plain; charset=utf-8",
                )
            else:
                response = method_not_allowed()
            await response(scope, receive, send)
            return
        await not_found_text()(scope, receive, send)


async def _websocket_http_response(scope: Scope, send: Send, response: Response) -> None:
    if "websocket.http.response" in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": response.status_code,
                "headers": response.raw_headers,
            }
        )
        await send({"type": "websocket.http.response.body", "body": bytes(response.body)})
    else:
        await send({"type": "websocket.close", "code": 1008})


class WireMiddleware:
    """CORS on every response, ``OPTIONS`` → 204 on any path, and the admin response delay."""

    def __init__(self, app: ASGIApp, ctx: Context) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS":
            await empty_response(204)(scope, receive, send)
            return
        delay_ms = self.ctx.delay_ms
        if delay_ms > 0 and not scope["path"].startswith("/_admin/"):
            await asyncio.sleep(delay_ms / 1000)

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers += [item for item in _CORS_RAW if item[0] not in present]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_cors)
        finally:
            if not scope["path"].startswith("/_admin/"):
                route = scope.get("route")
                key = f"{scope['method']} {getattr(route, 'path', None) or '(no route)'}"
                counts = self.ctx.requests
                counts[key] = counts.get(key, 0) + 1


def create_app(cfg: DevserverConfig) -> FastAPI:
    """The devserver app for ``cfg`` (state is created here; one app = one backend instance)."""
    store = Store(cfg)
    hub = Hub(cfg, store)
    ctx = Context(cfg=cfg, store=store, hub=hub)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await hub.drop_all()
            await store.aclose()

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.ctx = ctx
    app.state.cfg = cfg
    app.state.store = store
    app.state.hub = hub

    routes = app.router.routes
    routes.extend(http_api.routes(ctx))
    routes.append(WebSocketRoute("/v1/realtime", hub.serve))
    routes.extend(features.routes(ctx))
    if cfg.admin:
        routes.extend(admin.routes(ctx))
    install_rtc(app, cfg, store)
    # chi does not answer HEAD on GET routes (405); Starlette adds HEAD implicitly.
    for route in routes:
        if isinstance(route, Route) and route.methods is not None and "HEAD" in route.methods:
            route.methods.discard("HEAD")
    app.router.middleware_stack = GoRouter(app.router)
    app.add_middleware(WireMiddleware, ctx=ctx)
    return app


def app_context(app: FastAPI) -> Context:
    ctx = app.state.ctx
    assert isinstance(ctx, Context)
    return ctx


__all__ = ["GoRouter", "Request", "WireMiddleware", "app_context", "create_app"]
