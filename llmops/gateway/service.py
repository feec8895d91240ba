"""The chat use case: authenticate, validate, route, call the upstream with retries and
fallbacks, and decide what the client gets. No HTTP framework here: `http.py` adapts it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

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
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from llmops.gateway.validation import ChatRequest, parse_chat_request
from llmops.settings import Settings

log = logging.getLogger("llmops.gateway")


@dataclass
class Attempt:
    """One try against one deployment: its HTTP status, or the failure that replaced it."""

    deployment: str
    status: int | None
    error: str | None = None
    waited_s: float = 0.0


@dataclass
class CallInfo:
    """What happened to one call; the request log and the trace are built from this."""

    request_id: str
    consumer: str
    started: float = field(default_factory=time.monotonic)
    model: str | None = None
    stream: bool = False
    deployment: str | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def retries(self) -> int:
        """Attempts that repeated a deployment already tried."""
        seen: set[str] = set()
        count = 0
        for attempt in self.attempts:
            count += attempt.deployment in seen
            seen.add(attempt.deployment)
        return count

    @property
    def fallbacks(self) -> int:
        """How many deployments past the first were tried."""
        return max(0, len({a.deployment for a in self.attempts}) - 1)


def build_upstream(settings: Settings) -> Upstream:
    """The upstream adapter the settings ask for."""
    if settings.upstream == "mock":
        from llmops.gateway.mock import MockUpstream

        return MockUpstream(settings)
    return HttpUpstream(settings)


class Gateway:
    """One gateway: settings plus an upstream, shared by every call in the process."""

    def __init__(self, settings: Settings, upstream: Upstream | None = None) -> None:
        self.settings = settings
        self.upstream = upstream if upstream is not None else build_upstream(settings)

    def authenticate(self, headers: Mapping[str, str]) -> str:
        """The consumer making this call (401 `GatewayError` when the key is missing or wrong)."""
        return authenticate(headers, self.settings.api_keys)

    def parse(self, raw: bytes, info: CallInfo, *, path_deployment: str | None) -> ChatRequest:
        """Validate the body; the model comes from the Azure-style path when there is one."""
        request = parse_chat_request(raw, model_required=path_deployment is None)
        info.model = path_deployment or request.model
        info.stream = request.stream
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
        """Release the upstream's connections."""
        await self.upstream.aclose()


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
