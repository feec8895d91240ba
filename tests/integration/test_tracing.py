"""MLflow traces end to end: the openai SDK drives a served gateway in front of the fake
upstream; the traces are read back from a real local MLflow store (SQLite).

MLflow imports slowly and creates its tables on first use, so the module shares one store;
each test uses its own experiment.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from llmops.settings import Settings, SettingsError, TraceSettings
from llmops.tracing import build_sinks
from llmops.tracing.experiments import local_artifacts
from llmops.tracing.exporter import ProcessTraceSink
from llmops.tracing.mlflow_sink import MlflowTraceSink, sampled
from llmops.tracing.otlp import OtlpTraceSink
from llmops.tracing.spans import iso_to_ns, trace_parts
from tests.fakes.mlflow_server import MlflowServer
from tests.fakes.served import sdk_client, served_gateway
from tests.fakes.upstream import FakeUpstream, content_filter_prompt

pytestmark = pytest.mark.integration
MESSAGES: Any = [{"role": "user", "content": "Mail me at jane.doe@example.com please"}]
CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture(scope="module")
def mlflow_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real local MLflow store for the module, and MLflow's process settings restored after."""
    folder = tmp_path_factory.mktemp("mlflow")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_MODEL_CATALOG_URI", raising=False)  # the sink defaults it
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage reports from tests
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # mlflow.set_tracking_uri sets it
        patch.chdir(folder)  # where MLflow's default ./mlruns would go: checked to stay empty
        yield {
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db",
            "LLMOPS_TRACE_FLUSH_TIMEOUT_S": "60",
        }


client = sdk_client


def local_records(folder: Path) -> dict[str, dict[str, Any]]:
    """The request-log records the gateway wrote to its local store, by request id."""
    lines = [line for path in folder.rglob("*.jsonl") for line in path.read_text().splitlines()]
    return {r["request_id"]: r for r in map(json.loads, lines)}


def traces_of(uri: str, experiment: str) -> dict[str, Any]:
    """The experiment's traces, by the request id tag."""
    from mlflow import MlflowClient

    mlflow_client = MlflowClient(tracking_uri=uri)
    found = mlflow_client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment}"
    traces = mlflow_client.search_traces(locations=[found.experiment_id], max_results=100)
    return {t.info.tags["llmops.request_id"]: t for t in traces}


@pytest.fixture(scope="module")
def mlflow_server() -> Iterator[MlflowServer]:
    with MlflowServer() as server:
        yield server


SINKS = {"client": MlflowTraceSink, "child": ProcessTraceSink, "loop": OtlpTraceSink}


@pytest.fixture(
    params=[
        "local store, MLflow client",
        "tracking server, OTLP from a child process",
        "tracking server, OTLP from the event loop",
    ]
)
def trace_store(request: pytest.FixtureRequest, mlflow_env: dict[str, str]) -> dict[str, str]:
    """Where traces go: a local SQLite store through MLflow's client, or a real `mlflow
    server` over OTLP (the default export for an http:// tracking URI), its spans built in a
    child process (the default) or on the gateway's event loop."""
    if request.param.startswith("local"):
        return mlflow_env
    server: MlflowServer = request.getfixturevalue("mlflow_server")
    env = {"MLFLOW_TRACKING_URI": server.url, "LLMOPS_TRACE_FLUSH_TIMEOUT_S": "60"}
    if request.param.endswith("event loop"):
        env["LLMOPS_TRACE_PROCESS"] = "off"
    return env


def sink_kind(env: dict[str, str]) -> str:
    if (
        not env["MLFLOW_TRACKING_URI"].startswith("http")
        or env.get("LLMOPS_TRACE_EXPORT") == "mlflow"
    ):
        return "client"
    return "loop" if env.get("LLMOPS_TRACE_PROCESS") == "off" else "child"


