"""OpenTelemetry metrics of each call, from its request-log record.

- `llmops.gateway.duration`: histogram, ms; model, deployment, consumer, status_class
  (`2xx`, `4xx`, ...), stream
- `llmops.gateway.ttft`: histogram, ms; model, deployment, consumer, stream
- `llmops.gateway.tokens`: counter, {token}; model, consumer, kind (`prompt`, `completion`),
  estimated (the upstream reported no usage: the record's estimate)
- `llmops.gateway.errors`: counter, {error}; error.type, error.code, model, consumer,
  status_class
- `llmops.requestlog.spilled`: counter, {record}; records that went to the local spool
  instead of Blob Storage (store unreachable or too slow), observed from the writer
- `llmops.requestlog.backlog`: gauge, {record}; records buffered or spooled, not yet stored

`MetricsSink` takes any `Meter`: tests pass one from a private `MeterProvider` with an
in-memory reader. In Azure, `build_meter` configures the Azure Monitor distro
(`azure-monitor-opentelemetry`) once, when `APPLICATIONINSIGHTS_CONNECTION_STRING` is set;
that takes about a second (import and set-up), so the gateway builds it in a background thread
(`DeferredMetricsSink`) and never on a call's path.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from llmops import __version__

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

    from llmops.settings import TraceSettings

log = logging.getLogger("llmops.tracing")
METER_NAME = "llmops"
_NONE = "none"  # attribute value for a missing field (OTel attributes cannot be null)
_configured = False
_configure_lock = threading.Lock()


class MetricsSink:
    """A request-log sink that records each call's duration, tokens and errors."""

    def __init__(self, meter: Meter) -> None:
        self.duration = meter.create_histogram(
            "llmops.gateway.duration", unit="ms", description="Gateway call duration"
        )
        self.ttft = meter.create_histogram(
            "llmops.gateway.ttft", unit="ms", description="Time to the answer's first byte"
        )
        self.tokens = meter.create_counter(
            "llmops.gateway.tokens", unit="{token}", description="Tokens by model and consumer"
        )
        self.errors = meter.create_counter(
            "llmops.gateway.errors", unit="{error}", description="Failed calls by error type"
        )

    def __call__(self, records: list[dict[str, Any]]) -> None:
        """Record a batch; a malformed record is skipped, never raised."""
        for record in records:
            try:
                self.record(record)
            except Exception:
                log.debug("no metrics for record %s", record.get("request_id"), exc_info=True)

    def record(self, record: dict[str, Any]) -> None:
        """Record one call."""
        model = _text(record.get("model"))
        consumer = _text(record.get("consumer"))
        status_class = f"{int(record.get('status') or 0) // 100}xx"
        stream = bool(record.get("stream"))
        call: dict[str, str | bool] = {
            "model": model,
            "deployment": _text(record.get("deployment")),
            "consumer": consumer,
            "stream": stream,
        }
        if record.get("latency_ms") is not None:
            self.duration.record(
                float(record["latency_ms"]), {**call, "status_class": status_class}
            )
        if record.get("ttft_ms") is not None:
            self.ttft.record(float(record["ttft_ms"]), call)
        usage = record.get("usage") or {}
        for kind, key in (("prompt", "prompt_tokens"), ("completion", "completion_tokens")):
            count = usage.get(key)
            if isinstance(count, int) and count > 0:
                self.tokens.add(
                    count,
                    {
                        "model": model,
                        "consumer": consumer,
                        "kind": kind,
                        "estimated": bool(usage.get("estimated")),
                    },
                )
        error = record.get("error")
        if error:
            self.errors.add(
                1,
                {
                    "error.type": _text(error.get("type")),
                    "error.code": _text(error.get("code")),
                    "model": model,
                    "consumer": consumer,
                    "status_class": status_class,
                },
            )


def build_meter(settings: TraceSettings) -> Meter | None:
    """The `llmops` meter, exporting to Azure Monitor, or None when it is not configured.

    Configures the Azure Monitor distro once per process, unless a metrics SDK is already
    in place (e.g. the Functions worker configured it), which is then used as it is.
    """
    global _configured
    if not settings.appinsights_connection_string:
        return None
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    with _configure_lock:
        if not _configured and not isinstance(metrics.get_meter_provider(), MeterProvider):
            distro = importlib.import_module("azure.monitor.opentelemetry")
            distro.configure_azure_monitor(
                connection_string=settings.appinsights_connection_string,
                credential=entra_credential(settings.appinsights_authentication),
            )
        _configured = True
    return metrics.get_meter(METER_NAME, __version__)


