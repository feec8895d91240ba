"""A retraining request: the JSON document that lands in `retrain-requests/`.

Required: `reason` (text) and `dataset` (an object pointing at the data, e.g. the drift
monitor's `{"container", "start", "end", "prefixes"}` or `{"uri": "abfss://..."}`). Optional:
`job_parameters` (names to strings, numbers or booleans; passed to the job as strings),
`requested_by`, anything else (kept in the request, not sent). The full schema is in
docs/retraining.md. A request that breaks these rules is rejected with a reason naming the
field, recorded, and never retried: retrying cannot fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_BYTES = 1024 * 1024
MAX_PARAMETERS = 100


class RequestRejected(ValueError):
    """The request cannot be run; the message says what to fix."""


@dataclass(frozen=True)
class RetrainRequest:
    """A validated retraining request."""

    reason: str
    dataset: dict[str, Any]
    job_parameters: dict[str, str] = field(default_factory=dict)
    requested_by: str | None = None

    def parameters_for(self, name: str) -> dict[str, str]:
        """What the job receives: the request's own parameters over the gateway's defaults
        (the request's blob name, the dataset pointer as JSON, the reason)."""
        return {
            "llmops_request": name,
            "llmops_dataset": orjson.dumps(self.dataset).decode(),
            "llmops_reason": self.reason,
            **self.job_parameters,
        }


def parse_request(data: bytes) -> RetrainRequest:
    """Validate a request document; raise `RequestRejected` naming the problem."""
    if len(data) > MAX_BYTES:
        raise RequestRejected(f"the request is {len(data)} bytes; at most {MAX_BYTES} are read")
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise RequestRejected(f"the request is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RequestRejected("the request must be a JSON object")
    reason = document.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise RequestRejected("`reason` is required: a non-empty string saying why to retrain")
    dataset = document.get("dataset")
    if not isinstance(dataset, dict) or not dataset:
        raise RequestRejected(
            "`dataset` is required: an object pointing at the data, e.g. "
            '{"container": "request-logs", "prefixes": ["v1/date=2026-11-22/hour=13/"]}'
        )
    raw_parameters = document.get("job_parameters", {})
    if raw_parameters is None:
        raw_parameters = {}
    if not isinstance(raw_parameters, dict):
        raise RequestRejected("`job_parameters` must be an object of names to values")
    if len(raw_parameters) > MAX_PARAMETERS:
        raise RequestRejected(f"`job_parameters` has more than {MAX_PARAMETERS} entries")
    parameters: dict[str, str] = {}
    for key, value in raw_parameters.items():
        if isinstance(value, bool):
            parameters[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            parameters[key] = str(value)
        else:
            raise RequestRejected(
                f"`job_parameters.{key}` must be a string, number or boolean, "
                f"not {type(value).__name__}"
            )
    requested_by = document.get("requested_by")
    return RetrainRequest(
        reason=reason.strip(),
        dataset=dataset,
        job_parameters=parameters,
        requested_by=requested_by if isinstance(requested_by, str) else None,
    )
