"""A fake Azure OpenAI / OpenAI server on 127.0.0.1, speaking the real wire formats.

- OpenAI: `POST /v1/chat/completions`, `Authorization: Bearer KEY`, model in the body.
- Azure OpenAI: `POST /openai/deployments/{deployment}/chat/completions?api-version=...`,
  `api-key: KEY` (or an Entra ID bearer token), 404 without `api-version`, like Azure.
- Replies: JSON or SSE (`data: {chunk}` events ending `data: [DONE]`, one write per chunk with
  an optional pause between them), `n` choices, tool calls, JSON mode, the usage chunk when
  `stream_options.include_usage` is set.
- Faults, planned per deployment in order: any status with any headers (429 + retry-after,
  5xx, an HTML page), a delay before answering, Azure's content filter (400 on the prompt,
  `finish_reason: content_filter` on the completion), a stream cut off mid-way.
Every request is recorded (path, query, headers, parsed body) for assertions.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

AZURE_API_VERSION = "2024-10-21"


@dataclass
class Reply:
    """How the fake answers one request. The default is a normal successful completion."""

    status: int = 200
    body: Any = None  # JSON-serializable or bytes; None = a generated completion
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # before the response starts
    chunk_delay_s: float = 0.0  # between stream chunks
    finish_reason: str = "stop"
    cut_stream_after: int | None = None  # close the connection after this many chunks


def rate_limited(retry_after_ms: int | None = 50, retry_after: str | None = None) -> Reply:
    """Azure's 429, with its retry hints."""
    headers = {}
    if retry_after_ms is not None:
        headers["retry-after-ms"] = str(retry_after_ms)
    if retry_after is not None:
        headers["retry-after"] = retry_after
    body = {
        "error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create "
            "Operation have exceeded call rate limit. Please retry after 1 second.",
        }
    }
    return Reply(status=429, body=body, headers=headers)


def server_error(status: int = 500) -> Reply:
    """A 5xx in the OpenAI error shape."""
    return Reply(
        status=status,
        body={
            "error": {"message": "The server had an error.", "type": "server_error", "code": None}
        },
    )


def content_filter_prompt() -> Reply:
    """Azure's answer to a prompt its content filter blocks: a 400 with code content_filter."""
    body = {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {
                "code": "ResponsibleAIPolicyViolation",
                "content_filter_result": {
                    "hate": {"filtered": False, "severity": "safe"},
                    "violence": {"filtered": True, "severity": "high"},
                },
            },
        }
    }
    return Reply(status=400, body=body)


@dataclass
class Recorded:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    deployment: str | None


class FakeUpstream:
    """The fake server. Use as a context manager; `url` is its base address."""

    def __init__(self, *, api_key: str = "upstream-key", bearer_token: str | None = None) -> None:
        self.api_key = api_key
        self.bearer_token = bearer_token
        self.requests: list[Recorded] = []
        self._plans: dict[str, list[Reply]] = defaultdict(list)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # --- control -------------------------------------------------------------------------
    def plan(self, deployment: str, *replies: Reply) -> None:
        """Answer the next requests for `deployment` with `replies`, in order, then normally."""
        self._plans[deployment].extend(replies)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def calls(self, deployment: str | None = None) -> list[Recorded]:
        """Requests received, optionally for one deployment."""
        return [r for r in self.requests if deployment is None or r.deployment == deployment]

    def __enter__(self) -> FakeUpstream:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            app = web.Application()
            app.router.add_post("/v1/chat/completions", self._openai)
            app.router.add_post("/openai/deployments/{deployment}/chat/completions", self._azure)
            self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- handlers ------------------------------------------------------------------------
    async def _openai(self, request: web.Request) -> web.StreamResponse:
        body = await self._record(request, None)
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return _error(401, "Incorrect API key provided.", "invalid_api_key")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "you must provide a model parameter", None)
        self.requests[-1].deployment = body["model"]
        return await self._answer(request, body, body["model"], azure=False)

    async def _azure(self, request: web.Request) -> web.StreamResponse:
        deployment = request.match_info["deployment"]
        body = await self._record(request, deployment)
        if "api-version" not in request.query:
            return web.json_response(
                {"error": {"code": "404", "message": "Resource not found"}}, status=404
            )
        key_ok = request.headers.get("api-key") == self.api_key
        token_ok = (
            self.bearer_token is not None
            and request.headers.get("Authorization") == f"Bearer {self.bearer_token}"
        )
        if not (key_ok or token_ok):
            return web.json_response(
                {
                    "error": {
                        "code": "401",
                        "message": "Access denied due to "
                        "invalid subscription key or wrong API endpoint.",
                    }
                },
                status=401,
            )
        return await self._answer(request, body, deployment, azure=True)

    async def _record(self, request: web.Request, deployment: str | None) -> Any:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                dict(request.query),
                {k.lower(): v for k, v in request.headers.items()},
                body,
                deployment,
            )
        )
        return body

    async def _answer(
        self, request: web.Request, body: dict[str, Any], deployment: str, *, azure: bool
    ) -> web.StreamResponse:
        plan = self._plans.get(deployment)
        reply = plan.pop(0) if plan else Reply()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status != 200 or reply.body is not None:
            payload = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body)
            content_type = "text/html" if isinstance(reply.body, bytes) else "application/json"
            return web.Response(
                status=reply.status,
                body=payload,
                headers={
                    **reply.headers,
                    "content-type": content_type,
                    "x-request-id": "fake-req-1",
                },
            )
        completion = _completion(body, deployment, reply.finish_reason, azure=azure)
        headers = {
            "x-request-id": "fake-req-1",
            "x-ratelimit-remaining-requests": "99",
            **reply.headers,
        }
        if not body.get("stream"):
            return web.json_response(completion, headers=headers)
        response = web.StreamResponse(headers={**headers, "content-type": "text/event-stream"})
        await response.prepare(request)
        for number, chunk in enumerate(_chunks(body, completion)):
            if reply.cut_stream_after is not None and number >= reply.cut_stream_after:
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
            if reply.chunk_delay_s:
                await asyncio.sleep(reply.chunk_delay_s)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def _error(status: int, message: str, code: str | None) -> web.Response:
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": None,
                "code": code,
            }
        },
        status=status,
    )


