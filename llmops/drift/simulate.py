"""`llmops simulate`: realistic synthetic traffic through the gateway, with a controllable shift.

Two phases go through a real gateway served on 127.0.0.1 (uvicorn, the offline mock
upstream), so every call leaves a real request-log record: first `calls` reference calls,
then `calls` current calls whose mix moves away from the reference by `shift` (0 = the same
traffic, 1 = fully shifted). The shift changes what users ask about (support topics give way
to an outage and refunds), how long prompts and conversations are, which model and consumer
call, how slow the upstream is, and how many calls are rejected. The two phases' time spans
are the windows `llmops drift` then compares.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from llmops.drift.schedule import Window
from llmops.settings import Settings, parse_api_keys

REFERENCE_TOPICS = (
    "How do I reset my password for the {product} account?",
    "Can you explain the charges on my latest {product} invoice?",
    "What are the opening hours of your support line for {product}?",
    "How can I update the billing address on my {product} subscription?",
    "Please summarise the features of the {product} premium plan.",
    "Which payment methods does {product} accept?",
)
SHIFTED_TOPICS = (
    "The {product} service is down again, when will the outage be fixed?",
    "I want a refund for the {product} outage yesterday, it cost us a full day of work.",
    "Cancel my {product} subscription immediately and confirm the cancellation in writing.",
    "Your {product} status page says operational but nothing loads, is there an incident?",
)
CONSUMERS = ("support-bot", "web-app", "ops-dashboard")
PRODUCTS = ("Contoso Cloud", "Fabrikam Files", "Northwind Mail", "Tailspin Backup")
DETAIL = (
    " I have tried logging out and in again.",
    " This is the second time I am asking.",
    " Our team of forty people depends on it.",
    " Please answer in two short paragraphs.",
    " My colleague had the same problem last week.",
)


@dataclass(frozen=True)
class Phase:
    """One phase's traffic: its window and how many calls succeeded or failed."""

    window: Window
    ok: int
    failed: int


def call_body(rng: random.Random, shifted: bool) -> dict[str, Any]:
    """One chat request of the reference mix, or of the shifted one."""
    topics = SHIFTED_TOPICS if shifted else REFERENCE_TOPICS
    question = rng.choice(topics).format(product=rng.choice(PRODUCTS))
    details = rng.randint(2, 6) if shifted else rng.randint(0, 2)
    question += "".join(rng.choice(DETAIL) for _ in range(details))
    messages: list[dict[str, str]] = [
        {"role": "system", "content": "You are the support assistant of a software company."}
    ]
    for _ in range(rng.randint(1, 4) if shifted else rng.randint(0, 1)):  # earlier turns
        messages.append({"role": "user", "content": rng.choice(topics).format(product="it")})
        messages.append({"role": "assistant", "content": "Thanks, let me check that for you."})
    messages.append({"role": "user", "content": question})
    if shifted and rng.random() < 0.08:  # a broken client: the gateway answers 400
        messages[-1] = {"role": "customer", "content": question}
    model = "gpt-4o" if rng.random() < (0.7 if shifted else 0.1) else "gpt-4o-mini"
    return {"model": model, "messages": messages, "max_tokens": 200}


async def simulate(
    settings: Settings,
    *,
    calls: int = 500,
    shift: float = 1.0,
    concurrency: int = 8,
    seed: int = 7,
) -> tuple[Phase, Phase]:
    """Serve the gateway twice (reference, then current traffic) and send the calls."""
    rng = random.Random(seed)
    reference = await _phase(settings, calls, 0.0, 20.0, rng, concurrency)
    await asyncio.sleep(1.01)  # windows are cut at whole seconds: keep the phases apart
    current = await _phase(settings, calls, shift, 20.0 + 60.0 * shift, rng, concurrency)
    return reference, current


async def _phase(
    settings: Settings,
    calls: int,
    shift: float,
    latency_ms: float,
    rng: random.Random,
    concurrency: int,
) -> Phase:
    import aiohttp
    import uvicorn

    from llmops.gateway.service import Gateway
    from llmops.server import create_app

    phase_settings = dataclasses.replace(
        settings,
        upstream="mock",
        mock_latency_ms=latency_ms,
        # Calls are not traced: thousands of traces into a local store would only slow the
        # demo down; drift reads the request log.
        traces=dataclasses.replace(settings.traces, enabled=False),
        api_keys=parse_api_keys(",".join(f"{name}=sim-{name}" for name in CONSUMERS)),
    )
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Gateway(phase_settings)),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="on",
        )
    )
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving  # raises what stopped it
        await asyncio.sleep(0.02)
    start = datetime.now(UTC).replace(microsecond=0)
    bodies = [call_body(rng, rng.random() < shift) for _ in range(calls)]
    usual = (CONSUMERS[0], CONSUMERS[0], CONSUMERS[1])
    keys = [CONSUMERS[2] if rng.random() < shift / 2 else rng.choice(usual) for _ in range(calls)]
    url = f"http://127.0.0.1:{port}/api/v1/chat/completions"
    counts = {"ok": 0, "failed": 0}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(calls):
        queue.put_nowait(index)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            index = queue.get_nowait()
            headers = {"authorization": f"Bearer sim-{keys[index]}"}
            async with session.post(url, json=bodies[index], headers=headers) as response:
                await response.read()
                counts["ok" if response.status < 400 else "failed"] += 1

    try:
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    finally:
        server.should_exit = True
        await serving  # the lifespan's shutdown flushes the request log
    end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    return Phase(Window(start, end), counts["ok"], counts["failed"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
