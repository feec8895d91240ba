"""Fake OpenAI upstreams for `gateway_overhead.py`: canned bodies, an nginx config, a slow ASGI app.

nginx is the zero-delay upstream (`return 200 '<canned body>'` answers a POST without reading a
file). nginx cannot wait, so the 50 ms "slow upstream" is the tiny raw ASGI app below on uvicorn
(uvloop + httptools), started as `python bench/fake_upstream.py --port P --delay-ms 50`.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path
from typing import Any

import orjson

MODEL = "gpt-4o-mini"
_ID = "chatcmpl-bench0000000000000000000000"
CHAT_BODY = orjson.dumps(
    {
        "id": _ID,
        "object": "chat.completion",
        "created": 1730000000,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
    }
)


def _chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    event = {
        "id": _ID,
        "object": "chat.completion.chunk",
        "created": 1730000000,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": [choice],
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


_WORDS = ["Hello", "!", " How", " can", " I", " help", " you", " today", "?"]
SSE_BODY = (
    _chunk({"role": "assistant", "content": ""})
    + b"".join(_chunk({"content": word}) for word in _WORDS)
    + _chunk({}, "stop")
    + b"data: [DONE]\n\n"
)

CHAT_PATH = "/v1/chat/completions"
# nginx also stands in for an MLflow server taking the gateway's traces over OTLP: it answers the
# experiment lookup and every POST /v1/traces (200, body discarded), and logs each POST's status
# and Content-Length to OTLP_LOG.
OTLP_LOG = "otlp.log"
EXPERIMENT_BODY = b'{"experiment":{"experiment_id":"1"}}'
STREAM_PATH = "/stream/v1/chat/completions"


def _nginx_string(body: bytes) -> str:
    """`body` as a single-quoted nginx string (escapes: backslash, quote, newline)."""
    text = body.decode()
    if "$" in text:
        raise ValueError("nginx would read '$' as a variable")
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def nginx_config(prefix: Path, port: int) -> str:
    """A self-contained nginx.conf: one worker, every path under `prefix`, loopback only."""
    temps = "\n".join(
        f"    {kind}_temp_path {prefix}/{kind}_temp;"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
{temps}
    keepalive_requests 10000000;
    keepalive_timeout 300s;
    log_format otlp '$status $content_length';
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 0;
        location = /api/2.0/mlflow/experiments/get-by-name {{
            default_type application/json;
            return 200 {_nginx_string(EXPERIMENT_BODY)};
        }}
        location = /v1/traces {{
            access_log {prefix}/{OTLP_LOG} otlp;
            default_type application/json;
            return 200 '{{}}';
        }}
        location = {CHAT_PATH} {{
            default_type application/json;
            return 200 {_nginx_string(CHAT_BODY)};
        }}
        location = {STREAM_PATH} {{
            default_type text/event-stream;
            add_header Cache-Control no-cache;
            return 200 {_nginx_string(SSE_BODY)};
        }}
    }}
}}
"""


def slow_app(delay_s: float) -> Any:
    """A raw ASGI app answering every request with `CHAT_BODY` after `delay_s` seconds."""
    headers = [(b"content-type", b"application/json")]

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await asyncio.sleep(delay_s)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": CHAT_BODY})

    return app


def main() -> None:
    """Serve the slow fake upstream on 127.0.0.1."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    uvicorn.run(
        slow_app(args.delay_ms / 1000),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="uvloop",
        http="httptools",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
