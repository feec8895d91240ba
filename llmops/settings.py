"""Every setting the gateway reads, in one typed, frozen object.

Settings come from environment variables (Functions app settings on Azure, the shell or
`local.settings.json` locally). They are parsed and validated once by `Settings.from_env()`;
a wrong value raises `SettingsError` naming the variable and what was expected, so a bad
deployment fails at start-up rather than on the first call.

The variable names are the documented constants below; the README's configuration table
lists each with its default.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

# --- Documented environment variable names -------------------------------------------------
UPSTREAM = "LLMOPS_UPSTREAM"  # azure | openai | mock; default: chosen from what is configured
AZURE_OPENAI_ENDPOINT = "AZURE_OPENAI_ENDPOINT"
AZURE_OPENAI_API_KEY = "AZURE_OPENAI_API_KEY"
AZURE_OPENAI_API_VERSION = "AZURE_OPENAI_API_VERSION"
OPENAI_BASE_URL = "OPENAI_BASE_URL"
OPENAI_API_KEY = "OPENAI_API_KEY"
MODEL_MAP = "LLMOPS_MODEL_MAP"  # "public=deployment[|fallback...],..."
FALLBACK_DEPLOYMENTS = "LLMOPS_FALLBACK_DEPLOYMENTS"  # "dep-b,dep-c", tried after every chain
API_KEYS = "LLMOPS_API_KEYS"  # "team-a=KEY,team-b=sha256:HEX"
MAX_BODY_BYTES = "LLMOPS_MAX_BODY_BYTES"
CONNECT_TIMEOUT_S = "LLMOPS_CONNECT_TIMEOUT_S"
READ_TIMEOUT_S = "LLMOPS_READ_TIMEOUT_S"
TOTAL_TIMEOUT_S = "LLMOPS_TOTAL_TIMEOUT_S"
MAX_RETRIES = "LLMOPS_MAX_RETRIES"
RETRY_MAX_WAIT_S = "LLMOPS_RETRY_MAX_WAIT_S"
MOCK_LATENCY_MS = "LLMOPS_MOCK_LATENCY_MS"
MOCK_CHUNK_DELAY_MS = "LLMOPS_MOCK_CHUNK_DELAY_MS"
UPSTREAM_CONNECTIONS = "LLMOPS_UPSTREAM_CONNECTIONS"

DEFAULT_AZURE_API_VERSION = "2024-10-21"
# Azure's front end cuts an HTTP request at 230 s; every call, retries included, ends before.
AZURE_HTTP_LIMIT_S = 230.0

UpstreamKind = Literal["azure", "openai", "mock"]
_UPSTREAM_KINDS: tuple[UpstreamKind, ...] = ("azure", "openai", "mock")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True)
class ConsumerKey:
    """One consumer's API key, kept only as its SHA-256 digest."""

    consumer: str
    sha256: bytes


