"""One MLflow run per drift window, in the experiment `LLMOPS_DRIFT_EXPERIMENT` (`llmops-drift`).

Metrics: `dataset_drift` (0/1), `drift_share`, `<feature>.score` and `<feature>.drift` (0/1)
per tested feature, and the window rates. Params: the windows and the settings. Artifacts:
`report.json` and `report.html`. The run is named after the window and tagged
`llmops.report_id`; a rerun of the window logs into the same run (found by that tag), so the
experiment holds one run per window.

`MlflowClient` is used rather than the fluent API: it keeps no process-wide active run or
experiment, so it cannot disturb the gateway's trace exporter in the same process.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

from llmops.settings import Settings

REPORT_TAG = "llmops.report_id"


def log_run(settings: Settings, report: dict[str, Any], json_name: str, html_name: str) -> str:
    """Log `report` as a run; return its id. Raises what MLflow raises."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    from llmops.tracing.experiments import experiment_id as find_experiment

    uri = settings.traces.tracking_uri
    experiment_id = find_experiment(uri, settings.drift.experiment_name)
    client = MlflowClient(tracking_uri=uri)
    report_id = str(report["report_id"])
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{REPORT_TAG}` = '{report_id}'", max_results=1
    )
    run_id = (
        found[0].info.run_id
        if found
        else client.create_run(experiment_id, run_name=report_id).info.run_id
    )
    now = int(time.time() * 1000)
    metrics = [Metric(key, value, now, 0) for key, value in _metrics(report).items()]
    windows = report["windows"]
    params = {
        "current_start": windows["current"]["start"],
        "current_end": windows["current"]["end"],
        "reference_start": windows["reference"]["start"],
        "reference_end": windows["reference"]["end"],
        "reference_kind": windows["reference"]["kind"],
        "share_threshold": str(report["summary"]["share_threshold"]),
        "min_samples": str(report["settings"]["min_samples"]),
    }
    tags = {
        REPORT_TAG: report_id,
        "llmops.verdict": report["summary"]["verdict"],
        "llmops.report_json": json_name,
        "llmops.report_html": html_name,
    }
    existing = client.get_run(run_id).data.params
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, v) for k, v in params.items() if k not in existing],
        tags=[RunTag(k, v) for k, v in tags.items()],
    )
    with tempfile.TemporaryDirectory(prefix="llmops-drift-") as folder:
        (Path(folder) / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
        from llmops.drift.html import render

        (Path(folder) / "report.html").write_text(render(report), encoding="utf-8")
        client.log_artifacts(run_id, folder)
    client.set_terminated(run_id)
    return str(run_id)


def _metrics(report: dict[str, Any]) -> dict[str, float]:
    summary = report["summary"]
    values: dict[str, float] = {"dataset_drift": 1.0 if summary["dataset_drift"] else 0.0}
    if summary["drift_share"] is not None:
        values["drift_share"] = float(summary["drift_share"])
    for feature in report["features"]:
        if feature["score"] is not None:
            values[f"{feature['name']}.score"] = float(feature["score"])
            values[f"{feature['name']}.drift"] = 1.0 if feature["drift"] else 0.0
    for key, pair in report["rates"].items():
        if key != "calls" and pair["current"] is not None:
            values[f"current.{key}"] = float(pair["current"])
    values["current.calls"] = float(report["rates"]["calls"]["current"])
    values["reference.calls"] = float(report["rates"]["calls"]["reference"])
    return values
