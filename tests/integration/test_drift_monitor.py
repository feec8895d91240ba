"""The drift use case against real stores: a local folder, Azurite, a real MLflow store."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from llmops.drift.metrics import DriftMetrics
from llmops.drift.monitor import DriftMonitor, DriftRun, report_name
from llmops.drift.schedule import Window
from llmops.logs.store import LocalStore, store_for
from llmops.settings import REPORT_CONTAINER, RETRAIN_REQUESTS_CONTAINER, Settings
from tests.fakes.azurite import Azurite
from tests.fakes.records import make_record, traffic, write_records

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)
# A fixed clock: the top of an hour, so the hourly windows are round.
NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)


def settings(**env: str) -> Settings:
    import os

    return Settings.from_env({**os.environ, "LLMOPS_DRIFT_REFERENCE_HOURS": "24", **env})


def run(monitor: DriftMonitor, window: Window) -> DriftRun:
    async def go() -> DriftRun:
        try:
            return await monitor.run_window(window)
        finally:
            await monitor.aclose()

    return asyncio.run(go())


def seed_store(
    config: Settings, *, shifted_hours: int, total_hours: int = 27, per_hour: int = 60
) -> None:
    """`total_hours` of traffic up to NOW; the last `shifted_hours` of it shifted."""

    async def go() -> None:
        store = store_for(config.logs)
        records: list[dict[str, Any]] = []
        for hour in range(total_hours, 0, -1):
            start = NOW - hour * HOUR
            shifted = hour <= shifted_hours
            records += traffic(start, start + HOUR, per_hour, shifted=shifted, seed=hour)
        await write_records(store, records)
        await store.aclose()

    asyncio.run(go())


def read_json(store_dir: Path, container: str, name: str) -> dict[str, Any]:
    value: dict[str, Any] = orjson.loads((store_dir / container / name).read_bytes())
    return value


def test_shifted_traffic_drifts_and_the_report_names_why(tmp_path: Path) -> None:
    config = settings()
    seed_store(config, shifted_hours=1)
    current = Window(NOW - HOUR, NOW)

    result = run(DriftMonitor(config), current)

    report = read_json(tmp_path / "store", REPORT_CONTAINER, report_name(current))
    assert report == orjson.loads(orjson.dumps(result.report))
    assert report["summary"]["dataset_drift"] is True
    drifted = set(report["summary"]["drifted"])
    assert {"latency_ms", "model", "consumer", "prompt_chars", "prompt_text"} <= drifted
    assert report["windows"]["current"]["records"] == 60
    assert report["windows"]["reference"]["records"] == 24 * 60
    assert report["windows"]["reference"]["kind"] == "rolling"
    assert report["windows"]["reference"]["start"] == "2026-11-21T13:00:00Z"
    evidence = report["text_evidence"]
    assert any(
        term["term"] in ("outage", "refund", "incident") for term in evidence["current_terms"]
    )
    assert report["rates"]["error_rate"]["current"] > report["rates"]["error_rate"]["reference"]
    page = (tmp_path / "store" / REPORT_CONTAINER / report_name(current, "html")).read_text()
    assert "Traffic drifted" in page and "outage" in page


def test_same_traffic_does_not_drift_and_nothing_is_requested(tmp_path: Path) -> None:
    config = settings()
    seed_store(config, shifted_hours=0)

    result = run(DriftMonitor(config), Window(NOW - HOUR, NOW))

    assert result.report["summary"]["verdict"] == "no drift"
    assert result.report["summary"]["features_drifted"] <= 2
    assert result.retrain_request is None
    assert not (tmp_path / "store" / RETRAIN_REQUESTS_CONTAINER).exists()


def test_a_rerun_of_a_window_overwrites_its_report(tmp_path: Path) -> None:
    config = settings()
    seed_store(config, shifted_hours=1)
    current = Window(NOW - HOUR, NOW)

    first = run(DriftMonitor(config), current)
    second = run(DriftMonitor(config), current)

    reports = sorted(p.name for p in (tmp_path / "store" / REPORT_CONTAINER / "reports").iterdir())
    assert reports == [f"{current.id}.html", f"{current.id}.json"]
    assert first.report["features"] == second.report["features"]


def test_corrupt_lines_and_unknown_schemas_are_counted_not_fatal(tmp_path: Path) -> None:
    config = settings()
    seed_store(config, shifted_hours=1)
    rng = random.Random(3)
    future = make_record(NOW - HOUR / 2, rng)
    future["schema_version"] = 99
    store = LocalStore(tmp_path / "store", "request-logs")
    asyncio.run(
        store.put(
            "v1/date=2026-11-22/hour=13/broken-0000000001.jsonl",
            b'{"truncated": \n[1, 2]\nnot json at all\n' + orjson.dumps(future) + b"\n",
        )
    )

    result = run(DriftMonitor(config), Window(NOW - HOUR, NOW))

    current = result.report["windows"]["current"]
    assert current["corrupt_lines"] == 3
    assert current["unknown_schema"] == 1
    assert current["records"] == 60
    assert result.report["summary"]["dataset_drift"] is True


def test_too_little_traffic_is_not_enough_data(tmp_path: Path) -> None:
    config = settings(LLMOPS_DRIFT_MIN_SAMPLES="100")
    seed_store(config, shifted_hours=1, per_hour=50)

    result = run(DriftMonitor(config), Window(NOW - HOUR, NOW))

    summary = result.report["summary"]
    assert summary["verdict"] == "not enough data"
    assert summary["dataset_drift"] is False
    assert "latency_ms" in summary["not_enough_data"]


def test_pinned_baseline_is_the_reference(tmp_path: Path) -> None:
    config = settings(LLMOPS_DRIFT_BASELINE="2026-11-21T14:00Z/2026-11-21T20:00Z")
    seed_store(config, shifted_hours=1)

    result = run(DriftMonitor(config), Window(NOW - HOUR, NOW))

    reference = result.report["windows"]["reference"]
    assert reference["kind"] == "pinned"
    assert (reference["start"], reference["end"]) == (
        "2026-11-21T14:00:00Z",
        "2026-11-21T20:00:00Z",
    )
    assert reference["records"] == 6 * 60


def test_sustained_drift_writes_one_retraining_request(tmp_path: Path) -> None:
    config = settings(LLMOPS_RETRAIN_AFTER="2", LLMOPS_RETRAIN_COOLDOWN="24")
    seed_store(config, shifted_hours=3)
    requests = tmp_path / "store" / RETRAIN_REQUESTS_CONTAINER
    windows = [Window(NOW - k * HOUR, NOW - (k - 1) * HOUR) for k in (3, 2, 1)]

    first = run(DriftMonitor(config), windows[0])
    assert first.report["retraining"]["consecutive"] == 1
    assert first.retrain_request is None and not requests.exists()

    second = run(DriftMonitor(config), windows[1])
    assert second.report["retraining"]["consecutive"] == 2
    assert second.retrain_request == f"drift-{windows[1].id}.json"
    request = orjson.loads((requests / second.retrain_request).read_bytes())
    assert request["reason"] == "dataset drift in 2 consecutive windows"
    assert request["windows"]["current"] == windows[1].describe()
    assert request["reports"]["json"] == report_name(windows[1])
    assert request["dataset"]["container"] == "request-logs"
    assert request["dataset"]["prefixes"] == ["v1/date=2026-11-22/hour=12/"]
    written = (requests / second.retrain_request).stat().st_mtime_ns

    third = run(DriftMonitor(config), windows[2])  # still drifting, inside the cooldown
    assert third.retrain_request is None
    assert "within the cooldown" in third.report["retraining"]["skipped"]

    rerun = run(DriftMonitor(config), windows[1])  # the same window again: not rewritten
    assert rerun.retrain_request == second.retrain_request
    assert (requests / second.retrain_request).stat().st_mtime_ns == written
    assert sorted(p.name for p in requests.iterdir()) == [second.retrain_request]


def test_gauges_for_the_alert_rules(tmp_path: Path) -> None:
    config = settings()
    seed_store(config, shifted_hours=1)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = DriftMetrics(provider.get_meter("test"))

    result = run(DriftMonitor(config, metrics=metrics), Window(NOW - HOUR, NOW))

    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    assert [p.value for p in points["llmops.drift.detected"]] == [1]
    scores = {p.attributes["feature"]: p for p in points["llmops.drift.score"]}
    assert set(scores) == {f["name"] for f in result.report["features"] if f["score"] is not None}
    assert dict(scores["latency_ms"].attributes) == {"feature": "latency_ms"}  # nothing stale
    drifted = {p.attributes["feature"]: p.value for p in points["llmops.drift.feature_drifted"]}
    assert drifted["latency_ms"] == 1
    assert drifted == {
        f["name"]: int(f["drift"]) for f in result.report["features"] if f["score"] is not None
    }
    assert scores["latency_ms"].value == pytest.approx(
        next(f["score"] for f in result.report["features"] if f["name"] == "latency_ms")
    )
    error_rate = result.report["rates"]["error_rate"]["current"]
    assert [p.value for p in points["llmops.drift.error_rate"]] == [pytest.approx(error_rate)]
    assert points["llmops.drift.latency_p95_ms"][0].value > 700


def test_mlflow_run_per_window_read_back(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = settings(LLMOPS_TRACING="on", MLFLOW_TRACKING_URI=uri)
    seed_store(config, shifted_hours=1)
    current = Window(NOW - HOUR, NOW)

    first = run(DriftMonitor(config), current)
    run(DriftMonitor(config), current)  # a rerun logs into the same run

    assert first.problems == []
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("llmops-drift")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    logged = runs[0]
    assert logged.info.run_name == current.id
    assert logged.data.tags["llmops.verdict"] == "drift"
    assert logged.data.metrics["dataset_drift"] == 1.0
    assert logged.data.metrics["latency_ms.drift"] == 1.0
    assert logged.data.params["reference_kind"] == "rolling"
    artifacts = {a.path for a in client.list_artifacts(logged.info.run_id)}
    assert artifacts == {"report.json", "report.html"}
    assert not (Path.cwd() / "mlruns").exists()


def test_unreachable_mlflow_does_not_fail_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.fakes.azurite import free_port

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    config = settings(LLMOPS_TRACING="on", MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    seed_store(config, shifted_hours=1)
    current = Window(NOW - HOUR, NOW)

    result = run(DriftMonitor(config), current)

    assert result.problems and result.problems[0].startswith("mlflow:")
    assert (tmp_path / "store" / REPORT_CONTAINER / report_name(current)).exists()


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


def test_reports_in_blob_storage(azurite: Azurite, tmp_path: Path) -> None:
    from azure.storage.blob import BlobServiceClient

    container = f"logs-{uuid.uuid4().hex[:10]}"
    config = settings(AzureWebJobsStorage=azurite.connection_string, LLMOPS_LOG_CONTAINER=container)
    seed_store(config, shifted_hours=2)
    windows = [Window(NOW - 2 * HOUR, NOW - HOUR), Window(NOW - HOUR, NOW)]

    results = [run(DriftMonitor(config), window) for window in windows]

    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    reports = service.get_container_client(REPORT_CONTAINER)
    html = reports.get_blob_client(report_name(windows[1], "html"))
    assert html.get_blob_properties().content_settings.content_type.startswith("text/html")
    report = orjson.loads(reports.download_blob(report_name(windows[1])).readall())
    assert report["summary"]["dataset_drift"] is True
    assert report["windows"]["current"]["records"] == 60
    assert results[1].retrain_request is not None
    request = service.get_container_client(RETRAIN_REQUESTS_CONTAINER).download_blob(
        results[1].retrain_request
    )
    assert orjson.loads(request.readall())["dataset"]["container"] == container
    assert not (tmp_path / "store").exists()  # nothing went to the local folder
