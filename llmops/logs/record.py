"""The request-log record: what one call leaves behind (schema: docs/request-log.md).

Built off the request path, after the call (in the builder process, llmops/logs/builder.py,
or on the event loop): the hot path only keeps references to what it already has (the parsed
request, the upstream's bytes, the stream's chunks), and the parsing of the answer, usage
estimates and redaction happen here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from llmops import __version__
from llmops.logs.layout import iso

if TYPE_CHECKING:
    from llmops.gateway.service import CallInfo
    from llmops.redact import Redactor

SCHEMA = "llmops.request_log"
SCHEMA_VERSION = 1
# Estimate used when an upstream reports no usage: ~4 characters per token (OpenAI's rule of
# thumb for English) plus 4 tokens of framing per message; flagged `estimated: true`.
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4


def build_record(
    info: CallInfo, redactor: Redactor, *, content: bool, instance: str
) -> dict[str, Any]:
    """The JSON-ready record of one finished call."""
    answer = _parse_answer(info)
    body = info.request_body or {}
    usage = _usage(answer.get("usage"), body, answer["choices"])
    started = info.started
    latency = _ms((info.done or started) - started)
    ttft = _ms(info.first_byte - started) if info.first_byte is not None else None
    error = info.error
    if error is None and answer.get("error"):
        error = {
            "type": answer["error"].get("type"),
            "code": answer["error"].get("code"),
            "message": str(answer["error"].get("message", "")),
        }
    if error is not None and error.get("message"):
        error = {**error, "message": redactor.text(str(error["message"]))}
    finish_reasons = [c.get("finish_reason") for c in answer["choices"]]
    request: dict[str, Any] | None = None
    response: dict[str, Any] | None = None
    if content:
        params = {k: v for k, v in body.items() if k != "messages"}
        request = {
            "messages": redactor.value(body.get("messages")),
            "params": redactor.value(params),
        }
        if answer["choices"]:
            response = {"choices": redactor.value(answer["choices"])}
    else:
        request = {
            "params": redactor.value(
                {k: v for k, v in body.items() if k not in ("messages", "tools", "user")}
            )
        }
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "request_id": info.request_id,
        "trace_id": info.trace_id,
        "parent_span_id": info.parent_span_id,
        "received_at": iso(info.received_at),
        "first_byte_at": iso(info.received_at + (info.first_byte - started))
        if info.first_byte is not None
        else None,
        "done_at": iso(info.received_at + ((info.done or started) - started)),
        "latency_ms": latency,
        "ttft_ms": ttft,
        "consumer": info.consumer,
        "route": info.route,
        "model": info.model,
        "deployment": info.deployment,
        "upstream": info.upstream,
        "stream": info.stream,
        "status": info.status,
        "error": error,
        "finish_reason": finish_reasons[0] if finish_reasons else None,
        "usage": usage,
        "retries": info.retries,
        "fallbacks": info.fallbacks,
        "attempts": [
            {
                "deployment": a.deployment,
                "status": a.status,
                "error": a.error,
                "waited_ms": _ms(a.waited_s),
            }
            for a in info.attempts
        ],
        "request": request,
        "response": response,
        "registry": info.registry,
        "redaction": redactor.mode,
        "gateway_version": __version__,
        "instance": instance,
    }


def minimal_record(info: CallInfo, reason: str, instance: str) -> dict[str, Any]:
    """The record of a call whose full record could not be built: who, when, what status."""
    return {
        "schema": SCHEMA,
        "schema_version": SCHEMA_VERSION,
        "request_id": info.request_id,
        "trace_id": info.trace_id,
        "received_at": iso(info.received_at),
        "consumer": info.consumer,
        "model": info.model if isinstance(info.model, str) else None,
        "status": info.status,
        "error": {
            "type": "record_build_failed",
            "code": reason,
            "message": "the gateway could not build this record",
        },
        "instance": instance,
    }


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


def _parse_answer(info: CallInfo) -> dict[str, Any]:
    """Choices, usage and error of the answer, whether it came whole or as SSE chunks."""
    if info.chunks:
        return _parse_stream(info.chunks)
    if not info.response_body:
        return {"choices": []}
    try:
        payload = orjson.loads(info.response_body)
    except orjson.JSONDecodeError:
        return {"choices": []}
    if not isinstance(payload, dict):
        return {"choices": []}
    choices = []
    for choice in payload.get("choices") or []:
        if isinstance(choice, dict):
            message = choice.get("message") or {}
            choices.append(
                {
                    "index": choice.get("index", 0),
                    "role": message.get("role"),
                    "content": message.get("content"),
                    "tool_calls": message.get("tool_calls"),
                    "finish_reason": choice.get("finish_reason"),
                }
            )
    error = payload.get("error") if isinstance(payload.get("error"), dict) else None
    return {"choices": choices, "usage": payload.get("usage"), "error": error}


def _parse_stream(chunks: Iterable[bytes]) -> dict[str, Any]:
    """Reassemble an SSE chat stream: content and tool calls per choice, usage, errors."""
    choices: dict[int, dict[str, Any]] = {}
    texts: dict[int, list[str]] = {}  # content pieces per choice, joined once at the end
    usage = None
    error = None
    for line in b"".join(chunks).split(b"\n"):
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if not data or data == b"[DONE]":
            continue
        try:
            event = orjson.loads(data)
        except orjson.JSONDecodeError:
            continue
        if not isinstance(event, dict):
            continue
        if isinstance(event.get("error"), dict):
            error = event["error"]
        if event.get("usage"):
            usage = event["usage"]
        for delta_choice in event.get("choices") or []:
            if not isinstance(delta_choice, dict):
                continue
            index = delta_choice.get("index", 0)
            choice = choices.setdefault(
                index,
                {
                    "index": index,
                    "role": None,
                    "content": None,
                    "tool_calls": None,
                    "finish_reason": None,
                },
            )
            delta = delta_choice.get("delta") or {}
            if delta.get("role"):
                choice["role"] = delta["role"]
            if isinstance(delta.get("content"), str):
                texts.setdefault(index, []).append(delta["content"])
            for call in delta.get("tool_calls") or []:
                _merge_tool_call(choice, call)
            if delta_choice.get("finish_reason"):
                choice["finish_reason"] = delta_choice["finish_reason"]
    for index, pieces in texts.items():
        choices[index]["content"] = "".join(pieces)
    return {"choices": [choices[i] for i in sorted(choices)], "usage": usage, "error": error}


def _merge_tool_call(choice: dict[str, Any], call: Any) -> None:
    if not isinstance(call, dict):
        return
    calls = choice["tool_calls"] = choice["tool_calls"] or []
    index = call.get("index", len(calls))
    if not isinstance(index, int) or not 0 <= index < 128:  # an upstream's nonsense, not a list
        return
    while len(calls) <= index:
        calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    merged = calls[index]
    if call.get("id"):
        merged["id"] = call["id"]
    function = call.get("function") or {}
    merged["function"]["name"] += function.get("name") or ""
    merged["function"]["arguments"] += function.get("arguments") or ""


def _usage(
    reported: Any, body: dict[str, Any], choices: list[dict[str, Any]]
) -> dict[str, Any] | None:
    if isinstance(reported, dict) and "total_tokens" in reported:
        details = reported.get("prompt_tokens_details") or {}
        return {
            "prompt_tokens": reported.get("prompt_tokens"),
            "completion_tokens": reported.get("completion_tokens"),
            "total_tokens": reported.get("total_tokens"),
            "cached_tokens": details.get("cached_tokens") if isinstance(details, dict) else None,
            "estimated": False,
        }
    if not choices:
        return None
    messages = body.get("messages") or []
    prompt_chars = sum(len(_text_of(m.get("content"))) for m in messages if isinstance(m, dict))
    prompt = math.ceil(prompt_chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(messages)
    completion_chars = sum(
        len(_text_of(c.get("content")))
        + (len(orjson.dumps(c["tool_calls"])) if c.get("tool_calls") else 0)
        for c in choices
    )
    completion = math.ceil(completion_chars / CHARS_PER_TOKEN)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cached_tokens": None,
        "estimated": True,
    }


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "")
            for p in content
            if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""