@dataclass(frozen=True)
class Settings:
    """The gateway's configuration. Build it with `Settings.from_env()`."""

    upstream: UpstreamKind
    upstream_explicit: bool
    azure_endpoint: str | None = None
    azure_api_key: str | None = field(default=None, repr=False)
    azure_api_version: str = DEFAULT_AZURE_API_VERSION
    openai_base_url: str | None = None
    openai_api_key: str | None = field(default=None, repr=False)
    # public model name -> ordered deployments (primary first, then its own fallbacks)
    model_map: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    fallback_deployments: tuple[str, ...] = ()
    api_keys: tuple[ConsumerKey, ...] = field(default=(), repr=False)
    max_body_bytes: int = 1024 * 1024
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 60.0
    total_timeout_s: float = 200.0
    max_retries: int = 2
    retry_max_wait_s: float = 20.0
    mock_latency_ms: float = 0.0
    mock_chunk_delay_ms: float = 0.0
    upstream_connections: int = 256

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting from `environ` (default: `os.environ`)."""
        env = os.environ if environ is None else environ

        def text(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        azure_endpoint = text(AZURE_OPENAI_ENDPOINT)
        openai_base_url = text(OPENAI_BASE_URL)
        explicit = text(UPSTREAM)
        upstream: UpstreamKind
        if explicit is not None:
            lowered = explicit.lower()
            if lowered not in _UPSTREAM_KINDS:
                raise SettingsError(f"{UPSTREAM}={explicit!r} is not one of azure, openai, mock")
            upstream = lowered
        elif azure_endpoint:
            upstream = "azure"
        elif openai_base_url:
            upstream = "openai"
        else:
            upstream = "mock"
        if upstream == "azure" and not azure_endpoint:
            raise SettingsError(
                f"{UPSTREAM}=azure needs {AZURE_OPENAI_ENDPOINT} "
                "(e.g. https://NAME.openai.azure.com)"
            )
        if upstream == "openai" and not openai_base_url:
            raise SettingsError(
                f"{UPSTREAM}=openai needs {OPENAI_BASE_URL} (e.g. https://api.openai.com/v1)"
            )
        for name, url in (
            (AZURE_OPENAI_ENDPOINT, azure_endpoint),
            (OPENAI_BASE_URL, openai_base_url),
        ):
            if url and not url.startswith(("http://", "https://")):
                raise SettingsError(f"{name}={url!r} must start with http:// or https://")

        total_timeout = _number(env, TOTAL_TIMEOUT_S, 200.0, minimum=1.0)
        if total_timeout >= AZURE_HTTP_LIMIT_S:
            raise SettingsError(
                f"{TOTAL_TIMEOUT_S}={total_timeout:g} must be below Azure's "
                f"{AZURE_HTTP_LIMIT_S:g} s HTTP limit"
            )
        return cls(
            upstream=upstream,
            upstream_explicit=explicit is not None,
            azure_endpoint=azure_endpoint.rstrip("/") if azure_endpoint else None,
            azure_api_key=text(AZURE_OPENAI_API_KEY),
            azure_api_version=text(AZURE_OPENAI_API_VERSION) or DEFAULT_AZURE_API_VERSION,
            openai_base_url=openai_base_url.rstrip("/") if openai_base_url else None,
            openai_api_key=text(OPENAI_API_KEY),
            model_map=parse_model_map(text(MODEL_MAP) or ""),
            fallback_deployments=_names(text(FALLBACK_DEPLOYMENTS) or "", FALLBACK_DEPLOYMENTS),
            api_keys=parse_api_keys(text(API_KEYS) or ""),
            max_body_bytes=int(_number(env, MAX_BODY_BYTES, 1024 * 1024, minimum=1024)),
            connect_timeout_s=_number(env, CONNECT_TIMEOUT_S, 5.0, minimum=0.1),
            read_timeout_s=_number(env, READ_TIMEOUT_S, 60.0, minimum=0.1),
            total_timeout_s=total_timeout,
            max_retries=int(_number(env, MAX_RETRIES, 2, minimum=0, maximum=10)),
            retry_max_wait_s=_number(env, RETRY_MAX_WAIT_S, 20.0, minimum=0.0),
            mock_latency_ms=_number(env, MOCK_LATENCY_MS, 0.0, minimum=0.0),
            mock_chunk_delay_ms=_number(env, MOCK_CHUNK_DELAY_MS, 0.0, minimum=0.0),
            upstream_connections=int(_number(env, UPSTREAM_CONNECTIONS, 256, minimum=1)),
        )

    @property
    def open_access(self) -> bool:
        """True when no consumer keys are configured: every call is consumer `anonymous`."""
        return not self.api_keys

    def describe(self) -> dict[str, object]:
        """What is configured, safe to show on /health and at start-up: never a secret."""
        target = {
            "azure": self.azure_endpoint,
            "openai": self.openai_base_url,
            "mock": "offline mock (no upstream configured)"
            if not self.upstream_explicit
            else "offline mock",
        }[self.upstream]
        auth = None
        if self.upstream == "azure":
            auth = "api-key" if self.azure_api_key else "entra-id"
        elif self.upstream == "openai":
            auth = "bearer" if self.openai_api_key else "none"
        return {
            "upstream": self.upstream,
            "target": target,
            "upstream_auth": auth,
            "api_version": self.azure_api_version if self.upstream == "azure" else None,
            "models": sorted(self.model_map),
            "model_map": "configured" if self.model_map else "pass-through",
            "consumers": len(self.api_keys),
            "open_access": self.open_access,
        }


def parse_model_map(raw: str) -> dict[str, tuple[str, ...]]:
    """Parse `public=deployment[|fallback...]` pairs separated by commas."""
    result: dict[str, tuple[str, ...]] = {}
    for item in _items(raw):
        public, sep, chain = item.partition("=")
        deployments = tuple(part.strip() for part in chain.split("|") if part.strip())
        if not sep or not public.strip() or not deployments:
            raise SettingsError(
                f"{MODEL_MAP}: {item!r} is not 'public-name=deployment[|fallback...]'"
            )
        result[public.strip()] = deployments
    return result


def parse_api_keys(raw: str) -> tuple[ConsumerKey, ...]:
    """Parse `consumer=KEY` or `consumer=sha256:HEX` pairs separated by commas."""
    keys: list[ConsumerKey] = []
    for item in _items(raw):
        consumer, sep, secret = item.partition("=")
        consumer, secret = consumer.strip(), secret.strip()
        if not sep or not consumer or not secret:
            # never echo the item: it holds a key
            raise SettingsError(
                f"{API_KEYS}: entry {len(keys) + 1} is not 'consumer=KEY' or 'consumer=sha256:HEX'"
            )
        if secret.lower().startswith("sha256:"):
            hexdigest = secret[7:]
            try:
                digest = bytes.fromhex(hexdigest)
            except ValueError:
                digest = b""
            if len(digest) != 32:
                raise SettingsError(
                    f"{API_KEYS}: the key of consumer {consumer!r} "
                    "is not sha256: plus 64 hex digits"
                )
        else:
            digest = hashlib.sha256(secret.encode()).digest()
        keys.append(ConsumerKey(consumer=consumer, sha256=digest))
    return tuple(keys)


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _names(raw: str, name: str) -> tuple[str, ...]:
    items = _items(raw)
    if any("=" in item for item in items):
        raise SettingsError(f"{name} is a comma-separated list of deployment names")
    return tuple(items)


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float,
    maximum: float | None = None,
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a number") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum:g} and {maximum:g}" if maximum is not None else f">= {minimum:g}"
        raise SettingsError(f"{name}={raw!r} must be {bound}")
    return value
