"""Upstream adapters: the network edge where a chat request leaves the gateway.

`HttpUpstream` speaks to Azure OpenAI (deployments path, `api-key` or Entra ID bearer token,
`api-version` query) or to any OpenAI-compatible endpoint (`/chat/completions`, bearer key).
It uses one aiohttp session per event loop: measured here, aiohttp adds ~0.4 ms per call where
httpx adds ~0.8 ms and the openai SDK ~2.3 ms, and only aiohttp held its throughput behind a
slow upstream (docs/decisions.md). aiohttp is imported on first use, not at app import.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import orjson

from llmops import __version__
from llmops.settings import Settings

if TYPE_CHECKING:
    import aiohttp

# Upstream response headers worth passing to the client (rate limits, retry hints, ids).
_PASS_HEADERS = ("retry-after", "retry-after-ms", "x-ms-region")
_PASS_PREFIXES = ("x-ratelimit-",)
AZURE_SCOPE = "https://cognitiveservices.azure.com/.default"


class UpstreamUnreachable(Exception):
    """The upstream could not be reached or dropped the connection (worth a retry)."""


class UpstreamAuthFailed(Exception):
    """The gateway could not authenticate to the upstream (no token): not the client's fault."""


class UpstreamTimeout(Exception):
    """The upstream accepted the call but did not answer in time (not retried: it may bill)."""


@dataclass
class UpstreamResponse:
    """What came back: a status, the headers worth passing on, and a body or a stream."""

    status: int
    headers: dict[str, str]
    body: bytes = b""
    chunks: AsyncIterator[bytes] | None = None
    upstream_request_id: str | None = None
    _close: Callable[[], Awaitable[None]] | None = field(default=None, repr=False)

    async def aclose(self) -> None:
        """Release the connection behind a stream (safe to call twice)."""
        close, self._close = self._close, None
        if close is not None:
            await close()

    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class Upstream(Protocol):
    """Sends one chat request to one deployment."""

    kind: str

    async def send(
        self, deployment: str, body: dict[str, Any], raw: bytes, *, stream: bool, time_left_s: float
    ) -> UpstreamResponse:
        """Send the request; raise `UpstreamUnreachable` or `UpstreamTimeout` on failure."""
        ...

    async def aclose(self) -> None:
        """Release connections and credentials."""
        ...


class TokenCredential(Protocol):
    """The part of `azure.identity.aio` credentials the gateway uses."""

    async def get_token(self, *scopes: str) -> Any: ...


class EntraToken:
    """Caches an Entra ID bearer token for Azure OpenAI and refreshes it before it expires."""

    def __init__(self, credential: TokenCredential | None = None) -> None:
        self._credential = credential
        self._token: str | None = None
        self._expires_on = 0.0
        self._lock = asyncio.Lock()

    async def get(self) -> str:
        """A valid token, fetched at most once per expiry window."""
        if self._token is None or time.time() > self._expires_on - 300:
            async with self._lock:
                if self._token is None or time.time() > self._expires_on - 300:
                    if self._credential is None:
                        from azure.identity.aio import DefaultAzureCredential

                        self._credential = DefaultAzureCredential()
                    access = await self._credential.get_token(AZURE_SCOPE)
                    self._token, self._expires_on = access.token, float(access.expires_on)
        assert self._token is not None
        return self._token

    async def aclose(self) -> None:
        close = getattr(self._credential, "close", None)
        if close is not None:
            await close()


