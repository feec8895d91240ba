"""The retraining trigger: a request blob in Azurite, the blob function called as the host
would, the real databricks-sdk against a fake workspace on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from azure.functions.blob import InputStream
from azure.storage.blob import BlobServiceClient

from llmops.retrain.trigger import RetrainFailed, idempotency_token
from tests.fakes.azurite import Azurite
from tests.fakes.databricks import FakeDatabricks
from tests.integration.test_function_app import functions

pytestmark = pytest.mark.integration
JOB_ID = 123
REQUEST = {
    "reason": "dataset drift in 2 consecutive windows",
    "requested_by": "drift-monitor",
    "dataset": {"container": "request-logs", "prefixes": ["v1/date=2026-11-22/hour=13/"]},
    "job_parameters": {"epochs": 2, "dry_run": True},
}


@pytest.fixture(scope="module")
def azurite() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


@pytest.fixture
def databricks() -> Iterator[FakeDatabricks]:
    with FakeDatabricks(jobs={JOB_ID: "retrain-llm"}) as fake:
        yield fake


@pytest.fixture
def configured(
    azurite: Azurite, databricks: FakeDatabricks, monkeypatch: pytest.MonkeyPatch
) -> BlobServiceClient:
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AzureWebJobsStorage", azurite.connection_string)
    monkeypatch.setenv("DATABRICKS_HOST", databricks.host)
    monkeypatch.setenv("DATABRICKS_TOKEN", databricks.token)
    monkeypatch.setenv("LLMOPS_RETRAIN_JOB_ID", str(JOB_ID))
    monkeypatch.setenv("LLMOPS_RETRAIN_TIMEOUT_S", "3")
    monkeypatch.setenv("LLMOPS_RETRAIN_ATTEMPTS", "2")
    return BlobServiceClient.from_connection_string(azurite.connection_string)


@dataclass(frozen=True)
class Blob:
    name: str
    content: bytes
    etag: str


def upload(service: BlobServiceClient, content: bytes) -> Blob:
    """A request blob in Azurite."""
    name = f"req-{uuid.uuid4().hex[:8]}.json"
    container = service.get_container_client("retrain-requests")
    if not container.exists():
        container.create_container()
    result = container.get_blob_client(name).upload_blob(content)
    return Blob(name, content, result["etag"])


def invoke(blob: Blob) -> None:
    """Call the blob function with the stream the Functions worker would build for it."""
    stream = InputStream(
        data=blob.content,
        name=f"retrain-requests/{blob.name}",
        length=len(blob.content),
        blob_properties={"ETag": blob.etag, "Length": len(blob.content)},
    )
    asyncio.run(functions()["retrain_request"].get_user_function()(stream))


def run_record(service: BlobServiceClient, name: str) -> dict[str, Any]:
    blob = service.get_container_client("retrain-runs").download_blob(f"{name}.json")
    value: dict[str, Any] = json.loads(blob.readall())
    return value


def test_a_request_starts_one_run_however_often_the_trigger_fires(
    configured: BlobServiceClient, databricks: FakeDatabricks
) -> None:
    blob = upload(configured, json.dumps(REQUEST).encode())

    invoke(blob)
    invoke(blob)  # blob triggers are at-least-once

    started = databricks.calls("run-now")
    assert len(started) == 2 and len(databricks.runs) == 1
    tokens = {call.body["idempotency_token"] for call in started}
    assert len(tokens) == 1 and len(tokens.pop()) == 64
    body = started[0].body
    assert body["job_id"] == JOB_ID
    assert body["job_parameters"]["epochs"] == "2"
    assert body["job_parameters"]["dry_run"] == "true"
    assert body["job_parameters"]["llmops_request"] == blob.name
    assert json.loads(body["job_parameters"]["llmops_dataset"]) == REQUEST["dataset"]
    record = run_record(configured, blob.name)
    assert record["state"] == "started"
    assert record["run_id"] == databricks.runs[0].run_id
    assert record["run_page_url"].startswith(databricks.host)
    assert record["databricks"]["life_cycle_state"] in ("PENDING", "RUNNING", "QUEUED")
    assert record["idempotency_token"] == idempotency_token(blob.name, blob.etag)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'["a list"]', "must be a JSON object"),
        (json.dumps({"dataset": {"container": "x"}}).encode(), "`reason` is required"),
        (json.dumps({"reason": "drift"}).encode(), "`dataset` is required"),
        (
            json.dumps(
                {"reason": "drift", "dataset": {"a": 1}, "job_parameters": {"x": [1]}}
            ).encode(),
            "`job_parameters.x` must be a string, number or boolean",
        ),
    ],
)
def test_bad_requests_are_rejected_once_and_not_retried(
    configured: BlobServiceClient, databricks: FakeDatabricks, content: bytes, reason: str
) -> None:
    blob = upload(configured, content)

    invoke(blob)  # no exception: the host must not retry it

    record = run_record(configured, blob.name)
    assert record["state"] == "rejected"
    assert reason in record["reason"]
    assert databricks.calls("run-now") == []


def test_throttling_is_waited_out(
    configured: BlobServiceClient, databricks: FakeDatabricks
) -> None:
    databricks.fail_next("run-now", status=429, retry_after=1, times=1)
    blob = upload(configured, json.dumps(REQUEST).encode())

    invoke(blob)

    assert run_record(configured, blob.name)["state"] == "started"
    assert len(databricks.calls("run-now")) == 2


def test_persistent_5xx_fails_the_invocation_then_a_retry_starts_the_run(
    configured: BlobServiceClient, databricks: FakeDatabricks
) -> None:
    databricks.fail_next("run-now", status=500, times=2)
    blob = upload(configured, json.dumps(REQUEST).encode())

    with pytest.raises(RetrainFailed):
        invoke(blob)  # the host's retry (and poison) handling takes over
    assert run_record(configured, blob.name)["state"] == "retrying"

    invoke(blob)  # the host's retry, Databricks healthy again
    assert run_record(configured, blob.name)["state"] == "started"
    tokens = {call.body["idempotency_token"] for call in databricks.calls("run-now")}
    assert len(tokens) == 1


def test_an_unknown_job_is_recorded_with_databricks_message(
    configured: BlobServiceClient, databricks: FakeDatabricks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOPS_RETRAIN_JOB_ID", "999")
    blob = upload(configured, json.dumps(REQUEST).encode())

    invoke(blob)

    record = run_record(configured, blob.name)
    assert record["state"] == "failed"
    assert "Job 999 does not exist." in record["reason"]


def test_a_wrong_token_is_recorded_not_retried(
    configured: BlobServiceClient, databricks: FakeDatabricks, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABRICKS_TOKEN", "dapi-wrong")
    blob = upload(configured, json.dumps(REQUEST).encode())

    invoke(blob)

    record = run_record(configured, blob.name)
    assert record["state"] == "failed"
    assert "PermissionDenied" in record["reason"]
    assert "dapi-wrong" not in json.dumps(record)
    assert len(databricks.calls("run-now")) == 1


def test_cli_submit_then_status(
    databricks: FakeDatabricks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    request = tmp_path / "manual.json"
    request.write_text(json.dumps(REQUEST))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABRICKS_", "ARM_"))},
        "DATABRICKS_HOST": databricks.host,
        "DATABRICKS_TOKEN": databricks.token,
        "LLMOPS_RETRAIN_JOB_ID": str(JOB_ID),
        "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store"),
    }
    llmops = str(Path(sys.executable).parent / "llmops")

    submitted = subprocess.run(
        [llmops, "retrain", "submit", str(request)], env=env, capture_output=True, text=True
    )
    assert submitted.returncode == 0, submitted.stderr
    record = json.loads(submitted.stdout)
    assert record["state"] == "started"
    assert (tmp_path / "store" / "retrain-requests" / "manual.json").exists()

    databricks.finish(record["run_id"], "SUCCESS")
    status = subprocess.run(
        [llmops, "retrain", "status", "manual.json"], env=env, capture_output=True, text=True
    )
    assert status.returncode == 0, status.stderr
    refreshed = json.loads(status.stdout)
    assert refreshed["databricks"]["result_state"] == "SUCCESS"
    stored = json.loads((tmp_path / "store" / "retrain-runs" / "manual.json.json").read_text())
    assert stored["databricks"]["result_state"] == "SUCCESS"

    # Databricks refusing the status call: a one-line message and exit 1, no traceback
    databricks.fail_next("runs/get", status=403)
    refused = subprocess.run(
        [llmops, "retrain", "status", "manual.json"], env=env, capture_output=True, text=True
    )
    assert refused.returncode == 1
    assert refused.stderr.startswith("llmops retrain: Databricks: ")
    assert "Traceback" not in refused.stderr


def test_failures_are_counted_for_the_alert_rule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`llmops.retrain.failures` {reason}, which infra's alert rule watches."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from llmops.retrain.trigger import RetrainTrigger
    from llmops.settings import Settings

    monkeypatch.delenv("LLMOPS_RETRAIN_JOB_ID", raising=False)
    reader = InMemoryMetricReader()
    trigger = RetrainTrigger(
        Settings.from_env(), meter=MeterProvider(metric_readers=[reader]).get_meter("test")
    )

    async def go() -> None:
        await trigger.handle("bad.json", b"{oops", None)
        await trigger.handle("good.json", json.dumps(REQUEST).encode(), None)  # no job set
        await trigger.aclose()

    asyncio.run(go())
    data = reader.get_metrics_data()
    assert data is not None
    points = [
        (dict(point.attributes), point.value)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "llmops.retrain.failures"
        for point in metric.data.data_points
    ]
    assert sorted(points, key=str) == [
        ({"reason": "not_configured"}, 1),
        ({"reason": "rejected"}, 1),
    ]
