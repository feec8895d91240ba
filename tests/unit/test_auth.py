"""Consumer keys: both header styles, hashed keys, constant-time comparison of digests."""

from __future__ import annotations

import pytest

from llmops.errors import GatewayError
from llmops.gateway.auth import ANONYMOUS, authenticate, presented_key
from llmops.settings import parse_api_keys

pytestmark = pytest.mark.unit
KEYS = parse_api_keys(
    "team-a=key-a,team-b=sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
)


def test_presented_key_from_either_header() -> None:
    assert presented_key({"api-key": " k "}) == "k"
    assert presented_key({"authorization": "Bearer k"}) == "k"
    assert presented_key({"authorization": "bearer k"}) == "k"
    assert presented_key({"authorization": "Basic k"}) is None
    assert presented_key({"authorization": "Bearer "}) is None
    assert presented_key({}) is None


def test_consumers_are_attributed() -> None:
    assert authenticate({"api-key": "key-a"}, KEYS) == "team-a"
    assert authenticate({"authorization": "Bearer hello"}, KEYS) == "team-b"


def test_open_gateway_is_anonymous() -> None:
    assert authenticate({}, ()) == ANONYMOUS


@pytest.mark.parametrize(
    "headers",
    [{}, {"api-key": "key-b"}, {"api-key": "key-a "[:-2]}, {"authorization": "Bearer sha256:2cf2"}],
)
def test_missing_or_wrong_keys_are_401(headers: dict[str, str]) -> None:
    with pytest.raises(GatewayError) as raised:
        authenticate(headers, KEYS)
    assert (raised.value.status, raised.value.code) == (401, "invalid_api_key")
