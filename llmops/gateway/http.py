"""HTTP handlers: `async def handler(request) -> response` on Starlette/FastAPI types.

The same handler objects serve the Functions host (through
`azurefunctions-extensions-http-fastapi`, see `blueprint.py`) and `llmops serve` (mounted in a
Starlette app, see `llmops/server.py`). They adapt HTTP to the `Gateway` use case and
nothing else; any exception they do not expect becomes a 500 in the OpenAI error shape with
the request id, never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import orjson
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from llmops import __version__
from llmops.errors import GatewayError, error_body
from llmops.gateway.service import CallInfo, Gateway
from llmops.gateway.upstream import UpstreamResponse, UpstreamTimeout, UpstreamUnreachable
from llmops.settings import Settings, SettingsError

log = logging.getLogger("llmops.gateway")

_AZURE_PATH = re.compile(r"/openai/deployments/([^/]+)/chat/completions/?$")
_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class GatewayHandlers:
    """The gateway's HTTP endpoints, bound to one `Gateway`."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def chat_completions(self, request: Request) -> Response:
        """POST /api/v1/chat/completions (OpenAI style: the model is in the body)."""
        return await self._chat(request, path_deployment=None)

    async def azure_chat_completions(self, request: Request) -> Response:
        """POST /api/openai/deployments/{deployment}/chat/completions?api-version=..."""
        deployment = request.path_params.get("deployment")
        if not deployment:
            match = _AZURE_PATH.search(request.url.path)
            deployment = match.group(1) if match else None
        if not deployment:
            return _error(
                GatewayError(404, "No deployment in the request path.", code="DeploymentNotFound"),
                None,
            )
        return await self._chat(request, path_deployment=deployment)

    async def models(self, request: Request) -> Response:
        """GET /api/v1/models: the public model names this gateway serves."""
        request_id = _new_request_id()
        try:
            self.gateway.authenticate(request.headers)
        except GatewayError as exc:
            return _error(exc, request_id)
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "llmops-gateway"}
            for name in sorted(
                {*self.gateway.settings.model_map, *self.gateway.settings.registry_models}
            )
        ]
        return _json({"object": "list", "data": data}, 200, request_id)

    async def health(self, request: Request) -> Response:
        """GET /api/health: liveness plus what is configured (never a secret)."""
        return _json(
            {"status": "ok", "version": __version__, **self.gateway.settings.describe()}, 200, None
        )

    async def _chat(self, request: Request, *, path_deployment: str | None) -> Response:
        request_id = _new_request_id()
        trace_id, parent_span_id = trace_context(request.headers.get("traceparent"))
        info = CallInfo(
            request_id=request_id,
            route="openai" if path_deployment is None else "azure",
            trace_id=trace_id,
            parent_span_id=parent_span_id,
        )
        try:
            info.consumer = self.gateway.authenticate(request.headers)
            raw = await _read_body(request, self.gateway.settings.max_body_bytes)
            chat = self.gateway.parse(raw, info, path_deployment=path_deployment)
            upstream = await self.gateway.complete(chat, info)
        except GatewayError as exc:
            return self._failed(info, exc)
        except ClientDisconnect:
            error = GatewayError(
                400, "The client closed the connection.", code="client_disconnected"
            )
            return self._failed(info, error)
        except Exception:  # the promise: never a traceback, always an OpenAI-shaped error
            log.exception("unexpected error in request %s", request_id)
            error = GatewayError(
                500,
                f"Internal gateway error (request {request_id}).",
                type="api_error",
                code="internal_error",
            )
            return self._failed(info, error)
        info.status = upstream.status
        headers = {name: header_value(value) for name, value in upstream.headers.items()}
        headers["x-request-id"] = request_id
        if info.deployment:
            headers["x-llmops-deployment"] = header_value(info.deployment)
        if upstream.upstream_request_id:
            headers["x-upstream-request-id"] = header_value(upstream.upstream_request_id)
        if upstream.chunks is None:
            info.response_body = upstream.body
            info.first_byte = info.done = time.monotonic()
            self.gateway.finish(info)
            return Response(
                upstream.body,
                upstream.status,
                headers,
                "application/json",
                background=self._end_of_call(),
            )
        return RelayResponse(
            _relay(upstream, info, self.gateway, strip_usage=chat.strip_usage),
            upstream.status,
            {**headers, **_SSE_HEADERS},
            "text/event-stream",
            background=BackgroundTask(self._after_stream, info, upstream),
        )

    async def _after_stream(self, info: CallInfo, upstream: UpstreamResponse) -> None:
        """Runs once the stream is over, also when the client left before it began (then the
        relay never ran): the call is still recorded and the upstream connection released."""
        if info.done is None:
            info.done = time.monotonic()
            info.error = info.error or {
                "type": "client_disconnected",
                "code": None,
                "message": "The client left before the stream began.",
            }
            self.gateway.finish(info)
        await upstream.aclose()
        if self.gateway.settings.logs.flush_each_call:
            await self.gateway.flush()

    def _failed(self, info: CallInfo, error: GatewayError) -> Response:
        info.fail(error)
        self.gateway.finish(info)
        return _error(error, info.request_id, background=self._end_of_call())

    def _end_of_call(self) -> BackgroundTask | None:
        """Under the Functions host, flush the request log once the response is sent."""
        if self.gateway.settings.logs.flush_each_call:
            return BackgroundTask(self.gateway.flush)
        return None


