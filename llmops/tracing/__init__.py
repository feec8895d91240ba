"""MLflow traces and OpenTelemetry metrics of each call.

Both are request-log sinks: the writer hands them each batch of built, redacted records
(`llmops.logs.writer.RecordSink`), so a call's trace and metrics describe exactly what its
record says, and nothing is computed on the request path. Importing this package is cheap:
mlflow and the Azure Monitor distro load in background threads on first use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from llmops.logs.writer import RecordSink
    from llmops.settings import TraceSettings

log = logging.getLogger("llmops.tracing")


@runtime_checkable
class FlushableSink(Protocol):
    """A sink with background work: `flush` waits for it, `close` ends it (both blocking)."""

    def __call__(self, records: list[dict[str, Any]]) -> None: ...

    def flush(self, timeout: float | None = None) -> bool: ...

    def close(self, timeout: float | None = None) -> None: ...


@runtime_checkable
class AsyncFlushableSink(Protocol):
    """A sink whose background work runs on the event loop: `aflush` and `aclose` await it."""

    def __call__(self, records: list[dict[str, Any]]) -> None: ...

    async def aflush(self, within_s: float | None = None) -> bool: ...

    async def aclose(self, within_s: float | None = None) -> None: ...


def build_sinks(settings: TraceSettings) -> list[RecordSink]:
    """The sinks the settings ask for: MLflow traces (`LLMOPS_TRACING`, on by default; over
    OTLP to a tracking server, else through MLflow's client) and Azure Monitor metrics (when
    `APPLICATIONINSIGHTS_CONNECTION_STRING` is set)."""
    sinks: list[RecordSink] = []
    if settings.enabled and settings.export == "otlp" and settings.process:
        from llmops.tracing.exporter import ProcessTraceSink

        sinks.append(ProcessTraceSink(settings))
    elif settings.enabled and settings.export == "otlp":
        from llmops.tracing.otlp import OtlpTraceSink

        sinks.append(OtlpTraceSink(settings))
    elif settings.enabled:
        from llmops.tracing.mlflow_sink import MlflowTraceSink

        sinks.append(MlflowTraceSink(settings))
    if settings.metrics:
        from llmops.tracing.metrics import DeferredMetricsSink, build_meter

        sinks.append(DeferredMetricsSink(lambda: build_meter(settings)))
    return sinks


async def flush_sinks(sinks: Sequence[object], *, close: bool = False) -> None:
    """Flush (or close) every sink that has background work, off the event loop, together.
    Each waits at most its own flush timeout; failures are logged, never raised."""
    work: list[Awaitable[object]] = []
    for sink in sinks:
        if isinstance(sink, AsyncFlushableSink):
            work.append(sink.aclose() if close else sink.aflush())
        elif isinstance(sink, FlushableSink):
            work.append(asyncio.to_thread(sink.close if close else sink.flush))
    for result in await asyncio.gather(*work, return_exceptions=True):
        if isinstance(result, BaseException):
            log.error(
                "a trace/metrics sink failed to %s: %r", "close" if close else "flush", result
            )
