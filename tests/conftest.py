"""Shared fixtures: a fake upstream on loopback and gateways served in front of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from llmops.gateway.http import reset_default_handlers
from tests.fakes.served import GATEWAY_KEY
from tests.fakes.upstream import FakeUpstream

GATEWAY_KEYS = f"team-a={GATEWAY_KEY},team-b=sha256:" + (
    "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256("hello")
)


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A fake Azure OpenAI / OpenAI server on 127.0.0.1."""
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def azure_env(fake_upstream: FakeUpstream) -> dict[str, str]:
    """Settings for a gateway in front of the fake, as Azure OpenAI, with consumer keys."""
    return {
        "AZURE_OPENAI_ENDPOINT": fake_upstream.url,
        "AZURE_OPENAI_API_KEY": fake_upstream.api_key,
        "LLMOPS_API_KEYS": GATEWAY_KEYS,
        "LLMOPS_MAX_RETRIES": "2",
    }


@pytest.fixture
def openai_env(fake_upstream: FakeUpstream) -> dict[str, str]:
    """Settings for a gateway in front of the fake, as an OpenAI-compatible endpoint."""
    return {
        "OPENAI_BASE_URL": f"{fake_upstream.url}/v1",
        "OPENAI_API_KEY": fake_upstream.api_key,
        "LLMOPS_API_KEYS": GATEWAY_KEYS,
    }


@pytest.fixture(autouse=True)
def _fresh_default_handlers(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The Functions handlers read the environment once; start every test from scratch,
    with request logs in the test's own folder."""
    monkeypatch.setenv("LLMOPS_LOCAL_STORE_DIR", str(tmp_path / "store"))
    monkeypatch.setenv("LLMOPS_SPOOL_DIR", str(tmp_path / "spool"))
    monkeypatch.setenv("LLMOPS_TRACING", "off")
    for name in ("AzureWebJobsStorage", "FUNCTIONS_WORKER_RUNTIME"):
        monkeypatch.delenv(name, raising=False)
    reset_default_handlers()
    yield
    reset_default_handlers()
