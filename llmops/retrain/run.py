"""Entry points of the retraining use case for the blob function and `llmops retrain`.

Cheap to import (it is imported with `function_app`); the SDK loads when a request arrives.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from llmops.settings import Settings


async def handle_blob(name: str, data: bytes, properties: Mapping[str, Any]) -> dict[str, Any]:
    """What the blob trigger runs for one request blob."""
    from llmops.retrain.trigger import RetrainTrigger
    from llmops.tracing.metrics import build_meter, flush_meters

    settings = Settings.from_env()
    meter = build_meter(settings.traces) if settings.traces.metrics else None
    trigger = RetrainTrigger(settings, meter=meter)
    try:
        return await trigger.handle(name, data, blob_etag(properties))
    finally:
        await trigger.aclose()
        if meter is not None:
            flush_meters()


def blob_etag(properties: Mapping[str, Any]) -> str | None:
    """The ETag among the blob properties the Functions worker passes (its casing varies)."""
    for key in ("ETag", "Etag", "etag"):
        value = properties.get(key)
        if isinstance(value, str) and value:
            return value
    return None


async def run_cli(settings: Settings, action: str, target: str, name: str | None) -> int:
    """`llmops retrain submit FILE [--name NAME]` and `llmops retrain status NAME`."""
    from llmops.retrain.jobs import JobRejected, TransientJobError
    from llmops.retrain.trigger import RetrainFailed, RetrainTrigger

    trigger = RetrainTrigger(settings)
    try:
        if action == "submit":
            path = Path(target)
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                print(f"llmops retrain: cannot read {target}: {exc.strerror}", file=sys.stderr)
                return 2
            record = await trigger.submit(name or path.name, data)
        else:
            record = await trigger.refresh(target)
    except LookupError as exc:
        print(f"llmops retrain: {exc}", file=sys.stderr)
        return 2
    except (RetrainFailed, JobRejected, TransientJobError) as exc:
        # Databricks did not answer usefully: say so (the run record says it too), no traceback
        print(f"llmops retrain: Databricks: {exc}", file=sys.stderr)
        return 1
    finally:
        await trigger.aclose()
    print(orjson.dumps(record, option=orjson.OPT_INDENT_2).decode())
    return 0 if record["state"] in ("started", "not_configured") else 1