def wait_for(sink: Any, key: str, count: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while sink.stats[key] < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_every_call_is_one_mlflow_trace(
    azure_env: dict[str, str],
    fake_upstream: FakeUpstream,
    trace_store: dict[str, str],
    tmp_path: Path,
) -> None:
    experiment = f"calls-{uuid.uuid4().hex[:8]}"
    env = {
        **azure_env,
        **trace_store,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "LLMOPS_TRACING": "on",
        "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store"),
        "LLMOPS_LOG_FLUSH_S": "0.05",
    }
    server = env["MLFLOW_TRACKING_URI"].startswith("http")
    fake_upstream.plan("filtered", content_filter_prompt())
    ids: dict[str, str] = {}
    with served_gateway(env) as (url, gateway):
        sdk = client(url)
        caller = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=MESSAGES,
            extra_headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
        )
        ids["caller"] = caller.headers["x-request-id"]
        own = sdk.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
        ids["own"] = own.headers["x-request-id"]
        streamed = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        ids["stream"] = streamed.headers["x-request-id"]
        assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
        with pytest.raises(openai.BadRequestError) as failed:
            sdk.chat.completions.create(model="filtered", messages=MESSAGES)
        ids["failed"] = failed.value.response.headers["x-request-id"]

        assert gateway.request_log is not None
        [sink] = gateway.request_log.sinks
        assert isinstance(sink, SINKS[sink_kind(env)])
        wait_for(sink, "queued", 4)  # the request log hands records over in batches
        if isinstance(sink, MlflowTraceSink):
            # flush() returns once MLflow has written everything queued so far.
            assert sink.flush(timeout=60)
        else:
            wait_for(sink, "traced", 4)  # one POST as soon as the batch is built
        assert set(traces_of(env["MLFLOW_TRACKING_URI"], experiment)) == set(ids.values())
    assert sink.stats == {"queued": 4, "dropped": 0, "sampled_out": 0, "traced": 4, "errors": 0}

    records = local_records(tmp_path / "store")
    traces = traces_of(env["MLFLOW_TRACKING_URI"], experiment)
    assert len(traces) == 4  # one trace per call, nothing more after the graceful stop
    if not server:  # a local store keeps its artifacts beside the database, not in the cwd
        from mlflow import MlflowClient

        uri = env["MLFLOW_TRACKING_URI"]
        found = MlflowClient(tracking_uri=uri).get_experiment_by_name(experiment)
        assert found is not None
        assert found.artifact_location == local_artifacts(uri)
        assert found.artifact_location.endswith("/artifacts")
    assert not (Path.cwd() / "mlruns").exists()
    for name, request_id in ids.items():
        trace, record = traces[request_id], records[request_id]
        [span] = trace.data.spans
        assert span.span_type == "CHAT_MODEL" and span.name == f"chat {record['model']}"
        assert trace.info.trace_metadata["mlflow.trace.user"] == "team-a"
        assert span.start_time_ns == iso_to_ns(record["received_at"])
        assert span.end_time_ns == iso_to_ns(record["done_at"])
        assert trace.info.tags["llmops.trace_id"] == record["trace_id"]
        assert trace.info.tags["llmops.status"] == str(record["status"])
        assert trace.info.tags["llmops.consumer"] == "team-a"
        assert trace.info.tags["llmops.stream"] == ("true" if name == "stream" else "false")
        assert span.attributes["mlflow.llm.provider"] == "azure"
        assert span.attributes["mlflow.llm.model"] == record["model"]
        # Redacted before it left the gateway: the address never reaches MLflow.
        assert "jane.doe@example.com" not in json.dumps(trace.to_dict())
        assert span.inputs["messages"] == [{"role": "user", "content": "Mail me at [EMAIL] please"}]
        assert span.inputs["params"]["model"] == record["model"]

    for name in ("caller", "own", "stream"):
        trace = traces[ids[name]]
        [span] = trace.data.spans
        usage = {"input_tokens": 11, "output_tokens": 7, "total_tokens": 18}
        assert span.attributes["mlflow.chat.tokenUsage"] == usage
        assert trace.info.token_usage == usage  # what the MLflow UI shows for the trace
        assert trace.info.cost and trace.info.cost["total_cost"] > 0  # priced by MLflow
        assert span.outputs["choices"][0]["message"] == {
            "role": "assistant",
            "content": "echo: Mail me at [EMAIL] please",
        }
        assert trace.info.state.value == "OK" and span.status.status_code.value == "OK"
        assert trace.info.tags["llmops.deployment"] == "gpt-4o"

    # The gateway minted this trace id: MLflow's trace carries it. A caller's trace id may
    # cover many calls, so it stays in the tag and MLflow assigns the trace's own id.
    assert traces[ids["own"]].info.trace_id == f"tr-{records[ids['own']]['trace_id']}"
    caller_trace = traces[ids["caller"]].info
    assert caller_trace.tags["llmops.trace_id"] == CALLER_TRACE
    assert caller_trace.tags["llmops.parent_span_id"] == CALLER_SPAN
    assert caller_trace.trace_id != f"tr-{CALLER_TRACE}"
    [stream_span] = traces[ids["stream"]].data.spans
    [first_byte] = [e for e in stream_span.events if e.name == "first_byte"]
    assert first_byte.timestamp == iso_to_ns(records[ids["stream"]]["first_byte_at"])

    failed_trace = traces[ids["failed"]]
    [failed_span] = failed_trace.data.spans
    assert failed_trace.info.state.value == "ERROR"
    assert failed_span.status.status_code.value == "ERROR"
    assert "content_filter" in failed_span.status.description
    assert failed_trace.info.tags["llmops.status"] == "400"
    assert failed_trace.info.tags["llmops.error_code"] == "content_filter"
    assert failed_span.outputs["error"]["code"] == "content_filter"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize("export", ["mlflow", "otlp", "otlp-child"])
