"""The fake Databricks workspace, proven against the real `databricks-sdk` (no network beyond it).

What these tests pin down about the SDK (0.156.0), for the retraining adapter:
- `Config()` GETs `/.well-known/databricks-config` (no auth) on construction; a 404 only logs
  a warning. With `auth_type="pat"` nothing else is called before the first API call.
- It retries by itself: 429 and 503 (sleeping Retry-After, default 1 s, plus up to 1 s of
  jitter), connection errors and read timeouts (1 s, 2 s, ... plus jitter), and a 500 only when
  its message contains one of a few transient phrases ("Unexpected error", ...). Everything
  else raises at once, 500/502/504 included. When `retry_timeout_seconds` runs out it raises
  the builtin `TimeoutError`, with the last error as `__cause__`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from databricks.sdk import WorkspaceClient
from databricks.sdk.config import Config
from databricks.sdk.errors import (
    BadRequest,
    DatabricksError,
    DeadlineExceeded,
    InternalError,
    InvalidParameterValue,
    NotFound,
    PermissionDenied,
    ResourceDoesNotExist,
    TooManyRequests,
    Unauthenticated,
)
from databricks.sdk.service.jobs import RunLifeCycleState, RunLifecycleStateV2State, RunResultState

from tests.fakes.azurite import free_port
from tests.fakes.databricks import FakeDatabricks

pytestmark = pytest.mark.integration
JOB_ID = 123
PARAMETERS = {"request": "retrain-requests/2024-06-01.json", "reason": "drift"}


@pytest.fixture(autouse=True)
def _no_databricks_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The SDK fills every attribute not passed from DATABRICKS_*/ARM_* variables and may read
    ~/.databrickscfg; a developer's own settings must not leak into these tests."""
    for name in list(os.environ):
        if name.startswith(("DATABRICKS_", "ARM_")) or name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
    monkeypatch.delenv("GOOGLE_CREDENTIALS", raising=False)
    monkeypatch.setenv("DATABRICKS_CONFIG_FILE", str(tmp_path / "no-databrickscfg"))


@pytest.fixture
def fake() -> Iterator[FakeDatabricks]:
    with FakeDatabricks(jobs={JOB_ID: "retrain-llm"}) as workspace:
        yield workspace


def client(
    fake: FakeDatabricks,
    *,
    token: str | None = None,
    retry_timeout_seconds: int = 5,
    http_timeout_seconds: float = 5,
) -> WorkspaceClient:
    """The construction the production adapter should use: everything explicit, PAT only."""
    return WorkspaceClient(
        config=Config(
            host=fake.host,
            token=token or fake.token,
            auth_type="pat",
            retry_timeout_seconds=retry_timeout_seconds,
            http_timeout_seconds=http_timeout_seconds,
            product="llmops",
            product_version="0.0.0-test",
        )
    )


def test_run_now_then_get_run_round_trip(fake: FakeDatabricks) -> None:
    w = client(fake)

    started = w.jobs.run_now(job_id=JOB_ID, job_parameters=PARAMETERS, idempotency_token="tok-1")
    run = w.jobs.get_run(started.run_id)

    assert started.response.run_id == started.run_id == started.response.number_in_job
    assert run.run_id == started.run_id and run.job_id == JOB_ID
    assert run.run_name == "retrain-llm" and run.creator_user_name == fake.user
    assert run.run_page_url == f"{fake.host}/?o={fake.workspace_id}#job/{JOB_ID}/run/{run.run_id}"
    assert run.state is not None and run.state.life_cycle_state == RunLifeCycleState.PENDING
    assert run.status is not None and run.status.state == RunLifecycleStateV2State.PENDING
    assert run.start_time and run.end_time == 0
    assert {p.name: p.value for p in run.job_parameters or []} == PARAMETERS

    (call,) = fake.calls("run-now")
    assert (call.method, call.path) == ("POST", "/api/2.2/jobs/run-now")
    assert call.body == {
        "job_id": JOB_ID,
        "job_parameters": PARAMETERS,
        "idempotency_token": "tok-1",
    }
    assert call.headers["authorization"] == f"Bearer {fake.token}"
    assert call.headers["x-databricks-workspace-id"] == fake.workspace_id  # from host metadata
    assert "llmops/0.0.0-test" in call.headers["user-agent"]
    assert [r.endpoint for r in fake.requests] == ["host-metadata", "run-now", "runs/get"]
    assert "authorization" not in fake.requests[0].headers


