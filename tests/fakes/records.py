"""Request-log records of past traffic, written with the real layout, for drift tests.

The gateway stamps records with the time it received the call, so traffic "seven days ago"
cannot come through a served gateway in a test; these records have the schema-v1 shape the
gateway writes (docs/request-log.md) and land in the store exactly as the writer lays them out.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import orjson

from llmops.logs.layout import batch_name, iso
from llmops.logs.store import LogStore

OLD_TOPICS = (
    "How do I reset my password for my account?",
    "Can you explain the charges on my latest invoice?",
    "Which payment methods do you accept for the subscription?",
    "How can I update the billing address on file?",
)
NEW_TOPICS = (
    "The service is down again, when will the outage be fixed?",
    "I want a refund for yesterday's outage, it cost us a day of work.",
    "Your status page says operational but nothing loads, is there an incident?",
)


def make_record(received: datetime, rng: random.Random, *, shifted: bool = False) -> dict[str, Any]:
    """One call's record; `shifted` traffic asks other things, longer, slower, of another model."""
    topic = rng.choice(NEW_TOPICS if shifted else OLD_TOPICS)
    prompt = topic + " Please help." * (rng.randint(3, 8) if shifted else rng.randint(0, 2))
    messages = [
        {"role": "system", "content": "You are a support assistant."},
        {"role": "user", "content": prompt},
    ]
    latency = rng.gauss(900 if shifted else 400, 60)
    failed = rng.random() < (0.1 if shifted else 0.01)
    prompt_tokens = len(prompt) // 4 + 8
    completion_tokens = rng.randint(40, 80) if shifted else rng.randint(10, 40)
    return {
        "schema": "llmops.request_log",
        "schema_version": 1,
        "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "trace_id": uuid.UUID(int=rng.getrandbits(128)).hex,
        "parent_span_id": None,
        "received_at": iso(received.timestamp()),
        "first_byte_at": iso(received.timestamp() + latency / 2000),
        "done_at": iso(received.timestamp() + latency / 1000),
        "latency_ms": round(latency, 3),
        "ttft_ms": round(latency / 2, 3),
        "consumer": rng.choice(("team-a", "team-b", "ops") if shifted else ("team-a", "team-b")),
        "route": "openai",
        "model": "gpt-4o" if shifted and rng.random() < 0.7 else "gpt-4o-mini",
        "deployment": "gpt-4o" if shifted else "gpt-4o-mini",
        "upstream": "azure",
        "stream": rng.random() < 0.5,
        "status": 429 if failed else 200,
        "error": {"type": "rate_limit_error", "code": "429", "message": "slow down"}
        if failed
        else None,
        "finish_reason": None if failed else "stop",
        "usage": None
        if failed
        else {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "cached_tokens": 0,
            "estimated": False,
        },
        "retries": 0,
        "fallbacks": 0,
        "attempts": [],
        "request": {"messages": messages, "params": {"model": "gpt-4o-mini"}},
        "response": None,
        "redaction": "mask",
        "gateway_version": "0.1.0",
        "instance": "test",
    }


def traffic(
    start: datetime, end: datetime, count: int, *, shifted: bool = False, seed: int = 1
) -> list[dict[str, Any]]:
    """`count` records received evenly across `[start, end)`."""
    rng = random.Random(seed)
    step = (end - start) / count
    return [make_record(start + step * i, rng, shifted=shifted) for i in range(count)]


async def write_records(store: LogStore, records: list[dict[str, Any]], batch: int = 200) -> None:
    """Write records as the writer does: JSON Lines batches, one blob per batch and hour."""
    by_hour: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_hour.setdefault(record["received_at"][:13], []).append(record)
    for group in by_hour.values():
        for first in range(0, len(group), batch):
            chunk = group[first : first + batch]
            name = batch_name(chunk[0]["received_at"], f"test-{uuid.uuid4().hex[:8]}", first)
            await store.put(name, b"".join(orjson.dumps(r) + b"\n" for r in chunk))


def hours_ago(now: datetime, hours: float) -> datetime:
    return now - timedelta(hours=hours)
