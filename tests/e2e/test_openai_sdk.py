"""The official openai SDK, unchanged, against a served gateway in front of a fake upstream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import openai
import pytest
from openai import AsyncAzureOpenAI, AsyncOpenAI, AzureOpenAI, OpenAI

from tests.conftest import GATEWAY_KEY
from tests.fakes.served import sdk_client, served_gateway
from tests.fakes.upstream import AZURE_API_VERSION, FakeUpstream, Reply

pytestmark = pytest.mark.e2e
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
]


@pytest.fixture
def gateway_url(azure_env: dict[str, str]) -> Iterator[str]:
    with served_gateway(azure_env) as (url, _):
        yield url


def openai_client(url: str) -> OpenAI:
    return sdk_client(url, timeout=10)


def azure_client(url: str) -> AzureOpenAI:
    return AzureOpenAI(
        azure_endpoint=f"{url}/api",
        api_key=GATEWAY_KEY,
        api_version=AZURE_API_VERSION,
        max_retries=0,
        timeout=10,
    )


def test_openai_client_non_streaming(gateway_url: str, fake_upstream: FakeUpstream) -> None:
    completion = openai_client(gateway_url).chat.completions.create(
        model="gpt-4o", messages=MESSAGES
    )  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "echo: What is the capital of France?"
    assert completion.usage is not None and completion.usage.total_tokens == 18
    [call] = fake_upstream.calls()
    # Azure wire format upstream: deployments path, api-version, the gateway's own upstream key.
    assert call.path == "/openai/deployments/gpt-4o/chat/completions"
    assert call.query["api-version"] == "2024-10-21"
    assert call.headers["api-key"] == fake_upstream.api_key
    assert GATEWAY_KEY not in json.dumps(call.headers)  # the consumer's key never leaves


def test_openai_client_streaming_with_usage(gateway_url: str) -> None:
    stream = openai_client(gateway_url).chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: What is the capital of France?"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 7


def test_stream_is_relayed_chunk_by_chunk(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", Reply(chunk_delay_s=0.15))
    with served_gateway(azure_env) as (url, _):
        started = time.monotonic()
        arrivals = [
            time.monotonic() - started
            for _ in openai_client(url).chat.completions.create(
                model="gpt-4o", messages=MESSAGES, stream=True
            )
        ]  # type: ignore[arg-type]
    # 10 chunks 0.15 s apart: the first must arrive long before the last (no buffering).
    assert len(arrivals) >= 8
    assert arrivals[-1] - arrivals[0] > 0.9
    assert arrivals[0] < 0.5


async def test_async_openai_client(gateway_url: str) -> None:
    client = AsyncOpenAI(base_url=f"{gateway_url}/api/v1", api_key=GATEWAY_KEY, max_retries=0)
    completion = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "echo: What is the capital of France?"
    stream = await client.chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "echo: What is the capital of France?"
    await client.close()


def test_azure_client_sync(gateway_url: str, fake_upstream: FakeUpstream) -> None:
    client = azure_client(gateway_url)
    completion = client.chat.completions.create(model="chat-prod", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "echo: What is the capital of France?"
    stream = client.chat.completions.create(
        model="chat-prod",
        messages=MESSAGES,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert chunks[-1].usage is not None
    assert [c.deployment for c in fake_upstream.calls()] == ["chat-prod", "chat-prod"]


async def test_azure_client_async(gateway_url: str) -> None:
    client = AsyncAzureOpenAI(
        azure_endpoint=f"{gateway_url}/api",
        api_key=GATEWAY_KEY,
        api_version=AZURE_API_VERSION,
        max_retries=0,
    )
    completion = await client.chat.completions.create(model="chat-prod", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.model == "chat-prod"
    stream = await client.chat.completions.create(
        model="chat-prod",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
    )
    finish = [c.choices[0].finish_reason async for c in stream if c.choices]
    assert finish[-1] == "stop"
    await client.close()


def test_parameters_pass_through_untouched(gateway_url: str, fake_upstream: FakeUpstream) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    completion = openai_client(gateway_url).chat.completions.create(
        model="gpt-4o",
        messages=MESSAGES,
        tools=tools,
        tool_choice="required",  # type: ignore[arg-type]
        n=2,
        seed=42,
        max_completion_tokens=50,
        temperature=0.2,
        extra_body={"future_field": {"nested": [1, 2.5, None]}, "max_tokens": 40},
    )
    assert len(completion.choices) == 2
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    sent = fake_upstream.calls()[0].body
    assert sent["tools"] == tools and sent["tool_choice"] == "required"
    assert (sent["n"], sent["seed"], sent["max_completion_tokens"], sent["max_tokens"]) == (
        2,
        42,
        50,
        40,
    )
    assert sent["future_field"] == {"nested": [1, 2.5, None]}


def test_response_format_json(gateway_url: str, fake_upstream: FakeUpstream) -> None:
    completion = openai_client(gateway_url).chat.completions.create(
        model="gpt-4o", messages=MESSAGES, response_format={"type": "json_object"}
    )  # type: ignore[arg-type]
    assert json.loads(completion.choices[0].message.content or "") == {
        "echo": "What is the capital of France?"
    }
    assert fake_upstream.calls()[0].body["response_format"] == {"type": "json_object"}


def test_openai_compatible_upstream(
    openai_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    env = {**openai_env, "LLMOPS_MODEL_MAP": "gpt-4o=gpt-4o-2024-08-06"}
    with served_gateway(env) as (url, _):
        client = openai_client(url)
        completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
        stream_text = "".join(
            c.choices[0].delta.content or ""
            for c in client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            if c.choices
        )
    assert completion.choices[0].message.content == stream_text
    calls = fake_upstream.calls()
    assert [c.path for c in calls] == ["/v1/chat/completions"] * 2
    assert calls[0].headers["authorization"] == f"Bearer {fake_upstream.api_key}"
    assert calls[0].body["model"] == "gpt-4o-2024-08-06"  # mapped to the deployment


def test_model_map_and_models_list(azure_env: dict[str, str], fake_upstream: FakeUpstream) -> None:
    env = {**azure_env, "LLMOPS_MODEL_MAP": "gpt-4o=gpt4o-east,gpt-4o-mini=mini-east"}
    with served_gateway(env) as (url, _):
        client = openai_client(url)
        assert [m.id for m in client.models.list()] == ["gpt-4o", "gpt-4o-mini"]
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError) as raised:
            client.chat.completions.create(model="gpt-5", messages=MESSAGES)  # type: ignore[arg-type]
    assert raised.value.code == "model_not_found"
    assert "gpt-4o, gpt-4o-mini" in raised.value.message
    assert [c.deployment for c in fake_upstream.calls()] == ["mini-east"]


def test_content_filtered_completion_passes_through(
    gateway_url: str, fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan(
        "gpt-4o", Reply(finish_reason="content_filter"), Reply(finish_reason="content_filter")
    )
    client = openai_client(gateway_url)
    completion = client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].finish_reason == "content_filter"
    extra = completion.choices[0].model_extra or {}
    assert extra["content_filter_results"]["violence"]["filtered"] is True
    chunks = list(client.chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))  # type: ignore[arg-type]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "content_filter"


def test_mock_upstream_speaks_the_same_protocol() -> None:
    with served_gateway({"LLMOPS_UPSTREAM": "mock"}) as (url, _):
        client = OpenAI(base_url=f"{url}/api/v1", api_key="anything", max_retries=0)
        completion = client.chat.completions.create(model="any-model", messages=MESSAGES, n=2)  # type: ignore[arg-type]
        assert len(completion.choices) == 2 and "capital of France" in (
            completion.choices[0].message.content or ""
        )
        chunks = list(
            client.chat.completions.create(
                model="any-model",
                messages=MESSAGES,
                stream=True,  # type: ignore[arg-type]
                stream_options={"include_usage": True},
            )
        )
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == completion.choices[0].message.content  # choice 1, streamed
        assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
        tool = client.chat.completions.create(
            model="any-model",
            messages=MESSAGES,
            tool_choice="required",  # type: ignore[arg-type]
            tools=[{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
        )
        assert tool.choices[0].message.tool_calls[0].function.name == "lookup"  # type: ignore[index,union-attr]
        azure = AzureOpenAI(
            azure_endpoint=f"{url}/api", api_key="x", api_version=AZURE_API_VERSION, max_retries=0
        )
        assert azure.chat.completions.create(model="d", messages=MESSAGES).model == "d"  # type: ignore[arg-type]
