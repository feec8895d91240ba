"""OpenTelemetry metrics from request-log records, read back with an in-memory reader on a
private meter provider: no global OpenTelemetry state is set or leaks between tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from llmops.settings import TraceSettings
from llmops.tracing import build_sinks
from llmops.tracing.metrics import DeferredMetricsSink, MetricsSink, build_meter

pytestmark = pytest.mark.unit


def record(**fields: Any) -> dict[str, Any]:
    """A request-log record (the fields the metrics read), overridable."""
    base: dict[str, Any] = {
        "request_id": "req",
        "model": "gpt-4o",
        "deployment": "gpt4o-east",
        "consumer": "team-a",
        "stream": False,
        "status": 200,
        "latency_ms": 120.0,
        "ttft_ms": 80.0,
        "error": None,
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
            "cached_tokens": None,
            "estimated": False,
        },
    }
    return {**base, **fields}


@pytest.fixture
def provider() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield meter_provider, reader
    meter_provider.shutdown()


@pytest.fixture
def reader(provider: tuple[MeterProvider, InMemoryMetricReader]) -> InMemoryMetricReader:
    return provider[1]


@pytest.fixture
def sink(provider: tuple[MeterProvider, InMemoryMetricReader]) -> MetricsSink:
    return MetricsSink(provider[0].get_meter("test"))


def points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    """Data points by instrument name."""
    data = reader.get_metrics_data()
    result: dict[str, list[Any]] = {}
    if data is None:
        return result
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                result.setdefault(metric.name, []).extend(metric.data.data_points)
    return result


def by(points: list[Any], **attributes: Any) -> list[Any]:
    return [p for p in points if all(p.attributes.get(k) == v for k, v in attributes.items())]


def test_duration_and_ttft_histograms(sink: MetricsSink, reader: InMemoryMetricReader) -> None:
    sink([record(latency_ms=100.0), record(latency_ms=300.0, ttft_ms=None), record(status=502)])
    found = points(reader)
    [ok] = by(found["llmops.gateway.duration"], status_class="2xx")
    assert (ok.count, ok.sum, ok.min, ok.max) == (2, 400.0, 100.0, 300.0)
    assert dict(ok.attributes) == {
        "model": "gpt-4o",
        "deployment": "gpt4o-east",
        "consumer": "team-a",
        "stream": False,
        "status_class": "2xx",
    }
    [failed] = by(found["llmops.gateway.duration"], status_class="5xx")
    assert (failed.count, failed.sum) == (1, 120.0)
    [ttft] = found["llmops.gateway.ttft"]
    assert (ttft.count, ttft.sum) == (2, 160.0)  # the call without a first byte has no ttft


def test_tokens_by_model_consumer_and_kind(sink: MetricsSink, reader: InMemoryMetricReader) -> None:
    estimated = {"prompt_tokens": 5, "completion_tokens": 3, "estimated": True}
    sink(
        [
            record(),
            record(),
            record(consumer="team-b", model="gpt-4o-mini"),
            record(usage=estimated),
            record(usage=None, status=401, consumer=None),
        ]
    )
    tokens = points(reader)["llmops.gateway.tokens"]
    [prompt_a] = by(tokens, model="gpt-4o", consumer="team-a", kind="prompt", estimated=False)
    [completion_a] = by(
        tokens, model="gpt-4o", consumer="team-a", kind="completion", estimated=False
    )
    assert (prompt_a.value, completion_a.value) == (22, 14)
    [prompt_b] = by(tokens, model="gpt-4o-mini", consumer="team-b", kind="prompt")
    assert prompt_b.value == 11
    [guess] = by(tokens, consumer="team-a", kind="prompt", estimated=True)
    assert guess.value == 5
    assert sum(p.value for p in tokens) == 22 + 14 + 11 + 7 + 5 + 3


def test_errors_by_type_and_code(sink: MetricsSink, reader: InMemoryMetricReader) -> None:
    limit = {"type": "rate_limit_error", "code": "rate_limit_exceeded", "message": "slow down"}
    auth = {"type": "invalid_request_error", "code": "invalid_api_key", "message": "no"}
    sink(
        [
            record(),
            record(status=429, error=limit),
            record(status=429, error=limit),
            record(status=401, error=auth, consumer=None, model=None, usage=None),
        ]
    )
    errors = points(reader)["llmops.gateway.errors"]
    [limited] = by(errors, **{"error.type": "rate_limit_error"})
    assert limited.value == 2
    assert dict(limited.attributes) == {
        "error.type": "rate_limit_error",
        "error.code": "rate_limit_exceeded",
        "model": "gpt-4o",
        "consumer": "team-a",
        "status_class": "4xx",
    }
    [rejected] = by(errors, **{"error.code": "invalid_api_key"})
    assert (rejected.value, rejected.attributes["consumer"], rejected.attributes["model"]) == (
        1,
        "none",
        "none",
    )


def test_a_malformed_record_is_skipped(sink: MetricsSink, reader: InMemoryMetricReader) -> None:
    sink([{"latency_ms": "not a number"}, record()])
    assert by(points(reader)["llmops.gateway.duration"], status_class="2xx")[0].count == 1


def test_deferred_sink_keeps_records_until_the_meter_is_ready(
    provider: tuple[MeterProvider, InMemoryMetricReader],
) -> None:
    meter_provider, reader = provider
    gate = time.monotonic() + 0.3

    def slow_build() -> Any:
        time.sleep(max(0.0, gate - time.monotonic()))  # as configure_azure_monitor takes time
        return meter_provider.get_meter("test")

    deferred = DeferredMetricsSink(slow_build)
    deferred([record(), record()])  # returns at once: the meter is not ready
    assert deferred.flush(timeout=5)
    deferred([record()])
    [duration] = points(reader)["llmops.gateway.duration"]
    assert duration.count == 3 and deferred.stats == {"recorded": 3, "dropped": 0}


def test_without_application_insights_there_is_no_meter_and_no_sink() -> None:
    settings = TraceSettings(enabled=False)
    assert build_meter(settings) is None
    assert build_sinks(settings) == []
    # Nothing here configured OpenTelemetry globally.
    assert not isinstance(metrics.get_meter_provider(), MeterProvider)


def test_an_entra_authentication_string_gives_the_exporter_a_managed_identity() -> None:
    """Application Insights with local auth off (infra/) takes only Entra ID tokens: the
    exporter must get a credential for the app's user-assigned identity."""
    from azure.identity import ManagedIdentityCredential

    from llmops.tracing.metrics import entra_credential

    assert entra_credential(None) is None
    assert entra_credential("") is None
    assert entra_credential("Authorization=Key") is None
    credential = entra_credential("ClientId=1111-2222;Authorization=AAD")
    assert isinstance(credential, ManagedIdentityCredential)
    # the IMDS request names the identity (azure-identity keeps it in its request's query)
    inner = credential._credential
    assert "1111-2222" in repr(vars(inner._client)) or "1111-2222" in repr(vars(inner))
    system = entra_credential("Authorization=aad")
    assert isinstance(system, ManagedIdentityCredential)