class HttpUpstream:
    """Azure OpenAI or an OpenAI-compatible endpoint over HTTP."""

    def __init__(self, settings: Settings, credential: TokenCredential | None = None) -> None:
        if settings.upstream == "azure":
            assert settings.azure_endpoint
            self.kind = "azure"
            self._base = f"{settings.azure_endpoint}/openai/deployments/"
            self._query = f"/chat/completions?api-version={quote(settings.azure_api_version)}"
            self._static_headers = (
                {"api-key": settings.azure_api_key} if settings.azure_api_key else {}
            )
            self._token = None if settings.azure_api_key else EntraToken(credential)
        else:
            assert settings.openai_base_url
            self.kind = "openai"
            self._base = f"{settings.openai_base_url}/chat/completions"
            self._query = ""
            key = settings.openai_api_key
            self._static_headers = {"authorization": f"Bearer {key}"} if key else {}
            self._token = None
        self._static_headers["content-type"] = "application/json"
        self._static_headers["user-agent"] = f"llmops-gateway/{__version__}"
        self._settings = settings
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._last_loop: asyncio.AbstractEventLoop | None = None
        self._last_session: aiohttp.ClientSession | None = None

    def _url(self, deployment: str) -> str:
        if self.kind == "azure":
            return f"{self._base}{quote(deployment, safe='')}{self._query}"
        return self._base

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if loop is self._last_loop and self._last_session is not None:
            return self._last_session
        session = self._sessions.get(loop)
        if session is None or session.closed:
            import aiohttp

            connector = aiohttp.TCPConnector(
                limit=self._settings.upstream_connections, ttl_dns_cache=300
            )
            session = aiohttp.ClientSession(connector=connector)
            self._sessions = {
                known: s for known, s in self._sessions.items() if not known.is_closed()
            }
            self._sessions[loop] = session
        self._last_loop, self._last_session = loop, session
        return session

    async def send(
        self, deployment: str, body: dict[str, Any], raw: bytes, *, stream: bool, time_left_s: float
    ) -> UpstreamResponse:
        import aiohttp

        if self.kind == "openai" and body.get("model") != deployment:
            raw = orjson.dumps({**body, "model": deployment})
        headers = self._static_headers
        if self._token is not None:
            try:
                token = await asyncio.wait_for(self._token.get(), time_left_s)
            except Exception as exc:  # no identity, IMDS down, timeout: the gateway's fault
                raise UpstreamAuthFailed(
                    f"could not get an Entra ID token for Azure OpenAI: "
                    f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                ) from None
            headers = {**headers, "authorization": f"Bearer {token}"}
        settings = self._settings
        # One timer per call, owned by aiohttp: a non-streamed answer must be complete within
        # the call's remaining time; a stream must start within it and then never stall for
        # longer than the read timeout.
        if stream:
            client_timeout = aiohttp.ClientTimeout(
                sock_connect=settings.connect_timeout_s,
                sock_read=min(settings.read_timeout_s, time_left_s),
            )
        else:
            client_timeout = aiohttp.ClientTimeout(
                total=time_left_s,
                sock_connect=settings.connect_timeout_s,
                sock_read=settings.read_timeout_s,
            )
        response: aiohttp.ClientResponse | None = None
        try:
            response = await self._session().post(
                self._url(deployment), data=raw, headers=headers, timeout=client_timeout
            )
            if not stream or response.status != 200:
                payload = await response.read()
                response.release()
                return _response(response, body=payload)
        except aiohttp.ConnectionTimeoutError as exc:
            raise UpstreamUnreachable(f"connecting to the upstream timed out: {exc}") from None
        except TimeoutError:
            if response is not None:
                response.close()
            waited = min(time_left_s, settings.read_timeout_s)
            raise UpstreamTimeout(f"the upstream did not answer within {waited:g} s") from None
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise UpstreamUnreachable(str(exc) or type(exc).__name__) from None

        async def close() -> None:
            response.close()

        return _response(response, chunks=_chunks(response), close=close)

    async def aclose(self) -> None:
        sessions, self._sessions = self._sessions, {}
        self._last_loop = self._last_session = None
        for session in sessions.values():
            if not session.closed:
                await session.close()
        if self._token is not None:
            await self._token.aclose()


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    import aiohttp

    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except TimeoutError:
        raise UpstreamTimeout("the upstream stopped sending mid-stream") from None
    except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
        raise UpstreamUnreachable(f"the upstream dropped the stream: {exc}") from None
    finally:
        response.release()


def _response(
    response: aiohttp.ClientResponse,
    *,
    body: bytes = b"",
    chunks: AsyncIterator[bytes] | None = None,
    close: Callable[[], Awaitable[None]] | None = None,
) -> UpstreamResponse:
    passed: dict[str, str] = {}
    for name, value in response.headers.items():
        lowered = name.lower()
        if lowered in _PASS_HEADERS or lowered.startswith(_PASS_PREFIXES):
            passed[lowered] = value
    request_id = response.headers.get("x-request-id") or response.headers.get("apim-request-id")
    return UpstreamResponse(
        status=response.status,
        headers=passed,
        body=body,
        chunks=chunks,
        upstream_request_id=request_id,
        _close=close,
    )
