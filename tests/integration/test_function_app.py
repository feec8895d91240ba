"""The Functions app as the host sees it: indexed bindings, and the functions called directly.

Core Tools cannot be installed here, so the host is replaced by what it does: index
`function_app.app`, then invoke each registered user function with the FastAPI (Starlette)
request the Python worker would build for an HTTP stream.
"""

from __future__ import annotations

import ast
import asyncio
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tests.conftest import GATEWAY_KEY, GATEWAY_KEYS
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "chat_completions": ("v1/chat/completions", ["POST"], "function"),
    "azure_chat_completions": (
        "openai/deployments/{deployment}/chat/completions",
        ["POST"],
        "function",
    ),
    "list_models": ("v1/models", ["GET"], "function"),
    "health": ("health", ["GET"], "anonymous"),
}


@functools.cache
def functions() -> dict[str, Any]:
    """Index the app once, as the host does (a second `get_functions()` call is refused)."""
    import function_app

    return {f.get_function_name(): f for f in function_app.app.get_functions()}


def test_every_function_is_indexed_with_its_bindings() -> None:
    indexed = functions()
    assert set(indexed) == set(EXPECTED) | {"drift_monitor", "retrain_request"}
    for name, (route, methods, auth_level) in EXPECTED.items():
        function_json = json.loads(indexed[name].get_function_json())
        trigger, output = function_json["bindings"]
        assert trigger["type"] == "httpTrigger" and trigger["direction"] == "IN"
        assert trigger["route"] == route
        assert trigger["methods"] == methods
        assert trigger["authLevel"] == auth_level.upper() or trigger["authLevel"] == auth_level
        assert output == {"direction": "OUT", "type": "http", "name": "$return"}
        assert indexed[name].is_http_function()


def test_functions_take_fastapi_stream_types() -> None:
    """The worker enables HTTP streams only for functions annotated with the extension types."""
    from azurefunctions.extensions.http.fastapi import Request as StreamRequest

    for function in functions().values():
        if not function.is_http_function():
            continue
        annotations = function.get_user_function().__annotations__
        assert annotations["req"] is StreamRequest  # the class itself, not a string


def test_host_json_and_settings_files() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["version"] == "2.0"
    assert host["extensions"]["http"]["routePrefix"] == "api"
    local = json.loads((ROOT / "local.settings.example.json").read_text())["Values"]
    assert local["PYTHON_ENABLE_INIT_INDEXING"] == "1"
    assert local["FUNCTIONS_WORKER_RUNTIME"] == "python"


def loaded_by(imports: str, candidates: list[str]) -> list[str]:
    """Which of `candidates` a fresh interpreter has loaded after `import {imports}`."""
    code = f"import sys, {imports}; print([m for m in {candidates!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    return list(ast.literal_eval(out.stdout.strip()))


def test_import_function_app_stays_light() -> None:
    """Cold start: heavy modules load inside the use cases that need them, not at import."""
    heavy = [
        "aiohttp",
        "openai",
        "mlflow",
        "scipy",
        "sklearn",
        "numpy",
        "msgspec",
        "databricks",
        "azure.identity",
        "azure.storage.blob",
    ]
    assert loaded_by("function_app", heavy) == []


def test_llmops_serve_does_not_load_the_functions_stack() -> None:
    """`llmops serve` starts fast: no azure.functions, FastAPI or pydantic behind it."""
    heavy = ["azure.functions", "fastapi", "pydantic", "mlflow", "azure.storage.blob"]
    assert loaded_by("llmops.server, llmops.cli", heavy) == []


def make_request(
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    path_params: dict[str, str] | None = None,
    query: str = "",
) -> Request:
    """The request object the Python worker hands an HTTP-stream function."""
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    raw_headers = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    raw_headers.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw_headers,
        "scheme": "https",
        "server": ("func.azurewebsites.net", 443),
        "client": ("10.0.0.1", 5000),
        "http_version": "1.1",
        "root_path": "",
        "path_params": path_params or {},
    }
    return Request(scope, receive)


