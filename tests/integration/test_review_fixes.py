"""Regressions for defects a code review found (each reproduced before it was fixed)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from llmops.errors import GatewayError
from llmops.gateway.http import _error
from llmops.gateway.service import CallInfo
from llmops.gateway.upstream import HttpUpstream
from llmops.logs.layout import iso
from llmops.logs.reader import WindowReader
from llmops.logs.record import build_record
from llmops.logs.store import LocalStore
from llmops.logs.writer import RequestLogWriter
from llmops.redact import Redactor
from llmops.settings import LogSettings, Settings
from tests.fakes.served import open_stream, served_gateway
from tests.fakes.upstream import FakeUpstream, Reply

pytestmark = pytest.mark.integration


def read_lines(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in folder.rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def test_deeply_nested_body_is_a_400_not_a_poisoned_log(tmp_path: Path) -> None:
    with served_gateway({"LLMOPS_UPSTREAM": "mock"}) as (url, _):
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "x": nested(300)}
        for stream in (False, True):
            response = httpx.post(
                f"{url}/api/v1/chat/completions", content=json.dumps({**body, "stream": stream})
            )
            assert response.status_code == 400
            assert response.json()["error"]["code"] == "invalid_json"


async def test_a_record_orjson_cannot_write_is_still_written(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, "request-logs")
    writer = RequestLogWriter(LogSettings(spool_dir=str(tmp_path / "spool")), store, Redactor())
    poisoned = CallInfo(request_id="deep", route="openai", trace_id="a" * 32, status=200)
    poisoned.request_body = {"messages": [], "x": nested(300)}
    writer.add(poisoned)
    fine = CallInfo(request_id="fine", route="openai", trace_id="b" * 32, status=200)
    writer.add(fine)
    await writer.aclose()
    lines = read_lines(tmp_path)
    assert sorted(r["request_id"] for r in lines) == ["deep", "fine"]
    assert writer.stats["build_failures"] == 1 and writer.stats["written"] == 2


def test_client_leaving_before_the_stream_begins_is_recorded(
    azure_env: dict[str, str], fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    fake_upstream.plan("gpt-4o", Reply(delay_s=1.0))
    env = {**azure_env, "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store")}
    with served_gateway(env) as (url, gateway):
        with open_stream(url, "hi"):
            time.sleep(0.3)  # gone while the upstream is still thinking
        time.sleep(1.5)
    [record] = [
        json.loads(line)
        for path in (tmp_path / "store").rglob("*.jsonl")
        for line in path.read_text().splitlines()
    ]
    # Whether the relay ran (client gone while the upstream thought) or never started, the
    # call is recorded once and the upstream connection released.
    assert record["stream"] is True and record["model"] == "gpt-4o"
    assert record["error"] is None or record["error"]["type"] == "client_disconnected"
    assert gateway.request_log is not None and gateway.request_log.stats["written"] == 1


def test_error_headers_from_the_upstream_are_made_safe() -> None:
    response = _error(GatewayError(502, "bad", headers={"x-note": "5 € left\r\nx-evil: 1"}), "r")
    assert response.headers["x-note"] == "5%20%E2%82%AC%20left%0D%0Ax-evil:%201".replace("%20", " ")
    assert "x-evil" not in response.headers


def test_content_off_still_redacts_params() -> None:
    call = CallInfo(request_id="r", route="openai", trace_id="c" * 32, status=200)
    call.request_body = {"model": "m", "messages": [], "metadata": {"who": "jane@example.com"}}
    record = build_record(call, Redactor(), content=False, instance="i")
    assert record["request"]["params"]["metadata"] == {"who": "[EMAIL]"}


async def test_reader_windows_are_utc_whatever_the_caller_zone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, "request-logs")
    moment = datetime(2026, 11, 22, 10, 30, tzinfo=UTC)
    record = {"schema_version": 1, "request_id": "a", "received_at": iso(moment.timestamp())}
    await store.put("v1/date=2026-11-22/hour=10/i-0000000001.jsonl", json.dumps(record).encode())
    plus_one = timezone(timedelta(hours=1))
    start = datetime(2026, 11, 22, 11, 0, tzinfo=plus_one)  # = 10:00 UTC
    found = [r async for r in WindowReader(store).records(start, start + timedelta(hours=1))]
    assert [r["request_id"] for r in found] == ["a"]


async def test_local_store_refuses_names_outside_the_container(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store", "request-logs")
    with pytest.raises(ValueError):
        await store.put("../../escape.jsonl", b"x")


def test_no_entra_token_is_a_502_within_the_deadline(fake_upstream: FakeUpstream) -> None:
    class NoIdentity:
        async def get_token(self, *scopes: str) -> Any:
            await asyncio.sleep(30)  # DefaultAzureCredential probing a missing IMDS

    env = {"AZURE_OPENAI_ENDPOINT": fake_upstream.url, "LLMOPS_TOTAL_TIMEOUT_S": "1"}
    upstream = HttpUpstream(Settings.from_env(env), credential=NoIdentity())
    with served_gateway(env, upstream=upstream) as (url, _):
        started = time.monotonic()
        response = httpx.post(
            f"{url}/api/v1/chat/completions",
            timeout=10,
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
    assert time.monotonic() - started < 3
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"
