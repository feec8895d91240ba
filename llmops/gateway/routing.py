"""Routing decisions, as pure functions: which deployments serve a model, when to retry."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Mapping

from llmops.errors import GatewayError

RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def deployment_chain(
    model: str,
    model_map: Mapping[str, tuple[str, ...]],
    fallbacks: tuple[str, ...],
) -> tuple[str, ...]:
    """The ordered deployments to try for `model`: its own chain, then the global fallbacks.

    With no model map the gateway is a pass-through: the model name is the deployment name,
    as Azure OpenAI clients expect. With a map, a model that is not in it is a 404.
    """
    if model_map:
        chain = model_map.get(model)
        if chain is None:
            known = ", ".join(sorted(model_map))
            raise GatewayError(
                404,
                f"The model '{model}' does not exist or you do not have access to it. "
                f"This gateway serves: {known}.",
                code="model_not_found",
                param="model",
            )
    else:
        chain = (model,)
    return tuple(dict.fromkeys((*chain, *fallbacks)))


def is_retryable(status: int) -> bool:
    """Rate limits and server errors are worth another attempt; other errors are final."""
    return status in RETRYABLE_STATUS


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """The wait an upstream asked for: `retry-after-ms`, else `retry-after` (seconds or a date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def backoff_seconds(attempt: int, *, base: float = 0.5, cap: float = 8.0) -> float:
    """Exponential backoff with full jitter for retry number `attempt` (0-based)."""
    return random.uniform(0, min(cap, base * (2**attempt)))