async def body_of(response: Response) -> bytes:
    if isinstance(response, StreamingResponse):
        return b"".join(
            [
                chunk if isinstance(chunk, bytes) else chunk.encode()  # type: ignore[misc]
                async for chunk in response.body_iterator
            ]
        )
    return bytes(response.body)


@pytest.fixture
def function_env(monkeypatch: pytest.MonkeyPatch, fake_upstream: FakeUpstream) -> FakeUpstream:
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", fake_upstream.url)
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", fake_upstream.api_key)
    monkeypatch.setenv("LLMOPS_API_KEYS", GATEWAY_KEYS)
    return fake_upstream


CHAT_BODY = json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})


async def test_chat_function_called_directly(function_env: FakeUpstream) -> None:
    chat = functions()["chat_completions"].get_user_function()
    response = await chat(
        make_request(
            "POST", "/api/v1/chat/completions", CHAT_BODY.encode(), {"api-key": GATEWAY_KEY}
        )
    )
    assert response.status_code == 200
    assert json.loads(await body_of(response))["choices"][0]["message"]["content"] == "echo: hi"
    assert function_env.calls()[0].deployment == "gpt-4o"


async def test_a_body_the_host_already_read_is_used_not_waited_for(
    function_env: FakeUpstream,
) -> None:
    chat = functions()["chat_completions"].get_user_function()
    request = make_request(
        "POST", "/api/v1/chat/completions", CHAT_BODY.encode(), {"api-key": GATEWAY_KEY}
    )
    await request.body()  # read before the function runs; receive() now only says disconnect
    response = await asyncio.wait_for(chat(request), 10)
    assert response.status_code == 200
    assert json.loads(await body_of(response))["choices"][0]["message"]["content"] == "echo: hi"


async def test_chat_function_streams(function_env: FakeUpstream) -> None:
    chat = functions()["chat_completions"].get_user_function()
    body = json.dumps({**json.loads(CHAT_BODY), "stream": True}).encode()
    response = await chat(
        make_request(
            "POST", "/api/v1/chat/completions", body, {"authorization": f"Bearer {GATEWAY_KEY}"}
        )
    )
    assert isinstance(response, StreamingResponse)
    assert response.media_type == "text/event-stream"
    events = (await body_of(response)).decode().strip().split("\n\n")
    assert events[-1] == "data: [DONE]"
    assert len(events) >= 4


async def test_azure_function_uses_the_route_parameter(function_env: FakeUpstream) -> None:
    azure = functions()["azure_chat_completions"].get_user_function()
    response = await azure(
        make_request(
            "POST",
            "/api/openai/deployments/chat-prod/chat/completions",
            b'{"messages": [{"role": "user", "content": "hi"}]}',
            {"api-key": GATEWAY_KEY},
            path_params={"deployment": "chat-prod"},
            query="api-version=2024-10-21",
        )
    )
    assert response.status_code == 200
    assert function_env.calls()[0].deployment == "chat-prod"


async def test_function_errors_are_openai_shaped(function_env: FakeUpstream) -> None:
    chat = functions()["chat_completions"].get_user_function()
    unauthorized = await chat(make_request("POST", "/api/v1/chat/completions", b"{}"))
    assert unauthorized.status_code == 401
    bad = await chat(
        make_request(
            "POST", "/api/v1/chat/completions", b'{"model": "gpt-4o"}', {"api-key": GATEWAY_KEY}
        )
    )
    assert bad.status_code == 400
    assert json.loads(await body_of(bad))["error"]["param"] == "messages"


