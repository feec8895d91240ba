"""Bad input, each kind on purpose: a clear OpenAI-shaped error and a 4xx, never a 500."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import GATEWAY_KEY, GATEWAY_KEYS
from tests.fakes.served import served_gateway

pytestmark = pytest.mark.integration
CHAT = "/api/v1/chat/completions"
AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    env = {
        "LLMOPS_UPSTREAM": "mock",
        "LLMOPS_API_KEYS": GATEWAY_KEYS,
        "LLMOPS_MAX_BODY_BYTES": "4096",
        "LLMOPS_MODEL_MAP": "m=m,other=o",
    }
    with served_gateway(env) as (url, _), httpx.Client(base_url=url, timeout=10) as client:
        yield client


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    assert response.headers["content-type"] == "application/json"
    return dict(body["error"])


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (b"{not json", None, "invalid_json"),
        (b"", None, "invalid_json"),
        (b"[1, 2]", None, "invalid_json"),
        (b'{"model": "m"}', "messages", "missing_required_parameter"),
        (b'{"model": "m", "messages": "hi"}', "messages", "invalid_type"),
        (b'{"model": "m", "messages": []}', "messages", "empty_array"),
        (b'{"model": "m", "messages": [42]}', "messages[0]", "invalid_type"),
        (
            b'{"model": "m", "messages": [{"content": "x"}]}',
            "messages[0].role",
            "missing_required_parameter",
        ),
        (
            b'{"model": "m", "messages": [{"role": "robot", "content": "x"}]}',
            "messages[0].role",
            "invalid_value",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user", "content": 5}]}',
            "messages[0].content",
            "invalid_type",
        ),
        (
            b'{"model": "m", "messages": [{"role": "user"}]}',
            "messages[0].content",
            "missing_required_parameter",
        ),
        (
            b'{"messages": [{"role": "user", "content": "x"}]}',
            "model",
            "missing_required_parameter",
        ),
        (b'{"model": 7, "messages": [{"role": "user", "content": "x"}]}', "model", "invalid_value"),
        (
            b'{"model": "m", "stream": "yes", "messages": [{"role": "user", "content": "x"}]}',
            "stream",
            "invalid_type",
        ),
        (
            b'{"model": "m", "n": 0, "messages": [{"role": "user", "content": "x"}]}',
            "n",
            "invalid_value",
        ),
        (
            b'{"model": "m", "max_tokens": true, "messages": [{"role": "user", "content": "x"}]}',
            "max_tokens",
            "invalid_type",
        ),
        (
            b'{"model": "m", "temperature": "hot", "messages": [{"role": "user", "content": "x"}]}',
            "temperature",
            "invalid_type",
        ),
    ],
)
def test_bad_bodies_are_400_naming_the_field(
    http: httpx.Client, body: bytes, param: str | None, code: str
) -> None:
    response = http.post(CHAT, content=body, headers=AUTH)
    assert response.status_code == 400
    error = error_of(response)
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    if param:
        assert param in error["message"]


def test_missing_key_is_401(http: httpx.Client) -> None:
    response = http.post(CHAT, json=GOOD)
    assert response.status_code == 401
    assert error_of(response)["code"] == "invalid_api_key"


def test_wrong_key_is_401_and_never_echoed(http: httpx.Client) -> None:
    response = http.post(CHAT, json=GOOD, headers={"api-key": "sk-guess-123"})
    assert response.status_code == 401
    assert "sk-guess-123" not in response.text


def test_both_key_headers_and_hashed_keys_are_accepted(http: httpx.Client) -> None:
    assert http.post(CHAT, json=GOOD, headers={"api-key": GATEWAY_KEY}).status_code == 200
    assert http.post(CHAT, json=GOOD, headers=AUTH).status_code == 200
    # team-b is configured as sha256:<digest of "hello">
    assert http.post(CHAT, json=GOOD, headers={"api-key": "hello"}).status_code == 200
    assert (
        http.post(CHAT, json=GOOD, headers={"authorization": "Basic aGVsbG8="}).status_code == 401
    )


def test_auth_is_checked_before_the_body(http: httpx.Client) -> None:
    response = http.post(CHAT, content=b"{broken")
    assert response.status_code == 401


def test_body_over_the_limit_is_413(http: httpx.Client) -> None:
    big = {**GOOD, "messages": [{"role": "user", "content": "x" * 5000}]}
    response = http.post(CHAT, json=big, headers=AUTH)
    assert response.status_code == 413
    assert error_of(response)["code"] == "request_too_large"


def test_chunked_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def parts() -> Iterator[bytes]:
        yield b'{"model": "m", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}]}'

    response = http.post(CHAT, content=parts(), headers=AUTH)
    assert response.status_code == 413


def test_unknown_model_is_404(http: httpx.Client) -> None:
    response = http.post(CHAT, json={**GOOD, "model": "gpt-9"}, headers=AUTH)
    assert response.status_code == 404
    error = error_of(response)
    assert (error["code"], error["param"]) == ("model_not_found", "model")


def test_unknown_path_and_wrong_method_are_shaped(http: httpx.Client) -> None:
    assert error_of(http.get("/api/v2/whatever"))["code"] == "not_found"
    response = http.get(CHAT)
    assert response.status_code == 405
    assert error_of(response)["code"] == "method_not_allowed"


def test_azure_path_takes_the_model_from_the_path(http: httpx.Client) -> None:
    response = http.post(
        "/api/openai/deployments/other/chat/completions?api-version=2024-10-21",
        json={"messages": GOOD["messages"]},
        headers={"api-key": GATEWAY_KEY},
    )
    assert response.status_code == 200
    assert response.headers["x-llmops-deployment"] == "o"
    assert response.json()["model"] == "o"


def test_every_response_carries_a_request_id(http: httpx.Client) -> None:
    ok = http.post(CHAT, json=GOOD, headers=AUTH)
    bad = http.post(CHAT, json={}, headers=AUTH)
    assert len(ok.headers["x-request-id"]) == 32
    assert ok.headers["x-request-id"] != bad.headers["x-request-id"]


def test_models_needs_a_key(http: httpx.Client) -> None:
    assert http.get("/api/v1/models").status_code == 401
    listed = http.get("/api/v1/models", headers=AUTH).json()
    assert [m["id"] for m in listed["data"]] == ["m", "other"]


def test_health_shows_configuration_without_secrets() -> None:
    env = {
        "AZURE_OPENAI_ENDPOINT": "https://contoso.openai.azure.com",
        "AZURE_OPENAI_API_KEY": "azure-secret-key-value",
        "LLMOPS_API_KEYS": GATEWAY_KEYS,
    }
    with served_gateway(env) as (url, _):
        response = httpx.get(f"{url}/api/health")
    assert response.status_code == 200
    health = response.json()
    assert health["status"] == "ok"
    assert (health["upstream"], health["upstream_auth"]) == ("azure", "api-key")
    assert health["target"] == "https://contoso.openai.azure.com"
    assert health["consumers"] == 2 and health["open_access"] is False
    for secret in ("azure-secret-key-value", GATEWAY_KEY, "2cf24dba"):
        assert secret not in response.text


@pytest.mark.parametrize(
    ("path", "model", "expected"),
    [
        ("/api/openai/deployments/a%0D%0Ax-evil:%201/chat/completions", None, "a%0D%0Ax-evil: 1"),
        ("/api/openai/deployments/caf%C3%A9/chat/completions", None, "caf%C3%A9"),
        (CHAT, "mod\nel-\u0100", "mod%0Ael-%C4%80"),
    ],
)
def test_odd_model_names_cannot_inject_headers(path: str, model: str | None, expected: str) -> None:
    body: dict[str, Any] = {"messages": GOOD["messages"]}
    if model is not None:
        body["model"] = model
    with served_gateway({"LLMOPS_UPSTREAM": "mock"}) as (url, _):
        response = httpx.post(f"{url}{path}", json=body)
    assert response.status_code == 200
    assert response.headers["x-llmops-deployment"] == expected
    assert "x-evil" not in response.headers
