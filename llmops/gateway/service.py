"""The chat use case: authenticate, validate, route, call the upstream with retries and
fallbacks, and decide what the client gets. No HTTP framework here: `http.py` adapts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

import orjson

from llmops.errors import GatewayError
from llmops.gateway.auth import authenticate
from llmops.gateway.routing import (
    backoff_seconds,
    deployment_chain,
    is_retryable,
    retry_after_seconds,
)
from llmops.gateway.upstream import (
    HttpUpstream,
    Upstream,
    UpstreamAuthFailed,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from llmops.gateway.validation import ChatRequest, parse_chat_request
from llmops.settings import Settings

if TYPE_CHECKING:
    from llmops.logs.writer import RequestLogWriter
    from llmops.registry.resolver import RegistryResolver

log = logging.getLogger("llmops.gateway")


@dataclass
class Attempt:
    """One try against one deployment: its HTTP status, or the failure that replaced it."""

    deployment: str
    status: int | None
    error: str | None = None
    waited_s: float = 0.0


@dataclass(slots=True)
class CallInfo:
    """What happened to one call; the request log and the trace are built from this.

    The hot path only fills in references and clock readings; `llmops.logs.record` turns
    them into the record later, off the request path.
    """

    request_id: str
    route: str  # "openai" (model in the body) or "azure" (deployment in the path)
    trace_id: str
    parent_span_id: str | None = None
    consumer: str | None = None
    received_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)
    model: str | None = None
    stream: bool = False
    deployment: str | None = None
    upstream: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    request_body: dict[str, Any] | None = None
    status: int = 0
    error: dict[str, Any] | None = None
    response_body: bytes = b""
    chunks: list[bytes] = field(default_factory=list)
    first_byte: float | None = None  # monotonic: the answer's first byte from the upstream
    done: float | None = None  # monotonic: the answer's last byte went to the client
    registry: dict[str, Any] | None = None  # the registry version that served the call

    def fail(self, error: GatewayError) -> None:
        """Record the error the client gets."""
        self.status = error.status
        self.error = {"type": error.type, "code": error.code, "message": error.message}
        self.done = time.monotonic()

    @property
    def retries(self) -> int:
        """Attempts that repeated a deployment already tried."""
        if len(self.attempts) < 2:
            return 0
        seen: set[str] = set()
        count = 0
        for attempt in self.attempts:
            count += attempt.deployment in seen
            seen.add(attempt.deployment)
        return count

    @property
    def fallbacks(self) -> int:
        """How many deployments past the first were tried."""
        if len(self.attempts) < 2:
            return 0
        return max(0, len({a.deployment for a in self.attempts}) - 1)


def build_upstream(settings: Settings) -> Upstream:
    """The upstream adapter the settings ask for."""
    if settings.upstream == "mock":
        from llmops.gateway.mock import MockUpstream

        return MockUpstream(settings)
    return HttpUpstream(settings)


class Gateway:
    """One gateway: settings plus an upstream, shared by every call in the process."""

    def __init__(
        self,
        settings: Settings,
        upstream: Upstream | None = None,
        request_log: RequestLogWriter | Literal["auto"] | None = "auto",
    ) -> None:
        self.settings = settings
        self.upstream = upstream if upstream is not None else build_upstream(settings)
        if request_log == "auto":
            request_log = build_request_log(settings) if settings.logs.enabled else None
        self.request_log = request_log
        self.registry: RegistryResolver | None = None
        if settings.registry_models:
            from llmops.registry.resolver import RegistryResolver

            self.registry = RegistryResolver(settings)

    def finish(self, info: CallInfo) -> None:
        """Hand a finished call to the request log (never blocks, never raises)."""
        if self.request_log is not None:
            try:
                self.request_log.add(info)
            except Exception:  # logging must never fail a call
                log.exception("could not queue the request log of %s", info.request_id)

    async def flush(self) -> None:
        """Write buffered request logs now, then wait until their traces are exported (end of
        a Functions invocation: an idle instance may be frozen)."""
        if self.request_log is not None:
            await self.request_log.flush()
            if self.request_log.sinks:
                from llmops.tracing import flush_sinks

                await flush_sinks(self.request_log.sinks)

    def authenticate(self, headers: Mapping[str, str]) -> str:
        """The consumer making this call (401 `GatewayError` when the key is missing or wrong)."""
        return authenticate(headers, self.settings.api_keys)

    def parse(self, raw: bytes, info: CallInfo, *, path_deployment: str | None) -> ChatRequest:
        """Validate the body; the model comes from the Azure-style path when there is one."""
        request = parse_chat_request(raw, model_required=path_deployment is None)
        info.model = path_deployment or request.model
        info.stream = request.stream
        info.request_body = request.body
        info.upstream = self.upstream.kind
        if request.stream and self.request_log is not None and not request.wants_usage:
            # Ask the upstream for the usage chunk; the handler removes it from the client's
            # stream, which then looks exactly as the client asked for it.
            options = {**(request.body.get("stream_options") or {}), "include_usage": True}
            body = {**request.body, "stream_options": options}
            request = replace(request, body=body, raw=orjson.dumps(body), strip_usage=True)
        return request

    async def complete(self, request: ChatRequest, info: CallInfo) -> UpstreamResponse:
        """Call the upstream, retrying and falling back, and return what the client gets.

        Policy: on a retryable failure (429, 5xx, connection error) move at once to the next
        deployment of the chain; on the last one, retry with the wait the upstream asked for
        (`retry-after-ms` / `retry-after`) or exponential backoff, at most `max_retries` times,
        never waiting longer than `retry_max_wait_s` nor past the call's deadline. A timeout
        is not retried: the upstream may still be generating (and billing) the answer.
        """
        assert info.model is not None
        binding = self.registry.binding(info.model) if self.registry is not None else None
        if self.registry is not None and binding is not None:
            resolution = await self.registry.resolve(binding)
            info.registry = resolution.describe()
            body = resolution.apply(request.body)
            request = replace(request, body=body, raw=orjson.dumps(body))
            chain = tuple(
                dict.fromkeys((resolution.deployment, *self.settings.fallback_deployments))
            )
        else:
            chain = deployment_chain(
                info.model, self.settings.model_map, self.settings.fallback_deployments
            )
        deadline = info.started + self.settings.total_timeout_s
        retries_left = self.settings.max_retries
        position = 0
        while True:
            deployment = chain[position]
            info.deployment = deployment
            attempt = Attempt(deployment=deployment, status=None)
            info.attempts.append(attempt)
            remaining = deadline - time.monotonic()
            outcome: UpstreamResponse | GatewayError
            try:
                if remaining <= 0:
                    raise UpstreamTimeout("the call's deadline passed before the upstream answered")
                outcome = await self.upstream.send(
                    deployment,
                    request.body,
                    request.raw,
                    stream=request.stream,
                    time_left_s=remaining,
                )
                attempt.status = outcome.status
                if not is_retryable(outcome.status):
                    return _final(outcome)
            except UpstreamTimeout as exc:
                attempt.error = "timeout"
                raise GatewayError(
                    504, f"Upstream timed out: {exc}.", type="api_error", code="upstream_timeout"
                ) from None
            except UpstreamAuthFailed as exc:
                attempt.error = "auth_failed"
                raise GatewayError(
                    502,
                    f"Upstream authentication failed: {exc}.",
                    type="api_error",
                    code="upstream_auth_failed",
                ) from None
            except UpstreamUnreachable as exc:
                attempt.error = "unreachable"
                outcome = GatewayError(
                    502,
                    f"Upstream unreachable: {exc}.",
                    type="api_error",
                    code="upstream_unreachable",
                )
            if position + 1 < len(chain):
                position += 1
                continue
            wait = _wait_before_retry(outcome, len(info.attempts))
            if (
                retries_left > 0
                and wait <= self.settings.retry_max_wait_s
                and time.monotonic() + wait < deadline
            ):
                retries_left -= 1
                attempt.waited_s = wait
                log.info(
                    "retrying deployment %s in %.2f s (request %s)",
                    deployment,
                    wait,
                    info.request_id,
                )
                await asyncio.sleep(wait)
                continue
            if isinstance(outcome, GatewayError):
                raise outcome
            return _final(outcome)

    async def aclose(self) -> None:
        """Flush the request log and its traces, and release the upstream's connections."""
        if self.request_log is not None:
            await self.request_log.aclose()
            if self.request_log.sinks:
                from llmops.tracing import flush_sinks

                await flush_sinks(self.request_log.sinks, close=True)
        if self.registry is not None:
            await self.registry.aclose()
        await self.upstream.aclose()