async def test_models_and_health_functions(
    function_env: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLMOPS_MODEL_MAP", "gpt-4o=gpt-4o")
    listed = await functions()["list_models"].get_user_function()(
        make_request("GET", "/api/v1/models", headers={"api-key": GATEWAY_KEY})
    )
    assert [m["id"] for m in json.loads(await body_of(listed))["data"]] == ["gpt-4o"]
    health = await functions()["health"].get_user_function()(make_request("GET", "/api/health"))
    assert json.loads(await body_of(health))["upstream"] == "azure"


async def test_misconfiguration_is_a_clear_500(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLMOPS_UPSTREAM", "bedrock")
    response = await functions()["health"].get_user_function()(make_request("GET", "/api/health"))
    assert response.status_code == 500
    error = json.loads(await body_of(response))["error"]
    assert error["code"] == "configuration_error"
    assert "LLMOPS_UPSTREAM" in error["message"]


def test_the_drift_timer_is_indexed_with_its_schedule_setting() -> None:
    function_json = json.loads(functions()["drift_monitor"].get_function_json())
    assert function_json["bindings"] == [
        {
            "direction": "IN",
            "type": "timerTrigger",
            "name": "timer",
            "schedule": "%LLMOPS_DRIFT_SCHEDULE%",
            "runOnStartup": False,
            "useMonitor": True,
        }
    ]


def test_the_retraining_trigger_is_an_event_grid_blob_trigger() -> None:
    function_json = json.loads(functions()["retrain_request"].get_function_json())
    assert function_json["bindings"] == [
        {
            "direction": "IN",
            "type": "blobTrigger",
            "name": "blob",
            "path": "retrain-requests/{name}",
            "connection": "AzureWebJobsStorage",
            "source": "EventGrid",
        }
    ]


def test_a_past_due_drift_timer_computes_the_windows_it_missed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The host hands the timer `IsPastDue` and `ScheduleStatus.Last`; the missed windows
    are analysed, and each report lands once."""
    import asyncio
    from datetime import UTC, datetime, timedelta

    from azure.functions.timer import TimerRequest

    from llmops.logs.store import LocalStore
    from tests.fakes.records import traffic, write_records

    monkeypatch.setenv("LLMOPS_DRIFT_SCHEDULE", "0 0 * * * *")
    monkeypatch.setenv("LLMOPS_DRIFT_REFERENCE_HOURS", "12")
    hour = timedelta(hours=1)
    now = datetime.now(UTC)
    top = now.replace(minute=0, second=0, microsecond=0)
    records = traffic(top - 15 * hour, top - 3 * hour, 600, seed=1)
    records += traffic(top - 3 * hour, top, 300, shifted=True, seed=2)
    asyncio.run(write_records(LocalStore(tmp_path / "store", "request-logs"), records))
    last_run = (top - 3 * hour).isoformat()
    timer = TimerRequest(past_due=True, schedule_status={"Last": last_run, "Next": top.isoformat()})

    user_function = functions()["drift_monitor"].get_user_function()
    asyncio.run(user_function(timer))

    reports = sorted((tmp_path / "store" / "drift-reports" / "reports").glob("*.json"))
    ends = [json.loads(p.read_text())["windows"]["current"]["end"] for p in reports]
    expected = [(top - k * hour).strftime("%Y-%m-%dT%H:%M:%SZ") for k in (2, 1, 0)]
    assert ends == expected  # the three windows closed since the last run, oldest first
    verdicts = [json.loads(p.read_text())["summary"]["dataset_drift"] for p in reports]
    assert verdicts == [True, True, True]
    requests = list((tmp_path / "store" / "retrain-requests").glob("drift-*.json"))
    assert len(requests) == 1  # two consecutive drifted windows, then the cooldown


def test_a_timer_run_on_time_analyses_only_the_last_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from azure.functions.timer import TimerRequest

    monkeypatch.setenv("LLMOPS_DRIFT_SCHEDULE", "0 */30 * * * *")
    user_function = functions()["drift_monitor"].get_user_function()
    asyncio.run(user_function(TimerRequest(past_due=False, schedule_status={})))

    reports = list((tmp_path / "store" / "drift-reports" / "reports").glob("*.json"))
    assert len(reports) == 1
    report = json.loads(reports[0].read_text())
    assert report["summary"]["verdict"] == "not enough data"  # an empty request log
