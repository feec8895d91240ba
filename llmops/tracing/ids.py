"""An OpenTelemetry id generator that lets the trace worker choose a root span's trace id.

MLflow derives its trace id from the OpenTelemetry trace id of the root span (`tr-<32 hex>`).
Installed on MLflow's tracer provider, this generator returns the id chosen for the next root
span on the worker's thread, and defers to the original generator everywhere else. Imported
by the trace worker only (it loads the OpenTelemetry SDK).
"""

from __future__ import annotations

import threading

from opentelemetry.sdk.trace.id_generator import IdGenerator


class ChosenTraceIds(IdGenerator):
    """Random ids, except for a trace id chosen beforehand on the current thread."""

    def __init__(self, inner: IdGenerator) -> None:
        self.inner = inner
        self._local = threading.local()

    def choose(self, trace_id: int | None) -> None:
        """Use `trace_id` for the next root span started on this thread (None: random)."""
        self._local.trace_id = trace_id

    def generate_span_id(self) -> int:
        return self.inner.generate_span_id()

    def generate_trace_id(self) -> int:
        chosen: int | None = getattr(self._local, "trace_id", None)
        if chosen is not None:
            self._local.trace_id = None
            return chosen
        return self.inner.generate_trace_id()