def _completion(
    body: dict[str, Any], deployment: str, finish_reason: str, *, azure: bool
) -> dict[str, Any]:
    messages = body.get("messages") or []
    last = next((m.get("content") for m in reversed(messages) if m.get("role") == "user"), "")
    text = f"echo: {last}" if isinstance(last, str) else "echo"
    fmt = (body.get("response_format") or {}).get("type")
    if fmt in ("json_object", "json_schema"):
        text = json.dumps({"echo": last})
    choices = []
    for index in range(body.get("n") or 1):
        message: dict[str, Any] = {"role": "assistant", "content": text}
        reason = finish_reason
        if body.get("tools") and body.get("tool_choice") == "required":
            name = body["tools"][0]["function"]["name"]
            message = {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": f"call_{index}",
                        "type": "function",
                        "function": {"name": name, "arguments": '{"city": "Paris"}'},
                    }
                ],
            }
            reason = "tool_calls"
        choice: dict[str, Any] = {
            "index": index,
            "message": message,
            "finish_reason": reason,
            "logprobs": None,
        }
        if azure:
            choice["content_filter_results"] = {
                "violence": {"filtered": reason == "content_filter", "severity": "safe"}
            }
        choices.append(choice)
    completion: dict[str, Any] = {
        "id": "chatcmpl-fake123",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": deployment,
        "choices": choices,
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    if azure:
        completion["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": {}}]
    return completion


def _chunks(body: dict[str, Any], completion: dict[str, Any]) -> list[dict[str, Any]]:
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion["model"],
    }
    chunks: list[dict[str, Any]] = []
    for choice in completion["choices"]:
        index, message = choice["index"], choice["message"]
        chunks.append(
            {
                **base,
                "choices": [
                    {
                        "index": index,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
            }
        )
        if message.get("tool_calls"):
            call = message["tool_calls"][0]
            chunks.append(
                {
                    **base,
                    "choices": [
                        {
                            "index": index,
                            "delta": {"tool_calls": [{"index": 0, **call}]},
                            "finish_reason": None,
                        }
                    ],
                }
            )
        else:
            for word_index, word in enumerate(message["content"].split(" ")):
                piece = word if word_index == 0 else " " + word
                chunks.append(
                    {
                        **base,
                        "choices": [
                            {"index": index, "delta": {"content": piece}, "finish_reason": None}
                        ],
                    }
                )
        chunks.append(
            {
                **base,
                "choices": [
                    {"index": index, "delta": {}, "finish_reason": choice["finish_reason"]}
                ],
            }
        )
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**base, "choices": [], "usage": completion["usage"]})
    return chunks
