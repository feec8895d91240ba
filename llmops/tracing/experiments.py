"""The MLflow experiment that traces and drift runs go to, found or created in one place.

A local SQLite store (`make run`, tests) gets its folder made and its artifacts beside the
database: left to itself, MLflow would put them in `./mlruns` under whatever folder the
process happens to run in. mlflow is imported on use.
"""

from __future__ import annotations

from pathlib import Path


def experiment_id(uri: str, name: str) -> str:
    """The id of experiment `name` in the tracking store at `uri`, created when missing."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    try:
        return str(client.create_experiment(name, artifact_location=local_artifacts(uri)))
    except MlflowException:  # created meanwhile by another process (or the call failed)
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return str(experiment.experiment_id)


def local_artifacts(uri: str) -> str | None:
    """For a local SQLite store, artifacts next to the database (not in the working folder)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).parent / "artifacts").resolve().as_uri()
