"""The retraining trigger's blob function: a thin trigger over `RetrainTrigger.handle`.

`retrain-requests/{name}` with the storage connection `AzureWebJobsStorage`. The source is
Event Grid by default (Flex Consumption supports only that; infra/ subscribes the function to
the container's BlobCreated events after deployment); under `func start` against Azurite set
`LLMOPS_RETRAIN_BLOB_SOURCE=LogsAndContainerScan` (polling), as local.settings.example.json
does. Blob triggers fire at least once: the Databricks idempotency token makes a second firing
find the same run. A request Databricks kept failing on (429/5xx) fails the invocation so the
host retries it; any other outcome is recorded in `retrain-runs/` and succeeds.
"""

# No `from __future__ import annotations`: the worker inspects these annotations as classes.
import azure.functions as func

from llmops.retrain.run import handle_blob
from llmops.settings import retrain_blob_source

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("retrain_request")
@bp.blob_trigger(
    arg_name="blob",
    path="retrain-requests/{name}",
    connection="AzureWebJobsStorage",
    source=func.BlobSource(retrain_blob_source()),
)
async def retrain_request(blob: func.InputStream) -> None:
    """Start the Databricks retraining job for a new request blob."""
    properties = getattr(blob, "blob_properties", None) or {}
    await handle_blob(blob.name or "", blob.read(), properties)
