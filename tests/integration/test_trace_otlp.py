"""The OTLP trace sink against a scripted MLflow server on 127.0.0.1 (aiohttp): retries on 429
and 5xx, a refused batch, a server too slow to answer, a full queue, the span's wire form.

The end-to-end check against a real `mlflow server` (traces read back with MLflow's client)
is `test_every_call_is_one_mlflow_trace` in test_tracing.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from aiohttp import web

from llmops.settings import Settings, SettingsError, TraceSettings
from llmops.tracing import build_sinks, flush_sinks, otlp
from llmops.tracing.otlp import OtlpTraceSink
from llmops.tracing.spans import iso_to_ns

pytestmark = pytest.mark.integration
EXPERIMENT = "41"


@dataclass
class FakeMlflow:
    """MLflow's experiment lookup and OTLP endpoint; `/v1/traces` answers are planned."""

    url: str = ""
    planned: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    delay_s: float = 0.0
    posts: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    lookups: int = 0

    async def experiment(self, request: web.Request) -> web.Response:
        self.lookups += 1
        assert request.query["experiment_name"] == "otlp-tests"
        return web.json_response({"experiment": {"experiment_id": EXPERIMENT}})

    async def traces(self, request: web.Request) -> web.Response:
        self.posts.append((dict(request.headers), json.loads(await request.read())))
        await asyncio.sleep(self.delay_s)
        status, headers = self.planned.pop(0) if self.planned else (200, {})
        return web.Response(status=status, headers=headers, text="{}")


@pytest.fixture
async def fake_mlflow() -> AsyncIterator[FakeMlflow]:
    fake = FakeMlflow()
    app = web.Application()
    app.router.add_get("/api/2.0/mlflow/experiments/get-by-name", fake.experiment)
    app.router.add_post("/v1/traces", fake.traces)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


def sink_for(fake: FakeMlflow, **changes: Any) -> OtlpTraceSink:
    settings = TraceSettings(
        tracking_uri=fake.url, experiment_name="otlp-tests", export="otlp", **changes
    )
    return OtlpTraceSink(settings)


def record(n: int, **changes: Any) -> dict[str, Any]:
    base = {
        "request_id": f"req-{n}",
        "trace_id": f"{n + 1:032x}",
        "received_at": "2026-11-22T14:00:00.000100Z",
        "first_byte_at": "2026-11-22T14:00:00.200100Z",
        "done_at": "2026-11-22T14:00:00.350100Z",
        "status": 200,
        "consumer": "team-a",
        "model": "gpt-4o",
        "deployment": "gpt-4o",
        "upstream": "azure",
        "stream": True,
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        "request": {"messages": [{"role": "user", "content": "hi [EMAIL]"}], "params": {}},
        "response": {"choices": [{"index": 0, "content": "hello", "finish_reason": "stop"}]},
        "error": None,
    }
    return {**base, **changes}


def attributes(span: dict[str, Any]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}


async def test_a_batch_is_one_post_of_otlp_json_spans(fake_mlflow: FakeMlflow) -> None:
    sink = sink_for(fake_mlflow)
    failed = record(
        2,
        status=400,
        error={"type": "invalid_request_error", "code": "content_filter", "message": "no"},
        response=None,
        usage=None,
        first_byte_at=None,
    )
    sink([record(0), record(1, parent_span_id="00f067aa0ba902b7"), failed])
    await flush_sinks([sink])  # what the gateway awaits at the end of a Functions invocation
    assert sink.stats == {"queued": 3, "dropped": 0, "sampled_out": 0, "traced": 3, "errors": 0}
    [(headers, body)] = fake_mlflow.posts
    assert headers["x-mlflow-experiment-id"] == EXPERIMENT
    assert headers["Content-Type"] == "application/json"
    [resource] = body["resourceSpans"]
    spans = resource["scopeSpans"][0]["spans"]
    assert len(spans) == 3
    own, caller, rejected = spans
    assert own["traceId"] == f"{1:032x}"  # the gateway minted it: MLflow's trace keeps it
    assert caller["traceId"] != f"{2:032x}"  # a caller's id may span calls: a fresh one
    assert len(caller["traceId"]) == 32 and len(own["spanId"]) == 16
    assert own["startTimeUnixNano"] == iso_to_ns("2026-11-22T14:00:00.000100Z")
    assert own["endTimeUnixNano"] - own["startTimeUnixNano"] == 350_000_000
    assert own["events"] == [
        {"name": "first_byte", "timeUnixNano": iso_to_ns("2026-11-22T14:00:00.200100Z")}
    ]
    assert own["status"] == {"code": 1}
    seen = attributes(own)
    assert seen["mlflow.spanType"] == "CHAT_MODEL"
    assert json.loads(seen["mlflow.spanInputs"])["messages"][0]["content"] == "hi [EMAIL]"
    assert json.loads(seen["mlflow.chat.tokenUsage"]) == {
        "input_tokens": 11,
        "output_tokens": 7,
        "total_tokens": 18,
    }
    assert seen["mlflow.traceTag.llmops.request_id"] == "req-0"
    assert seen["mlflow.traceTag.llmops.stream"] == "true"
    assert seen["user.id"] == "team-a"
    assert attributes(caller)["mlflow.traceTag.llmops.trace_id"] == f"{2:032x}"
    assert rejected["status"]["code"] == 2 and "content_filter" in rejected["status"]["message"]
    assert "events" not in rejected
    assert attributes(rejected)["mlflow.traceTag.llmops.error_code"] == "content_filter"
    await sink.aclose()


