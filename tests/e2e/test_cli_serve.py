"""`llmops serve` as a user runs it: the console script, a real port, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from openai import OpenAI

pytestmark = pytest.mark.e2e
LLMOPS = Path(sys.executable).parent / "llmops"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LLMOPS_", "AZURE_OPENAI_", "OPENAI_"))
    }
    return {**env, **extra}


def test_serve_with_nothing_configured_is_the_announced_open_mock(tmp_path: Path) -> None:
    port = free_port()
    store = tmp_path / "store"
    env = clean_env(
        LLMOPS_LOCAL_STORE_DIR=str(store),
        LLMOPS_SPOOL_DIR=str(tmp_path / "spool"),
        LLMOPS_LOG_FLUSH_S="60",
        LLMOPS_TRACING="off",
    )
    process = subprocess.Popen(
        [str(LLMOPS), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        started = time.monotonic()
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() - started < 20, "llmops serve did not come up"
            assert process.poll() is None, process.stdout.read() if process.stdout else ""
            time.sleep(0.05)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/api/v1", api_key="x", max_retries=0)
        completion = client.chat.completions.create(
            model="demo", messages=[{"role": "user", "content": "ping"}]
        )
        assert 'you said "ping"' in (completion.choices[0].message.content or "")
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=20)
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells of it.
    assert process.returncode in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in output
    assert "OFFLINE MOCK" in output and "no upstream is configured" in output
    assert "OPEN ACCESS" in output
    # The only flush possible before the 60 s timer was the one at graceful shutdown.
    [log_file] = list((store / "request-logs").rglob("*.jsonl"))
    [record] = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert record["model"] == "demo" and record["consumer"] == "anonymous"


def test_serve_refuses_a_bad_configuration() -> None:
    result = subprocess.run(
        [str(LLMOPS), "serve"],
        env=clean_env(LLMOPS_UPSTREAM="azure"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "AZURE_OPENAI_ENDPOINT" in result.stderr
    assert "Traceback" not in result.stderr
