"""MLflow traces over OTLP/HTTP: batches of spans POSTed to an MLflow tracking server.

MLflow's Python client records a trace through its fluent span API and exports it with one or
more HTTP calls per trace, from threads in our process: measured here at ~2.5 ms of CPU to
build a trace and ~7.5 ms more to export it (bench/trace_export.py). At hundreds of calls per
second that work would hold the GIL the event loop needs. MLflow servers (3.4 and later) also
ingest OpenTelemetry spans at `/v1/traces` (header `x-mlflow-experiment-id`), many traces per
request, and derive the same trace from them: token usage and cost (from
`mlflow.chat.tokenUsage` and the model), tags (`mlflow.traceTag.<key>` attributes of the root
span), the user (`user.id`), status, events.

`OtlpTraceSink` uses that: it turns each record's `TraceParts` into an OTLP/JSON span on the
event loop, in slices between requests, and POSTs up to `BATCH_SPANS` spans per request with
aiohttp, which the gateway already uses. mlflow is never imported. Structured values (inputs,
outputs, token usage) travel as JSON text, which MLflow stores as it stores its own.

Failures never reach a call: a batch the server refuses, or cannot take after `ATTEMPTS` tries
(429 and 5xx honour `retry-after`), is counted in `stats["errors"]` and logged once; after a
failed batch, records are counted as errors without a try for `DOWN_S` seconds, so a dead
server costs nothing. The queue is bounded (`LLMOPS_TRACE_QUEUE_RECORDS`): beyond it, records
are dropped and counted. The request log keeps every call either way.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import time
from typing import TYPE_CHECKING, Any

import orjson

from llmops import __version__
from llmops.gateway.routing import backoff_seconds, retry_after_seconds
from llmops.tracing.spans import SPAN_TYPE, TRACE_USER, TraceParts, sampled, trace_parts

if TYPE_CHECKING:
    import aiohttp

    from llmops.settings import TraceSettings

log = logging.getLogger("llmops.tracing")
OTLP_PATH = "/v1/traces"
EXPERIMENT_HEADER = "x-mlflow-experiment-id"
TAG_ATTRIBUTE = "mlflow.traceTag."  # a root-span attribute MLflow stores as a trace tag
BATCH_SPANS = 500  # spans per POST, at most
MAX_POST_BYTES = 4 * 1024 * 1024  # and a POST ends with the span that crosses this size
ATTEMPTS = 3  # tries per batch (429, 5xx, connection errors, timeouts)
DOWN_S = 30.0  # after a batch failed for good, records are not tried for this long
REQUEST_TIMEOUT_S = 10.0
_SLICE = 16  # spans built between two yields to the event loop (~0.3 ms here)
_RESOURCE = {"attributes": [{"key": "service.name", "value": {"stringValue": "llmops-gateway"}}]}
_SCOPE = {"name": "llmops.gateway", "version": __version__}
_SPAN_TYPE = {"key": "mlflow.spanType", "value": {"stringValue": SPAN_TYPE}}
_OK = {"code": 1}
_EMPTY = orjson.dumps(
    {"resourceSpans": [{"resource": _RESOURCE, "scopeSpans": [{"scope": _SCOPE, "spans": []}]}]}
)
_HEAD, _, _TAIL = _EMPTY.rpartition(b'"spans":[]')  # a request is HEAD "spans":[...] TAIL


def otlp_span(parts: TraceParts) -> dict[str, Any]:
    """One call's span in OTLP/JSON, with MLflow's attributes."""
    attributes = [
        _SPAN_TYPE,
        {"key": "mlflow.spanInputs", "value": {"stringValue": _json(parts.inputs)}},
    ]
    if parts.outputs is not None:
        outputs = _json(parts.outputs)
        attributes.append({"key": "mlflow.spanOutputs", "value": {"stringValue": outputs}})
    for key, value in parts.attributes.items():
        kind = type(value)
        if kind is str:
            attributes.append({"key": key, "value": {"stringValue": value}})
        elif kind is int:
            attributes.append({"key": key, "value": {"intValue": value}})
        elif kind is float:
            attributes.append({"key": key, "value": {"doubleValue": value}})
        elif kind is bool:
            attributes.append({"key": key, "value": {"boolValue": value}})
        else:  # MLflow reads JSON text as the value it encodes
            attributes.append({"key": key, "value": {"stringValue": _json(value)}})
    for key, value in parts.tags.items():
        attributes.append({"key": TAG_ATTRIBUTE + key, "value": {"stringValue": value}})
    user = parts.metadata.get(TRACE_USER)
    if user:
        attributes.append({"key": "user.id", "value": {"stringValue": user}})
    # A caller's trace id may cover many calls, and MLflow keys traces by id: such calls get
    # a fresh id (the `llmops.trace_id` tag keeps the caller's).
    trace_id = parts.otel_trace_id or random.getrandbits(128) or 1
    span: dict[str, Any] = {
        "traceId": f"{trace_id:032x}",
        "spanId": f"{random.getrandbits(64) or 1:016x}",
        "name": parts.name,
        "kind": 1,  # SPAN_KIND_INTERNAL
        "startTimeUnixNano": parts.start_ns,
        "endTimeUnixNano": parts.end_ns,
        "attributes": attributes,
        "status": {"code": 2, "message": parts.error} if parts.error else _OK,
    }
    if parts.first_byte_ns is not None:
        span["events"] = [{"name": "first_byte", "timeUnixNano": parts.first_byte_ns}]
    return span


def otlp_request(spans: list[bytes]) -> bytes:
    """An OTLP/JSON `ExportTraceServiceRequest` body holding `spans` (each already JSON)."""
    return b"".join((_HEAD, b'"spans":[', b",".join(spans), b"]", _TAIL))


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class _Refused(Exception):
    """The server answered with an error that a retry will not fix."""


class OtlpTraceSink:
    """A request-log sink that sends each call's trace to an MLflow server over OTLP/HTTP."""

    def __init__(self, settings: TraceSettings, *, batch_spans: int = BATCH_SPANS) -> None:
        self.settings = settings
        self.batch_spans = batch_spans
        self.base_url = settings.tracking_uri.rstrip("/")
        self.stats = {"queued": 0, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 0}
        self._pending: list[dict[str, Any]] = []
        self._in_flight = 0  # records taken from the queue and not yet counted
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._experiment_id: str | None = None
        self._down_until = 0.0
        self._closed = False
        self._logged: set[str] = set()
        self._auth = _auth_headers(os.environ)

    # --- on the event loop ----------------------------------------------------------------
    def __call__(self, records: list[dict[str, Any]]) -> None:
        """Queue a batch for export: never blocks, never raises."""
        try:
            skipped = 0
            if self.settings.sample < 1.0:
                kept = [r for r in records if sampled(r, self.settings.sample)]
                skipped, records = len(records) - len(kept), kept
            room = 0 if self._closed else self.settings.queue_records - len(self._pending)
            accepted = records[: max(room, 0)]
            self._pending.extend(accepted)
            dropped = len(records) - len(accepted)
            self.stats["queued"] += len(accepted)
            self.stats["dropped"] += dropped
            self.stats["sampled_out"] += skipped
            if dropped:
                self._log_once("dropped", "trace queue full or closed: %d records dropped", dropped)
            if accepted and (self._task is None or self._task.done()):
                self._task = asyncio.get_running_loop().create_task(self._run())
        except Exception:  # a sink must never raise into the request log
            log.exception("could not queue traces")

    async def aflush(self, within_s: float | None = None) -> bool:
        """Wait until every queued record is sent (or counted as failed). False when
        `within_s` seconds (default: the settings' flush timeout) passed first."""
        task = self._task
        if task is None or task.done():
            return True
        limit = self.settings.flush_timeout_s if within_s is None else within_s
        try:
            await asyncio.wait_for(asyncio.shield(task), limit)
        except TimeoutError:
            return False
        return True

    async def aclose(self, within_s: float | None = None) -> None:
        """Flush (at most `within_s`), then stop: what is still queued is dropped and counted."""
        done = await self.aflush(within_s)
        self._closed = True
        left = len(self._pending)
        self._pending.clear()
        self.stats["dropped"] += left
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            left += self._in_flight
            self.stats["dropped"] += self._in_flight
        if not done:
            log.warning(
                "MLflow had not taken every trace at shutdown: %d traces dropped (%s)",
                left,
                self.base_url,
            )
        if self.stats["errors"]:
            log.info("MLflow tracing: %s", self.stats)
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- the export task ------------------------------------------------------------------
    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self.batch_spans]
            del self._pending[: len(batch)]
            if time.monotonic() < self._down_until:
                self.stats["errors"] += len(batch)
                continue
            self._in_flight = len(batch)
            spans: list[bytes] = []
            size = 0
            for start in range(0, len(batch), _SLICE):
                for record in batch[start : start + _SLICE]:
                    try:
                        span = orjson.dumps(otlp_span(trace_parts(record)))
                    except Exception as exc:
                        self._in_flight -= 1
                        self._error(f"could not trace {record.get('request_id')}: {exc!r}")
                        continue
                    spans.append(span)
                    size += len(span)
                    if size >= MAX_POST_BYTES:
                        await self._send(spans)
                        self._in_flight -= len(spans)
                        spans, size = [], 0
                await asyncio.sleep(0)
            if spans:
                await self._send(spans)
            self._in_flight = 0

    async def _send(self, spans: list[bytes]) -> None:
        import aiohttp

        body, count = otlp_request(spans), len(spans)
        problem = ""
        for attempt in range(ATTEMPTS):
            wait = backoff_seconds(attempt)
            try:
                experiment = await self._experiment()
                headers = {
                    **self._auth,
                    "Content-Type": "application/json",
                    EXPERIMENT_HEADER: experiment,
                }
                session = self._client()
                async with session.post(
                    self.base_url + OTLP_PATH, data=body, headers=headers
                ) as response:
                    if response.status < 300:
                        self.stats["traced"] += count
                        return
                    problem = f"HTTP {response.status}: {(await response.text())[:300]}"
                    if response.status != 429 and response.status < 500:
                        raise _Refused(problem)
                    wait = retry_after_seconds(response.headers) or wait
            except _Refused as exc:
                problem = str(exc)
                break
            except (OSError, TimeoutError, ValueError, KeyError, aiohttp.ClientError) as exc:
                problem = f"{type(exc).__name__}: {exc}"
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(min(wait, 5.0))
        self.stats["errors"] += count
        self._down_until = time.monotonic() + DOWN_S
        hint = ""
        if "HTTP 404" in problem or "HTTP 405" in problem:
            hint = " (OTLP ingest needs MLflow server 3.4 or later; or LLMOPS_TRACE_EXPORT=mlflow)"
        self._error(f"{self.base_url} did not take {count} traces: {problem}{hint}", count=False)

    async def _experiment(self) -> str:
        """The experiment's id, found by name or created, once (MLflow's REST API)."""
        if self._experiment_id is not None:
            return self._experiment_id
        session = self._client()
        name = self.settings.experiment_name
        api = self.base_url + "/api/2.0/mlflow/experiments"
        for _ in range(2):  # a concurrent creation makes the second lookup find it
            async with session.get(
                api + "/get-by-name", params={"experiment_name": name}, headers=self._auth
            ) as found:
                if found.status == 200:
                    self._experiment_id = str((await found.json())["experiment"]["experiment_id"])
                    return self._experiment_id
                if found.status != 404:
                    raise _Refused(f"experiment lookup: HTTP {found.status}: {await found.text()}")
            create = session.post(api + "/create", json={"name": name}, headers=self._auth)
            async with create as made:
                if made.status == 200:
                    self._experiment_id = str((await made.json())["experiment_id"])
                    return self._experiment_id
                text = await made.text()
                if "RESOURCE_ALREADY_EXISTS" not in text:
                    raise _Refused(f"experiment creation: HTTP {made.status}: {text[:300]}")
        raise _Refused(f"experiment {name!r} could be neither found nor created")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=5.0)
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    # --- counting and logging ---------------------------------------------------------------
    def _error(self, detail: str, *, count: bool = True) -> None:
        if count:
            self.stats["errors"] += 1
        self._log_once(
            "error",
            "MLflow tracing failed: %s. Calls are not affected; further trace errors are "
            "counted (stats['errors']), not logged.",
            detail,
        )

    def _log_once(self, key: str, message: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args)


def _auth_headers(env: os._Environ[str] | dict[str, str]) -> dict[str, str]:
    """MLflow's own client settings for a server behind authentication."""
    token = env.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}
