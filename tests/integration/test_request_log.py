"""Request logs end to end: the openai SDK drives a served gateway; records land in Azurite."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from llmops.logs.reader import WindowReader
from llmops.logs.store import store_for
from llmops.settings import LogSettings
from tests.fakes.azurite import Azurite
from tests.fakes.served import sdk_client, served_gateway
from tests.fakes.upstream import FakeUpstream, rate_limited

pytestmark = pytest.mark.integration
MESSAGES: Any = [{"role": "user", "content": "Mail me at jane.doe@example.com please"}]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


def blob_env(azurite: Azurite, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "AzureWebJobsStorage": azurite.connection_string,
        "LLMOPS_LOG_CONTAINER": f"logs-{uuid.uuid4().hex[:12]}",
        "LLMOPS_SPOOL_DIR": str(tmp_path / "spool"),
        "LLMOPS_LOG_FLUSH_S": "0.05",
        "LLMOPS_LOG_RETRY_S": "0.2",
        "LLMOPS_LOG_UPLOAD_TIMEOUT_S": "2",
        **extra,
    }


def read_records(env: dict[str, str]) -> tuple[list[dict[str, Any]], WindowReader]:
    async def read() -> tuple[list[dict[str, Any]], WindowReader]:
        store = store_for(LogSettings.from_env(env))
        reader = WindowReader(store)
        now = datetime.now(UTC)
        records = [
            r async for r in reader.records(now - timedelta(hours=2), now + timedelta(hours=1))
        ]
        await store.aclose()
        return records, reader

    return asyncio.run(read())


def wait_for(condition: Any, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


client = sdk_client


def test_every_call_leaves_one_record(
    azure_env: dict[str, str], fake_upstream: FakeUpstream, azurite: Azurite, tmp_path: Path
) -> None:
    env = {**azure_env, **blob_env(azurite, tmp_path)}
    fake_upstream.plan(
        "limited",
        rate_limited(retry_after_ms=10, retry_after="1"),
        *[rate_limited(retry_after_ms=10)] * 2,
    )
    ids: dict[str, str] = {}
    with served_gateway(env) as (url, _):
        sdk = client(url)
        raw = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=MESSAGES,
            extra_headers={"traceparent": f"00-{TRACE_ID}-00f067aa0ba902b7-01"},
        )
        ids["plain"] = raw.headers["x-request-id"]
        streamed = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        ids["stream"] = streamed.headers["x-request-id"]
        chunks = list(streamed.parse())
        # The gateway asked the upstream for usage; the client, who did not, never sees it.
        assert all(c.usage is None for c in chunks) and all(c.choices for c in chunks)
        with_usage = list(
            sdk.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        assert with_usage[-1].usage is not None
        with pytest.raises(openai.AuthenticationError):
            client(url, key="wrong").chat.completions.create(model="gpt-4o", messages=MESSAGES)
        with pytest.raises(openai.BadRequestError):
            sdk.chat.completions.create(
                model="gpt-4o", messages=[{"role": "robot", "content": "x"}]
            )  # type: ignore[misc,list-item]
        with pytest.raises(openai.RateLimitError):
            sdk.chat.completions.create(model="limited", messages=MESSAGES)
    upstream_stream_call = fake_upstream.calls("gpt-4o")[1]
    assert upstream_stream_call.body["stream_options"] == {"include_usage": True}

    records, reader = read_records(env)
    assert len(records) == 6 and reader.stats.duplicates == 0 and reader.stats.corrupt == 0
    by_id = {r["request_id"]: r for r in records}
    plain, stream = by_id[ids["plain"]], by_id[ids["stream"]]

    assert plain["trace_id"] == TRACE_ID and plain["parent_span_id"] == "00f067aa0ba902b7"
    assert (plain["consumer"], plain["model"], plain["deployment"], plain["upstream"]) == (
        "team-a",
        "gpt-4o",
        "gpt-4o",
        "azure",
    )
    assert plain["status"] == 200 and plain["error"] is None and plain["finish_reason"] == "stop"
    assert plain["usage"] == {
        "prompt_tokens": 11,
        "completion_tokens": 7,
        "total_tokens": 18,
        "cached_tokens": None,
        "estimated": False,
    }
    assert plain["received_at"] <= plain["first_byte_at"] <= plain["done_at"]
    assert plain["latency_ms"] >= plain["ttft_ms"] >= 0
    # Redacted before it was written: the address is gone from the request and the answer.
    assert "jane.doe@example.com" not in json.dumps(plain)
    assert plain["request"]["messages"][0]["content"] == "Mail me at [EMAIL] please"
    assert plain["response"]["choices"][0]["content"] == "echo: Mail me at [EMAIL] please"

    assert stream["stream"] is True and stream["usage"]["estimated"] is False
    assert stream["usage"]["total_tokens"] == 18
    assert stream["response"]["choices"][0]["content"] == "echo: Mail me at [EMAIL] please"
    assert stream["ttft_ms"] <= stream["latency_ms"]

    rejected = [r for r in records if r["status"] == 401]
    assert len(rejected) == 1 and rejected[0]["consumer"] is None
    assert rejected[0]["error"]["code"] == "invalid_api_key"
    bad = next(r for r in records if r["status"] == 400)
    assert bad["error"]["code"] == "invalid_value"
    limited = next(r for r in records if r["status"] == 429)
    assert limited["retries"] == 2 and len(limited["attempts"]) == 3
    assert limited["error"]["message"].startswith("Requests to the ChatCompletions_Create")


def test_blob_outage_loses_nothing_and_duplicates_nothing(
    azure_env: dict[str, str], tmp_path: Path
) -> None:
    with Azurite() as storage:
        env = {**azure_env, **blob_env(storage, tmp_path)}
        sent: list[str] = []

        def calls(sdk: OpenAI, count: int) -> None:
            for index in range(count):
                response = sdk.chat.completions.with_raw_response.create(
                    model="gpt-4o", messages=MESSAGES, stream=index % 3 == 0
                )
                if index % 3 == 0:
                    list(response.parse())  # type: ignore[call-overload]
                sent.append(response.headers["x-request-id"])

        with served_gateway(env) as (url, gateway):
            sdk = client(url)
            calls(sdk, 20)
            storage.stop()
            started = time.monotonic()
            calls(sdk, 20)  # every call still succeeds, and quickly
            assert time.monotonic() - started < 15
            assert gateway.request_log is not None
            stats = gateway.request_log.stats
            wait_for(lambda: stats["spooled"] > 0)
            storage.start()
            calls(sdk, 20)
        stats = gateway.request_log.stats
        records, reader = read_records(env)
    assert sorted(r["request_id"] for r in records) == sorted(sent)
    assert reader.stats.duplicates == 0
    assert stats["replayed"] == stats["spooled"] > 0
    assert stats["written"] + stats["replayed"] == 60
    assert not list((tmp_path / "spool").rglob("*.jsonl"))


def test_without_storage_the_same_layout_goes_to_a_folder(tmp_path: Path) -> None:
    env = {"LLMOPS_UPSTREAM": "mock", "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store")}
    with served_gateway(env) as (url, _):
        client(url, key="x").chat.completions.create(model="m", messages=MESSAGES)
    [path] = list((tmp_path / "store" / "request-logs").rglob("*.jsonl"))
    now = datetime.now(UTC)
    relative = path.relative_to(tmp_path / "store" / "request-logs").as_posix()
    assert relative.startswith(("v1/date=", f"v1/date={now:%Y-%m-%d}/hour="))
    assert "/hour=" in relative
    [record] = [json.loads(line) for line in path.read_text().splitlines()]
    assert (record["upstream"], record["consumer"]) == ("mock", "anonymous")


def test_request_log_off(tmp_path: Path) -> None:
    env = {
        "LLMOPS_UPSTREAM": "mock",
        "LLMOPS_REQUEST_LOG": "off",
        "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store"),
    }
    with served_gateway(env) as (url, gateway):
        client(url, key="x").chat.completions.create(model="m", messages=MESSAGES)
    assert gateway.request_log is None
    assert not (tmp_path / "store").exists()
