"""The drift monitor's use case: analyse windows, write reports, emit metrics, hand off.

The timer function, `llmops drift` and the tests all call `DriftMonitor`. One run of a window:

1. reads the current and reference windows from the request log (`WindowReader`),
2. compares their features (`analysis.analyse`),
3. writes `reports/<window id>.json` and `.html` to the `drift-reports` container (a rerun of a
   window overwrites its two blobs),
4. writes a retraining request to `retrain-requests/` when the dataset drifted in
   `LLMOPS_RETRAIN_AFTER` consecutive windows and none was written in the cooldown,
5. records the OpenTelemetry gauges (`DriftMetrics`) and an MLflow run in `llmops-drift`.

Steps 4 and 5 never fail the run: their errors are logged and noted in the result.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import orjson

from llmops import __version__
from llmops.drift.features import WindowSample
from llmops.drift.schedule import Schedule, Window
from llmops.logs.store import LogStore, store_for
from llmops.settings import REPORT_CONTAINER, RETRAIN_REQUESTS_CONTAINER, Settings

if TYPE_CHECKING:
    from llmops.drift.metrics import DriftMetrics

log = logging.getLogger("llmops.drift")
REPORT_SCHEMA = "llmops.drift_report"
REPORT_SCHEMA_VERSION = 1
REQUEST_SCHEMA = "llmops.retrain_request"
REQUEST_PREFIX = "drift-"


def report_name(window: Window, suffix: str = "json") -> str:
    """Where a window's report lives in the `drift-reports` container."""
    return f"reports/{window.id}.{suffix}"


@dataclass
class DriftRun:
    """What one window's run produced."""

    report: dict[str, Any]
    json_name: str
    html_name: str
    retrain_request: str | None = None
    problems: list[str] = field(default_factory=list)


