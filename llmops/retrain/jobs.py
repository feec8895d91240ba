"""Databricks Jobs through `databricks-sdk`: start a run idempotently, read its state.

Authentication is the SDK's unified auth: `DATABRICKS_HOST` with `DATABRICKS_TOKEN`, or, with
no token, whatever the SDK finds (a service principal's `DATABRICKS_CLIENT_ID` and
`DATABRICKS_CLIENT_SECRET`, the Azure CLI, ...). The SDK is imported on first use (~1.6 s).

Faults: the SDK itself retries 429/503 (honouring `Retry-After`) and connection errors until
its retry timeout (`LLMOPS_RETRAIN_TIMEOUT_S`); `run_now` below retries what is still
transient (429, 5xx, timeouts, connection errors) up to `LLMOPS_RETRAIN_ATTEMPTS` times with
backoff, then raises `TransientJobError`. A client error (unknown job, bad credentials, bad
parameters) raises `JobRejected` at once: retrying would not help.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from llmops import __version__
from llmops.settings import RetrainSettings

if TYPE_CHECKING:
    from databricks.sdk import WorkspaceClient

log = logging.getLogger("llmops.retrain")
T = TypeVar("T")


class JobRejected(Exception):
    """Databricks refused the request (4xx): the message is Databricks' own."""


class TransientJobError(Exception):
    """Databricks could not be reached or kept failing with 429/5xx: try again later."""


@dataclass(frozen=True)
class RunState:
    """What Databricks says about a run."""

    run_id: int
    run_page_url: str | None
    life_cycle_state: str | None
    result_state: str | None
    state_message: str | None

    def describe(self) -> dict[str, Any]:
        """The state as JSON-ready fields."""
        return {
            "life_cycle_state": self.life_cycle_state,
            "result_state": self.result_state,
            "state_message": self.state_message,
        }


class DatabricksJobs:
    """The two Jobs API calls the trigger needs, with the retry policy above."""

    def __init__(
        self,
        settings: RetrainSettings,
        *,
        client: WorkspaceClient | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._client = client
        self._sleep = sleep

    def client(self) -> WorkspaceClient:
        """The SDK client, built on first use."""
        if self._client is None:
            from databricks.sdk import WorkspaceClient
            from databricks.sdk.config import Config

            timeout = int(self.settings.timeout_s)
            options: dict[str, Any] = {
                "host": self.settings.databricks_host,
                "http_timeout_seconds": timeout,
                "retry_timeout_seconds": timeout,
                "product": "llmops-gateway",
                "product_version": __version__,
            }
            if self.settings.databricks_token:
                # A PAT only: stray DATABRICKS_CLIENT_ID/SECRET in the environment would
                # otherwise make the SDK refuse "more than one authorization method".
                options.update(token=self.settings.databricks_token, auth_type="pat")
            self._client = WorkspaceClient(config=Config(**options))
        return self._client

    def run_now(self, job_id: int, parameters: dict[str, str], idempotency_token: str) -> int:
        """Start the job (or find the run this token already started); its run id."""

        def call() -> int:
            waiter = self.client().jobs.run_now(
                job_id=job_id, job_parameters=parameters, idempotency_token=idempotency_token
            )
            return int(waiter.run_id)

        return self._retried(call)

    def get_run(self, run_id: int) -> RunState:
        """The run's page and state."""

        def call() -> RunState:
            run = self.client().jobs.get_run(run_id)
            state = run.state
            status = getattr(run, "status", None)
            life_cycle = state.life_cycle_state.value if state and state.life_cycle_state else None
            result = state.result_state.value if state and state.result_state else None
            if life_cycle is None and status is not None and status.state is not None:
                life_cycle = status.state.value
            return RunState(
                run_id=int(run.run_id or run_id),
                run_page_url=run.run_page_url,
                life_cycle_state=life_cycle,
                result_state=result,
                state_message=state.state_message if state else None,
            )

        return self._retried(call)

    def _retried(self, call: Callable[[], T]) -> T:
        attempts = self.settings.attempts
        for attempt in range(1, attempts + 1):
            try:
                return call()
            except Exception as exc:
                kind = classify(exc)
                if kind == "rejected":
                    raise JobRejected(_message(exc)) from exc
                if attempt == attempts:
                    raise TransientJobError(
                        f"Databricks failed {attempts} times: {_message(exc)}"
                    ) from exc
                wait = min(2.0 ** (attempt - 1), 30.0)
                log.warning(
                    "Databricks call failed (%s), retry %d of %d in %.0f s",
                    _message(exc),
                    attempt,
                    attempts - 1,
                    wait,
                )
                self._sleep(wait)
        raise AssertionError("unreachable")


# Error codes (or, for a page that is not Databricks' JSON, the HTTP reason) of server-side
# failures that have no SDK class of their own (the SDK maps only 400-409, 429, 499, 500-504)
_SERVER_CODES = frozenset(
    {"BAD_GATEWAY", "SERVICE_UNAVAILABLE", "GATEWAY_TIMEOUT", "INTERNAL_SERVER_ERROR"}
)


def classify(exc: BaseException) -> str:
    """`transient` for what may pass: 429 and 5xx (the SDK's classes for them, or its base
    class with a server-side code, as for a 502), its `TimeoutError` when its own retries ran
    out, connection errors. `rejected` for every other answer from Databricks (a 4xx: bad
    request, unknown job or run, bad credentials, a status the SDK has no class for) and the
    SDK's configuration errors: retrying them cannot help."""
    from databricks.sdk import errors
    from databricks.sdk.errors.base import DatabricksError

    if isinstance(exc, DatabricksError):
        transient = (
            errors.TooManyRequests,
            errors.InternalError,  # NotImplemented (501) is not a subclass: rejected
            errors.TemporarilyUnavailable,
            errors.DeadlineExceeded,
        )
        if isinstance(exc, transient):
            return "transient"
        if type(exc) is DatabricksError and (
            (exc.error_code or "").upper() in _SERVER_CODES
            or str(exc).startswith("unable to parse response")  # a proxy's error page
        ):
            return "transient"
        return "rejected"
    if isinstance(exc, ValueError):  # e.g. no host, or no usable authentication
        return "rejected"
    return "transient"


def _message(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:500]