def test_tracking_store_down_costs_calls_nothing(
    export: str,
    capfd: pytest.CaptureFixture[str],
    azure_env: dict[str, str],
    fake_upstream: FakeUpstream,
    mlflow_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # MLflow retries a refused connection for minutes by default (MLFLOW_HTTP_REQUEST_MAX_RETRIES
    # = 7); calls never wait for it either way, this only makes the first error come at once.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    env = {
        **azure_env,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}",
        "LLMOPS_TRACE_EXPORT": export.removesuffix("-child"),
        "LLMOPS_TRACE_PROCESS": "on" if export == "otlp-child" else "off",
        "LLMOPS_TRACING": "on",
        "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store"),
        "LLMOPS_LOG_FLUSH_S": "0.05",
    }
    caplog.set_level(logging.INFO, logger="llmops.tracing")
    sent = []
    with served_gateway(env) as (url, gateway):
        sdk = client(url)
        started = time.monotonic()
        for index in range(20):
            response = sdk.chat.completions.with_raw_response.create(
                model="gpt-4o", messages=MESSAGES, stream=index % 2 == 0
            )
            if index % 2 == 0:
                list(response.parse())  # type: ignore[call-overload]
            sent.append(response.headers["x-request-id"])
        elapsed = time.monotonic() - started
        assert gateway.request_log is not None
        [sink] = gateway.request_log.sinks
        assert isinstance(sink, SINKS[sink_kind(env)])
        wait_for(sink, "errors", 20, seconds=30)
    assert elapsed < 5, f"20 calls took {elapsed:.1f} s"
    assert sorted(local_records(tmp_path / "store")) == sorted(sent)  # every record written
    assert sink.stats == {"queued": 20, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 20}
    problems = [
        r.getMessage() for r in caplog.records if r.name == "llmops.tracing" and r.levelno >= 30
    ]
    if export == "otlp-child":  # the child logs to the gateway's stderr
        problems = [line for line in capfd.readouterr().err.splitlines() if "trace" in line]
    assert len(problems) == 1, problems
    assert ("unavailable" if export == "mlflow" else "did not take") in problems[0]
    assert "Calls are not affected" in problems[0]


