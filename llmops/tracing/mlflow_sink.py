"""MLflow traces: one trace per gateway call, exported off the request path.

The request-log writer hands every batch of built (redacted) records to `MlflowTraceSink` on
the event loop. The sink only appends them to a bounded queue (when full, records are dropped
and counted) and returns. ONE daemon thread consumes the queue: on first use it imports mlflow,
sets the tracking URI and the experiment, then turns each record into a trace with a single
CHAT_MODEL span (`llmops.tracing.spans`) and ends it, which hands the trace to MLflow's own
background export. A call therefore never waits for, nor fails because of, MLflow.

Errors (store unreachable, mlflow missing, a record MLflow refuses, MLflow's own export
failures, which it reports as log warnings) are counted in `stats["errors"]` and logged once.
`flush()` waits until everything queued so far has been handed to MLflow and MLflow's export
queue is drained (`mlflow.flush_trace_async_logging()`); the gateway calls it at the end of each
Functions invocation and, through `close()`, at shutdown.

Trace ids: a trace id the gateway minted becomes the MLflow trace's OpenTelemetry id (MLflow's
id is then `tr-<trace_id>`); a caller's id from `traceparent`, which may cover many calls, is
kept in the `llmops.trace_id` tag only. Every trace has the tag.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import math
import os
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from llmops.tracing.spans import SPAN_TYPE, TraceParts, sampled, trace_parts

if TYPE_CHECKING:
    from llmops.settings import TraceSettings
    from llmops.tracing.ids import ChosenTraceIds

log = logging.getLogger("llmops.tracing")
SETUP_RETRY_S = 30.0  # after the store could not be reached, records are counted as errors
# MLflow reports failures of its background export as warnings on these loggers (one per trace);
# the sink counts them and keeps them out of the logs after its own first message.
_MLFLOW_LOGGERS = (
    "mlflow.tracing.export.mlflow_v3",
    "mlflow.tracing.export.async_export_queue",
    "mlflow.tracing.fluent",
)
_REMOTE_SCHEMES = ("http", "https", "databricks", "databricks-uc", "uc")
_MLFLOW_FAILURES = (
    "Failed to send trace",
    "Failed to start span",
    "Failed to upload trace",
    "Failed to log",
    "Trace export queue is full",
)


class MlflowTraceSink:
    """A request-log sink that records each call as an MLflow trace, in the background."""

    def __init__(self, settings: TraceSettings) -> None:
        self.settings = settings
        self.stats = {"queued": 0, "dropped": 0, "sampled_out": 0, "traced": 0, "errors": 0}
        self._pending: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._stats_lock = threading.Lock()
        self._enqueued = 0  # records accepted into the queue
        self._processed = 0  # records the worker has taken care of
        self._flushed = 0  # `_processed` when MLflow's export queue was last drained
        self._wanted = 0  # the highest `_enqueued` a flush() is waiting for
        self._closed = False
        self._thread: threading.Thread | None = None
        self._mlflow: Any = None  # the module, once the store is set up
        self._experiment_id: str | None = None
        self._retry_at = 0.0
        self._ids_failed = False
        self._traced_since_flush = 0
        self._logged: set[str] = set()
        self._filter = _MlflowFailures(self)

    # --- on the event loop ----------------------------------------------------------------
    def __call__(self, records: list[dict[str, Any]]) -> None:
        """Queue a batch for export: never blocks, never raises."""
        try:
            skipped = 0
            if self.settings.sample < 1.0:
                kept = [r for r in records if sampled(r, self.settings.sample)]
                skipped, records = len(records) - len(kept), kept
            with self._cond:
                room = 0 if self._closed else self.settings.queue_records - len(self._pending)
                accepted = records[: max(room, 0)]
                self._pending.extend(accepted)
                self._enqueued += len(accepted)
                dropped = len(records) - len(accepted)
                if accepted and self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="llmops-mlflow-traces", daemon=True
                    )
                    self._thread.start()
                self._cond.notify_all()
            self._count(queued=len(accepted), dropped=dropped, sampled_out=skipped)
            if dropped:
                self._log_once("dropped", "trace queue full or closed: %d records dropped", dropped)
        except Exception:  # a sink must never raise into the request log
            log.exception("could not queue traces")

    # --- from any thread (blocking: off the event loop) ------------------------------------
    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued so far is handed to MLflow and MLflow's export queue
        is drained. Returns False when `timeout` (default: the settings') passed first."""
        timeout = self.settings.flush_timeout_s if timeout is None else timeout
        with self._cond:
            target = self._enqueued
            if self._flushed >= target:
                return True
            if self._closed or not self._alive():
                return False
            self._wanted = max(self._wanted, target)
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._flushed >= target or not self._alive(), timeout)
            return self._flushed >= target

    def close(self, timeout: float | None = None) -> None:
        """Flush (at most `timeout`), then stop the worker; later records are dropped."""
        done = self.flush(timeout)
        with self._cond:
            self._closed = True
            left = len(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        self._count(dropped=left)
        if not done:
            log.warning(
                "MLflow had not exported every trace after %.0f s at shutdown: %d never reached "
                "it; what it holds is sent at process exit or lost (%s)",
                self.settings.flush_timeout_s if timeout is None else timeout,
                left,
                self.settings.tracking_uri,
            )
        if self.stats["errors"]:
            log.info("MLflow tracing: %s", self.stats)
        if self._thread is not None:
            self._thread.join(0.5)
        if not self._alive():
            self._filter.remove()

    def _alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- the worker thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    self._cond.wait_for(
                        lambda: bool(self._pending) or self._closed or self._wanted > self._flushed
                    )
                    if self._closed and not self._pending:
                        return
                    batch = list(self._pending)
                    self._pending.clear()
                for record in batch:
                    self._export(record)
                with self._cond:
                    self._processed += len(batch)
                    target = self._processed
                    # Flush once the records a flush() waits for are handed over, even while
                    # newer ones keep arriving (they wait for the next flush).
                    flush = self._wanted > self._flushed and (
                        self._processed >= self._wanted or not self._pending
                    )
                if flush:
                    self._flush_mlflow()
                    with self._cond:
                        self._flushed = target
                        self._cond.notify_all()
        except BaseException:
            log.exception("the MLflow trace worker stopped")
        finally:
            with self._cond:
                self._cond.notify_all()

    def _export(self, record: dict[str, Any]) -> None:
        if not self._ready():
            self._count(errors=1)  # the record is lost: MLflow or its store is unavailable
            return
        try:
            traced = self._trace(trace_parts(record))
        except Exception as exc:
            self._error(f"could not trace request {record.get('request_id')}: {_brief(exc)}")
            return
        if traced:
            self._traced_since_flush += 1
            self._count(traced=1)

    def _ready(self) -> bool:
        """Import mlflow and open the store on first use; after a failure, retry later."""
        if self._mlflow is not None:
            return True
        if time.monotonic() < self._retry_at:
            return False
        uri = self.settings.tracking_uri
        # Model prices for the trace's cost: MLflow's bundled catalog, not a download from
        # GitHub on each process's first trace per provider (slow, or stuck, without egress).
        os.environ.setdefault("MLFLOW_MODEL_CATALOG_URI", "")
        try:
            mlflow = importlib.import_module("mlflow")
        except ImportError as exc:
            self._retry_at = math.inf
            self._error(f"mlflow is not installed ({exc}): no traces", count=False)
            return False
        if _in_process_store(uri) and not _installed("mlflow"):
            self._retry_at = math.inf
            self._error(
                f"{uri} is a store MLflow opens in-process, which needs the full `mlflow` "
                "package (the deployed set has the lean `mlflow-skinny`): no traces. Install "
                "requirements-dev.txt, or set MLFLOW_TRACKING_URI to a tracking server or "
                "`databricks`",
                count=False,
            )
            return False
        self._filter.install()
        try:
            from llmops.tracing.experiments import experiment_id

            mlflow.set_tracking_uri(uri)
            found = experiment_id(uri, self.settings.experiment_name)
            experiment = mlflow.set_experiment(experiment_id=found)
        except ImportError as exc:  # e.g. a local store with only mlflow-skinny installed
            self._retry_at = math.inf
            self._error(
                f"MLflow cannot open {uri} ({exc}): no traces. A local store needs the full "
                "`mlflow` package (requirements-dev.txt); or set MLFLOW_TRACKING_URI",
                count=False,
            )
            return False
        except Exception as exc:
            self._retry_at = time.monotonic() + SETUP_RETRY_S
            self._error(f"MLflow tracking store {uri} unavailable: {_brief(exc)}", count=False)
            return False
        self._experiment_id = experiment.experiment_id
        self._mlflow = mlflow
        log.info("MLflow traces go to %s, experiment %r", uri, self.settings.experiment_name)
        return True

    def _trace(self, parts: TraceParts) -> bool:
        """Start and end the call's span; False when MLflow did not record it (sampled out,
        or it failed and said so in a warning, which the filter counted)."""
        mlflow = self._mlflow
        ids = self._chosen_ids() if parts.otel_trace_id is not None else None
        if ids is not None and parts.otel_trace_id is not None:
            ids.choose(parts.otel_trace_id)
        try:
            span = mlflow.start_span_no_context(
                parts.name,
                span_type=SPAN_TYPE,
                inputs=parts.inputs,
                attributes=parts.attributes,
                tags=parts.tags,
                metadata=parts.metadata,
                experiment_id=self._experiment_id,
                start_time_ns=parts.start_ns,
            )
        finally:
            if ids is not None:
                ids.choose(None)
        if type(span).__name__ == "NoOpSpan":
            return False
        if ids is not None and span.trace_id != f"tr-{parts.otel_trace_id:032x}":
            self._log_once("ids", "MLflow assigned its own trace id; tag llmops.trace_id has ours")
        entities = importlib.import_module("mlflow.entities")
        if parts.first_byte_ns is not None:
            span.add_event(entities.SpanEvent("first_byte", timestamp=parts.first_byte_ns))
        status = None
        if parts.error is not None:
            status = entities.SpanStatus(entities.SpanStatusCode.ERROR, description=parts.error)
        span.end(outputs=parts.outputs, status=status, end_time_ns=parts.end_ns)
        return True

    def _chosen_ids(self) -> ChosenTraceIds | None:
        """The id generator of MLflow's tracer provider, wrapped so that a root span can take
        a chosen trace id. None (MLflow assigns ids; the tag keeps ours) if that fails."""
        if self._ids_failed:
            return None
        try:
            from llmops.tracing.ids import ChosenTraceIds

            tracing = importlib.import_module("mlflow.tracing")
            provider = tracing.get_bridged_tracer_provider()  # re-created on URI changes
            current = provider.id_generator
            if not isinstance(current, ChosenTraceIds):
                current = ChosenTraceIds(current)
                provider.id_generator = current
            # The SDK caches one tracer per scope, each holding the generator it was made with.
            for tracer in list(getattr(provider, "_tracers", {}).values()):
                if getattr(tracer, "id_generator", current) is not current:
                    tracer.id_generator = current
            return current
        except Exception as exc:
            self._ids_failed = True
            log.info("MLflow assigns its own trace ids (tag llmops.trace_id has ours): %s", exc)
            return None

    def _flush_mlflow(self) -> None:
        if self._mlflow is None or not self._traced_since_flush:
            return
        self._traced_since_flush = 0
        try:
            self._mlflow.flush_trace_async_logging()
        except Exception as exc:
            self._error(f"MLflow flush failed: {_brief(exc)}")

    # --- counting and logging ------------------------------------------------------------
    def _count(self, **deltas: int) -> None:
        with self._stats_lock:
            for key, delta in deltas.items():
                self.stats[key] += delta

    def _error(self, detail: str, *, count: bool = True) -> None:
        """Count one error; log the first only (export must never flood the logs)."""
        if count:
            self._count(errors=1)
        self._log_once(
            "error",
            "MLflow tracing failed: %s. Calls are not affected; further trace errors are "
            "counted (stats['errors']), not logged.",
            detail,
        )

    def _log_once(self, key: str, message: str, *args: object) -> None:
        with self._stats_lock:
            first = key not in self._logged
            self._logged.add(key)
        if first:
            log.warning(message, *args)


class _MlflowFailures(logging.Filter):
    """Counts the export failures MLflow logs, and keeps them out of the logs."""

    def __init__(self, sink: MlflowTraceSink) -> None:
        super().__init__()
        self.sink = sink
        self.installed = False

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        message = record.getMessage()
        if not message.startswith(_MLFLOW_FAILURES):
            return True
        self.sink._error(f"MLflow: {message[:500]}")
        return False

    def install(self) -> None:
        if not self.installed:
            for name in _MLFLOW_LOGGERS:
                logging.getLogger(name).addFilter(self)
            self.installed = True

    def remove(self) -> None:
        if self.installed:
            for name in _MLFLOW_LOGGERS:
                logging.getLogger(name).removeFilter(self)
            self.installed = False


def _in_process_store(uri: str) -> bool:
    """A database or folder the MLflow client opens itself (not a server, not Databricks)."""
    return uri.split(":", 1)[0].lower() not in _REMOTE_SCHEMES


def _installed(distribution: str) -> bool:
    try:
        importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"
