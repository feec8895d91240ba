"""OpenTelemetry metrics of each drift run, for the alert rules in infra/.

All are gauges, recorded once per analysed window (no window attribute: one series each, so a
long-running process does not pile up series; the report id is in the report):
- `llmops.drift.detected`: 1 when the dataset drifted, else 0.
- `llmops.drift.score`: per feature (`feature`): a p-value, a distance or a ROC AUC as the
  feature's method gives it (the method is in the report; see docs/drift.md).
- `llmops.drift.feature_drifted`: per feature (`feature`): 1 when it drifted, else 0.

The SDK re-exports a gauge's last value at every export while the process lives, so an
attribute that changes between runs (a verdict, a method) would leave stale series behind
that keep an alert firing; only the feature names the series.
- `llmops.drift.error_rate`, `llmops.drift.content_filter_rate`: shares of the current
  window's calls (0..1).
- `llmops.drift.latency_p95_ms`: the current window's 95th percentile call latency.

In Azure the meter exports through `azure-monitor-opentelemetry` (configured once by
`llmops.tracing.metrics.build_meter`); tests pass a meter with an in-memory reader.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter


class DriftMetrics:
    """Records a drift report's verdicts as gauges."""

    def __init__(self, meter: Meter) -> None:
        self.detected = meter.create_gauge(
            "llmops.drift.detected", description="1 when the window's traffic drifted"
        )
        self.score = meter.create_gauge(
            "llmops.drift.score", description="Per-feature drift score (see method)"
        )
        self.feature_drifted = meter.create_gauge(
            "llmops.drift.feature_drifted", description="1 when the feature drifted in the window"
        )
        self.error_rate = meter.create_gauge(
            "llmops.drift.error_rate", description="Share of failed calls in the window"
        )
        self.content_filter_rate = meter.create_gauge(
            "llmops.drift.content_filter_rate",
            description="Share of calls stopped by the content filter in the window",
        )
        self.latency_p95 = meter.create_gauge(
            "llmops.drift.latency_p95_ms", unit="ms", description="95th percentile call latency"
        )

    def record(self, report: dict[str, Any]) -> None:
        """Record one report's gauges."""
        self.detected.set(1 if report["summary"]["dataset_drift"] else 0)
        for feature in report["features"]:
            if feature["score"] is None:
                continue
            name = {"feature": feature["name"]}
            self.score.set(float(feature["score"]), name)
            self.feature_drifted.set(1 if feature["drift"] else 0, name)
        rates = report["rates"]
        for gauge, key in (
            (self.error_rate, "error_rate"),
            (self.content_filter_rate, "content_filter_rate"),
            (self.latency_p95, "latency_p95_ms"),
        ):
            value = rates[key]["current"]
            if value is not None:
                gauge.set(float(value))
