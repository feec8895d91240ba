"""Serve a gateway with uvicorn on 127.0.0.1 in a background thread, for the length of a test."""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import uvicorn
from openai import OpenAI

from llmops.gateway.service import Gateway
from llmops.gateway.upstream import Upstream
from llmops.server import create_app
from llmops.settings import Settings

GATEWAY_KEY = "sk-team-a-secret"  # team-a's key in tests/conftest.py's LLMOPS_API_KEYS


def sdk_client(url: str, key: str = GATEWAY_KEY, timeout: float = 20) -> OpenAI:
    """The official SDK pointed at a served gateway; its own retries are off, so what a test
    observes is the gateway's behaviour."""
    return OpenAI(base_url=f"{url}/api/v1", api_key=key, max_retries=0, timeout=timeout)


def open_stream(url: str, content: str, model: str = "gpt-4o") -> socket.socket:
    """POST a streamed chat request to a served gateway over a raw socket, as a client that
    can leave at any moment does; the caller reads (or not) and closes the socket."""
    body = json.dumps(
        {"model": model, "stream": True, "messages": [{"role": "user", "content": content}]}
    ).encode()
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    sock.sendall(
        b"POST /api/v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"api-key: " + GATEWAY_KEY.encode() + b"\r\n"
        b"content-type: application/json\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    return sock


@contextmanager
def served_gateway(
    env: Mapping[str, str], *, upstream: Upstream | None = None
) -> Iterator[tuple[str, Gateway]]:
    """Yield (`http://127.0.0.1:PORT`, gateway) for a gateway built from `env`.

    Request logs go to a temporary folder unless `env` configures storage.
    """
    scratch = tempfile.mkdtemp(prefix="llmops-test-")
    # MLflow tracing costs ~10 ms of CPU per call and a flush at every stop: on only where a
    # test asks for it (tests/integration/test_tracing.py).
    env = {
        "LLMOPS_LOCAL_STORE_DIR": f"{scratch}/store",
        "LLMOPS_SPOOL_DIR": f"{scratch}/spool",
        "LLMOPS_TRACING": "off",
        **env,
    }
    gateway = Gateway(Settings.from_env(env), upstream)
    config = uvicorn.Config(
        create_app(gateway),
        host="127.0.0.1",
        port=0,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="gateway", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the gateway did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", gateway
    finally:
        server.should_exit = True
        thread.join(10)
        shutil.rmtree(scratch, ignore_errors=True)