def entra_credential(authentication: str | None) -> Any:
    """The credential an `Authorization=AAD;ClientId=<id>` authentication string asks for
    (Application Insights with local authentication off), else None (the connection string's
    instrumentation key). The Functions host reads the same setting; the Azure Monitor
    exporter only takes a credential object."""
    parts = dict(item.split("=", 1) for item in (authentication or "").split(";") if "=" in item)
    if parts.get("Authorization", "").strip().upper() != "AAD":
        return None
    from azure.identity import ManagedIdentityCredential

    client_id = parts.get("ClientId", "").strip() or None
    return ManagedIdentityCredential(client_id=client_id)


class WriterStats(Protocol):
    """What the request-log writer exposes to the metrics (see `RequestLogWriter`)."""

    stats: dict[str, int]

    def backlog(self) -> int: ...


def observe_writer(meter: Meter, writer: WriterStats) -> None:
    """Report the writer's spill count and backlog whenever the metrics are collected."""
    from opentelemetry.metrics import CallbackOptions, Observation

    def spilled(options: CallbackOptions) -> list[Observation]:
        return [Observation(writer.stats["spooled"])]

    def backlog(options: CallbackOptions) -> list[Observation]:
        return [Observation(writer.backlog())]

    meter.create_observable_counter(
        "llmops.requestlog.spilled",
        callbacks=[spilled],
        unit="{record}",
        description="Request-log records sent to the local spool instead of Blob Storage",
    )
    meter.create_observable_gauge(
        "llmops.requestlog.backlog",
        callbacks=[backlog],
        unit="{record}",
        description="Request-log records buffered or spooled, not yet stored",
    )


class DeferredMetricsSink:
    """A `MetricsSink` whose meter is built in a background thread.

    Records that arrive before the meter is ready wait (at most `max_pending`) and are
    recorded with the next batch, or at `flush()`. If no meter can be built, records are
    discarded after one logged error.
    """

    def __init__(self, build: Callable[[], Meter | None], *, max_pending: int = 10_000) -> None:
        self.max_pending = max_pending
        self.stats = {"recorded": 0, "dropped": 0}
        self._sink: MetricsSink | None = None
        self._failed = False
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._meter: Meter | None = None
        self._watched: list[WriterStats] = []
        self._thread = threading.Thread(
            target=self._build, args=(build,), name="llmops-metrics-setup", daemon=True
        )
        self._thread.start()

    def _build(self, build: Callable[[], Meter | None]) -> None:
        try:
            meter = build()
            if meter is not None:
                with self._lock:
                    self._sink, self._meter = MetricsSink(meter), meter
                    for writer in self._watched:
                        observe_writer(meter, writer)
            else:
                self._failed = True
        except Exception:
            self._failed = True
            log.exception("OpenTelemetry metrics are off: the meter could not be built")
        finally:
            self._ready.set()

    def watch(self, writer: WriterStats) -> None:
        """Also report `writer`'s spill count and backlog (once the meter is ready)."""
        with self._lock:
            if self._meter is not None:
                observe_writer(self._meter, writer)
            else:
                self._watched.append(writer)

    def __call__(self, records: list[dict[str, Any]]) -> None:
        """Record a batch now, or keep it until the meter is ready. Never raises."""
        with self._lock:
            if self._sink is None:
                if self._failed:
                    self._pending.clear()
                    return
                room = max(self.max_pending - len(self._pending), 0)
                self._pending.extend(records[:room])
                self.stats["dropped"] += len(records) - min(room, len(records))
                return
            batch, self._pending = [*self._pending, *records], []
            self.stats["recorded"] += len(batch)
        self._sink(batch)

    def flush(self, timeout: float | None = None) -> bool:
        """Record what waited for the meter (waiting at most `timeout` for it)."""
        self._ready.wait(timeout)
        if self._sink is not None:
            self([])
        return self._ready.is_set()

    def close(self, timeout: float | None = None) -> None:
        """Same as `flush`: the SDK's meter provider exports at process exit by itself."""
        self.flush(timeout)


def _text(value: Any) -> str:
    return _NONE if value is None else str(value)


def flush_meters(timeout_ms: int = 10_000) -> None:
    """Export what the process's meters hold now: a Functions instance may be frozen right
    after an invocation. Never raises."""
    from opentelemetry import metrics

    flush = getattr(metrics.get_meter_provider(), "force_flush", None)
    if callable(flush):
        try:
            flush(timeout_ms)
        except Exception:
            log.warning("metrics could not be flushed", exc_info=True)
