"""Property: whatever a client sends, the answer is a success or an OpenAI-shaped 4xx."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from llmops.gateway.service import Gateway
from llmops.server import create_app
from llmops.settings import Settings

pytestmark = pytest.mark.unit

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
roles = (
    st.sampled_from(["user", "system", "assistant", "tool", "developer", "bot", ""]) | json_values
)
valid_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": st.text()}),
    min_size=1,
    max_size=3,
)
messages = (
    valid_messages
    | st.lists(
        st.fixed_dictionaries({"role": roles}, optional={"content": json_values}), max_size=3
    )
    | json_values
)
chat_bodies = st.fixed_dictionaries(
    {"model": st.just("m") | json_values, "messages": messages},
    optional={
        **{
            name: json_values | st.integers(-5, 5)
            for name in [
                "stream",
                "n",
                "response_format",
                "stream_options",
                "max_tokens",
                "temperature",
                "seed",
                "user",
            ]
        },
        "tools": st.lists(
            json_values
            | st.fixed_dictionaries({"type": st.just("function"), "function": json_values}),
            max_size=2,
        )
        | json_values,
        "tool_choice": st.sampled_from(["required", "auto", "none"])
        | json_values
        | st.fixed_dictionaries({"type": st.just("function"), "function": json_values}),
    },
)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    folder = tmp_path_factory.mktemp("fuzz")
    # The request log stays on: every odd body also goes through record building and redaction.
    env = {
        "LLMOPS_UPSTREAM": "mock",
        "LLMOPS_MAX_BODY_BYTES": "2048",
        "LLMOPS_LOCAL_STORE_DIR": str(folder / "store"),
        "LLMOPS_SPOOL_DIR": str(folder / "spool"),
        "LLMOPS_LOG_FLUSH_S": "0.05",
        "LLMOPS_TRACING": "off",
    }
    gateway = Gateway(Settings.from_env(env))
    with TestClient(create_app(gateway), raise_server_exceptions=False) as test_client:
        yield test_client
    assert gateway.request_log is not None
    assert gateway.request_log.stats["build_failures"] == 0
    assert gateway.request_log.stats["written"] == gateway.request_log.stats["added"]


def check(response: Any) -> None:
    assert response.status_code in (200, 400, 404, 413), response.text
    if response.status_code != 200:
        error = response.json()["error"]
        assert isinstance(error["message"], str) and error["message"]
        assert error["type"] == "invalid_request_error"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=chat_bodies)
@example(
    body={
        "model": "m",
        "messages": [{"role": "user", "content": "x"}],
        "tools": [1],
        "tool_choice": "required",
    }
)
def test_any_chat_shaped_body(client: TestClient, body: dict[str, Any]) -> None:
    check(client.post("/api/v1/chat/completions", content=json.dumps(body)))


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(raw=st.binary(max_size=3000) | json_values.map(lambda v: json.dumps(v).encode()))
def test_any_bytes(client: TestClient, raw: bytes) -> None:
    check(client.post("/api/v1/chat/completions", content=raw))
    check(client.post("/api/openai/deployments/d/chat/completions?api-version=x", content=raw))