def test_plain_construction_also_works_offline(fake: FakeDatabricks) -> None:
    w = WorkspaceClient(host=fake.host, token=fake.token)

    run_id = w.jobs.run_now(job_id=JOB_ID).run_id

    assert w.jobs.get_run(run_id).job_id == JOB_ID
    assert w.current_user.me().user_name == fake.user
    assert {r.endpoint for r in fake.requests} == {"host-metadata", "run-now", "runs/get", "me"}


def test_a_workspace_without_host_metadata_is_fine() -> None:
    with FakeDatabricks(host_metadata=False) as fake:
        run_id = client(fake).jobs.run_now(job_id=JOB_ID).run_id

        assert fake.run(run_id).job_id == JOB_ID
        assert "x-databricks-workspace-id" not in fake.calls("run-now")[0].headers


def test_the_same_idempotency_token_starts_one_run(fake: FakeDatabricks) -> None:
    w = client(fake)

    first = w.jobs.run_now(job_id=JOB_ID, job_parameters=PARAMETERS, idempotency_token="blob-1")
    again = w.jobs.run_now(job_id=JOB_ID, job_parameters=PARAMETERS, idempotency_token="blob-1")
    other = w.jobs.run_now(job_id=JOB_ID, job_parameters=PARAMETERS, idempotency_token="blob-2")

    assert again.run_id == first.run_id != other.run_id
    assert [run.idempotency_token for run in fake.runs] == ["blob-1", "blob-2"]
    assert [c.body["idempotency_token"] for c in fake.calls("run-now")] == [
        "blob-1",
        "blob-1",
        "blob-2",
    ]


def test_idempotency_tokens_are_at_most_64_characters(fake: FakeDatabricks) -> None:
    w = client(fake)

    w.jobs.run_now(job_id=JOB_ID, idempotency_token="x" * 64)
    with pytest.raises(InvalidParameterValue, match="at most 64 characters"):
        w.jobs.run_now(job_id=JOB_ID, idempotency_token="x" * 65)
    assert len(fake.runs) == 1


def test_429_is_retried_after_retry_after(fake: FakeDatabricks) -> None:
    fake.fail_next("run-now", status=429, retry_after=1)

    run_id = client(fake).jobs.run_now(job_id=JOB_ID, idempotency_token="tok").run_id

    first, second = fake.calls("run-now")
    assert 1.0 <= second.at - first.at < 3.0  # Retry-After plus up to 1 s of jitter
    assert [run.run_id for run in fake.runs] == [run_id]


def test_503_is_retried_after_retry_after(fake: FakeDatabricks) -> None:
    run_id = client(fake).jobs.run_now(job_id=JOB_ID).run_id
    fake.fail_next("runs/get", status=503, retry_after=1)

    assert client(fake).jobs.get_run(run_id).run_id == run_id
    first, second = fake.calls("runs/get")
    assert 1.0 <= second.at - first.at < 3.0


