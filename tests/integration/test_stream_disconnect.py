"""A client that leaves a stream: the gateway stops reading the upstream and records it.

`RelayResponse` watches for the disconnect with one asyncio task instead of Starlette's anyio
task group; these tests hold it to the same behaviour, on a served gateway (uvicorn speaks
ASGI 2.3) and called directly as an ASGI app under both spec versions.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

from starlette.background import BackgroundTask

from llmops.gateway.http import RelayResponse
from tests.fakes.served import open_stream, served_gateway
from tests.fakes.upstream import FakeUpstream, Reply

WORDS = "one two three four five six seven eight nine ten"


def _records(store: Path) -> list[dict[str, Any]]:
    lines = [line for path in store.rglob("*.jsonl") for line in path.read_text().splitlines()]
    return [json.loads(line) for line in lines]


def test_leaving_mid_stream_stops_the_upstream_read_and_is_recorded(
    azure_env: dict[str, str], fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    # 10+ chunks 0.25 s apart: the whole stream would take about 3 s.
    fake_upstream.plan("gpt-4o", Reply(chunk_delay_s=0.25))
    env = {**azure_env, "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store")}
    with served_gateway(env) as (url, gateway):
        with open_stream(url, WORDS) as sock:
            sock.settimeout(5)
            received = b""
            while b"data: " not in received:  # the stream has begun
                part = sock.recv(65536)
                assert part, f"the gateway closed the connection: {received!r}"
                received += part
        left = time.monotonic()
        assert gateway.request_log is not None
        while gateway.request_log.stats["added"] == 0 and time.monotonic() - left < 5:
            time.sleep(0.02)
        recorded_after = time.monotonic() - left
    [record] = _records(tmp_path / "store")
    assert record["error"]["type"] == "client_disconnected"
    assert "stopped reading" in record["error"]["message"]
    # Recorded at the disconnect, not when the upstream finished its ~3 s stream.
    assert recorded_after < 1.5, recorded_after
    assert record["latency_ms"] < 2000, record["latency_ms"]


def _receiver(gone: asyncio.Event) -> Callable[[], Awaitable[dict[str, Any]]]:
    """An ASGI `receive` after the body was read: `http.disconnect` once `gone` is set."""

    async def receive() -> dict[str, Any]:
        await gone.wait()
        return {"type": "http.disconnect"}

    return receive


async def _chunks(log: list[str]) -> AsyncIterator[bytes]:
    try:
        for number in range(5):
            log.append(f"chunk {number}")
            yield b"data: %d\n\n" % number
            await asyncio.sleep(0.05)
    finally:
        log.append("closed")


async def _serve(
    spec_version: str, disconnect_after: int | None, *, slow_send: bool = False
) -> tuple[list[str], list[Any]]:
    """Run a RelayResponse as an ASGI app; the client leaves after `disconnect_after` sends.

    With `slow_send`, the send that finds the client gone waits before it returns (as a send
    blocked on a full socket does), so the disconnect lands in `send` while the relay waits at
    its `yield`: only an explicit close then runs the relay's clean-up.
    """
    log: list[str] = []
    sent: list[Any] = []
    gone = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if disconnect_after is not None and len(sent) > disconnect_after:
            gone.set()
            if spec_version >= "2.4":
                raise OSError("client gone")  # what a 2.4 server does
            if slow_send:
                await asyncio.sleep(1)
            return  # what uvicorn (2.3) does: the send is dropped
        sent.append(message)

    async def after() -> None:
        log.append("background")

    response = RelayResponse(_chunks(log), background=BackgroundTask(after))
    scope = {"type": "http", "asgi": {"spec_version": spec_version}}
    await response(scope, _receiver(gone), send)  # type: ignore[arg-type]
    return log, sent


async def test_a_full_stream_is_sent_whole_and_the_background_runs() -> None:
    log, sent = await _serve("2.3", disconnect_after=None)
    bodies = [m.get("body") for m in sent if m["type"] == "http.response.body"]
    assert bodies == [b"data: %d\n\n" % n for n in range(5)] + [b""]
    assert log == [*(f"chunk {n}" for n in range(5)), "closed", "background"]


async def test_a_disconnect_stops_the_relay_and_still_runs_the_background() -> None:
    started = time.monotonic()
    log, sent = await _serve("2.3", disconnect_after=2)  # gone after the start and two chunks
    assert time.monotonic() - started < 0.2  # not the whole 0.25 s stream
    assert "chunk 4" not in log
    assert log[-2:] == ["closed", "background"]
    assert not any(m.get("more_body") is False for m in sent)  # never ended as complete


async def test_a_disconnect_during_a_send_closes_the_relay_before_the_background() -> None:
    started = time.monotonic()
    log, _ = await _serve("2.3", disconnect_after=2, slow_send=True)
    assert time.monotonic() - started < 0.5  # the 1 s send was cancelled
    assert log == ["chunk 0", "chunk 1", "chunk 2", "closed", "background"]


async def test_an_asgi_2_4_server_stops_on_its_send_error_and_runs_the_background() -> None:
    log, sent = await _serve("2.4", disconnect_after=2)
    assert log == ["chunk 0", "chunk 1", "chunk 2", "closed", "background"]
    assert [m["type"] for m in sent] == ["http.response.start"] + ["http.response.body"] * 2


async def _cancelled_from_outside(together_with_a_disconnect: bool) -> list[str]:
    log: list[str] = []
    gone = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message.get("body") == b"data: 2\n\n":
            if together_with_a_disconnect:
                gone.set()  # the watcher's cancel and the outer one land in the same wait
            asyncio.get_running_loop().call_soon(task.cancel)
            await asyncio.sleep(0.5)

    response = RelayResponse(_chunks(log))
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
    task = asyncio.create_task(response(scope, _receiver(gone), send))  # type: ignore[arg-type]
    try:
        await task
    except asyncio.CancelledError:
        log.append("cancelled")
    return log


async def test_a_cancellation_from_outside_still_cancels() -> None:
    log = await _cancelled_from_outside(together_with_a_disconnect=False)
    assert log[-1] == "cancelled" and "chunk 4" not in log


async def test_a_cancellation_from_outside_is_not_swallowed_by_a_disconnect() -> None:
    log = await _cancelled_from_outside(together_with_a_disconnect=True)
    assert log[-1] == "cancelled" and "chunk 4" not in log


async def test_a_client_leaving_as_the_stream_ends_does_not_cancel_the_background() -> None:
    """The watcher can finish in the loop turn in which the relay ends (a send that yields after
    the last message, as a wrapping middleware's may): its cancel must not hit what follows."""
    log: list[str] = []
    gone = asyncio.Event()

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.body" and not message.get("more_body"):
            gone.set()  # the server says disconnect once the response is complete
            await asyncio.sleep(0)  # ... and the watcher sees it before the relay returns

    async def after() -> None:
        await asyncio.sleep(0.05)
        log.append("background done")

    response = RelayResponse(_chunks(log), background=BackgroundTask(after))
    scope = {"type": "http", "asgi": {"spec_version": "2.3"}}
    await response(scope, _receiver(gone), send)  # type: ignore[arg-type]
    assert log[-2:] == ["closed", "background done"]
    assert "chunk 4" in log
