"""Routing decisions: deployment chains and retry waits."""

from __future__ import annotations

import email.utils

import pytest

from llmops.errors import GatewayError
from llmops.gateway.routing import (
    backoff_seconds,
    deployment_chain,
    is_retryable,
    retry_after_seconds,
)

pytestmark = pytest.mark.unit


def test_without_a_map_the_model_is_the_deployment() -> None:
    assert deployment_chain("gpt-4o", {}, ()) == ("gpt-4o",)
    assert deployment_chain("gpt-4o", {}, ("backup",)) == ("gpt-4o", "backup")


def test_map_chain_then_global_fallbacks_without_repeats() -> None:
    model_map = {"gpt-4o": ("east", "west")}
    assert deployment_chain("gpt-4o", model_map, ("west", "global")) == ("east", "west", "global")


def test_unknown_model_with_a_map_is_404() -> None:
    with pytest.raises(GatewayError) as raised:
        deployment_chain("gpt-5", {"gpt-4o": ("east",)}, ())
    assert (raised.value.status, raised.value.code) == (404, "model_not_found")


@pytest.mark.parametrize(
    ("status", "retry"),
    [
        (429, True),
        (500, True),
        (502, True),
        (503, True),
        (504, True),
        (408, True),
        (400, False),
        (401, False),
        (404, False),
        (422, False),
        (200, False),
    ],
)
def test_retryable_statuses(status: int, retry: bool) -> None:
    assert is_retryable(status) is retry


def test_retry_after_ms_wins_over_seconds() -> None:
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25


def test_retry_after_seconds_and_http_date() -> None:
    assert retry_after_seconds({"retry-after": "3"}) == 3.0
    date = email.utils.formatdate(1_000_010, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=1_000_000) == pytest.approx(10)
    assert retry_after_seconds({"retry-after": "soon"}) is None
    assert retry_after_seconds({"retry-after-ms": "x"}) is None
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "-5"}) == 0.0


def test_backoff_grows_and_is_capped() -> None:
    samples = [backoff_seconds(attempt) for attempt in range(10) for _ in range(50)]
    assert all(0 <= s <= 8.0 for s in samples)
    assert max(backoff_seconds(0) for _ in range(200)) <= 0.5
    assert max(backoff_seconds(5) for _ in range(200)) > 1.0
