"""`llmops serve`: the same gateway handlers under the same `/api` routes, on uvicorn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from llmops.errors import GatewayError
from llmops.gateway.blueprint import AZURE_CHAT_ROUTE, CHAT_ROUTE, HEALTH_ROUTE, MODELS_ROUTE
from llmops.gateway.http import GatewayHandlers
from llmops.gateway.service import Gateway

ROUTE_PREFIX = "/api"


def create_app(gateway: Gateway) -> Starlette:
    """A Starlette app serving `gateway` with the routes the Functions app registers."""
    handlers = GatewayHandlers(gateway)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await gateway.aclose()

    routes = [
        Route(f"{ROUTE_PREFIX}/{CHAT_ROUTE}", handlers.chat_completions, methods=["POST"]),
        Route(
            f"{ROUTE_PREFIX}/{AZURE_CHAT_ROUTE}", handlers.azure_chat_completions, methods=["POST"]
        ),
        Route(f"{ROUTE_PREFIX}/{MODELS_ROUTE}", handlers.models, methods=["GET"]),
        Route(f"{ROUTE_PREFIX}/{HEALTH_ROUTE}", handlers.health, methods=["GET"]),
    ]
    return Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: _http_error}
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and wrong methods, in the OpenAI error shape too."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    message = {
        404: f"Unknown path {request.url.path}.",
        405: f"Method {request.method} is not allowed on {request.url.path}.",
    }.get(status, "Request failed.")
    error = GatewayError(
        status, message, code={404: "not_found", 405: "method_not_allowed"}.get(status)
    )
    headers = dict(exc.headers or {}) if isinstance(exc, HTTPException) else {}
    return Response(error.body(), status, headers, "application/json")
