"""The request-log writer under faults: a slow store, a full buffer, a store that raises,
and the Functions host's end-of-invocation flush; the reader's counters."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
import weakref
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from llmops.gateway.service import CallInfo
from llmops.logs.layout import iso
from llmops.logs.reader import WindowReader
from llmops.logs.store import BlobStore, LocalStore
from llmops.logs.writer import RequestLogWriter
from llmops.redact import Redactor
from llmops.settings import LogSettings
from tests.conftest import GATEWAY_KEY
from tests.fakes.azurite import Azurite
from tests.integration.test_function_app import body_of, functions, make_request

pytestmark = pytest.mark.integration


class FlakyStore(LocalStore):
    """A local store whose uploads can be made slow or failing (the I/O edge, faked)."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "request-logs")
        self.delay_s = 0.0
        self.error: Exception | None = None
        self.puts = 0

    async def put(self, name: str, data: bytes, content_type: str | None = None) -> None:
        self.puts += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        await super().put(name, data, content_type)


class Watched(dict[str, Any]):
    """A call's request body that a weak reference can watch (a plain dict cannot be)."""


def settings(tmp_path: Path, **overrides: Any) -> LogSettings:
    base = LogSettings(
        spool_dir=str(tmp_path / "spool"), flush_s=0.02, retry_s=0.05, upload_timeout_s=0.2
    )
    return LogSettings(**{**base.__dict__, **overrides})


def call(n: int) -> CallInfo:
    info = CallInfo(
        request_id=f"req-{n:05d}",
        route="openai",
        trace_id=f"{n:032x}",
        consumer="team-a",
        model="gpt-4o",
        status=200,
    )
    info.request_body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    info.response_body = (
        b'{"choices": [{"index": 0, "message": {"role": "assistant", '
        b'"content": "hello"}, "finish_reason": "stop"}]}'
    )
    info.first_byte = info.done = time.monotonic()
    return info


async def stored_ids(store: LocalStore) -> list[str]:
    reader = WindowReader(store)
    now = datetime.now(UTC)
    ids = [
        r["request_id"]
        async for r in reader.records(now - timedelta(hours=1), now + timedelta(hours=1))
    ]
    assert reader.stats.duplicates == 0
    return sorted(ids)


async def test_slow_store_never_slows_add_and_loses_nothing(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store")
    store.delay_s = 1.0  # far beyond the 0.2 s upload timeout
    writer = RequestLogWriter(settings(tmp_path), store, Redactor())
    calls = [call(n) for n in range(200)]
    started = time.perf_counter()
    for info in calls:
        writer.add(info)
    assert time.perf_counter() - started < 0.05  # add() is O(1): no I/O, no waiting
    await asyncio.sleep(0.5)
    assert writer.stats["spooled"] > 0  # the slow upload timed out and went to the spool
    store.delay_s = 0.0
    await asyncio.sleep(0.2)
    for n in range(200, 300):
        writer.add(call(n))
    await writer.aclose()
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(300)]
    assert writer.stats["replayed"] == writer.stats["spooled"]


async def test_full_buffer_spills_instead_of_growing(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store")
    store.delay_s = 0.15
    writer = RequestLogWriter(
        settings(tmp_path, buffer_records=50, batch_records=1000, upload_timeout_s=5),
        store,
        Redactor(),
    )
    for n in range(500):
        writer.add(call(n))
        if n % 50 == 0:
            await asyncio.sleep(0)
    assert writer.stats["spilled"] >= 400
    assert len(writer._calls) + writer._lines < 50
    store.delay_s = 0.0
    await writer.aclose()
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(500)]


async def test_a_store_that_raises_anything_is_a_store_that_is_down(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store")
    store.error = RuntimeError("bug in the storage SDK")
    writer = RequestLogWriter(settings(tmp_path), store, Redactor())
    for n in range(30):
        writer.add(call(n))
    await asyncio.sleep(0.2)
    assert writer.stats["upload_failures"] >= 1 and writer.stats["spooled"] == 30
    store.error = None
    await writer.aclose()
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(30)]


async def test_a_batch_neither_stored_nor_spooled_waits_for_the_next_flush(
    tmp_path: Path,
) -> None:
    store = FlakyStore(tmp_path / "store")
    store.error = OSError("store down")
    writer = RequestLogWriter(settings(tmp_path, batch_records=10), store, Redactor())
    writer.spool.parent.mkdir(parents=True)
    writer.spool.write_text("a file where the spool folder goes: every spool write fails")
    for n in range(25):  # batches cut at 10 records, each failing to upload and to spool
        writer.add(call(n))
        await asyncio.sleep(0)
    await writer.flush()
    assert writer.stats["written"] == writer.stats["spooled"] == 0
    assert sum(blob.records for blob in writer._unsent) == 25
    writer.spool.unlink()  # the disk is back, and then the store
    store.error = None
    await asyncio.sleep(0.1)  # past retry_s
    await writer.aclose()
    assert await stored_ids(store) == [f"req-{n:05d}" for n in range(25)]