def test_throttling_past_the_retry_timeout_raises_the_builtin_timeout_error(
    fake: FakeDatabricks,
) -> None:
    fake.fail_next("run-now", status=429, retry_after=1, times=5)

    with pytest.raises(TimeoutError) as caught:
        client(fake, retry_timeout_seconds=1).jobs.run_now(job_id=JOB_ID)

    assert isinstance(caught.value.__cause__, TooManyRequests)
    assert len(fake.calls("run-now")) == 1 and fake.runs == []


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (500, InternalError, "INTERNAL_ERROR"),
        (502, DatabricksError, "BAD_GATEWAY"),  # no class of its own: the base class
        (504, DeadlineExceeded, "DEADLINE_EXCEEDED"),
    ],
)
def test_other_5xx_are_not_retried(
    fake: FakeDatabricks, status: int, error: type[DatabricksError], code: str
) -> None:
    fake.fail_next("run-now", status=status)

    with pytest.raises(error) as caught:
        client(fake).jobs.run_now(job_id=JOB_ID)

    assert caught.value.error_code == code
    assert len(fake.calls("run-now")) == 1 and fake.runs == []


def test_a_500_saying_unexpected_error_is_retried(fake: FakeDatabricks) -> None:
    body = {"error_code": "INTERNAL_ERROR", "message": "Unexpected error. Please retry."}
    fake.fail_next("run-now", status=500, body=body)

    client(fake).jobs.run_now(job_id=JOB_ID)

    first, second = fake.calls("run-now")
    assert 1.0 <= second.at - first.at < 3.0  # the SDK's backoff: 1 s plus jitter
    assert len(fake.runs) == 1


def test_a_slow_answer_times_out_and_the_retry_finds_the_same_run(fake: FakeDatabricks) -> None:
    fake.fail_next("run-now", delay=1.5)  # the run starts, the answer comes too late

    w = client(fake, http_timeout_seconds=0.5)
    run_id = w.jobs.run_now(job_id=JOB_ID, idempotency_token="blob-1@etag-1").run_id

    assert len(fake.calls("run-now")) == 2
    assert [run.run_id for run in fake.runs] == [run_id]


def test_an_unreachable_workspace_fails_after_the_retry_timeout() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    w = WorkspaceClient(  # the host-metadata probe retries too, within the same budget
        config=Config(host=nowhere, token="dapi-x", auth_type="pat", retry_timeout_seconds=1)
    )
    built = time.monotonic()

    with pytest.raises(TimeoutError) as caught:
        w.jobs.run_now(job_id=JOB_ID)

    assert isinstance(caught.value.__cause__, requests.ConnectionError)
    assert 1.0 <= built - started < 3.0
    assert 1.0 <= time.monotonic() - built < 3.0


def test_an_unknown_job_is_a_bad_request_with_the_service_message(fake: FakeDatabricks) -> None:
    with pytest.raises(InvalidParameterValue) as caught:
        client(fake).jobs.run_now(job_id=999, idempotency_token="tok")

    assert isinstance(caught.value, BadRequest)
    assert str(caught.value) == "Job 999 does not exist."
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"
    assert len(fake.calls("run-now")) == 1 and fake.runs == []


def test_an_unknown_run_does_not_exist(fake: FakeDatabricks) -> None:
    with pytest.raises(ResourceDoesNotExist, match=r"^Run 5 does not exist\.$") as caught:
        client(fake).jobs.get_run(5)

    assert isinstance(caught.value, NotFound)  # the SDK remaps the service's 400 for runs/get
    assert caught.value.error_code == "INVALID_PARAMETER_VALUE"


def test_a_wrong_token_is_permission_denied_without_leaking_it(fake: FakeDatabricks) -> None:
    with pytest.raises(PermissionDenied, match="Invalid access token") as caught:
        client(fake, token="dapi-wrong-secret").jobs.run_now(job_id=JOB_ID)

    assert caught.value.error_code == 403
    assert "dapi-wrong-secret" not in str(caught.value)  # the SDK appends token=***
    assert len(fake.calls("run-now")) == 1 and fake.runs == []