class DriftMonitor:
    """Runs drift analyses with the stores and sinks the settings configure."""

    def __init__(
        self,
        settings: Settings,
        *,
        log_store: LogStore | None = None,
        report_store: LogStore | None = None,
        request_store: LogStore | None = None,
        metrics: DriftMetrics | None = None,
        mlflow: bool | None = None,
    ) -> None:
        self.settings = settings
        self.schedule = Schedule.parse(settings.drift.schedule)
        self._own_log_store = log_store is None  # worker processes can open the same store
        self.log_store = log_store or store_for(settings.logs)
        self.report_store = report_store or store_for(settings.logs, REPORT_CONTAINER)
        self.request_store = request_store or store_for(settings.logs, RETRAIN_REQUESTS_CONTAINER)
        self.metrics = metrics
        self.mlflow = settings.traces.enabled if mlflow is None else mlflow

    async def aclose(self) -> None:
        """Release the stores' connections."""
        for store in (self.log_store, self.report_store, self.request_store):
            await store.aclose()

    async def run_due(
        self, now: datetime | None = None, *, last_run: datetime | None = None
    ) -> list[DriftRun]:
        """Analyse the window(s) the schedule says are due at `now` (see `Schedule.due_windows`)."""
        now = now or datetime.now(UTC)
        windows = self.schedule.due_windows(
            now, last_run=last_run, limit=self.settings.drift.catchup
        )
        return [await self.run_window(window) for window in windows]

    def reference_for(self, current: Window) -> tuple[Window, str]:
        """The pinned baseline when configured, else the hours before the current window."""
        if self.settings.drift.baseline is not None:
            return Window(*self.settings.drift.baseline), "pinned"
        span = timedelta(hours=self.settings.drift.reference_hours)
        return Window(current.start - span, current.start), "rolling"

    async def run_window(self, current: Window, reference: Window | None = None) -> DriftRun:
        """Analyse one current window against its reference and publish the results."""
        from llmops.drift.analysis import analyse

        started = time.perf_counter()
        kind = "explicit"
        if reference is None:
            reference, kind = self.reference_for(current)
        drift = self.settings.drift
        (ref_sample, ref_read), (cur_sample, cur_read) = await self._samples(reference, current)
        body = await asyncio.to_thread(
            analyse,
            ref_sample,
            cur_sample,
            min_samples=drift.min_samples,
            share=drift.share,
            tests=drift.tests,
            size_rule=drift.size_rule,
        )
        report: dict[str, Any] = {
            "schema": REPORT_SCHEMA,
            "schema_version": REPORT_SCHEMA_VERSION,
            "report_id": current.id,
            "generated_at": _iso(datetime.now(UTC)),
            "gateway_version": __version__,
            "windows": {
                "current": {**current.describe(), **cur_read},
                "reference": {**reference.describe(), "kind": kind, **ref_read},
            },
            "settings": {
                "min_samples": drift.min_samples,
                "share": drift.share,
                "tests": {k: list(v) for k, v in drift.tests.items()},
                "schedule": drift.schedule,
            },
            **body,
        }
        run = DriftRun(report, report_name(current), report_name(current, "html"))
        report["retraining"] = await self._handoff(run, current)
        report["duration_s"] = round(time.perf_counter() - started, 3)
        await self._write_reports(run)
        if self.metrics is not None:
            try:
                self.metrics.record(report)
            except Exception as exc:  # metrics never fail a run
                log.exception("drift metrics were not recorded")
                run.problems.append(f"metrics: {exc!r}")
        if self.mlflow:
            problem = await asyncio.to_thread(self._log_mlflow, run)
            if problem:
                run.problems.append(problem)
        log.info(
            "drift %s: %s (%d of %d features drifted)",
            current.id,
            report["summary"]["verdict"],
            report["summary"]["features_drifted"],
            report["summary"]["features_tested"],
        )
        return run

    async def _samples(self, *windows: Window) -> list[tuple[WindowSample, dict[str, Any]]]:
        from llmops.drift.sampling import sample_windows

        logs = self.settings.logs if self._own_log_store else None
        found = await sample_windows(list(windows), self.log_store, self.settings.drift, logs)
        return [
            (
                sample,
                {
                    "records": stats.records,
                    "blobs": stats.blobs,
                    "corrupt_lines": stats.corrupt,
                    "unknown_schema": stats.unknown_schema,
                    "duplicates": stats.duplicates,
                    # calls per registry version that served them (LLMOPS_REGISTRY_MODELS)
                    "served_versions": dict(sample.versions.most_common()),
                },
            )
            for sample, stats in found
        ]

    async def _write_reports(self, run: DriftRun) -> None:
        from llmops.drift.html import render

        data = orjson.dumps(run.report, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
        await self.report_store.put(run.json_name, data, "application/json")
        page = render(run.report).encode()
        await self.report_store.put(run.html_name, page, "text/html; charset=utf-8")

    async def _handoff(self, run: DriftRun, current: Window) -> dict[str, Any]:
        """Write a retraining request after enough consecutive drifted windows."""
        drift = self.settings.drift
        state: dict[str, Any] = {
            "after": drift.retrain_after,
            "cooldown_hours": drift.retrain_cooldown_hours,
            "consecutive": 0,
            "request": None,
        }
        if not run.report["summary"]["dataset_drift"]:
            return state
        consecutive, window = 1, current
        while consecutive < drift.retrain_after:
            window = Window(window.start - (window.end - window.start), window.start)
            previous = await self._report(window)
            if previous is None or not previous["summary"]["dataset_drift"]:
                break
            consecutive += 1
        state["consecutive"] = consecutive
        if consecutive < drift.retrain_after:
            return state
        name = f"{REQUEST_PREFIX}{current.id}.json"
        try:
            recent = await self._recent_request(current.end)
            if recent == name:  # a rerun of this window: the request stands, not rewritten
                state["request"] = run.retrain_request = name
                return state
            if recent is not None:
                state["skipped"] = f"{recent} was written within the cooldown"
                return state
            request = {
                "schema": REQUEST_SCHEMA,
                "schema_version": 1,
                "reason": f"dataset drift in {consecutive} consecutive windows",
                "requested_by": "drift-monitor",
                "created_at": _iso(datetime.now(UTC)),
                "windows": {
                    "current": current.describe(),
                    "reference": run.report["windows"]["reference"],
                },
                "drifted_features": run.report["summary"]["drifted"],
                "reports": {
                    "container": REPORT_CONTAINER,
                    "json": run.json_name,
                    "html": run.html_name,
                },
                "dataset": {
                    "container": self.settings.logs.container,
                    "start": current.describe()["start"],
                    "end": current.describe()["end"],
                    "prefixes": _prefixes(current),
                },
            }
            await self.request_store.put(
                name, orjson.dumps(request, option=orjson.OPT_INDENT_2), "application/json"
            )
        except Exception as exc:  # the report is still written
            log.exception("the retraining request was not written")
            run.problems.append(f"retraining request: {exc!r}")
            state["error"] = repr(exc)
            return state
        state["request"] = name
        run.retrain_request = name
        return state

    async def _report(self, window: Window) -> dict[str, Any] | None:
        name = report_name(window)
        if name not in await self.report_store.list(name):
            return None
        try:
            value = orjson.loads(await self.report_store.get(name))
        except orjson.JSONDecodeError:
            return None
        return value if isinstance(value, dict) and "summary" in value else None

    async def _recent_request(self, end: datetime) -> str | None:
        """The newest drift-written request whose window ended within the cooldown."""
        cooldown = timedelta(hours=self.settings.drift.retrain_cooldown_hours)
        for name in reversed(await self.request_store.list(REQUEST_PREFIX)):
            written = _window_end(name)
            if written is not None and end - cooldown < written <= end:
                return name
        return None

    def _log_mlflow(self, run: DriftRun) -> str | None:
        from llmops.drift.mlflow_run import log_run

        try:
            log_run(self.settings, run.report, run.json_name, run.html_name)
        except Exception as exc:  # MLflow never fails a drift run
            log.exception("the drift run was not logged to MLflow")
            return f"mlflow: {exc!r}"
        return None


def _prefixes(window: Window) -> list[str]:
    from llmops.logs.layout import hour_prefixes

    return list(hour_prefixes(window.start, window.end))


def _window_end(name: str) -> datetime | None:
    """The end of the window a `drift-<start>-<end>.json` request was written for."""
    stem = name.removeprefix(REQUEST_PREFIX).removesuffix(".json")
    end = stem.rpartition("-")[2]
    for pattern in ("%Y%m%dT%H%MZ", "%Y%m%dT%H%M%SZ"):
        try:
            return datetime.strptime(end, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