async def test_each_record_is_built_at_the_next_turn_and_its_call_freed_there(
    tmp_path: Path,
) -> None:
    """Not on the request path (add), not in a batch at the flush (the calls at concurrency
    1 waited behind its slices): in the loop's next turn, one callback per call."""
    store = FlakyStore(tmp_path / "store")
    writer = RequestLogWriter(settings(tmp_path, flush_s=60.0), store, Redactor())
    alive = []
    for n in range(3):
        info = call(n)
        info.request_body = Watched(info.request_body or {})
        alive.append(weakref.ref(info.request_body))
        writer.add(info)
    del info
    assert writer._lines == 0 and all(ref() is not None for ref in alive)  # add() builds nothing
    await asyncio.sleep(0)
    assert writer._lines == 3 and all(ref() is None for ref in alive)  # built, and freed
    assert store.puts == 0  # the lines wait for their batch
    await writer.flush()
    assert await stored_ids(store) == ["req-00000", "req-00001", "req-00002"]


async def test_a_flush_builds_the_calls_whose_turn_has_not_come(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store")
    writer = RequestLogWriter(settings(tmp_path, flush_s=60.0), store, Redactor())
    writer.add(call(0))
    writer.add(call(1))
    await writer.flush()  # right after add(), as at the end of a Functions invocation
    assert await stored_ids(store) == ["req-00000", "req-00001"]
    assert writer.stats["written"] == 2 and writer.backlog() == 0


async def test_a_record_that_cannot_be_built_is_still_written(tmp_path: Path) -> None:
    store = FlakyStore(tmp_path / "store")
    writer = RequestLogWriter(settings(tmp_path), store, Redactor())
    broken = call(1)
    broken.attempts = None  # type: ignore[assignment]  # a bug elsewhere must not lose it
    writer.add(broken)
    writer.add(call(2))
    await writer.aclose()
    assert await stored_ids(store) == ["req-00001", "req-00002"]
    assert writer.stats["build_failures"] == 1


async def test_reader_counts_what_it_skips(tmp_path: Path) -> None:
    store = LocalStore(tmp_path, "request-logs")
    now = datetime.now(UTC)
    good = {"schema_version": 1, "request_id": "a", "received_at": iso(now.timestamp())}
    old = {**good, "request_id": "old", "received_at": iso((now - timedelta(days=2)).timestamp())}
    hour = f"v1/date={now:%Y-%m-%d}/hour={now:%H}"
    lines = [
        json.dumps(good),
        "{not json",
        json.dumps({**good, "schema_version": 99}),
        json.dumps(old),
        "[1, 2]",
    ]
    await store.put(f"{hour}/i-1.jsonl", "\n".join(lines).encode())
    await store.put(f"{hour}/i-2.jsonl", json.dumps(good).encode())  # a replayed duplicate
    reader = WindowReader(store)
    records = [r async for r in reader.records(now - timedelta(hours=1), now + timedelta(hours=1))]
    assert [r["request_id"] for r in records] == ["a"]
    stats = reader.stats
    assert (stats.blobs, stats.corrupt, stats.unknown_schema, stats.duplicates) == (2, 2, 1, 1)


async def test_functions_invocation_flushes_to_blob_after_the_response(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    container = f"fn-{uuid.uuid4().hex[:12]}"
    with Azurite() as storage:
        monkeypatch.setenv("LLMOPS_UPSTREAM", "mock")
        monkeypatch.setenv("LLMOPS_API_KEYS", f"team-a={GATEWAY_KEY}")
        monkeypatch.setenv("AzureWebJobsStorage", storage.connection_string)
        monkeypatch.setenv("LLMOPS_LOG_CONTAINER", container)
        monkeypatch.setenv("LLMOPS_LOG_FLUSH_S", "60")  # only the end-of-call flush can help
        monkeypatch.setenv("FUNCTIONS_WORKER_RUNTIME", "python")
        chat = functions()["chat_completions"].get_user_function()
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        response = await chat(
            make_request(
                "POST", "/api/v1/chat/completions", body.encode(), {"api-key": GATEWAY_KEY}
            )
        )
        assert response.status_code == 200
        await body_of(response)
        assert response.background is not None
        await response.background()  # what the host's web server runs once the body is sent
        store = BlobStore(LogSettings(connection_string=storage.connection_string), container)
        names = await store.list("v1/")
        [record] = [
            json.loads(line) for name in names for line in (await store.get(name)).splitlines()
        ]
        await store.aclose()
    assert record["request_id"] == response.headers["x-request-id"]
    assert record["consumer"] == "team-a"


async def test_spill_and_backlog_metrics_follow_an_outage(tmp_path: Path) -> None:
    """`llmops.requestlog.spilled` and `.backlog`, which infra's alert rules watch."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llmops.tracing.metrics import DeferredMetricsSink

    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    sink = DeferredMetricsSink(lambda: meter)
    store = FlakyStore(tmp_path / "store")
    store.error = ConnectionError("blob storage is down")
    writer = RequestLogWriter(settings(tmp_path), store, Redactor(), sinks=[sink])
    sink.watch(writer)
    assert sink.flush(5)

    def observed() -> dict[str, int]:
        data = reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: int(metric.data.data_points[0].value)
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
            if metric.name.startswith("llmops.requestlog.")
        }

    for n in range(40):
        writer.add(call(n))
    await writer.flush()
    assert observed() == {"llmops.requestlog.spilled": 40, "llmops.requestlog.backlog": 40}

    store.error = None
    await asyncio.sleep(0.1)  # past the retry pause
    writer.add(call(40))
    await writer.aclose()  # delivers the new record, then replays the spool
    assert observed() == {"llmops.requestlog.spilled": 40, "llmops.requestlog.backlog": 0}
    assert len(await stored_ids(store)) == 41
