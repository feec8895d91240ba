"""The "floor" side of `gateway_overhead.py`: the least a proxy on the gateway's stack can do.

    FLOOR_UPSTREAM_URL=http://127.0.0.1:PORT/v1 .venv/bin/uvicorn --app-dir bench \\
        floor_proxy:app --port P --no-access-log --log-level warning \\
        --no-proxy-headers --no-server-header

The same stack as `llmops serve` (uvicorn with uvloop + httptools, Starlette, orjson, one
shared aiohttp session), with none of the gateway's work: one route,
`POST /api/v1/chat/completions`, reads the body, parses it with `orjson.loads`, checks that it
has `messages`, and forwards the raw bytes to `FLOOR_UPSTREAM_URL` + `/chat/completions`. A
body with `"stream": true` gets a `StreamingResponse` relaying the upstream's chunks as they
arrive; any other gets the upstream's body in one `Response`. No auth, routing, validation,
request ids, header passing, timeouts of its own or error mapping.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

UPSTREAM = os.environ.get("FLOOR_UPSTREAM_URL", "http://127.0.0.1:8001/v1").rstrip("/")
CHAT_URL = UPSTREAM + "/chat/completions"
_HEADERS = {"content-type": "application/json"}
_session: aiohttp.ClientSession | None = None


async def _relay(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The upstream's stream, chunk by chunk as it arrives."""
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    finally:
        response.release()


async def chat(request: Request) -> Response:
    """Forward one chat completion, streamed when the body asks for it."""
    assert _session is not None
    body = await request.body()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return Response(b'{"error":"invalid JSON"}', 400, media_type="application/json")
    if not isinstance(data, dict) or not data.get("messages"):
        return Response(b'{"error":"messages is required"}', 400, media_type="application/json")
    response = await _session.post(CHAT_URL, data=body, headers=_HEADERS)
    if data.get("stream") is True and response.status == 200:
        return StreamingResponse(_relay(response), 200, media_type="text/event-stream")
    payload = await response.read()
    response.release()
    return Response(payload, response.status, media_type="application/json")


@asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    """One upstream session for the process, on the server's event loop."""
    global _session
    _session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256))
    try:
        yield
    finally:
        await _session.close()


app = Starlette(
    routes=[Route("/api/v1/chat/completions", chat, methods=["POST"])], lifespan=lifespan
)
