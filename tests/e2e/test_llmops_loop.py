"""The whole LLMOps loop on one machine: Azurite, a local MLflow store, a fake Databricks.

Shifted traffic -> two drift runs -> a retraining request in Blob Storage -> the blob function
(invoked twice, as an at-least-once trigger may) starts exactly one Databricks run -> the job
registers version 2 and moves @champion -> the gateway serves version 2 within the TTL, and
the request log says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from azure.functions.blob import InputStream
from azure.storage.blob import BlobServiceClient

from jobs.retrain_job import main as retrain_job
from llmops.drift.monitor import DriftMonitor
from llmops.drift.schedule import Window
from llmops.logs.store import store_for
from llmops.settings import Settings
from tests.conftest import GATEWAY_KEYS
from tests.fakes.azurite import Azurite
from tests.fakes.databricks import FakeDatabricks
from tests.fakes.records import traffic, write_records
from tests.fakes.served import sdk_client, served_gateway
from tests.fakes.upstream import FakeUpstream
from tests.integration.test_function_app import functions

pytestmark = pytest.mark.e2e
HOUR = timedelta(hours=1)


@pytest.fixture
def azurite() -> Iterator[Azurite]:
    with Azurite() as emulator:
        yield emulator


def test_drift_to_retraining_to_a_new_version_served(
    azurite: Azurite,
    fake_upstream: FakeUpstream,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)  # the local MLflow store's artifacts
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_")):
            monkeypatch.delenv(name)
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    model = ["--tracking-uri", mlflow_uri, "--model", "support-bot"]
    assert retrain_job([*model, "--deployment", "dep-v1", "--system-prompt", "v1"]) == 0

    with FakeDatabricks(jobs={77: "retrain-support-bot"}) as databricks:
        env = {
            "AzureWebJobsStorage": azurite.connection_string,
            "LLMOPS_DRIFT_REFERENCE_HOURS": "24",
            "LLMOPS_RETRAIN_AFTER": "2",
            "DATABRICKS_HOST": databricks.host,
            "DATABRICKS_TOKEN": databricks.token,
            "LLMOPS_RETRAIN_JOB_ID": "77",
            "MLFLOW_TRACKING_URI": mlflow_uri,
            "LLMOPS_REGISTRY_MODELS": "support-bot=models:/support-bot@champion",
            "LLMOPS_REGISTRY_TTL_S": "0.5",
            "AZURE_OPENAI_ENDPOINT": fake_upstream.url,
            "AZURE_OPENAI_API_KEY": fake_upstream.api_key,
            "LLMOPS_API_KEYS": GATEWAY_KEYS,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = Settings.from_env()

        # 1. A day of usual traffic, then two hours of shifted traffic.
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        history = traffic(now - 26 * HOUR, now - 2 * HOUR, 1200, seed=1)
        history += traffic(now - 2 * HOUR, now, 240, shifted=True, seed=2)

        async def seed() -> None:
            store = store_for(settings.logs)
            await write_records(store, history)
            await store.aclose()

        asyncio.run(seed())

        # 2. The drift monitor runs for the two shifted hours.
        async def drift() -> list[Any]:
            runs = []
            for k in (2, 1):
                monitor = DriftMonitor(settings)
                runs.append(await monitor.run_window(Window(now - k * HOUR, now - (k - 1) * HOUR)))
                await monitor.aclose()
            return runs

        first, second = asyncio.run(drift())
        assert first.retrain_request is None
        assert second.retrain_request is not None

        # 3. The retraining request is in Blob Storage; the trigger fires twice for it.
        service = BlobServiceClient.from_connection_string(azurite.connection_string)
        blob = service.get_container_client("retrain-requests").get_blob_client(
            second.retrain_request
        )
        content, etag = blob.download_blob().readall(), blob.get_blob_properties().etag
        function = functions()["retrain_request"].get_user_function()
        for _ in range(2):
            stream = InputStream(
                data=content,
                name=f"retrain-requests/{second.retrain_request}",
                length=len(content),
                blob_properties={"ETag": etag},
            )
            asyncio.run(function(stream))
        assert len(databricks.runs) == 1  # one run, however often the trigger fired
        run = databricks.runs[0]
        assert run.job_parameters["llmops_request"] == second.retrain_request
        outcome = json.loads(
            service.get_container_client("retrain-runs")
            .download_blob(f"{second.retrain_request}.json")
            .readall()
        )
        assert (outcome["state"], outcome["run_id"]) == ("started", run.run_id)

        # 4. The gateway serves @champion; the job registers version 2 and moves the alias.
        with served_gateway(env) as (url, _):
            client = sdk_client(url)

            def ask() -> None:
                client.chat.completions.create(
                    model="support-bot", messages=[{"role": "user", "content": "Still down?"}]
                )

            ask()
            assert fake_upstream.calls()[-1].deployment == "dep-v1"
            dataset = run.job_parameters["llmops_dataset"]
            job = [*model, "--deployment", "dep-v2", "--system-prompt", "v2"]
            assert retrain_job([*job, "--llmops_dataset", dataset]) == 0
            databricks.finish(run.run_id, "SUCCESS")
            deadline = time.monotonic() + 15
            while fake_upstream.calls()[-1].deployment != "dep-v2":
                assert time.monotonic() < deadline, "version 2 was not served within the TTL"
                time.sleep(0.2)
                ask()

        # 5. The request log names the version that answered each call.
        async def served_versions() -> list[str]:
            from llmops.logs.reader import WindowReader

            store = store_for(settings.logs)
            reader = WindowReader(store)
            start = datetime.now(UTC) - HOUR
            versions = [
                r["registry"]["version"]
                async for r in reader.records(start, datetime.now(UTC) + HOUR)
                if r.get("registry")
            ]
            await store.aclose()
            return versions

        versions = asyncio.run(served_versions())
        assert versions[0] == "1" and versions[-1] == "2"
