"""The OTLP trace sink against a scripted MLflow server on 127.0.0.1 (aiohttp): retries on 429
and 5xx, a refused batch, a server too slow to answer, a full queue, the span's wire form.

The end-to-end check against a real `mlflow server` (traces read back with MLflow's client)
is `test_every_call_is_one_mlflow_trace` in test_tracing.py.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from llmops.gateway.service import CallInfo
from llmops.logs.store import LocalStore
from llmops.logs.writer import RequestLogWriter
from llmops.redact import Redactor
from llmops.settings import LogSettings, Settings, SettingsError, TraceSettings
from llmops.slices import Slices
from llmops.tracing import build_sinks, exporter, flush_sinks, otlp
from llmops.tracing.exporter import ProcessTraceSink
from llmops.tracing.otlp import OtlpTraceSink
from llmops.tracing.spans import iso_to_ns, sampled, trace_parts

pytestmark = pytest.mark.integration
EXPERIMENT = "41"


@dataclass
class FakeMlflow:
    """MLflow's experiment lookup and creation and its OTLP endpoint. Planned answers:
    `lookups` for the lookup (status, JSON body), `planned` for `/v1/traces`. With
    `protobuf_only`, JSON is refused as MLflow 3.6 to 3.11 refuse it. `refuse` may answer a
    POST by what it holds (its raw body and its spans): a status, or None to take it."""

    url: str = ""
    planned: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    lookups: list[tuple[int, Any]] = field(default_factory=list)
    protobuf_only: bool = False
    delay_s: float = 0.0
    refuse: Callable[[bytes, list[dict[str, Any]]], int | None] | None = None
    posts: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    refused: list[int] = field(default_factory=list)  # how many spans each refused POST held
    looked_up: int = 0
    created: list[str] = field(default_factory=list)

    async def experiment(self, request: web.Request) -> web.Response:
        self.looked_up += 1
        assert request.query["experiment_name"] == "otlp-tests"
        if self.lookups:
            status, body = self.lookups.pop(0)
            return web.json_response(body, status=status)
        if self.created:
            return web.json_response({"experiment": {"experiment_id": EXPERIMENT}})
        return web.json_response({"error_code": "RESOURCE_DOES_NOT_EXIST"}, status=404)

    async def create(self, request: web.Request) -> web.Response:
        self.created.append((await request.json())["name"])
        return web.json_response({"experiment_id": EXPERIMENT})

    async def traces(self, request: web.Request) -> web.Response:
        raw = await request.read()
        if request.content_type == "application/x-protobuf":
            message = ExportTraceServiceRequest.FromString(raw)
            body = json_format.MessageToDict(message)
            for span in body["resourceSpans"][0]["scopeSpans"][0]["spans"]:
                for key in ("traceId", "spanId"):  # protobuf's JSON mapping: base64 -> hex
                    span[key] = base64.b64decode(span[key]).hex()
        elif self.protobuf_only:
            return web.json_response(
                {"detail": "Invalid Content-Type: application/json"}, status=400
            )
        else:
            body = json.loads(raw)
        if self.refuse is not None and (status := self.refuse(raw, spans_of(body))) is not None:
            self.refused.append(len(spans_of(body)))
            return web.json_response({"error_code": "INVALID_PARAMETER_VALUE"}, status=status)
        self.posts.append((dict(request.headers), body))
        await asyncio.sleep(self.delay_s)
        status, headers = self.planned.pop(0) if self.planned else (200, {})
        return web.Response(status=status, headers=headers, text="{}")


@pytest.fixture
async def fake_mlflow() -> AsyncIterator[FakeMlflow]:
    fake = FakeMlflow(created=["otlp-tests"])  # the experiment exists unless a test says not
    app = web.Application()
    app.router.add_get("/api/2.0/mlflow/experiments/get-by-name", fake.experiment)
    app.router.add_post("/api/2.0/mlflow/experiments/create", fake.create)
    app.router.add_post("/v1/traces", fake.traces)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


def spans_of(body: dict[str, Any]) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = body["resourceSpans"][0]["scopeSpans"][0]["spans"]
    return spans


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
    return {a["key"]: next(iter(a["value"].values()), None) for a in span["attributes"]}


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


async def test_429_and_5xx_are_retried_as_the_server_asks(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_mlflow.planned = [(503, {}), (429, {"Retry-After": "1"}), (429, {"Retry-After": "60"})]
    waits: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr(otlp.asyncio, "sleep", sleep)
    sink = sink_for(fake_mlflow)
    monkeypatch.setattr(otlp, "ATTEMPTS", 4)
    sink([record(n) for n in range(5)])
    assert await sink.aflush(30)
    assert sink.stats["traced"] == 5 and sink.stats["errors"] == 0
    assert len(fake_mlflow.posts) == 4  # the same batch, four times
    assert len({json.dumps(body) for _, body in fake_mlflow.posts}) == 1
    assert fake_mlflow.looked_up == 1  # the experiment is looked up once
    retries = [w for w in waits if w != 0]  # the slices' sleep(0) aside
    assert retries[0] <= 0.5  # backoff after the 503: up to 0.5 s, jittered
    assert retries[1:] == [1.0, otlp.MAX_RETRY_WAIT_S]  # as asked; a long wait is cut
    await sink.aclose()


def request_ids(fake: FakeMlflow) -> list[str]:
    """The request ids of the spans the fake took, in the order it took them."""
    return [
        attributes(span)["mlflow.traceTag.llmops.request_id"]
        for _, body in fake.posts
        for span in spans_of(body)
    ]


async def test_a_span_the_server_cannot_read_costs_only_itself(fake_mlflow: FakeMlflow) -> None:
    def unreadable(raw: bytes, spans: list[dict[str, Any]]) -> int | None:
        return 422 if b'"req-5"' in raw else None  # MLflow refuses a batch with a bad span

    fake_mlflow.refuse = unreadable
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(16)])
    assert await sink.aflush(30)
    assert sink.stats == {"queued": 16, "dropped": 0, "sampled_out": 0, "traced": 15, "errors": 1}
    assert sorted(request_ids(fake_mlflow)) == sorted(f"req-{n}" for n in range(16) if n != 5)
    # halving isolates it: 16, 8, 4, 2 and 1 spans refused; one taken half at each level
    assert fake_mlflow.refused == [16, 8, 4, 2, 1] and len(fake_mlflow.posts) == 4
    fake_mlflow.posts.clear()
    sink([record(n) for n in range(16, 20)])  # the next batch is one POST again
    assert await sink.aflush(30)
    assert len(fake_mlflow.posts) == 1 and sink.stats["traced"] == 19
    await sink.aclose()


async def test_two_spans_the_server_cannot_read_cost_only_themselves(
    fake_mlflow: FakeMlflow,
) -> None:
    bad = (b'"req-2"', b'"req-11"')  # one in each half of the batch
    fake_mlflow.refuse = lambda raw, spans: 422 if any(b in raw for b in bad) else None
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(16)])
    assert await sink.aflush(30)
    assert sink.stats["traced"] == 14 and sink.stats["errors"] == 2
    assert sorted(request_ids(fake_mlflow)) == sorted(
        f"req-{n}" for n in range(16) if n not in (2, 11)
    )
    await sink.aclose()


async def test_a_server_that_refuses_every_batch_is_bisected_once_then_costs_three_posts(
    fake_mlflow: FakeMlflow, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmops.tracing")
    fake_mlflow.refuse = lambda raw, spans: 400  # e.g. an attribute this server cannot take
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(4)])
    assert await sink.aflush(30)
    assert fake_mlflow.refused == [4, 2, 2, 1, 1, 1, 1]  # as if one span were to blame
    sink([record(n) for n in range(4, 12)])  # not left alone: the next batch is still tried
    assert await sink.aflush(30)
    assert fake_mlflow.refused[7:] == [8, 4, 4]  # then the batch and its halves only
    assert sink.stats == {"queued": 12, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 12}
    [warning] = [r.getMessage() for r in caplog.records if r.name == "llmops.tracing"]
    assert "HTTP 400" in warning and "Calls are not affected" in warning
    fake_mlflow.refuse = None  # the server takes batches again: a bad span is bisected again
    sink([record(n) for n in range(12, 14)])
    assert await sink.aflush(30)
    assert sink.stats["traced"] == 2
    await sink.aclose()


async def test_a_server_that_fails_during_a_split_is_left_alone(fake_mlflow: FakeMlflow) -> None:
    answers = iter([422, 401])  # the batch has a bad span; then credentials are refused
    fake_mlflow.refuse = lambda raw, spans: next(answers, None)
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(8)])
    assert await sink.aflush(30)
    assert fake_mlflow.refused == [8, 4] and not fake_mlflow.posts  # the second half waits
    assert sink.stats == {"queued": 8, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 8}
    await sink.aclose()


async def test_a_body_too_large_for_a_proxy_is_split_and_later_batches_are_smaller(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = [orjson.dumps(otlp.otlp_span(trace_parts(record(n)))) for n in range(3)]
    limit = len(otlp.otlp_request(spans[:2])) + 100  # a proxy's body limit: two spans pass
    assert len(otlp.otlp_request(spans)) > limit
    fake_mlflow.refuse = lambda raw, spans: 413 if len(raw) > limit else None
    monkeypatch.setattr(otlp, "MIN_POST_BYTES", 1000)
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(8)])
    assert await sink.aflush(30)
    assert sorted(request_ids(fake_mlflow)) == sorted(f"req-{n}" for n in range(8))
    # the batch, then its first half at half the size; then parts of two spans are taken
    assert fake_mlflow.refused == [8, 4] and len(fake_mlflow.posts) == 4
    assert sink.stats["traced"] == 8 and sink.stats["errors"] == 0
    sink([record(n) for n in range(8, 16)])  # cut under the lowered limit: no 413 now
    assert await sink.aflush(30)
    assert fake_mlflow.refused == [8, 4] and sink.stats["traced"] == 16
    assert sorted(request_ids(fake_mlflow)) == sorted(f"req-{n}" for n in range(16))
    await sink.aclose()


async def test_saving_a_refused_batch_has_a_bounded_cost(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp, "SPLIT_POSTS", 4)
    bad = [f'"req-{n}"'.encode() for n in range(0, 16, 2)]  # every other span
    fake_mlflow.refuse = lambda raw, spans: 422 if any(b in raw for b in bad) else None
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(16)])
    assert await sink.aflush(30)
    assert len(fake_mlflow.refused) + len(fake_mlflow.posts) == 1 + 4  # the batch, the budget
    assert sink.stats["errors"] + sink.stats["traced"] == 16 and sink.stats["errors"] >= 8
    await sink.aclose()


async def test_a_server_that_refuses_everything_is_left_alone(fake_mlflow: FakeMlflow) -> None:
    fake_mlflow.planned = [(401, {})]
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(4)])
    assert await sink.aflush(30)
    sink([record(n) for n in range(4, 10)])  # within DOWN_S: counted, not sent
    assert await sink.aflush(30)
    assert len(fake_mlflow.posts) == 1
    assert sink.stats == {"queued": 10, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 10}
    await sink.aclose()


async def test_the_experiment_is_created_when_missing_and_its_lookup_retried(
    fake_mlflow: FakeMlflow,
) -> None:
    fake_mlflow.created = []
    fake_mlflow.lookups = [(503, {"error_code": "TEMPORARILY_UNAVAILABLE"})]
    sink = sink_for(fake_mlflow)
    sink([record(0)])
    assert await sink.aflush(30)
    assert fake_mlflow.created == ["otlp-tests"]  # after a 503, then a 404
    assert fake_mlflow.posts[0][0]["x-mlflow-experiment-id"] == EXPERIMENT
    assert sink.stats["traced"] == 1
    await sink.aclose()


async def test_an_answer_nobody_planned_for_is_counted_not_lost(
    fake_mlflow: FakeMlflow, caplog: pytest.LogCaptureFixture
) -> None:
    fake_mlflow.lookups = [(200, {"experiment": None})] * 3  # TypeError in the sink
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(3)])
    assert await sink.aflush(30)
    assert sink.stats == {"queued": 3, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 3}
    assert not fake_mlflow.posts
    await sink.aclose()


async def test_an_older_server_gets_protobuf(fake_mlflow: FakeMlflow) -> None:
    fake_mlflow.protobuf_only = True
    sink = sink_for(fake_mlflow)
    sink([record(0), record(1)])
    assert await sink.aflush(30)
    sink([record(2)])  # from now on protobuf at once
    assert await sink.aflush(30)
    assert sink.stats["traced"] == 3 and sink.stats["errors"] == 0
    (headers, body), (later, _) = fake_mlflow.posts
    assert headers["Content-Type"] == later["Content-Type"] == "application/x-protobuf"
    first = spans_of(body)[0]
    assert first["traceId"] == f"{1:032x}" and len(first["spanId"]) == 16
    assert attributes(first)["mlflow.traceTag.llmops.request_id"] == "req-0"
    assert int(first["startTimeUnixNano"]) == iso_to_ns("2026-11-22T14:00:00.000100Z")
    await sink.aclose()


async def test_a_flush_waits_for_what_was_queued_before_it(fake_mlflow: FakeMlflow) -> None:
    fake_mlflow.delay_s = 0.2
    sink = OtlpTraceSink(
        TraceSettings(tracking_uri=fake_mlflow.url, experiment_name="otlp-tests", export="otlp"),
        batch_spans=2,
    )
    sink([record(0), record(1)])
    flush = asyncio.ensure_future(sink.aflush(30))
    for n in range(2, 40):  # calls keep arriving while the flush waits
        await asyncio.sleep(0.05)
        sink([record(n)])
        if flush.done():
            break
    assert flush.done() and flush.result()
    assert sink.stats["traced"] >= 2 and sink._pending  # newer records wait for the next flush
    await sink.aclose(30)


async def test_a_server_too_slow_to_answer_costs_a_bounded_wait(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp, "REQUEST_TIMEOUT_S", 0.2)
    fake_mlflow.delay_s = 3.0
    sink = sink_for(fake_mlflow)
    sink._experiment_id = EXPERIMENT  # the lookup's own timeout is not what this test is about
    started = time.monotonic()
    sink([record(n) for n in range(3)])
    assert await sink.aflush(30)
    assert time.monotonic() - started < otlp.ATTEMPTS * (0.2 + otlp.MAX_RETRY_WAIT_S)
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
    monkeypatch.setattr(otlp, "MAX_POST_BYTES", 3000)  # one span here is ~0.8 kB
    sink = sink_for(fake_mlflow)
    sink([record(n) for n in range(7)])
    assert await sink.aflush(30)
    await sink.aclose()
    posts = [body["resourceSpans"][0]["scopeSpans"][0]["spans"] for _, body in fake_mlflow.posts]
    assert sum(map(len, posts)) == 7 and len(posts) > 1 and sink.stats["traced"] == 7
    for spans, after in itertools.pairwise(posts):  # each POST stops short of the limit
        sizes = [len(orjson.dumps(span)) for span in spans]
        assert sum(sizes) <= 3000 < sum(sizes) + len(orjson.dumps(after[0]))


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
    server = {"MLFLOW_TRACKING_URI": "http://m:5000/"}
    [sink] = build_sinks(Settings.from_env(server).traces)
    assert isinstance(sink, ProcessTraceSink)  # spans built off the gateway's process
    [sink] = build_sinks(Settings.from_env({**server, "LLMOPS_TRACE_PROCESS": "off"}).traces)
    assert isinstance(sink, OtlpTraceSink) and sink.base_url == "http://m:5000"


async def test_a_server_behind_authentication_gets_mlflows_own_credentials(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-123")
    sink = sink_for(fake_mlflow)
    sink([record(0)])
    assert await sink.aflush(30)
    assert fake_mlflow.posts[0][0]["Authorization"] == "Bearer tok-123"
    await sink.aclose()
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ann")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    sink = sink_for(fake_mlflow)
    sink([record(1)])
    assert await sink.aflush(30)
    expected = "Basic " + base64.b64encode(b"ann:pw").decode()
    assert fake_mlflow.posts[1][0]["Authorization"] == expected
    await sink.aclose()


def process_sink(fake: FakeMlflow) -> ProcessTraceSink:
    settings = TraceSettings(
        tracking_uri=fake.url, experiment_name="otlp-tests", export="otlp", process=True
    )
    return ProcessTraceSink(settings)


async def test_a_child_process_builds_and_sends_the_spans(fake_mlflow: FakeMlflow) -> None:
    sink = process_sink(fake_mlflow)
    sink([record(0), record(1)])
    sink([record(2)])
    assert await sink.aflush(60)
    assert sink.stats == {"queued": 3, "dropped": 0, "sampled_out": 0, "traced": 3, "errors": 0}
    child = sink._process
    assert child is not None and child.pid != os.getpid()
    sent = [span for _, body in fake_mlflow.posts for span in spans_of(body)]
    assert sorted(attributes(s)["mlflow.traceTag.llmops.request_id"] for s in sent) == [
        "req-0",
        "req-1",
        "req-2",
    ]
    await sink.aclose(30)
    assert child.returncode == 0  # closing stdin let it flush and exit
    sink([record(3)])  # closed
    assert sink.stats["dropped"] == 1


async def test_a_child_that_dies_costs_its_batch_and_is_started_again(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="llmops.tracing")
    monkeypatch.setattr(exporter, "DOWN_S", 0.0)
    fake_mlflow.delay_s = 5.0  # the first batch is stuck in the child's POST
    sink = process_sink(fake_mlflow)
    sink([record(n) for n in range(4)])
    for _ in range(600):  # until the child's POST reached the server
        if fake_mlflow.posts:
            break
        await asyncio.sleep(0.05)
    first = sink._process
    assert first is not None and fake_mlflow.posts
    first.kill()
    assert await sink.aflush(30)
    assert sink.stats["errors"] == 4 and sink.stats["traced"] == 0
    fake_mlflow.delay_s = 0.0
    sink([record(n) for n in range(4, 6)])
    assert await sink.aflush(60)
    assert sink.stats == {"queued": 6, "dropped": 0, "sampled_out": 0, "traced": 2, "errors": 4}
    assert sink._process is not None and sink._process.pid != first.pid
    await sink.aclose(30)
    [exited] = [r.getMessage() for r in caplog.records if "exporter process exited" in r.message]
    assert "4 traces lost" in exited and "Calls are not affected" in exited


async def test_a_child_that_exits_while_a_frame_is_built_is_not_written_to(
    fake_mlflow: FakeMlflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    sink = process_sink(fake_mlflow)
    sink([record(0)])
    assert await sink.aflush(60)
    first = sink._process
    assert first is not None
    gate = asyncio.Event()
    build = exporter._frame

    async def held(records: list[dict[str, Any]], slices: Slices) -> bytes:
        await gate.wait()  # the frame is being built...
        return await build(records, slices)

    monkeypatch.setattr(exporter, "_frame", held)
    sink([record(1), record(2)])
    await asyncio.sleep(0.1)
    first.kill()  # ...when the child exits
    for _ in range(600):
        if sink._process is None:
            break
        await asyncio.sleep(0.05)
    assert sink._process is None  # its reader saw it go
    gate.set()
    assert await sink.aflush(30)  # the frame went to a new child, not to the dead one's pipe
    assert sink.stats == {"queued": 3, "dropped": 0, "sampled_out": 0, "traced": 3, "errors": 0}
    assert sink._process is not None and sink._process.pid != first.pid
    await sink.aclose(30)


async def test_a_frame_that_cannot_be_serialised_costs_its_records_not_the_queue(
    fake_mlflow: FakeMlflow,
) -> None:
    sink = process_sink(fake_mlflow)
    sink([{**record(0), "tokens": 2**70}, record(1)])  # orjson takes 64-bit integers only
    sink([record(2)])
    assert await sink.aflush(60)
    # the first frame holds both records: both count as errors; the next frame is sent
    assert sink.stats == {"queued": 3, "dropped": 0, "sampled_out": 0, "traced": 1, "errors": 2}
    assert request_ids(fake_mlflow) == ["req-2"]
    await sink.aclose(30)


def finished(n: int) -> CallInfo:
    info = CallInfo(
        request_id=f"req-{n}",
        route="openai",
        trace_id=hashlib.sha256(b"%d" % n).hexdigest()[:32],  # sampling reads its last digits
        consumer="team-a",
        model="gpt-4o",
        status=200 if n % 5 else 502,  # every fifth failed: traced whatever the sampling
    )
    info.request_body = {"model": "gpt-4o", "messages": [{"role": "user", "content": f"q{n}"}]}
    info.response_body = (
        b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": "a%d"}, '
        b'"finish_reason": "stop"}]}' % n
    )
    info.first_byte = info.done = time.monotonic()
    return info


@pytest.mark.parametrize("built_in_child", [False, True], ids=["built-here", "built-in-child"])
async def test_the_child_traces_the_request_logs_own_lines_sampled_with_their_records(
    fake_mlflow: FakeMlflow, tmp_path: Path, built_in_child: bool
) -> None:
    """Also when the records were built by the builder process: the sink then gets only the
    lines, and parses them to sample."""
    settings = TraceSettings(
        tracking_uri=fake_mlflow.url, experiment_name="otlp-tests", export="otlp", sample=0.5
    )
    sink = ProcessTraceSink(settings)
    logs = LogSettings(spool_dir=str(tmp_path / "spool"), flush_s=0.02, process=built_in_child)
    store = LocalStore(tmp_path / "store", logs.container)
    writer = RequestLogWriter(logs, store, Redactor(), sinks=[sink])
    handed: list[tuple[list[dict[str, Any]] | None, list[bytes]]] = []
    take = sink.take_lines

    def spied(records: list[dict[str, Any]] | None, lines: list[bytes]) -> None:
        # the writer empties its lists next
        handed.append((None if records is None else list(records), list(lines)))
        take(records, lines)

    sink.take_lines = spied  # type: ignore[method-assign]
    for n in range(80):
        writer.add(finished(n))
    await writer.aclose()
    assert await sink.aflush(60)
    stored = [
        orjson.loads(line)
        for name in await store.list("")
        for line in (await store.get(name)).splitlines()
    ]
    assert len(stored) == 80
    # the sink got the very lines the log stored, in the order of their records (when the
    # records were built here; none, when the builder process made the lines)
    if built_in_child:
        assert all(records is None for records, _ in handed)
    else:
        assert [orjson.loads(line) for _, lines in handed for line in lines] == [
            record for records, _ in handed for record in records or []
        ]
    assert sorted(line for _, lines in handed for line in lines) == sorted(
        orjson.dumps(r, option=orjson.OPT_APPEND_NEWLINE) for r in stored
    )
    # sampled by trace id: failed calls always, about half of the others; each span's inputs
    # are its own record's
    expected = sorted(r["request_id"] for r in stored if sampled(r, 0.5))
    assert 16 < len(expected) < 80
    assert sorted(request_ids(fake_mlflow)) == expected
    assert sink.stats["traced"] == len(expected)
    assert sink.stats["sampled_out"] == 80 - len(expected)
    by_id = {r["request_id"]: r for r in stored}
    for _, body in fake_mlflow.posts:
        for span in spans_of(body):
            own = by_id[attributes(span)["mlflow.traceTag.llmops.request_id"]]
            assert json.loads(attributes(span)["mlflow.spanInputs"]) == own["request"]
    await sink.aclose(30)
