"""Upstream faults, each on purpose: retries, fallbacks, pass-through, timeouts, outages."""

from __future__ import annotations

import socket
import time
from typing import Any

import openai
import pytest

from llmops.gateway.service import Gateway
from llmops.gateway.upstream import HttpUpstream
from llmops.settings import Settings
from tests.fakes.served import sdk_client, served_gateway
from tests.fakes.upstream import (
    FakeUpstream,
    Reply,
    content_filter_prompt,
    rate_limited,
    server_error,
)

pytestmark = pytest.mark.integration
MESSAGES: Any = [{"role": "user", "content": "hello"}]


client = sdk_client


def test_429_is_retried_after_the_wait_the_upstream_asked(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", rate_limited(retry_after_ms=400))
    with served_gateway(azure_env) as (url, _):
        started = time.monotonic()
        response = client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
        elapsed = time.monotonic() - started
    assert response.parse().choices[0].message.content == "echo: hello"
    assert len(fake_upstream.calls("gpt-4o")) == 2
    assert elapsed >= 0.4  # honoured retry-after-ms
    assert elapsed < 3


def test_retry_after_in_seconds_is_honoured(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", rate_limited(retry_after_ms=None, retry_after="1"))
    with served_gateway(azure_env) as (url, _):
        started = time.monotonic()
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
        assert time.monotonic() - started >= 1.0
    assert len(fake_upstream.calls()) == 2


def test_429_passes_through_with_retry_after_when_retries_run_out(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", *[rate_limited(retry_after_ms=20, retry_after="7")] * 3)
    with served_gateway(azure_env) as (url, _), pytest.raises(openai.RateLimitError) as raised:
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 429
    assert raised.value.response.headers["retry-after"] == "7"
    assert raised.value.response.headers["retry-after-ms"] == "20"
    assert "exceeded call rate limit" in raised.value.message
    assert len(fake_upstream.calls()) == 3  # 1 + LLMOPS_MAX_RETRIES=2


def test_long_retry_after_is_not_waited_for(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", rate_limited(retry_after_ms=60_000))
    env = {**azure_env, "LLMOPS_RETRY_MAX_WAIT_S": "5"}
    with served_gateway(env) as (url, _), pytest.raises(openai.RateLimitError):
        started = time.monotonic()
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert time.monotonic() - started < 2
    assert len(fake_upstream.calls()) == 1


def test_5xx_is_retried_then_succeeds(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", server_error(500), server_error(503))
    with served_gateway(azure_env) as (url, _):
        completion = client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.choices[0].message.content == "echo: hello"
    assert len(fake_upstream.calls()) == 3


def test_5xx_after_retries_is_a_502_naming_the_upstream_status(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", *[server_error(500)] * 3)
    with served_gateway(azure_env) as (url, _), pytest.raises(openai.APIStatusError) as raised:
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 502
    assert raised.value.code == "upstream_error"
    assert "500" in raised.value.message


def test_html_error_page_from_a_proxy_is_shaped(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    page = Reply(status=502, body=b"<html><body>Bad Gateway</body></html>")
    fake_upstream.plan("gpt-4o", page, page, page)
    with served_gateway(azure_env) as (url, _), pytest.raises(openai.APIStatusError) as raised:
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 502
    assert raised.value.body["type"] == "api_error"  # type: ignore[index]


def test_fallback_deployments_on_429_and_5xx(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("east", rate_limited(retry_after_ms=5000))
    fake_upstream.plan("west", server_error(503))
    env = {
        **azure_env,
        "LLMOPS_MODEL_MAP": "gpt-4o=east|west",
        "LLMOPS_FALLBACK_DEPLOYMENTS": "global-standard",
    }
    with served_gateway(env) as (url, _):
        started = time.monotonic()
        response = client(url).chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES
        )
        assert time.monotonic() - started < 2  # fallbacks are tried at once, no waiting
    assert response.headers["x-llmops-deployment"] == "global-standard"
    assert [c.deployment for c in fake_upstream.calls()] == ["east", "west", "global-standard"]


def test_fallback_does_not_hide_client_errors(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("east", content_filter_prompt())
    env = {**azure_env, "LLMOPS_MODEL_MAP": "gpt-4o=east|west"}
    with served_gateway(env) as (url, _), pytest.raises(openai.BadRequestError) as raised:
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    # Azure's content-filter error arrives exactly as Azure sent it.
    assert raised.value.code == "content_filter"
    body: Any = raised.value.body
    assert body["innererror"]["code"] == "ResponsibleAIPolicyViolation"
    assert [c.deployment for c in fake_upstream.calls()] == ["east"]


def test_content_filter_on_a_streamed_prompt(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", content_filter_prompt())
    with served_gateway(azure_env) as (url, _), pytest.raises(openai.BadRequestError) as raised:
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
    assert raised.value.code == "content_filter"


def test_slow_upstream_is_a_504_and_not_retried(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", Reply(delay_s=2.0))
    env = {**azure_env, "LLMOPS_READ_TIMEOUT_S": "0.3"}
    with served_gateway(env) as (url, _), pytest.raises(openai.APIStatusError) as raised:
        started = time.monotonic()
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 504
    assert raised.value.code == "upstream_timeout"
    assert time.monotonic() - started < 1.5
    assert len(fake_upstream.calls()) == 1


def test_total_deadline_bounds_retries(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", rate_limited(retry_after_ms=800), Reply(delay_s=3))
    env = {**azure_env, "LLMOPS_TOTAL_TIMEOUT_S": "1.5"}
    with served_gateway(env) as (url, _), pytest.raises(openai.APIStatusError) as raised:
        started = time.monotonic()
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 504
    assert time.monotonic() - started < 2.5


def test_stalled_stream_times_out(azure_env: dict[str, str], fake_upstream: FakeUpstream) -> None:
    fake_upstream.plan("gpt-4o", Reply(chunk_delay_s=1.0))
    env = {**azure_env, "LLMOPS_READ_TIMEOUT_S": "0.3"}
    with served_gateway(env) as (url, _), pytest.raises(openai.APIError) as raised:
        list(client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True))
    assert "interrupted" in raised.value.message


def test_stream_cut_mid_way_ends_with_an_error_event(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.plan("gpt-4o", Reply(cut_stream_after=3))
    with served_gateway(azure_env) as (url, _):
        stream = client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES, stream=True)
        received = []
        with pytest.raises(openai.APIError) as raised:
            for chunk in stream:
                received.append(chunk)
    assert len(received) == 3  # what arrived before the cut was relayed
    assert "Upstream stream interrupted" in raised.value.message


def test_unreachable_upstream_is_a_502(azure_env: dict[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    env = {
        **azure_env,
        "AZURE_OPENAI_ENDPOINT": f"http://127.0.0.1:{closed_port}",
        "LLMOPS_MAX_RETRIES": "1",
    }
    with served_gateway(env) as (url, _), pytest.raises(openai.APIStatusError) as raised:
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 502
    assert raised.value.code == "upstream_unreachable"


def test_upstream_rejecting_our_credentials_is_a_502_not_a_401(azure_env: dict[str, str]) -> None:
    env = {**azure_env, "AZURE_OPENAI_API_KEY": "wrong-upstream-key"}
    with served_gateway(env) as (url, _), pytest.raises(openai.APIStatusError) as raised:
        client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert raised.value.status_code == 502
    assert raised.value.code == "upstream_auth_failed"


def test_upstream_404_for_an_unknown_deployment_passes_through(
    azure_env: dict[str, str], fake_upstream: FakeUpstream
) -> None:
    not_found = {
        "error": {
            "code": "DeploymentNotFound",
            "message": "The API deployment for this resource does not exist.",
        }
    }
    fake_upstream.plan("nope", Reply(status=404, body=not_found))
    with served_gateway(azure_env) as (url, _), pytest.raises(openai.NotFoundError) as raised:
        client(url).chat.completions.create(model="nope", messages=MESSAGES)
    assert raised.value.code == "DeploymentNotFound"


class FakeCredential:
    """Stands in for `DefaultAzureCredential` (no Entra ID here); counts token requests."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, ...]] = []

    async def get_token(self, *scopes: str) -> Any:
        self.requests.append(scopes)

        class Token:
            token = "entra-token-123"
            expires_on = int(time.time()) + 3600

        return Token()


def test_entra_id_token_when_no_api_key(fake_upstream: FakeUpstream) -> None:
    fake_upstream.bearer_token = "entra-token-123"
    settings = Settings.from_env({"AZURE_OPENAI_ENDPOINT": fake_upstream.url})
    credential = FakeCredential()
    upstream = HttpUpstream(settings, credential=credential)
    with served_gateway({"AZURE_OPENAI_ENDPOINT": fake_upstream.url}, upstream=upstream) as (
        url,
        gateway,
    ):
        assert isinstance(gateway, Gateway)
        for _ in range(3):
            client(url).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert credential.requests == [("https://cognitiveservices.azure.com/.default",)]  # cached
    assert fake_upstream.calls()[0].headers["authorization"] == "Bearer entra-token-123"
    assert "api-key" not in fake_upstream.calls()[0].headers
