"""Which Databricks failures the retraining trigger retries, with the SDK's own error objects
as its error parser builds them from real responses."""

from __future__ import annotations

import pytest
import requests
from databricks.sdk.errors import DatabricksError
from databricks.sdk.errors.parser import _Parser

from llmops.retrain.jobs import classify

pytestmark = pytest.mark.unit


def sdk_error(status: int, body: bytes, content_type: str = "application/json") -> BaseException:
    """The exception the SDK raises for this HTTP answer (its parser, as in `ApiClient`)."""
    response = requests.Response()
    response.status_code = status
    response.reason = requests.status_codes._codes[status][0].replace("_", " ").title()
    response._content = body
    response.headers["Content-Type"] = content_type
    response.url = "https://adb-1.azuredatabricks.net/api/2.2/jobs/run-now"
    response.request = requests.Request("POST", response.url).prepare()
    error = _Parser().get_api_error(response)
    assert isinstance(error, DatabricksError)
    return error


def json_error(code: str, message: str = "no") -> bytes:
    return f'{{"error_code": "{code}", "message": "{message}"}}'.encode()


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (400, json_error("INVALID_PARAMETER_VALUE")),
        (401, json_error("UNAUTHENTICATED")),
        (403, json_error("PERMISSION_DENIED")),
        (404, json_error("RESOURCE_DOES_NOT_EXIST", "Job 1 does not exist.")),
        (405, json_error("METHOD_NOT_ALLOWED")),  # no SDK class: the base class
        (413, b"<html><title>Request Entity Too Large</title></html>"),
        (422, json_error("UNPROCESSABLE")),
        (501, json_error("NOT_IMPLEMENTED")),
    ],
)
def test_client_errors_are_rejected(status: int, body: bytes) -> None:
    content_type = "text/html" if body.startswith(b"<") else "application/json"
    assert classify(sdk_error(status, body, content_type)) == "rejected"


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (429, json_error("REQUEST_LIMIT_EXCEEDED")),
        (500, json_error("INTERNAL_ERROR")),
        (502, b"<html><title>502 Bad Gateway</title></html>"),
        (502, b"upstream connect error"),  # a proxy's page the SDK cannot parse
        (503, json_error("TEMPORARILY_UNAVAILABLE")),
        (504, json_error("DEADLINE_EXCEEDED")),
    ],
)
def test_server_errors_and_throttling_are_transient(status: int, body: bytes) -> None:
    content_type = "text/html" if body.startswith(b"<") else "text/plain"
    if body.startswith(b"{"):
        content_type = "application/json"
    assert classify(sdk_error(status, body, content_type)) == "transient"


def test_timeouts_and_connection_errors_are_transient() -> None:
    assert classify(TimeoutError("retries ran out")) == "transient"
    assert classify(requests.ConnectionError("refused")) == "transient"


def test_configuration_errors_are_rejected() -> None:
    assert classify(ValueError("default auth: cannot configure default credentials")) == (
        "rejected"
    )
