"""A sample retraining job: what the Databricks job started by a retraining request does.

Runs as a Databricks Python-script task or locally against a local MLflow store. On
Databricks, job parameters reach a Python-script task only as the task's own parameters: set
them to `["--llmops_reason", "{{job.parameters.llmops_reason}}", ...]` for each parameter the
requests carry (docs/retraining.md). Arguments this script does not know are logged and
ignored, so a request may carry extra parameters for a real job.

The registry: with a workspace whose default registry is Unity Catalog (MLflow 3 on
Databricks), `--model` must be a three-part name (`catalog.schema.model`), and Unity Catalog
accepts only model versions with a signature: a real job logs its model with
`mlflow.<flavor>.log_model(..., signature=...)` and registers that. This sample registers a
plain configuration folder, which the workspace model registry (`--registry-uri databricks`)
and local stores accept.

Locally:

    .venv/bin/python jobs/retrain_job.py --tracking-uri sqlite:///.llmops/mlflow.db \\
        --model support-bot --deployment gpt-4o-mini-2 \\
        --system-prompt "You are the support assistant. Outages: link the status page." \\
        --llmops_reason "dataset drift in 2 consecutive windows"

Its steps, which a real job replaces with its own training and evaluation:
1. read the request's parameters (`llmops_request`, `llmops_dataset`, `llmops_reason`);
2. "train": here, take the candidate configuration given on the command line (a new
   deployment, system prompt and default parameters), in a real job fine-tune or tune prompts
   on the request log partitions named by `llmops_dataset`;
3. evaluate the candidate (here a stand-in score; log real metrics in a real job) in an MLflow
   run;
4. register it as a new version of the registered model, with the tags the gateway reads
   (`llmops.deployment`, `llmops.system_prompt`, `llmops.params`);
5. move the alias (`champion`) to it when it scores at least `--min-score`: the gateways that
   serve `models:/<model>@champion` switch within `LLMOPS_REGISTRY_TTL_S`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")
    parser.add_argument("--model", default="support-bot", help="registered model name")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--system-prompt", default="")
    parser.add_argument("--params", default="{}", help="default request parameters, JSON")
    parser.add_argument("--min-score", type=float, default=0.5)
    parser.add_argument("--score", type=float, default=1.0, help="stand-in evaluation result")
    parser.add_argument("--llmops_request", default="")
    parser.add_argument("--llmops_dataset", default="{}")
    parser.add_argument("--llmops_reason", default="manual")
    parser.add_argument("--registry-uri", default=None, help="default: the tracking URI's")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        print(f"retrain_job: ignoring parameters this sample does not use: {unknown}")

    import mlflow
    from mlflow.tracking import MlflowClient

    if args.tracking_uri:
        mlflow.set_tracking_uri(args.tracking_uri)
    if args.registry_uri:
        mlflow.set_registry_uri(args.registry_uri)
    client = MlflowClient()
    params = json.loads(args.params)
    dataset = json.loads(args.llmops_dataset)
    mlflow.set_experiment("llmops-retraining")
    with mlflow.start_run(run_name=f"retrain {args.model}") as run:
        mlflow.log_params(
            {
                "deployment": args.deployment,
                "reason": args.llmops_reason[:250],
                "request": args.llmops_request,
                "dataset_container": str(dataset.get("container", "")),
            }
        )
        mlflow.log_metric("eval_score", args.score)
        with tempfile.TemporaryDirectory() as folder:
            config = Path(folder) / "config.json"
            config.write_text(
                json.dumps(
                    {
                        "deployment": args.deployment,
                        "system_prompt": args.system_prompt,
                        "params": params,
                    },
                    indent=2,
                )
            )
            mlflow.log_artifact(str(config), artifact_path="llm_config")
        source = f"{run.info.artifact_uri}/llm_config"

    try:
        client.get_registered_model(args.model)
    except Exception:
        client.create_registered_model(args.model)
    tags = {"llmops.deployment": args.deployment, "llmops.params": json.dumps(params)}
    if args.system_prompt:
        tags["llmops.system_prompt"] = args.system_prompt
    version = client.create_model_version(
        args.model, source=source, run_id=run.info.run_id, tags=tags
    )
    print(f"registered {args.model} version {version.version} (score {args.score:g})")
    if args.score < args.min_score:
        print(f"not promoted: score {args.score:g} < {args.min_score:g}")
        return 0
    client.set_registered_model_alias(args.model, args.alias, version.version)
    print(f"promoted: models:/{args.model}@{args.alias} -> version {version.version}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
