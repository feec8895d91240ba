"""`llmops serve`: the same gateway handlers under the same `/api` routes, on uvicorn.

The ASGI app is a Starlette `Router` rather than a full `Starlette` application: the
handlers already turn every error into an OpenAI-shaped response, so the application's two
exception middlewares would only add a wrapper around every `send` on the hot path
(measured: docs/benchmarks.md). Unknown paths and wrong methods still get OpenAI-shaped errors.
"""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, Router
from starlette.types import Receive, Scope, Send

from llmops.errors import GatewayError
from llmops.gateway.http import GatewayHandlers
from llmops.gateway.routes import AZURE_CHAT_ROUTE, CHAT_ROUTE, HEALTH_ROUTE, MODELS_ROUTE
from llmops.gateway.service import Gateway

ROUTE_PREFIX = "/api"
_ALL_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def create_app(gateway: Gateway, *, tune_gc: bool = False) -> Router:
    """An ASGI app serving `gateway` with the routes the Functions app registers.

    `tune_gc` (for a dedicated server process: `llmops serve`) moves everything loaded at
    start-up out of the garbage collector's sight (`gc.freeze`) and collects the youngest
    generation every 10,000 allocations instead of 700: measured, ~15% less CPU per request
    at concurrency 64 (docs/decisions.md). It is process-wide, so it is off by default.
    """
    handlers = GatewayHandlers(gateway)

    @asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        if tune_gc:
            gc.collect()
            gc.freeze()
            gc.set_threshold(10_000, 20, 20)
        yield
        await gateway.aclose()

    endpoints = [
        (CHAT_ROUTE, handlers.chat_completions, "POST"),
        (AZURE_CHAT_ROUTE, handlers.azure_chat_completions, "POST"),
        (MODELS_ROUTE, handlers.models, "GET"),
        (HEALTH_ROUTE, handlers.health, "GET"),
    ]
    routes = [
        Route(f"{ROUTE_PREFIX}/{path}", _Endpoint(handler), methods=[method], name=handler.__name__)
        for path, handler, method in endpoints
    ]
    # Same paths, every other method: a full match, so the router answers with our 405.
    routes += [
        Route(
            f"{ROUTE_PREFIX}/{path}",
            _method_not_allowed,
            methods=sorted(_ALL_METHODS - {method, "HEAD" if method == "GET" else ""}),
        )
        for path, _, method in endpoints
    ]
    return Router(routes=routes, lifespan=lifespan, default=_not_found)


class _Endpoint:
    """One handler as a bare ASGI app: request in, response out.

    Starlette wraps a plain function endpoint in its exception-handler plumbing: three
    closures per call and a wrapper around every `send`, each stream chunk included. The
    handlers turn every error into a response themselves, so `llmops serve` mounts them as
    ASGI apps instead (measured: docs/benchmarks.md).
    """

    def __init__(self, handler: Callable[[Request], Awaitable[Response]]) -> None:
        self.handler = handler

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.handler(Request(scope, receive, send))
        await response(scope, receive, send)


async def _method_not_allowed(request: Request) -> Response:
    error = GatewayError(
        405,
        f"Method {request.method} is not allowed on {request.url.path}.",
        code="method_not_allowed",
    )
    return Response(error.body(), 405, media_type="application/json")


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    error = GatewayError(404, f"Unknown path {scope['path']}.", code="not_found")
    await Response(error.body(), 404, media_type="application/json")(scope, receive, send)
