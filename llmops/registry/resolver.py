"""Resolve `models:/NAME@ALIAS` and `prompts:/NAME@ALIAS` to what the gateway serves.

A version says what to call through its tags (models) or its template and model config
(prompts):

- deployment (required): tag `llmops.deployment`; for a prompt, else its
  `model_config.model_name`;
- system prompt: tag `llmops.system_prompt`; for a prompt, else its template (a text
  template, or the first system message of a chat template);
- default parameters: tag `llmops.params` (a JSON object); for a prompt, also its
  `model_config` (temperature, max_tokens, ...).

Resolutions are cached for `LLMOPS_REGISTRY_TTL_S`. After that the cached one is still served
at once while one background refresh asks the registry again; if the registry is unreachable
the last known good resolution stays in use (and the refresh is tried again after the TTL).
Only a model's very first lookup in a process waits for the registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmops.errors import GatewayError
from llmops.settings import RegistryBinding, Settings

log = logging.getLogger("llmops.registry")
DEPLOYMENT_TAG = "llmops.deployment"
SYSTEM_PROMPT_TAG = "llmops.system_prompt"
PARAMS_TAG = "llmops.params"
_PROMPT_CONFIG_PARAMS = (
    "temperature",
    "max_tokens",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "stop",
)


class RegistryError(Exception):
    """The registry has no usable version for a binding (message says why)."""


@dataclass(frozen=True)
class Resolution:
    """What one registry version says to serve."""

    binding: RegistryBinding
    version: str
    deployment: str
    system_prompt: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The record's and trace's `registry` field."""
        return {
            "kind": self.binding.kind,
            "name": self.binding.name,
            "alias": self.binding.alias,
            "version": self.version,
            "uri": self.binding.uri,
        }

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request body to send: the version's system prompt first, its parameters as
        defaults (the caller's own values win)."""
        result = {**self.params, **body}
        if self.system_prompt:
            messages = list(body.get("messages") or [])
            result["messages"] = [{"role": "system", "content": self.system_prompt}, *messages]
        return result


def fetch(settings: Settings, binding: RegistryBinding) -> Resolution:
    """Ask the registry (blocking); raise `RegistryError` or what MLflow raises."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=settings.traces.tracking_uri)
    if binding.kind == "model":
        version = client.get_model_version_by_alias(binding.name, binding.alias)
        tags = dict(version.tags or {})
        return _resolution(binding, str(version.version), tags, None, {})
    prompt = client.get_prompt_version_by_alias(binding.name, binding.alias)
    variables = sorted(getattr(prompt, "variables", None) or ())
    if variables:
        # A call has nothing to fill them with: refuse the version rather than send the
        # placeholders to the model (a refresh keeps serving the last good version).
        raise RegistryError(
            f"{binding.uri} (version {prompt.version}) is a template with variables "
            f"{', '.join(variables)}; the gateway serves prompts without variables"
        )
    tags = dict(prompt.tags or {})
    config = _prompt_config(prompt)
    template = prompt.template
    if isinstance(template, list):
        system = next(
            (
                m.get("content")
                for m in template
                if isinstance(m, dict) and m.get("role") == "system"
            ),
            None,
        )
    else:
        system = template
    tags.setdefault(DEPLOYMENT_TAG, str(config.pop("model_name", "") or ""))
    return _resolution(binding, str(prompt.version), tags, system, config)


def _prompt_config(prompt: Any) -> dict[str, Any]:
    config = getattr(prompt, "model_config", None)
    if config is None:
        return {}
    values = config if isinstance(config, dict) else getattr(config, "__dict__", {})
    result = {k: v for k, v in values.items() if k in _PROMPT_CONFIG_PARAMS and v is not None}
    if values.get("model_name"):
        result["model_name"] = values["model_name"]
    return result


def _resolution(
    binding: RegistryBinding,
    version: str,
    tags: dict[str, str],
    system: str | None,
    params: dict[str, Any],
) -> Resolution:
    deployment = (tags.get(DEPLOYMENT_TAG) or "").strip()
    if not deployment:
        raise RegistryError(f"{binding.uri} (version {version}) has no tag {DEPLOYMENT_TAG}")
    if PARAMS_TAG in tags:
        try:
            extra = orjson.loads(tags[PARAMS_TAG])
        except orjson.JSONDecodeError:
            extra = None
        if not isinstance(extra, dict):
            raise RegistryError(
                f"{binding.uri} (version {version}): {PARAMS_TAG} is not a JSON object"
            )
        params = {**params, **extra}
    return Resolution(
        binding=binding,
        version=version,
        deployment=deployment,
        system_prompt=tags.get(SYSTEM_PROMPT_TAG) or system or None,
        params=params,
    )


@dataclass
class _Entry:
    resolution: Resolution
    fetched: float


class RegistryResolver:
    """TTL cache with last-known-good fallback over `fetch`."""

    def __init__(
        self,
        settings: Settings,
        *,
        fetcher: Callable[[Settings, RegistryBinding], Resolution] = fetch,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._fetch = fetcher
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}
        self._first: dict[str, asyncio.Task[Resolution]] = {}
        self.stats = {"lookups": 0, "refreshes": 0, "failures": 0}

    def binding(self, model: str) -> RegistryBinding | None:
        """The registry binding of a public model name, if it has one."""
        return self.settings.registry_models.get(model)

    async def resolve(self, binding: RegistryBinding) -> Resolution:
        """The resolution to serve now. Waits for the registry only on a model's first call,
        and then at most `LLMOPS_REGISTRY_TIMEOUT_S`."""
        entry = self._entries.get(binding.public)
        if entry is None:
            return await self._first_lookup(binding)
        if self._clock() - entry.fetched >= self.settings.registry_ttl_s:
            self._refresh_in_background(binding, entry)
        return entry.resolution

    async def _first_lookup(self, binding: RegistryBinding) -> Resolution:
        # One lookup per model, however many calls wait for it. A call that waited too long
        # gets a 503; the lookup goes on and serves the calls that come after it.
        task = self._first.get(binding.public)
        if task is None or (task.done() and (task.cancelled() or task.exception() is not None)):
            task = self._first[binding.public] = asyncio.get_running_loop().create_task(
                self._remember(binding)
            )
        try:
            return await asyncio.wait_for(
                asyncio.shield(task), timeout=self.settings.registry_timeout_s
            )
        except TimeoutError:
            problem = f"no answer within {self.settings.registry_timeout_s:g} s"
        except Exception as exc:
            problem = _brief(exc)
        raise GatewayError(
            503,
            f"The model '{binding.public}' is served from {binding.uri}, which could not be "
            f"resolved: {problem}",
            type="api_error",
            code="registry_unavailable",
            headers={"retry-after": "10"},
        )

    async def _remember(self, binding: RegistryBinding) -> Resolution:
        resolution = await self._lookup(binding)
        if binding.public not in self._entries:
            self._entries[binding.public] = _Entry(resolution, self._clock())
        return self._entries[binding.public].resolution

    async def _lookup(self, binding: RegistryBinding) -> Resolution:
        self.stats["lookups"] += 1
        return await asyncio.to_thread(self._fetch, self.settings, binding)

    def _refresh_in_background(self, binding: RegistryBinding, entry: _Entry) -> None:
        running = self._refreshing.get(binding.public)
        if running is not None and not running.done():
            return

        async def refresh() -> None:
            self.stats["refreshes"] += 1
            try:
                resolution = await self._lookup(binding)
            except Exception as exc:  # keep the last known good; try again after the TTL
                self.stats["failures"] += 1
                entry.fetched = self._clock()
                log.warning(
                    "registry %s unavailable (%s); still serving version %s",
                    binding.uri,
                    _brief(exc),
                    entry.resolution.version,
                )
                return
            if resolution.version != entry.resolution.version:
                log.info(
                    "%s now serves %s version %s (was %s)",
                    binding.public,
                    binding.uri,
                    resolution.version,
                    entry.resolution.version,
                )
            self._entries[binding.public] = _Entry(resolution, self._clock())

        self._refreshing[binding.public] = asyncio.get_running_loop().create_task(refresh())

    async def aclose(self, timeout_s: float = 2.0) -> None:
        """Wait a little for refreshes in flight (a hanging registry does not hold a shutdown)."""
        tasks = [t for t in self._refreshing.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)


def _brief(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}"[:300]
