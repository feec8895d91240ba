"""MLflow traces over OTLP/HTTP: batches of spans POSTed to an MLflow tracking server.

MLflow's Python client records a trace through its fluent span API and exports it with one or
more HTTP calls per trace, from threads in our process: measured here at ~2.5 ms of CPU to
build a trace and ~7.5 ms more to export it (bench/trace_export.py). At hundreds of calls per
second that work would hold the GIL the event loop needs. MLflow servers (3.6 and later) also
ingest OpenTelemetry spans at `/v1/traces` (header `x-mlflow-experiment-id`), many traces per
request, and derive the same trace from them: token usage and cost (from
`mlflow.chat.tokenUsage` and the model), tags (`mlflow.traceTag.<key>` attributes of the root
span), the user (`user.id`), status, events.

`OtlpTraceSink` uses that: it turns each record's `TraceParts` into an OTLP/JSON span on the
event loop, in slices between requests, and POSTs up to `BATCH_SPANS` spans per request with
aiohttp, which the gateway already uses. mlflow is never imported. Structured values (inputs,
outputs, token usage) travel as JSON text, which MLflow stores as it stores its own. Servers
before 3.12 take OTLP as protobuf only and answer JSON with a 400 about the content type; the
sink then converts each request to protobuf (slower, through `google.protobuf.json_format`).

Failures never reach a call: a batch the server refuses, or cannot take after `ATTEMPTS` tries
(429 and 5xx wait as `retry-after` asks, at most `MAX_RETRY_WAIT_S`), is counted in
`stats["errors"]` and logged once. A server that cannot be reached, or refuses everything
(401, 403, 404, 405), is left alone for `DOWN_S` seconds (its records count as errors
meanwhile), so a dead server costs nothing. A batch refused for what it holds is cut
smaller (413: a proxy's body limit, which then holds for later batches too) or bisected (400,
422), so that a span the server cannot read costs only itself; the next batch is tried
either way. The queue is bounded (`LLMOPS_TRACE_QUEUE_RECORDS`):
beyond it, records are dropped and counted. The request log keeps every call either way.
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
from llmops.slices import Slices
from llmops.tracing.spans import SPAN_TYPE, TRACE_USER, TraceParts, sampled, trace_parts

if TYPE_CHECKING:
    import aiohttp

    from llmops.settings import TraceSettings

log = logging.getLogger("llmops.tracing")
OTLP_PATH = "/v1/traces"
EXPERIMENT_HEADER = "x-mlflow-experiment-id"
TAG_ATTRIBUTE = "mlflow.traceTag."  # a root-span attribute MLflow stores as a trace tag
BATCH_SPANS = 500  # spans per POST, at most
MAX_POST_BYTES = 4 * 1024 * 1024  # and stops short of this size (unless one span is larger)
MIN_POST_BYTES = 64 * 1024  # a 413 lowers the byte limit of later POSTs, never below this
UNREADABLE = (400, 422)  # refusals of what a batch holds: bisected, to find the span
SPLIT_POSTS = 32  # more parts sent (each tried as a batch is) to save a refused batch's spans
ATTEMPTS = 3  # tries per batch (429, 5xx, connection errors, timeouts)
DOWN_S = 30.0  # after a batch failed for good, records are not tried for this long
REQUEST_TIMEOUT_S = 10.0
MAX_RETRY_WAIT_S = 5.0  # a longer `retry-after` is cut to this (the queue keeps filling)
MIN_SERVER = "3.6"  # the first MLflow server with OTLP ingest (as JSON too from 3.12)
_CLIENT = "LLMOPS_TRACE_EXPORT=mlflow"
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


class QueuedSink:
    """What the OTLP sinks share: a request-log sink on the event loop whose queued records each
    end counted, and whose flush waits for the records queued before it.

    `stats`: `queued` records were accepted; each ends as `traced`, `errors` or, when the sink
    closes before it was sent, `dropped`. `dropped` also counts records turned away because the
    queue was full or the sink closed (never queued); `sampled_out` those sampling skipped.
    Subclasses say how many records wait (`_backlog`), take accepted ones (`_enqueue`; with
    their JSON lines when the request log gave them), forget the tasks of a finished loop
    (`_rebind`), and settle records with `_settle`.
    """

    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings
        self.stats = {"queued": 0, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 0}
        self._settled = 0  # queued records that ended as traced, errors or dropped
        self._progress = asyncio.Event()  # replaced by a fresh one at each settlement
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._logged: set[str] = set()

    def __call__(self, records: list[dict[str, Any]]) -> None:
        """Queue a batch for export: never blocks, never raises."""
        self._accept(records, None)

    def _accept(self, records: list[dict[str, Any]] | None, lines: list[bytes] | None) -> None:
        """Sample, bound and queue `records` (with their JSON `lines`, when given; or only
        the lines, when the request log's builder process made them)."""
        if records is None:
            if lines is None:
                return
            if self.settings.sample < 1.0:  # sampling reads the records
                records = [orjson.loads(line) for line in lines]
        count = len(records) if records is not None else len(lines or ())
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the request log always calls on its loop; anything else: refused
            self.stats["dropped"] += count
            self._log_once("no-loop", "traces handed over outside an event loop: dropped")
            return
        try:
            if loop is not self._loop:  # tasks or connections of another (finished) loop
                self._loop = loop
                self._rebind()
            skipped = 0
            if records is not None and self.settings.sample < 1.0:
                keep = [sampled(r, self.settings.sample) for r in records]
                kept = [r for r, k in zip(records, keep, strict=True) if k]
                if lines is not None:
                    lines = [line for line, k in zip(lines, keep, strict=True) if k]
                skipped, records = len(records) - len(kept), kept
                count = len(kept)
            room = max(0 if self._closed else self.settings.queue_records - self._backlog(), 0)
            accepted = min(room, count)
            dropped = count - accepted
            self.stats["queued"] += accepted
            self.stats["dropped"] += dropped
            self.stats["sampled_out"] += skipped
            if dropped:
                self._log_once("dropped", "trace queue full or closed: %d records dropped", dropped)
            if accepted:
                self._enqueue(
                    None if records is None else records[:room],
                    None if lines is None else lines[:room],
                )
        except Exception:  # a sink must never raise into the request log
            self._log_once("queue", "could not queue traces", exc_info=True)

    async def aflush(self, within_s: float | None = None) -> bool:
        """Wait until every record queued so far has been sent (or counted as failed); records
        queued meanwhile wait for the next flush. False when `within_s` seconds (default: the
        settings' flush timeout) passed first."""
        target = self.stats["queued"]
        limit = self.settings.flush_timeout_s if within_s is None else within_s
        try:
            async with asyncio.timeout(limit):
                while self._settled < target:
                    if not self._working():
                        return False  # nothing left that could settle them
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    def _backlog(self) -> int:
        raise NotImplementedError

    def _enqueue(self, records: list[dict[str, Any]] | None, lines: list[bytes] | None) -> None:
        """Take `records` (None: only their `lines` came), at least one of the two given."""
        raise NotImplementedError

    def _rebind(self) -> None:
        raise NotImplementedError

    def _working(self) -> bool:
        """Whether something is under way that will settle more records."""
        return True

    def _settle(self, *, traced: int = 0, errors: int = 0, dropped: int = 0) -> None:
        """Count queued records that reached their end; wake the flushes waiting for them."""
        self.stats["traced"] += traced
        self.stats["errors"] += errors
        self.stats["dropped"] += dropped
        self._settled += traced + errors + dropped
        self._progress.set()
        self._progress = asyncio.Event()

    def _log_once(self, key: str, message: str, *args: object, exc_info: bool = False) -> None:
        if key not in self._logged:
            self._logged.add(key)
            log.warning(message, *args, exc_info=exc_info)


class OtlpTraceSink(QueuedSink):
    """A request-log sink that sends each call's trace to an MLflow server over OTLP/HTTP,
    building the spans on the event loop between calls."""

    def __init__(self, settings: TraceSettings, *, batch_spans: int = BATCH_SPANS) -> None:
        super().__init__(settings)
        self.batch_spans = batch_spans
        self.base_url = settings.tracking_uri.rstrip("/")
        self._pending: list[dict[str, Any]] = []
        self._in_flight = 0  # records taken from the queue and not yet settled
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._experiment_id: str | None = None
        self._down_until = 0.0
        self._protobuf = False  # the server takes OTLP as protobuf only (older MLflow)
        self._post_bytes = MAX_POST_BYTES  # lowered when a server or proxy answers 413
        self._refusing = False  # a batch was refused for its content, nothing taken since
        self._auth = _auth_headers(os.environ)

    # --- on the event loop ----------------------------------------------------------------
    def _backlog(self) -> int:
        return len(self._pending)

    def _enqueue(self, records: list[dict[str, Any]] | None, lines: list[bytes] | None) -> None:
        assert records is not None  # only a `LineSink` (the exporter process) takes lines alone
        self._pending.extend(records)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())  # on the loop `_accept` runs on

    def _rebind(self) -> None:
        self._task, self._session = None, None

    def _working(self) -> bool:
        return self._task is not None and not self._task.done()

    async def aclose(self, within_s: float | None = None) -> None:
        """Flush (at most `within_s`), then stop: what is still queued is dropped and counted."""
        try:
            done = await self.aflush(within_s)
        finally:
            self._closed = True
            task, self._task = self._task, None
            if task is not None and not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            left = len(self._pending) + self._in_flight
            self._pending.clear()
            if left:
                self._settle(dropped=left)
            if self._session is not None:
                await self._session.close()
                self._session = None
        if not done or left:
            log.warning(
                "MLflow had not taken every trace at shutdown: %d traces dropped (%s)",
                left,
                self.base_url,
            )
        if self.stats["errors"]:
            log.info("MLflow tracing: %s", self.stats)

    # --- the export task ------------------------------------------------------------------
    async def _run(self) -> None:
        while self._pending:
            batch = self._pending[: self.batch_spans]
            del self._pending[: len(batch)]
            self._in_flight = len(batch)
            try:
                await self._export(batch)
            except Exception as exc:  # a bug, or an answer nobody planned for: counted, logged
                self._error(f"trace export failed: {exc!r}")
                self._settle(errors=self._in_flight)

    async def _export(self, batch: list[dict[str, Any]]) -> None:
        spans: list[bytes] = []
        slices = Slices()
        for record in batch:
            await slices.turn()
            try:
                spans.append(orjson.dumps(otlp_span(trace_parts(record))))
            except Exception as exc:
                self._error(f"could not trace {record.get('request_id')}: {exc!r}")
                self._settle(errors=1)
        if spans:
            await self._send(spans)

    async def _send(self, spans: list[bytes]) -> None:
        """POST `spans`, in parts that stay under the byte limit, and settle them as traced
        or errors.

        A part refused for its size (413) lowers the byte limit, of this batch and of later
        ones, and what is left of the batch is cut again; a part refused for what it holds
        (400, 422) is bisected (`_bisect`). Either costs at most `SPLIT_POSTS` more parts
        sent per batch; what is left when they are spent counts as errors."""
        if time.monotonic() < self._down_until:
            self._settle(errors=len(spans))
            return
        traced, refused = self.stats["traced"], False
        budget = SPLIT_POSTS
        limit = self._post_bytes
        start = 0
        while start < len(spans):
            end, size = start + 1, len(spans[start])
            while end < len(spans) and size + len(spans[end]) <= limit:
                size += len(spans[end])
                end += 1
            part = spans[start:end]
            status, problem = await self._attempt(part)
            if 0 < status < 300:
                self._settle(traced=len(part))
            elif status == 413 and len(part) > 1 and budget > 0:
                budget -= 1
                limit = size // 2  # this batch: as small as it takes
                self._post_bytes = max(MIN_POST_BYTES, min(self._post_bytes, limit))
                continue  # cut again from `start`
            elif status in UNREADABLE and len(part) > 1:
                refused = True
                budget = await self._bisect(part, problem, budget)
            else:
                self._lose(part, problem)
            start = end
        if self.stats["traced"] > traced:
            self._refusing = False
        elif refused:
            self._refusing = True

    async def _bisect(self, spans: list[bytes], problem: str, budget: int) -> int:
        """`spans` were refused for what they hold (400, 422): send them again in halves, and
        a refused half in halves again, so one span the server cannot read costs only itself
        (`budget`: more parts that may be sent; what is left is returned). A server that has
        taken nothing since it last refused a whole batch refuses this kind of batch rather
        than one span: when both halves are refused, both are lost (3 POSTs a batch)."""
        if len(spans) < 2 or budget < 2:
            self._lose(spans, problem)
            return budget
        budget -= 2
        middle = len(spans) // 2
        refused = []
        for half in (spans[:middle], spans[middle:]):
            status, detail = await self._attempt(half)
            if 0 < status < 300:
                self._settle(traced=len(half))
            else:
                refused.append((half, status, detail))
        if len(refused) == 2 and self._refusing:
            for half, _, detail in refused:
                self._lose(half, detail)
            return budget
        for half, status, detail in refused:
            if status in UNREADABLE:
                budget = await self._bisect(half, detail, budget)
            else:
                self._lose(half, detail)
        return budget

    async def _attempt(self, spans: list[bytes]) -> tuple[int, str]:
        """POST `spans`, tried again after 429, 5xx and network errors (ATTEMPTS in all):
        (status, problem). Below 300: taken; 0: no answer (or the server is left alone). A
        server that cannot be reached, or refuses everything, is left alone for DOWN_S."""
        if time.monotonic() < self._down_until:  # an earlier part of the batch failed so
            return 0, "the server is left alone after a failure"
        body = otlp_request(spans)
        status, problem = 0, ""
        for attempt in range(ATTEMPTS):
            wait = backoff_seconds(attempt)
            try:
                status, text, asked = await self._post(body)
                if status < 300:
                    return status, ""
                problem = f"HTTP {status}: {text[:300]}"
                if status != 429 and status < 500:
                    # the server (or a proxy) refuses what was sent: no retry; only a server
                    # that refuses everything (auth, no such endpoint) is left to rest
                    if status in (401, 403, 404, 405):
                        self._down_until = time.monotonic() + DOWN_S
                    return status, problem
                wait = asked if asked is not None else wait
            except _Refused as exc:  # the experiment could not be found or created
                status, problem = 0, str(exc)
                break
            except Exception as exc:  # connection refused or reset, timeouts, bad answers
                status, problem = 0, f"{type(exc).__name__}: {exc}"
            if attempt + 1 < ATTEMPTS:
                await asyncio.sleep(min(wait, MAX_RETRY_WAIT_S))
        self._down_until = time.monotonic() + DOWN_S
        return status, problem

    def _lose(self, spans: list[bytes], problem: str) -> None:
        """Count `spans` as errors and log (the first failure only)."""
        self._settle(errors=len(spans))
        hint = ""
        if "HTTP 404" in problem or "HTTP 405" in problem:
            hint = f" (OTLP ingest needs MLflow server {MIN_SERVER} or later; or {_CLIENT})"
        self._error(f"{self.base_url} did not take {len(spans)} traces: {problem}{hint}")

    async def _post(self, body: bytes) -> tuple[int, str, float | None]:
        """One POST: (status, body text, the wait a 429/503 asked for). A server that takes
        OTLP only as protobuf (MLflow 3.6 to 3.11) says so with a 400 about the content type:
        from then on, the sink sends protobuf, converted from the same JSON."""
        experiment = await self._experiment()
        for _ in range(2):
            kind = "application/x-protobuf" if self._protobuf else "application/json"
            data = _to_protobuf(body) if self._protobuf else body
            headers = {**self._auth, "Content-Type": kind, EXPERIMENT_HEADER: experiment}
            url = self.base_url + OTLP_PATH
            async with self._client().post(url, data=data, headers=headers) as answer:
                text = "" if answer.status < 300 else await answer.text(errors="replace")
                asked = retry_after_seconds(answer.headers)
            if answer.status == 400 and "content-type" in text.lower() and not self._protobuf:
                self._protobuf = True
                log.info("%s takes OTLP as protobuf only: sending protobuf", self.base_url)
                continue
            break
        return answer.status, text, asked

    async def _experiment(self) -> str:
        """The experiment's id, found by name or created, once (MLflow's REST API). Raises
        `_Refused` when the server refuses; 429, 5xx and network errors raise for a retry."""
        if self._experiment_id is not None:
            return self._experiment_id
        session = self._client()
        name = self.settings.experiment_name
        api = self.base_url + "/api/2.0/mlflow/experiments"
        for _ in range(2):  # a concurrent creation makes the second lookup find it
            query = {"experiment_name": name}
            async with session.get(api + "/get-by-name", params=query, headers=self._auth) as found:
                if found.status == 200:
                    answer = await found.json()
                    self._experiment_id = str(answer["experiment"]["experiment_id"])
                    return self._experiment_id
                _check(found.status, "experiment lookup", await found.text(errors="replace"), 404)
            create = session.post(api + "/create", json={"name": name}, headers=self._auth)
            async with create as made:
                if made.status == 200:
                    self._experiment_id = str((await made.json())["experiment_id"])
                    return self._experiment_id
                text = await made.text(errors="replace")
                if "RESOURCE_ALREADY_EXISTS" not in text:
                    _check(made.status, "experiment creation", text)
        raise _Refused(f"experiment {name!r} could be neither found nor created")

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            import aiohttp

            timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S, sock_connect=5.0)
            connector = aiohttp.TCPConnector(ssl=_ssl(os.environ))
            # trust_env: HTTP(S)_PROXY / NO_PROXY, as MLflow's own client honours them
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=connector, trust_env=True
            )
        return self._session

    # --- counting and logging ---------------------------------------------------------------
    def _settle(self, *, traced: int = 0, errors: int = 0, dropped: int = 0) -> None:
        super()._settle(traced=traced, errors=errors, dropped=dropped)
        self._in_flight = max(self._in_flight - (traced + errors + dropped), 0)

    def _error(self, detail: str) -> None:
        """Log the first failure only (export must never flood the logs); `_settle` counts."""
        self._log_once(
            "error",
            "MLflow tracing failed: %s. Calls are not affected; further trace errors are "
            "counted (stats['errors']), not logged.",
            detail,
        )


def _check(status: int, what: str, text: str, expected: int | None = None) -> None:
    """Raise for an experiment request that failed: `_Refused` unless a retry may help."""
    if status == expected:
        return
    problem = f"{what}: HTTP {status}: {text[:300]}"
    if status == 429 or status >= 500:
        raise RuntimeError(problem)  # retried by `_send`
    raise _Refused(problem)


def _to_protobuf(body: bytes) -> bytes:
    """The OTLP/JSON request `body` as protobuf (OTLP/JSON ids are hex, protobuf's JSON
    mapping wants base64). Slow, and only for servers that take nothing else."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    request = orjson.loads(body)
    for resource in request["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                for key in ("traceId", "spanId"):
                    span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    message = json_format.ParseDict(request, ExportTraceServiceRequest())
    return bytes(message.SerializeToString())


def _ssl(env: os._Environ[str] | dict[str, str]) -> Any:
    """MLflow's own TLS settings for the tracking server: a CA bundle, or no verification."""
    if env.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return False
    cafile = env.get("MLFLOW_TRACKING_SERVER_CERT_PATH")
    if cafile:
        import ssl

        return ssl.create_default_context(cafile=cafile)
    return True


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
