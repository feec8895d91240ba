"""Entry points of the drift use case for the timer function and the `llmops drift` command.

Importing this module is cheap (it is imported with `function_app`); the monitor, scipy and
scikit-learn load when a run starts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llmops.settings import Settings, parse_instant

if TYPE_CHECKING:
    from llmops.drift.monitor import DriftMonitor, DriftRun

log = logging.getLogger("llmops.drift")


def build_monitor(settings: Settings) -> DriftMonitor:
    """A monitor with the stores and the Azure Monitor meter (when configured) of `settings`."""
    from llmops.drift.monitor import DriftMonitor

    metrics = None
    if settings.traces.metrics:
        from llmops.drift.metrics import DriftMetrics
        from llmops.tracing.metrics import build_meter

        try:
            meter = build_meter(settings.traces)
            metrics = DriftMetrics(meter) if meter is not None else None
        except Exception:
            log.exception("drift metrics are off: the meter could not be built")
    return DriftMonitor(settings, metrics=metrics)


async def run_timer(
    past_due: bool, schedule_status: Mapping[str, Any] | None, *, now: datetime | None = None
) -> list[DriftRun]:
    """What the timer runs: the due window, and the missed ones when the run is past due."""
    settings = Settings.from_env()
    last_run = _last_run(schedule_status) if past_due else None
    monitor = build_monitor(settings)
    try:
        return await monitor.run_due(now, last_run=last_run)
    finally:
        await monitor.aclose()
        _flush_metrics()


def _last_run(schedule_status: Mapping[str, Any] | None) -> datetime | None:
    """The host's `ScheduleStatus.Last`, when it holds a real time."""
    raw = (schedule_status or {}).get("Last")
    if not isinstance(raw, str) or raw.startswith("0001-"):
        return None
    try:
        return parse_instant(raw)
    except ValueError:
        log.warning("ignoring the timer's unreadable ScheduleStatus.Last %r", raw)
        return None


def _flush_metrics() -> None:
    """Export the gauges now: a Functions instance may be frozen right after the run."""
    from llmops.tracing.metrics import flush_meters

    flush_meters()


async def run_cli(
    settings: Settings,
    current_start: datetime | None,
    current_end: datetime | None,
    reference_start: datetime | None,
    reference_end: datetime | None,
    *,
    as_json: bool = False,
) -> int:
    """`llmops drift`: analyse the given windows (or the due one) and print where reports went."""
    import orjson

    from llmops.drift.schedule import Window

    monitor = build_monitor(settings)
    try:
        if current_start is not None and current_end is not None:
            reference = (
                Window(reference_start, reference_end)
                if reference_start is not None and reference_end is not None
                else None
            )
            runs = [await monitor.run_window(Window(current_start, current_end), reference)]
        else:
            runs = await monitor.run_due()
    finally:
        await monitor.aclose()
        _flush_metrics()
    for run in runs:
        if as_json:
            print(orjson.dumps(run.report, option=orjson.OPT_INDENT_2).decode())
            continue
        print(describe_run(run, monitor.report_store.description))
    return 0


def describe_run(run: DriftRun, where: str) -> str:
    """A few lines a person reads after a run."""
    report = run.report
    summary, windows = report["summary"], report["windows"]
    lines = [
        f"drift {report['report_id']}: {summary['verdict'].upper()} "
        f"({summary['features_drifted']} of {summary['features_tested']} features drifted"
        + (f": {', '.join(summary['drifted'])}" if summary["drifted"] else "")
        + ")",
        f"  current   {windows['current']['start']} .. {windows['current']['end']}: "
        f"{windows['current']['records']} calls",
        f"  reference {windows['reference']['start']} .. {windows['reference']['end']}: "
        f"{windows['reference']['records']} calls ({windows['reference']['kind']})",
        f"  report: {where}: {run.html_name} (and {run.json_name})",
    ]
    if run.retrain_request:
        lines.append(f"  retraining requested: retrain-requests/{run.retrain_request}")
    lines.extend(f"  problem: {problem}" for problem in run.problems)
    return "\n".join(lines)


async def run_simulation(settings: Settings, calls: int, shift: float, *, drift: bool) -> int:
    """`llmops simulate`: two phases of traffic, then the drift of the second against the first."""
    from llmops.drift.simulate import simulate

    print(f"llmops simulate: {calls} reference calls, then {calls} calls shifted by {shift:g} ...")
    reference, current = await simulate(settings, calls=calls, shift=shift)
    for label, phase in (("reference", reference), ("current", current)):
        print(
            f"  {label}: {phase.window.describe()['start']} .. {phase.window.describe()['end']}"
            f" ({phase.ok} answered, {phase.failed} rejected)"
        )
    command = (
        f"llmops drift --current-start {current.window.describe()['start']} "
        f"--current-end {current.window.describe()['end']} "
        f"--reference-start {reference.window.describe()['start']} "
        f"--reference-end {reference.window.describe()['end']}"
    )
    if not drift:
        print(f"now run: {command}")
        return 0
    print(f"running: {command}")
    return await run_cli(
        settings,
        current.window.start,
        current.window.end,
        reference.window.start,
        reference.window.end,
    )