def build_request_log(settings: Settings) -> RequestLogWriter:
    """The request-log writer the settings configure (Blob Storage or a local folder), with
    the trace and metrics sinks that turn its records into MLflow traces and OTel metrics."""
    from llmops.logs.store import store_for
    from llmops.logs.writer import RequestLogWriter
    from llmops.redact import Redactor
    from llmops.tracing import build_sinks

    logs = settings.logs
    redactor = Redactor(
        mode=logs.redact_mode, salt=logs.redact_salt.encode(), extra=logs.redact_patterns
    )
    sinks = build_sinks(settings.traces)
    writer = RequestLogWriter(logs, store_for(logs), redactor, sinks=sinks)
    for sink in sinks:
        watch = getattr(sink, "watch", None)
        if callable(watch):  # the metrics sink also reports the writer's spill and backlog
            watch(writer)
    return writer


def _wait_before_retry(outcome: UpstreamResponse | GatewayError, attempts: int) -> float:
    if isinstance(outcome, UpstreamResponse):
        asked = retry_after_seconds(outcome.headers)
        if asked is not None:
            return asked
    return backoff_seconds(attempts - 1)


def _final(response: UpstreamResponse) -> UpstreamResponse:
    """Pass success and client errors through; turn upstream faults into gateway errors."""
    status = response.status
    if status < 400:
        return response
    upstream_error = _error_of(response.json())
    message = str(upstream_error.get("message") or response.body[:300].decode(errors="replace"))
    if status in (401, 403):
        raise GatewayError(
            502,
            f"The upstream rejected the gateway's credentials ({status}): {message}",
            type="api_error",
            code="upstream_auth_failed",
        )
    if status >= 500 or status == 408:
        raise GatewayError(
            502,
            f"Upstream error {status}: {message}",
            type="api_error",
            code="upstream_error",
            headers=response.headers,
        )
    if not upstream_error:
        # Not an OpenAI-shaped error (a proxy's HTML page, say): shape it, keep the status.
        raise GatewayError(
            status,
            f"Upstream error {status}: {message}",
            type="invalid_request_error" if status != 429 else "rate_limit_error",
            code="rate_limit_exceeded" if status == 429 else "upstream_error",
            headers=response.headers,
        )
    return response  # 400 content_filter, 404 DeploymentNotFound, 429 with retry-after ...


def _error_of(payload: Any) -> dict[str, Any]:
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else {}