class RelayResponse(StreamingResponse):
    """A `StreamingResponse` that stops relaying as soon as the client disconnects.

    Starlette does the same for servers older than ASGI 2.4 (uvicorn says 2.3) with an anyio
    task group around every stream; here one plain asyncio task waits for the disconnect and
    cancels the relay. Same behaviour, about a third fewer instructions per streamed call
    (bench/instructions.py, docs/benchmarks.md). The relay is closed right away on a
    disconnect, so the call is recorded then, not when the generator is collected. One
    difference: the cancellation is delivered once, where anyio repeats it at every await, so
    the relay's clean-up awaits are not cancelled again.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        spec = scope.get("asgi", {}).get("spec_version", "2.0")
        if scope["type"] != "http" or tuple(map(int, spec.split("."))) >= (2, 4):
            try:  # send raises when the client left
                await super().__call__(scope, receive, send)
            except ClientDisconnect:
                await self._after_disconnect()
            return
        task = asyncio.current_task()
        assert task is not None
        relaying, client_left = True, False

        def stop_relay(watcher: asyncio.Task[None]) -> None:
            nonlocal client_left
            if watcher.cancelled():
                return
            if (error := watcher.exception()) is not None:
                log.warning("the client disconnect watcher failed: %r", error)
            elif relaying:
                client_left = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(_disconnect(receive))
        watcher.add_done_callback(stop_relay)
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            # Ours only when the watcher cancelled and nothing else (a shutdown) did too.
            if not client_left or task.uncancel() > 0:
                raise
            relaying = False
            await self._after_disconnect()
            return
        finally:
            relaying = False
            watcher.cancel()
        if self.background is not None:
            await self.background()

    async def _after_disconnect(self) -> None:
        """Close the relay now (it records the call) and run the background task."""
        close = getattr(self.body_iterator, "aclose", None)
        if close is not None:
            await close()
        if self.background is not None:
            await self.background()


async def _disconnect(receive: Receive) -> None:
    """Return once the client has disconnected (the request body is already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def trace_context(traceparent: str | None) -> tuple[str, str | None]:
    """(trace id, parent span id) from a W3C `traceparent` header, or a new trace id."""
    if traceparent:
        parts = traceparent.strip().lower().split("-")
        if (
            len(parts) >= 4
            and len(parts[0]) == 2
            and parts[0] != "ff"
            and len(parts[1]) == 32
            and len(parts[2]) == 16
            and _is_hex(parts[1])
            and _is_hex(parts[2])
            and parts[1] != "0" * 32
            and parts[2] != "0" * 16
        ):
            return parts[1], parts[2]
    return f"{random.getrandbits(128):032x}", None


def _is_hex(value: str) -> bool:
    return all(c in "0123456789abcdef" for c in value)


async def _relay(
    upstream: UpstreamResponse, info: CallInfo, gateway: Gateway, *, strip_usage: bool
) -> AsyncIterator[bytes]:
    """Forward stream chunks as they arrive; a mid-stream fault ends with an SSE error event.

    With `strip_usage` the gateway asked the upstream for a usage chunk the client did not
    ask for: events are then forwarded whole, minus that one.
    """
    assert upstream.chunks is not None
    pending = b""
    completed = False
    try:
        async for chunk in upstream.chunks:
            if info.first_byte is None:
                info.first_byte = time.monotonic()
            info.chunks.append(chunk)
            if not strip_usage:
                yield chunk
                continue
            # SSE allows CRLF line ends; events are re-emitted with LF, which is equally valid.
            *events, pending = (pending + chunk).replace(b"\r\n", b"\n").split(b"\n\n")
            out = b"".join(event + b"\n\n" for event in events if not _usage_only(event))
            if out:
                yield out
        if pending:
            yield pending
        completed = True
    except Exception as exc:  # upstream faults, or anything else: end the stream cleanly
        log.warning("upstream stream failed in request %s: %s", info.request_id, exc)
        code = {
            UpstreamTimeout: "upstream_timeout",
            UpstreamUnreachable: "upstream_unreachable",
        }.get(type(exc), "upstream_error")
        message = f"Upstream stream interrupted: {exc}"
        info.error = {"type": "api_error", "code": code, "message": message}
        yield b"data: " + error_body(message, type="api_error", code=code) + b"\n\n"
        completed = True
    finally:
        info.done = time.monotonic()
        if not completed and info.error is None:
            info.error = {
                "type": "client_disconnected",
                "code": None,
                "message": "The client stopped reading the stream.",
            }
        gateway.finish(info)
        await upstream.aclose()


def _usage_only(event: bytes) -> bool:
    """Is this SSE event the usage chunk (`choices: []` with a usage object)?"""
    if b'"usage"' not in event or b'"choices"' not in event:
        return False
    try:
        payload = orjson.loads(event.partition(b"data:")[2])
    except orjson.JSONDecodeError:
        return False
    return isinstance(payload, dict) and payload.get("choices") == [] and bool(payload.get("usage"))


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    cached = getattr(request, "_body", None)  # read before us: Starlette keeps it here
    if isinstance(cached, bytes):
        if len(cached) > limit:
            raise _too_large(limit)
        return cached
    # The ASGI messages themselves (what `request.stream()` reads, without its generator).
    parts: list[bytes] = []
    size = 0
    while True:
        message = await request.receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise _too_large(limit)
        parts.append(part)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def _too_large(limit: int) -> GatewayError:
    return GatewayError(
        413, f"The request body is larger than {limit} bytes.", code="request_too_large"
    )


def header_value(value: str) -> str:
    """`value` as a safe HTTP header value: printable ASCII as is, anything else %-encoded.

    Deployment names come from clients (body or path) and header values from the upstream;
    a newline must never split a header, and non-Latin-1 text cannot be sent at all.
    """
    if value.isascii() and value.isprintable():
        return value
    return quote(value, safe=" !#$&'()*+,-./:;=?@[]^_`{|}~")


def _new_request_id() -> str:
    # 128 random bits, as OpenTelemetry's id generator makes trace ids: unique, not secret,
    # and without the system call `uuid4` makes on every request.
    return f"{random.getrandbits(128):032x}"


def _json(payload: Any, status: int, request_id: str | None) -> Response:
    headers = {"x-request-id": request_id} if request_id else None
    return Response(orjson.dumps(payload), status, headers, "application/json")


def _error(
    exc: GatewayError, request_id: str | None, background: BackgroundTask | None = None
) -> Response:
    headers = {name: header_value(value) for name, value in exc.headers.items()}
    if request_id:
        headers["x-request-id"] = request_id
    return Response(exc.body(), exc.status, headers, "application/json", background=background)


_default: GatewayHandlers | None = None


def default_handlers() -> GatewayHandlers:
    """The process-wide handlers, built from the environment on first use (Functions host)."""
    global _default
    if _default is None:
        settings = Settings.from_env()
        if settings.upstream == "mock" and not settings.upstream_explicit:
            log.warning(
                "no upstream configured: serving the offline mock model "
                "(set AZURE_OPENAI_ENDPOINT or OPENAI_BASE_URL)"
            )
        if settings.open_access:
            log.warning("no LLMOPS_API_KEYS configured: every call is consumer 'anonymous'")
        _default = GatewayHandlers(Gateway(settings))
    return _default


async def dispatch(endpoint: str, request: Request) -> Response:
    """Run one endpoint of the process-wide handlers (what each Functions trigger does).

    A configuration error is the operator's to fix: a 500 naming the setting, no traceback.
    """
    try:
        handlers = default_handlers()
    except SettingsError as exc:
        log.error("gateway misconfigured: %s", exc)
        error = GatewayError(
            500, f"Gateway misconfigured: {exc}", type="api_error", code="configuration_error"
        )
        return _error(error, None)
    handler: Callable[[Request], Awaitable[Response]] = getattr(handlers, endpoint)
    return await handler(request)


def reset_default_handlers() -> None:
    """Forget the process-wide handlers, so the next call re-reads the environment (tests)."""
    global _default
    _default = None
