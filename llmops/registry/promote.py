"""`llmops registry promote NAME VERSION --alias champion`: move an alias to a version.

A thin wrapper over the MLflow client, for people and for the retraining job's last step.
Gateways that serve `models:/NAME@ALIAS` (or `prompts:/...`) pick the new version up within
`LLMOPS_REGISTRY_TTL_S`, without a redeploy.
"""

from __future__ import annotations

from llmops.settings import Settings


def promote(settings: Settings, name: str, version: str, alias: str, *, prompt: bool) -> str:
    """Point `alias` at `version` of the registered model (or prompt) `name`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.traces.tracking_uri)
    if prompt:
        client.set_prompt_alias(name, alias, int(version))
        return f"prompts:/{name}@{alias} -> version {version}"
    client.get_model_version(name, version)  # a clear error for a version that does not exist
    client.set_registered_model_alias(name, alias, version)
    return f"models:/{name}@{alias} -> version {version}"
