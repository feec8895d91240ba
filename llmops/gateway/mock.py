"""An offline upstream that answers in the OpenAI wire format, streaming too.

For local runs, demos and load tests: no network, deterministic replies, realistic shapes
(ids, `created`, `usage`, `finish_reason`, tool calls, JSON mode, `n` choices, the
`stream_options.include_usage` chunk). Latency can be added with `LLMOPS_MOCK_LATENCY_MS`
(before the first byte) and `LLMOPS_MOCK_CHUNK_DELAY_MS` (between stream chunks).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson

from llmops.gateway.upstream import UpstreamResponse
from llmops.settings import Settings

_HEADERS = {"x-ratelimit-remaining-requests": "1000", "x-ratelimit-remaining-tokens": "1000000"}


class MockUpstream:
    """Answers every chat request itself, in the same format Azure OpenAI uses."""

    kind = "mock"

    def __init__(self, settings: Settings) -> None:
        self._latency_s = settings.mock_latency_ms / 1000.0
        self._chunk_delay_s = settings.mock_chunk_delay_ms / 1000.0

    async def send(
        self, deployment: str, body: dict[str, Any], raw: bytes, *, stream: bool, time_left_s: float
    ) -> UpstreamResponse:
        if self._latency_s:
            await asyncio.sleep(self._latency_s)
        completion_id = "chatcmpl-mock" + hashlib.sha1(raw).hexdigest()[:20]
        choices = [_choice(body, index) for index in range(int(body.get("n") or 1))]
        usage = _usage(body, choices)
        created = int(time.time())
        if not stream:
            payload = {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": deployment,
                "system_fingerprint": "fp_mock",
                "choices": [
                    {
                        "index": i,
                        "message": c["message"],
                        "finish_reason": c["finish_reason"],
                        "logprobs": None,
                    }
                    for i, c in enumerate(choices)
                ],
                "usage": usage,
            }
            return UpstreamResponse(200, dict(_HEADERS), body=orjson.dumps(payload))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        chunks = self._stream(completion_id, created, deployment, choices, usage, include_usage)
        return UpstreamResponse(200, dict(_HEADERS), chunks=chunks)

    async def _stream(
        self,
        completion_id: str,
        created: int,
        deployment: str,
        choices: list[dict[str, Any]],
        usage: dict[str, int],
        include_usage: bool,
    ) -> AsyncIterator[bytes]:
        base = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": deployment,
            "system_fingerprint": "fp_mock",
        }

        def event(choice_list: list[dict[str, Any]], **extra: Any) -> bytes:
            return b"data: " + orjson.dumps({**base, "choices": choice_list, **extra}) + b"\n\n"

        for index, choice in enumerate(choices):
            message = choice["message"]
            yield event(
                [
                    {
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ]
            )
            if message.get("tool_calls"):
                yield event(
                    [
                        {
                            "index": index,
                            "delta": {"tool_calls": [{"index": 0, **message["tool_calls"][0]}]},
                            "finish_reason": None,
                        }
                    ]
                )
            for piece in _pieces(message.get("content") or ""):
                if self._chunk_delay_s:
                    await asyncio.sleep(self._chunk_delay_s)
                yield event([{"index": index, "delta": {"content": piece}, "finish_reason": None}])
            yield event([{"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}])
        if include_usage:
            yield event([], usage=usage)
        yield b"data: [DONE]\n\n"

    async def aclose(self) -> None:
        return None


def _choice(body: dict[str, Any], index: int) -> dict[str, Any]:
    prompt = _last_user_text(body.get("messages") or [])
    tools = [tool for tool in body.get("tools") or [] if _function_name(tool)]
    tool_choice = body.get("tool_choice")
    if tools and (tool_choice == "required" or _function_name(tool_choice)):
        name = _function_name(tool_choice) or _function_name(tools[0])
        call = {
            "id": f"call_mock{index}",
            "type": "function",
            "function": {"name": name, "arguments": "{}"},
        }
        return {
            "message": {"role": "assistant", "content": None, "tool_calls": [call]},
            "finish_reason": "tool_calls",
        }
    summary = " ".join(prompt.split()[:12])
    text = f'Mock reply {index + 1}: you said "{summary}".' if summary else "Mock reply."
    if (body.get("response_format") or {}).get("type") in ("json_object", "json_schema"):
        text = orjson.dumps({"reply": text}).decode()
    return {
        "message": {"role": "assistant", "content": text, "refusal": None},
        "finish_reason": "stop",
    }


def _function_name(item: Any) -> str | None:
    """`item["function"]["name"]` when a tool or tool choice has that shape."""
    function = item.get("function") if isinstance(item, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    return name if isinstance(name, str) and name else None


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                texts = [p.get("text") for p in content if isinstance(p, dict)]
                return " ".join(t for t in texts if isinstance(t, str))
    return ""


def _usage(body: dict[str, Any], choices: list[dict[str, Any]]) -> dict[str, int]:
    prompt_chars = len(orjson.dumps(body.get("messages") or []))
    prompt_tokens = max(1, prompt_chars // 4)
    completion_tokens = sum(max(1, len(c["message"].get("content") or "") // 4) for c in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _pieces(text: str) -> list[str]:
    words = text.split(" ")
    return [word if i == 0 else " " + word for i, word in enumerate(words)]