async def test_429_and_5xx_are_retried_as_the_server_asks(fake_mlflow: FakeMlflow) -> None:
    fake_mlflow.planned = [(503, {}), (429, {"Retry-After": "0"})]
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(5)])
    assert await sink.aflush(30)
    assert sink.stats["traced"] == 5 and sink.stats["errors"] == 0
    assert len(fake_mlflow.posts) == 3  # the same batch, three times
    assert len({json.dumps(body) for _, body in fake_mlflow.posts}) == 1
    assert fake_mlflow.lookups == 1  # the experiment is looked up once
    await sink.aclose()


async def test_a_refused_batch_is_counted_once_and_the_server_rests(
    fake_mlflow: FakeMlflow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmops.tracing")
    fake_mlflow.planned = [(400, {})]
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(4)])
    assert await sink.aflush(30)
    sink([record(n) for n in range(4, 10)])  # within DOWN_S: counted, not sent
    assert await sink.aflush(30)
    assert len(fake_mlflow.posts) == 1  # a 400 is not retried
    assert sink.stats == {"queued": 10, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 10}
    [warning] = [r.getMessage() for r in caplog.records if r.name == "llmops.tracing"]
    assert "HTTP 400" in warning and "Calls are not affected" in warning
    await sink.aclose()


async def test_a_server_too_slow_to_answer_costs_a_bounded_wait(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp, "REQUEST_TIMEOUT_S", 0.2)
    fake_mlflow.delay_s = 3.0
    sink = sink_for(fake_mlflow)
    started = time.monotonic()
    sink([record(n) for n in range(3)])
    assert await sink.aflush(30)
    assert time.monotonic() - started < otlp.ATTEMPTS * (0.2 + 5.0)
    assert len(fake_mlflow.posts) == otlp.ATTEMPTS
    assert sink.stats["errors"] == 3 and sink.stats["traced"] == 0
    await sink.aclose()


async def test_a_full_queue_drops_and_counts_and_a_closed_sink_takes_nothing(
    fake_mlflow: FakeMlflow,
) -> None:
    fake_mlflow.delay_s = 0.5  # the first batch is in flight while more arrive
    sink = sink_for(fake_mlflow, queue_records=3)
    sink([record(n) for n in range(2)])
    await asyncio.sleep(0.1)  # taken out of the queue, being sent
    sink([record(n) for n in range(2, 8)])  # three fit, three are dropped
    await sink.aclose(30)
    sink([record(9)])
    assert sink.stats == {"queued": 5, "dropped": 4, "sampled_out": 0, "traced": 5, "errors": 0}
    assert [
        len(body["resourceSpans"][0]["scopeSpans"][0]["spans"]) for _, body in fake_mlflow.posts
    ] == [2, 3]


async def test_a_post_stays_near_its_byte_limit(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp, "MAX_POST_BYTES", 3000)  # one span here is ~1.3 kB
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(7)])
    assert await sink.aflush(30)
    await sink.aclose()
    posts = [body["resourceSpans"][0]["scopeSpans"][0]["spans"] for _, body in fake_mlflow.posts]
    assert sum(map(len, posts)) == 7 and len(posts) > 1 and sink.stats["traced"] == 7
    for spans in posts[:-1]:  # each full POST ends with the span that crossed the limit
        sizes = [len(orjson.dumps(span)) for span in spans]
        assert sum(sizes) >= 3000 > sum(sizes[:-1])


async def test_a_flush_that_runs_out_of_time_says_so(fake_mlflow: FakeMlflow) -> None:
    fake_mlflow.delay_s = 2.0
    sink = sink_for(fake_mlflow)
    sink([record(0)])
    assert not await sink.aflush(0.2)
    await sink.aclose(0.2)  # gives up: the record in flight is cancelled and counted as dropped
    assert sink.stats == {"queued": 1, "dropped": 1, "sampled_out": 0, "traced": 0, "errors": 0}


def test_the_export_follows_the_tracking_uri() -> None:
    def export(env: dict[str, str]) -> str:
        return Settings.from_env(env).traces.export

    assert export({}) == "mlflow"  # a local SQLite store: MLflow's client opens it
    assert export({"MLFLOW_TRACKING_URI": "http://mlflow:5000"}) == "otlp"
    assert export({"MLFLOW_TRACKING_URI": "https://m", "LLMOPS_TRACE_EXPORT": "MLflow"}) == "mlflow"
    databricks = {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_EXPERIMENT_NAME": "/Shared/x"}
    assert export(databricks) == "mlflow"
    with pytest.raises(SettingsError, match="LLMOPS_TRACE_EXPORT=otlp needs"):
        export({**databricks, "LLMOPS_TRACE_EXPORT": "otlp"})
    [sink] = build_sinks(Settings.from_env({"MLFLOW_TRACKING_URI": "http://m:5000/"}).traces)
    assert isinstance(sink, OtlpTraceSink) and sink.base_url == "http://m:5000"
