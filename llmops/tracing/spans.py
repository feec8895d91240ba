"""What one call's MLflow trace holds, derived from its request-log record. Pure: no MLflow here.

The trace has one span of type CHAT_MODEL named `chat <model>`, from `received_at` to
`done_at`. It uses MLflow's own span attributes, so the MLflow UI shows tokens, cost, model and
provider: `mlflow.chat.tokenUsage` (`input_tokens`, `output_tokens`, `total_tokens`,
`cache_read_input_tokens`), `mlflow.llm.model`, `mlflow.llm.provider` and
`mlflow.message.format = openai` (the UI renders the chat). Inputs are the record's `request`
(`messages`, `params`; already redacted), outputs the answer's choices in the OpenAI shape, or
the error the client got.
"""

from __future__ import annotations

import calendar
import random
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

# MLflow's reserved attribute keys (mlflow.tracing.constant.SpanAttributeKey / TokenUsageKey).
CHAT_USAGE = "mlflow.chat.tokenUsage"
MODEL = "mlflow.llm.model"
MODEL_PROVIDER = "mlflow.llm.provider"
MESSAGE_FORMAT = "mlflow.message.format"
TRACE_USER = "mlflow.trace.user"  # trace metadata: the UI's "user" column
SPAN_TYPE = "CHAT_MODEL"  # mlflow.entities.SpanType.CHAT_MODEL
TAG_PREFIX = "llmops."
_TAGGED = (
    "request_id",
    "trace_id",
    "parent_span_id",
    "consumer",
    "status",
    "deployment",
    "model",
    "stream",
)
_ATTRIBUTES = (
    "route",
    "upstream",
    "finish_reason",
    "latency_ms",
    "ttft_ms",
    "retries",
    "fallbacks",
    "redaction",
    "gateway_version",
)
# (record field, name): trace tags, and the span's own attributes
_TAG_NAMES = tuple((key, f"{TAG_PREFIX}{key}") for key in _TAGGED)
_ATTRIBUTE_NAMES = tuple((key, f"{TAG_PREFIX}{key}") for key in _ATTRIBUTES)
_USAGE_ESTIMATED = f"{TAG_PREFIX}usage_estimated"
_USAGE_NAMES = (  # MLflow's TokenUsageKey names, and the record's usage fields
    ("input_tokens", "prompt_tokens"),
    ("output_tokens", "completion_tokens"),
    ("total_tokens", "total_tokens"),
    ("cache_read_input_tokens", "cached_tokens"),
)
_ERROR = f"{TAG_PREFIX}error"
_ERROR_CODE = f"{TAG_PREFIX}error_code"


@dataclass
class TraceParts:
    """Everything MLflow needs to record one call."""

    name: str
    start_ns: int
    end_ns: int
    inputs: dict[str, Any]
    outputs: dict[str, Any] | None
    attributes: dict[str, Any]
    tags: dict[str, str]
    metadata: dict[str, str] = field(default_factory=dict)
    error: str | None = None  # the span's status description when the call failed
    first_byte_ns: int | None = None
    otel_trace_id: int | None = None  # the trace id MLflow's trace should carry, when unique


def iso_to_ns(value: str) -> int:
    """Nanoseconds since the epoch of a record timestamp (`YYYY-MM-DDTHH:MM:SS.ffffffZ`).

    A record's three timestamps share their minute, and a batch's records mostly do: the
    minute is parsed once (cached), seconds and microseconds are read from fixed positions.
    """
    if len(value) == 27 and value[16] == ":" and value[19] == "." and value[26] == "Z":
        seconds = _minute_epoch(value[:16]) + int(value[17:19])
        return (seconds * 1_000_000 + int(value[20:26])) * 1000
    moment = datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")  # raises on anything else
    return (calendar.timegm(moment.timetuple()) * 1_000_000 + moment.microsecond) * 1000


@lru_cache(maxsize=256)
def _minute_epoch(minute: str) -> int:
    """Seconds since the epoch of `YYYY-MM-DDTHH:MM` (UTC)."""
    return calendar.timegm(datetime.strptime(minute, "%Y-%m-%dT%H:%M").timetuple())