def test_no_bearer_token_is_unauthenticated(fake: FakeDatabricks) -> None:
    anonymous = requests.get(f"{fake.host}/api/2.2/jobs/runs/get?run_id=1", timeout=5)
    assert anonymous.status_code == 401
    assert anonymous.json()["error_code"] == 401
    assert anonymous.json()["message"].startswith("Credential was not sent")

    basic = WorkspaceClient(
        config=Config(
            host=fake.host, username="u", password="p", auth_type="basic", retry_timeout_seconds=5
        )
    )
    with pytest.raises(Unauthenticated, match="Credential was not sent"):
        basic.jobs.get_run(1)


def test_a_run_moves_through_its_states(fake: FakeDatabricks) -> None:
    w = client(fake)
    run_id = w.jobs.run_now(job_id=JOB_ID).run_id

    fake.set_state(run_id, "RUNNING")
    running = w.jobs.get_run(run_id)
    fake.finish(run_id, "FAILED", message="Task main failed: CUDA out of memory")
    failed = w.jobs.get_run(run_id)

    assert running.state.life_cycle_state == RunLifeCycleState.RUNNING  # type: ignore[union-attr]
    assert running.status.state == RunLifecycleStateV2State.RUNNING  # type: ignore[union-attr]
    assert failed.state.life_cycle_state == RunLifeCycleState.TERMINATED  # type: ignore[union-attr]
    assert failed.state.result_state == RunResultState.FAILED  # type: ignore[union-attr]
    assert failed.state.state_message == "Task main failed: CUDA out of memory"  # type: ignore[union-attr]
    details = failed.status.termination_details  # type: ignore[union-attr]
    assert details is not None and details.code is not None and details.type is not None
    assert (details.code.value, details.type.value) == ("RUN_EXECUTION_ERROR", "CLIENT_ERROR")
    assert failed.end_time is not None and failed.end_time >= failed.start_time  # type: ignore[operator]

    legacy = w.api_client.do("GET", "/api/2.1/jobs/runs/get", query={"run_id": run_id})
    assert isinstance(legacy, dict) and legacy["state"]["result_state"] == "FAILED"


def test_run_output_is_read_per_task(fake: FakeDatabricks) -> None:
    w = client(fake)
    run_id = w.jobs.run_now(job_id=JOB_ID).run_id
    fake.finish(run_id, "SUCCESS", output='{"registered_version": "2"}')

    with pytest.raises(InvalidParameterValue, match="multiple tasks is not supported"):
        w.jobs.get_run_output(run_id)
    (task,) = w.jobs.get_run(run_id).tasks or []
    assert task.run_id is not None
    output = w.jobs.get_run_output(task.run_id)

    assert output.notebook_output is not None
    assert output.notebook_output.result == '{"registered_version": "2"}'
    assert output.metadata is not None and output.metadata.job_id == JOB_ID


def test_settings_in_the_environment_do_not_leak_into_an_explicit_client(
    fake: FakeDatabricks, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    profile = tmp_path / "databrickscfg"
    profile.write_text("[DEFAULT]\nhost = https://elsewhere.invalid\ntoken = dapi-profile\n")
    hostile = {
        "DATABRICKS_HOST": "https://elsewhere.invalid",
        "DATABRICKS_TOKEN": "dapi-env",
        "DATABRICKS_AUTH_TYPE": "oauth-m2m",
        "DATABRICKS_CLIENT_ID": "client",
        "DATABRICKS_CLIENT_SECRET": "secret",
        "ARM_CLIENT_ID": "managed-identity",
        "ARM_TENANT_ID": "tenant",
        "DATABRICKS_CONFIG_FILE": str(profile),
    }
    for name, value in hostile.items():
        monkeypatch.setenv(name, value)

    client(fake).jobs.run_now(job_id=JOB_ID)

    assert fake.calls("run-now")[0].headers["authorization"] == f"Bearer {fake.token}"
    monkeypatch.delenv("DATABRICKS_AUTH_TYPE")
    with pytest.raises(ValueError, match="more than one authorization method"):
        Config(host=fake.host, token=fake.token)  # without auth_type="pat"