def test_a_full_queue_drops_and_counts(mlflow_env: dict[str, str]) -> None:
    settings = TraceSettings(
        tracking_uri=mlflow_env["MLFLOW_TRACKING_URI"],
        experiment_name=f"queue-{uuid.uuid4().hex[:8]}",
        queue_records=2,
    )
    sink = MlflowTraceSink(settings)
    record = {"request_id": "r", "received_at": "2026-01-01T00:00:00.000000Z", "status": 200}
    sink([record] * 5)  # one batch: two fit, the rest is dropped, nothing blocks
    sink.close(timeout=60)
    sink([record])  # closed
    assert sink.stats == {"queued": 2, "dropped": 4, "sampled_out": 0, "traced": 2, "errors": 0}


def test_sampling_keeps_every_failure_and_a_share_of_the_rest() -> None:
    calls = [{"trace_id": f"{random.getrandbits(128):032x}", "status": 200} for _ in range(4000)]
    assert 800 < sum(sampled(call, 0.25) for call in calls) < 1200
    assert sampled({"trace_id": "f" * 32, "status": 502}, 0.0)
    assert sampled({"trace_id": "f" * 32, "status": 200, "error": {"code": "x"}}, 0.0)
    sink = MlflowTraceSink(TraceSettings(sample=0.0))
    sink(calls[:10])  # nothing to trace: no worker, no MLflow
    assert sink.stats["sampled_out"] == 10 and sink.stats["queued"] == 0
    assert sink.flush(timeout=0)


def test_tracing_off_and_on() -> None:
    assert build_sinks(Settings.from_env({"LLMOPS_TRACING": "off"}).traces) == []
    [sink] = build_sinks(Settings.from_env({}).traces)
    assert isinstance(sink, MlflowTraceSink)
    assert sink.settings.tracking_uri == "sqlite:///.llmops/mlflow.db"
    assert sink.settings.experiment_name == "llmops-gateway"
    databricks = Settings.from_env(
        {
            "MLFLOW_TRACKING_URI": "databricks",
            "MLFLOW_EXPERIMENT_NAME": "/Shared/llmops-gateway",
            "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=secret-ish",
        }
    ).traces
    assert databricks.metrics and "secret-ish" not in repr(databricks)
    for bad, name in (
        ({"MLFLOW_TRACKING_URI": "databricks"}, "MLFLOW_EXPERIMENT_NAME"),
        ({"LLMOPS_TRACE_SAMPLE": "2"}, "LLMOPS_TRACE_SAMPLE"),
        ({"LLMOPS_TRACING": "maybe"}, "LLMOPS_TRACING"),
    ):
        with pytest.raises(SettingsError, match=name):
            Settings.from_env(bad)


def test_trace_of_a_rejected_call_has_no_usage_and_an_error() -> None:
    parts = trace_parts(
        {
            "request_id": "r1",
            "trace_id": CALLER_TRACE,
            "received_at": "2026-01-01T00:00:00.000001Z",
            "done_at": "2026-01-01T00:00:00.250001Z",
            "status": 401,
            "consumer": None,
            "model": None,
            "error": {"type": "invalid_request_error", "code": "invalid_api_key", "message": "x"},
            "request": {"params": {"model": "gpt-4o"}},
            "response": None,
        }
    )
    assert parts.end_ns - parts.start_ns == 250_000_000
    assert parts.name == "chat" and "mlflow.chat.tokenUsage" not in parts.attributes
    assert parts.error is not None and "invalid_api_key" in parts.error
    assert parts.tags == {
        "llmops.request_id": "r1",
        "llmops.trace_id": CALLER_TRACE,
        "llmops.status": "401",
        "llmops.error_code": "invalid_api_key",
    }
    assert parts.otel_trace_id == int(CALLER_TRACE, 16) and parts.metadata == {}