def trace_parts(record: dict[str, Any]) -> TraceParts:
    """The trace of one request-log record (schema: docs/request-log.md). Tagged fields are
    trace tags only, not also span attributes."""
    get = record.get
    start_ns = iso_to_ns(record["received_at"])
    done_at = get("done_at")
    end_ns = iso_to_ns(done_at) if done_at else start_ns
    first_byte_at = get("first_byte_at")
    request = get("request") or {}
    inputs = {key: request[key] for key in ("messages", "params") if key in request}
    error = get("error")
    outputs: dict[str, Any] | None = None
    response = get("response")
    if response and response.get("choices"):
        outputs = {"choices": [_openai_choice(choice) for choice in response["choices"]]}
    elif error:
        outputs = {"error": error}
    attributes: dict[str, Any] = {MESSAGE_FORMAT: "openai"}
    model = get("model")
    if model:
        attributes[MODEL] = model
    if get("upstream"):
        attributes[MODEL_PROVIDER] = record["upstream"]
    usage = token_usage(get("usage"))
    if usage:
        attributes[CHAT_USAGE] = usage
        attributes[_USAGE_ESTIMATED] = bool(record["usage"].get("estimated"))
    for key, name in _ATTRIBUTE_NAMES:
        value = get(key)
        if value is not None:
            attributes[name] = value
    if error:
        attributes[_ERROR] = error
    tags = {}
    for key, name in _TAG_NAMES:
        value = get(key)
        if value is not None:
            tags[name] = value if type(value) is str else _tag(value)
    if error and error.get("code"):
        tags[_ERROR_CODE] = str(error["code"])
    registry = get("registry")
    if isinstance(registry, dict):  # which registered model / prompt version served the call
        for key in ("name", "version", "alias"):
            if registry.get(key) is not None:
                tags[f"{TAG_PREFIX}registry.{key}"] = str(registry[key])
        attributes[f"{TAG_PREFIX}registry"] = registry
    status = get("status") or 0
    failed = error is not None or status >= 400
    consumer = get("consumer")
    return TraceParts(
        name=f"chat {model}" if model else "chat",
        start_ns=start_ns,
        end_ns=max(end_ns, start_ns),
        inputs=inputs,
        outputs=outputs,
        attributes=attributes,
        tags=tags,
        metadata={TRACE_USER: str(consumer)} if consumer else {},
        error=_describe(error, status) if failed else None,
        first_byte_ns=iso_to_ns(first_byte_at) if first_byte_at else None,
        otel_trace_id=_own_trace_id(record),
    )


def token_usage(usage: dict[str, Any] | None) -> dict[str, int] | None:
    """The record's usage in the shape of MLflow's `mlflow.chat.tokenUsage` attribute."""
    if not usage:
        return None
    clean = {}
    for name, key in _USAGE_NAMES:
        value = usage.get(key)
        if type(value) is int:
            clean[name] = value
    return clean or None


def _own_trace_id(record: dict[str, Any]) -> int | None:
    """The record's trace id as an OTel id, when the gateway minted it (no caller parent).

    A caller's trace id (from `traceparent`) can span many calls; MLflow keys traces by id, so
    reusing it would merge those calls into one trace. Such calls get an MLflow-assigned id and
    keep the caller's in the `llmops.trace_id` tag.
    """
    trace_id = record.get("trace_id")
    if record.get("parent_span_id") or not isinstance(trace_id, str) or len(trace_id) != 32:
        return None
    try:
        value = int(trace_id, 16)
    except ValueError:
        return None
    return value or None


def _openai_choice(choice: dict[str, Any]) -> dict[str, Any]:
    message = {"role": choice.get("role") or "assistant", "content": choice.get("content")}
    if choice.get("tool_calls"):
        message["tool_calls"] = choice["tool_calls"]
    return {
        "index": choice.get("index", 0),
        "message": message,
        "finish_reason": choice.get("finish_reason"),
    }


def _describe(error: dict[str, Any] | None, status: int) -> str:
    if not error:
        return f"HTTP {status}"
    return f"HTTP {status} {error.get('type')}/{error.get('code')}: {error.get('message') or ''}"


def _tag(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def sampled(record: dict[str, Any], share: float) -> bool:
    """Whether a record is traced: every failed call; of the others, `share`, chosen by trace
    id (its last 8 hex digits are random), so the calls of one caller trace go together."""
    if record.get("error") or (record.get("status") or 0) >= 400:
        return True
    try:
        return int(str(record.get("trace_id"))[-8:], 16) < share * 0x1_0000_0000
    except ValueError:
        return random.random() < share
