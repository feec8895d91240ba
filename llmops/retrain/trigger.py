"""The retraining trigger's use case: a request blob in, a Databricks run and its record out.

`RetrainTrigger.handle(name, data, etag)` is what the blob trigger, `llmops retrain submit` and
the tests call. It always leaves `retrain-runs/<name>.json` saying what happened:

| state | when | invocation |
|---|---|---|
| `started` | the run started (or was found again by its idempotency token) | succeeds |
| `rejected` | the request is not valid JSON or misses fields | succeeds: no retry helps |
| `not_configured` | `LLMOPS_RETRAIN_JOB_ID` is not set | succeeds |
| `failed` | Databricks refused (unknown job, bad credentials): its message | succeeds |
| `retrying` | Databricks kept failing with 429/5xx/timeouts | FAILS: the host retries |

The idempotency token is the SHA-256 of the blob's name and ETag (64 hex characters, the
most Databricks accepts): the at-least-once trigger firing twice for one blob finds the same
run; a new version of the blob (new ETag) is a new request.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from llmops.logs.store import LogStore, store_for
from llmops.retrain.jobs import DatabricksJobs, JobRejected, TransientJobError
from llmops.retrain.request import RequestRejected, parse_request
from llmops.settings import RETRAIN_REQUESTS_CONTAINER, RETRAIN_RUNS_CONTAINER, Settings

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

log = logging.getLogger("llmops.retrain")
RUN_SCHEMA = "llmops.retrain_run"


def idempotency_token(name: str, etag: str) -> str:
    """The Databricks idempotency token of one version of one request blob."""
    return hashlib.sha256(f"{name}\n{etag.strip(chr(34))}".encode()).hexdigest()


def content_etag(data: bytes) -> str:
    """A stand-in ETag when the store gives none: the content's digest."""
    return "sha256-" + hashlib.sha256(data).hexdigest()[:32]


class RetrainFailed(RuntimeError):
    """Databricks kept failing transiently; the run record says `retrying`."""


class RetrainTrigger:
    """Starts the configured Databricks job for retraining requests."""

    def __init__(
        self,
        settings: Settings,
        *,
        jobs: DatabricksJobs | None = None,
        request_store: LogStore | None = None,
        run_store: LogStore | None = None,
        meter: Meter | None = None,
    ) -> None:
        self.settings = settings
        self.jobs = jobs or DatabricksJobs(settings.retrain)
        self.request_store = request_store or store_for(settings.logs, RETRAIN_REQUESTS_CONTAINER)
        self.run_store = run_store or store_for(settings.logs, RETRAIN_RUNS_CONTAINER)
        # `llmops.retrain.failures` {reason: rejected | not_configured | failed | retrying}
        self._failures = (
            meter.create_counter(
                "llmops.retrain.failures",
                unit="{request}",
                description="Retraining requests that did not start a run, by outcome",
            )
            if meter is not None
            else None
        )

    async def aclose(self) -> None:
        """Release the stores' connections."""
        await self.request_store.aclose()
        await self.run_store.aclose()

    async def handle(self, name: str, data: bytes, etag: str | None) -> dict[str, Any]:
        """Process one request blob; return (and store) its run record."""
        name = name.removeprefix(f"{RETRAIN_REQUESTS_CONTAINER}/")
        etag = etag or content_etag(data)
        token = idempotency_token(name, etag)
        now = _now()
        record: dict[str, Any] = {
            "schema": RUN_SCHEMA,
            "schema_version": 1,
            "request": name,
            "request_etag": etag,
            "idempotency_token": token,
            "job_id": self.settings.retrain.job_id,
            "run_id": None,
            "run_page_url": None,
            "databricks": None,
            "reason": None,
            "submitted_at": now,
            "updated_at": now,
        }
        previous = await self.read_run(name)
        if previous is not None and previous.get("request_etag") == etag:
            record["submitted_at"] = previous.get("submitted_at", now)
        try:
            request = parse_request(data)
        except RequestRejected as exc:
            return await self._save(name, record, "rejected", str(exc))
        record["request_reason"] = request.reason
        record["requested_by"] = request.requested_by
        job_id = self.settings.retrain.job_id
        if job_id is None:
            return await self._save(
                name, record, "not_configured", "LLMOPS_RETRAIN_JOB_ID is not set: no job to start"
            )
        try:
            run_id = await asyncio.to_thread(
                self.jobs.run_now, job_id, request.parameters_for(name), token
            )
        except JobRejected as exc:
            return await self._save(name, record, "failed", str(exc))
        except TransientJobError as exc:
            await self._save(name, record, "retrying", str(exc))
            raise RetrainFailed(str(exc)) from exc
        record["run_id"] = run_id
        try:
            state = await asyncio.to_thread(self.jobs.get_run, run_id)
        except (JobRejected, TransientJobError) as exc:  # the run started; its page can wait
            log.warning("run %s of request %s started; its state is unknown: %s", run_id, name, exc)
        else:
            record["run_page_url"] = state.run_page_url
            record["databricks"] = state.describe()
        return await self._save(name, record, "started", None)

    async def refresh(self, name: str) -> dict[str, Any]:
        """Ask Databricks for the run's current state and update its record."""
        record = await self.read_run(name)
        if record is None:
            raise LookupError(f"no run record retrain-runs/{name}.json")
        if record.get("run_id") is None:
            return record
        state = await asyncio.to_thread(self.jobs.get_run, int(record["run_id"]))
        record["run_page_url"] = state.run_page_url or record.get("run_page_url")
        record["databricks"] = state.describe()
        record["updated_at"] = _now()
        await self._put(name, record)
        return record

    async def submit(self, name: str, data: bytes) -> dict[str, Any]:
        """Write a request to `retrain-requests/` and process it as the blob trigger would."""
        etag = await self.request_store.put(name, data, "application/json")
        return await self.handle(name, data, etag or None)

    async def read_run(self, name: str) -> dict[str, Any] | None:
        """The stored run record of request `name`, if any."""
        path = _run_name(name)
        if path not in await self.run_store.list(path):
            return None
        value = orjson.loads(await self.run_store.get(path))
        return value if isinstance(value, dict) else None

    async def _save(
        self, name: str, record: dict[str, Any], state: str, reason: str | None
    ) -> dict[str, Any]:
        record["state"] = state
        record["reason"] = reason
        if state != "started" and self._failures is not None:
            self._failures.add(1, {"reason": state})
        await self._put(name, record)
        level = logging.INFO if state == "started" else logging.WARNING
        log.log(level, "retraining request %s: %s%s", name, state, f" ({reason})" if reason else "")
        return record

    async def _put(self, name: str, record: dict[str, Any]) -> None:
        data = orjson.dumps(record, option=orjson.OPT_INDENT_2)
        await self.run_store.put(_run_name(name), data, "application/json")


def _run_name(name: str) -> str:
    return f"{name}.json"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
