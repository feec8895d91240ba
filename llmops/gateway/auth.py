"""Consumer authentication: which team's key is this call using?"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from llmops.errors import GatewayError
from llmops.settings import ConsumerKey

ANONYMOUS = "anonymous"


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent, as `api-key: KEY` (Azure style) or `Authorization: Bearer KEY`."""
    key = headers.get("api-key")
    if key:
        return key.strip()
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return None


def authenticate(headers: Mapping[str, str], keys: tuple[ConsumerKey, ...]) -> str:
    """Return the consumer that owns the presented key, or raise a 401.

    With no keys configured the gateway is open and every call is `anonymous`. Keys are
    compared as SHA-256 digests with `hmac.compare_digest`, against every configured key, so
    the time taken does not depend on which key matched or how much of it did.
    """
    if not keys:
        return ANONYMOUS
    key = presented_key(headers)
    if key is None:
        raise GatewayError(
            401,
            "Missing API key: send it as 'Authorization: Bearer KEY' or 'api-key: KEY'.",
            code="invalid_api_key",
        )
    digest = hashlib.sha256(key.encode()).digest()
    consumer: str | None = None
    for candidate in keys:
        if hmac.compare_digest(digest, candidate.sha256) and consumer is None:
            consumer = candidate.consumer
    if consumer is None:
        raise GatewayError(401, "Incorrect API key provided.", code="invalid_api_key")
    return consumer
