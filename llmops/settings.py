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
from datetime import UTC, datetime
from functools import partial
from typing import Literal, cast

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
# Request log (llmops/logs)
STORAGE = "AzureWebJobsStorage"  # connection string or UseDevelopmentStorage=true
STORAGE_ACCOUNT_NAME = "AzureWebJobsStorage__accountName"  # identity-based
STORAGE_BLOB_URI = "AzureWebJobsStorage__blobServiceUri"  # identity-based
STORAGE_CLIENT_ID = "AzureWebJobsStorage__clientId"  # user-assigned managed identity
REQUEST_LOG = "LLMOPS_REQUEST_LOG"  # on | off
LOG_CONTAINER = "LLMOPS_LOG_CONTAINER"
LOCAL_STORE_DIR = "LLMOPS_LOCAL_STORE_DIR"
SPOOL_DIR = "LLMOPS_SPOOL_DIR"
LOG_BATCH_RECORDS = "LLMOPS_LOG_BATCH_RECORDS"
LOG_FLUSH_S = "LLMOPS_LOG_FLUSH_S"
LOG_BUFFER_RECORDS = "LLMOPS_LOG_BUFFER_RECORDS"
LOG_UPLOAD_TIMEOUT_S = "LLMOPS_LOG_UPLOAD_TIMEOUT_S"
LOG_RETRY_S = "LLMOPS_LOG_RETRY_S"  # after a failed upload, spool directly for this long
LOG_CONTENT = "LLMOPS_LOG_CONTENT"  # on | off: keep (redacted) messages and completions
LOG_PROCESS = "LLMOPS_LOG_PROCESS"  # on | off: records built in a child process
REDACT_MODE = "LLMOPS_REDACT_MODE"  # mask | hash | off
REDACT_SALT = "LLMOPS_REDACT_SALT"
REDACT_PATTERNS = "LLMOPS_REDACT_PATTERNS"  # JSON object: name -> regex
FUNCTIONS_RUNTIME = "FUNCTIONS_WORKER_RUNTIME"  # set by the Functions host
# Traces and metrics (llmops/tracing)
TRACING = "LLMOPS_TRACING"  # on | off: one MLflow trace per call
MLFLOW_TRACKING_URI = "MLFLOW_TRACKING_URI"  # `databricks` in Azure; default: a local SQLite store
MLFLOW_EXPERIMENT_NAME = "MLFLOW_EXPERIMENT_NAME"  # on Databricks an absolute workspace path
TRACE_QUEUE_RECORDS = "LLMOPS_TRACE_QUEUE_RECORDS"  # records waiting for export; beyond: dropped
TRACE_FLUSH_TIMEOUT_S = "LLMOPS_TRACE_FLUSH_TIMEOUT_S"  # longest wait for a flush (shutdown, call)
TRACE_SAMPLE = "LLMOPS_TRACE_SAMPLE"  # share of successful calls traced (0..1); errors: all
# otlp: batches of spans to an MLflow server's OTLP endpoint (the default for http(s):// URIs);
# mlflow: MLflow's Python client, one trace at a time (the default for local stores, Databricks)
TRACE_EXPORT = "LLMOPS_TRACE_EXPORT"
TRACE_PROCESS = "LLMOPS_TRACE_PROCESS"  # on | off: OTLP spans built in a child process
APPINSIGHTS_CONNECTION_STRING = "APPLICATIONINSIGHTS_CONNECTION_STRING"  # set: OTel metrics
# "Authorization=AAD;ClientId=<id>": export with Entra ID (a resource with local auth off)
APPINSIGHTS_AUTHENTICATION_STRING = "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"
# Drift monitor (llmops/drift)
DRIFT_SCHEDULE = "LLMOPS_DRIFT_SCHEDULE"  # NCRONTAB of the timer; one window per period
DRIFT_REFERENCE_HOURS = "LLMOPS_DRIFT_REFERENCE_HOURS"  # rolling reference before the window
DRIFT_BASELINE = "LLMOPS_DRIFT_BASELINE"  # pinned reference "START/END" (ISO 8601, UTC)
DRIFT_SHARE = "LLMOPS_DRIFT_SHARE"  # dataset drift when this share of features drifts
DRIFT_MIN_SAMPLES = "LLMOPS_DRIFT_MIN_SAMPLES"  # fewer values in a window: "not enough data"
DRIFT_TESTS = "LLMOPS_DRIFT_TESTS"  # per-feature overrides "feature=method[:threshold],..."
DRIFT_TEXT_SAMPLE = "LLMOPS_DRIFT_TEXT_SAMPLE"  # prompts per window for the text classifier
DRIFT_MAX_ROWS = "LLMOPS_DRIFT_MAX_ROWS"  # values kept per feature and window (then sampled)
DRIFT_SIZE_RULE = "LLMOPS_DRIFT_SIZE_RULE"  # smaller (default) | reference (Evidently's rule)
DRIFT_WORKERS = "LLMOPS_DRIFT_WORKERS"  # processes reading the windows; 0 = one per CPU (max 4)
DRIFT_CATCHUP = "LLMOPS_DRIFT_CATCHUP"  # most missed windows a past-due run computes
DRIFT_EXPERIMENT = "LLMOPS_DRIFT_EXPERIMENT"  # MLflow experiment of the drift runs
RETRAIN_AFTER = "LLMOPS_RETRAIN_AFTER"  # consecutive drifted windows before a retrain request
RETRAIN_COOLDOWN = "LLMOPS_RETRAIN_COOLDOWN"  # hours between two retrain requests
# Retraining trigger (llmops/retrain)
RETRAIN_JOB_ID = "LLMOPS_RETRAIN_JOB_ID"  # the Databricks job a retraining request starts
RETRAIN_BLOB_SOURCE = "LLMOPS_RETRAIN_BLOB_SOURCE"  # EventGrid (Flex) | LogsAndContainerScan
RETRAIN_ATTEMPTS = "LLMOPS_RETRAIN_ATTEMPTS"  # tries per invocation on 429/5xx/timeouts
RETRAIN_TIMEOUT_S = "LLMOPS_RETRAIN_TIMEOUT_S"  # per Databricks request
DATABRICKS_HOST = "DATABRICKS_HOST"  # https://adb-....azuredatabricks.net
DATABRICKS_TOKEN = "DATABRICKS_TOKEN"  # a PAT; unset: the SDK's other auth (service principal)
# Registry-driven serving (llmops/registry)
REGISTRY_MODELS = "LLMOPS_REGISTRY_MODELS"  # "public=models:/name@alias,other=prompts:/n@a"
REGISTRY_TTL_S = "LLMOPS_REGISTRY_TTL_S"  # seconds a resolution is served before a refresh
REGISTRY_TIMEOUT_S = "LLMOPS_REGISTRY_TIMEOUT_S"  # longest a model's first call waits for it

DEFAULT_AZURE_API_VERSION = "2024-10-21"
# Azure's front end cuts an HTTP request at 230 s; every call, retries included, ends before.
AZURE_HTTP_LIMIT_S = 230.0
# Traces: a local SQLite store (needs the full `mlflow` package) unless MLFLOW_TRACKING_URI is set.
DEFAULT_TRACKING_URI = "sqlite:///.llmops/mlflow.db"
DEFAULT_EXPERIMENT_NAME = "llmops-gateway"
# Blob containers besides the request log's (fixed names: infra/ creates them).
REPORT_CONTAINER = "drift-reports"
RETRAIN_REQUESTS_CONTAINER = "retrain-requests"
RETRAIN_RUNS_CONTAINER = "retrain-runs"
DEFAULT_DRIFT_SCHEDULE = "0 0 * * * *"  # hourly, at the top of the hour
DEFAULT_DRIFT_EXPERIMENT = "llmops-drift"

UpstreamKind = Literal["azure", "openai", "mock"]
SizeRule = Literal["smaller", "reference"]
_UPSTREAM_KINDS: tuple[UpstreamKind, ...] = ("azure", "openai", "mock")


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable and the fix."""


@dataclass(frozen=True)
class ConsumerKey:
    """One consumer's API key, kept only as its SHA-256 digest."""

    consumer: str
    sha256: bytes


@dataclass(frozen=True)
class LogSettings:
    """Where and how request logs are written (see docs/request-log.md)."""

    enabled: bool = True
    container: str = "request-logs"
    connection_string: str | None = field(default=None, repr=False)
    blob_service_uri: str | None = None  # identity-based access (DefaultAzureCredential)
    managed_identity_client_id: str | None = None
    local_dir: str = ".llmops/store"  # used when no storage is configured
    spool_dir: str = ""  # default: <tmp>/llmops-spool
    batch_records: int = 500
    flush_s: float = 1.0
    buffer_records: int = 10_000
    upload_timeout_s: float = 10.0
    retry_s: float = 5.0
    content: bool = True
    redact_mode: Literal["mask", "hash", "off"] = "mask"
    redact_salt: str = field(default="", repr=False)
    redact_patterns: Mapping[str, str] = field(default_factory=dict)
    flush_each_call: bool = False  # under the Functions host: an instance may freeze after a call
    # records built in a child process (llmops/logs/builder.py); on when read from the
    # environment (LLMOPS_LOG_PROCESS), off for a writer made in code (tests, libraries)
    process: bool = False

    @property
    def storage(self) -> str:
        """`blob` when Blob Storage is configured, else `local`."""
        return "blob" if self.connection_string or self.blob_service_uri else "local"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LogSettings:
        """Read the request-log settings from `env`."""
        import tempfile

        text = partial(_text, env)

        blob_uri = text(STORAGE_BLOB_URI)
        account = text(STORAGE_ACCOUNT_NAME)
        if blob_uri is None and account is not None:
            blob_uri = f"https://{account}.blob.core.windows.net"
        mode = _choice(text(REDACT_MODE), REDACT_MODE, ("mask", "hash", "off"))
        patterns: dict[str, str] = {}
        if text(REDACT_PATTERNS):
            from llmops.redact import parse_extra_patterns

            try:
                patterns = parse_extra_patterns(text(REDACT_PATTERNS) or "")
            except ValueError as exc:
                raise SettingsError(f"{REDACT_PATTERNS}: {exc}") from None
        flush_s = _number(env, LOG_FLUSH_S, 1.0, minimum=0.01, maximum=60)
        return cls(
            enabled=_switch(text(REQUEST_LOG), REQUEST_LOG),
            container=text(LOG_CONTAINER) or "request-logs",
            connection_string=text(STORAGE),
            blob_service_uri=blob_uri,
            managed_identity_client_id=text(STORAGE_CLIENT_ID),
            local_dir=text(LOCAL_STORE_DIR) or ".llmops/store",
            spool_dir=text(SPOOL_DIR) or os.path.join(tempfile.gettempdir(), "llmops-spool"),
            batch_records=int(_number(env, LOG_BATCH_RECORDS, 500, minimum=1)),
            flush_s=flush_s,
            buffer_records=int(_number(env, LOG_BUFFER_RECORDS, 10_000, minimum=10)),
            upload_timeout_s=_number(env, LOG_UPLOAD_TIMEOUT_S, 10.0, minimum=0.1),
            retry_s=_number(env, LOG_RETRY_S, 5.0, minimum=0.0),
            content=_switch(text(LOG_CONTENT), LOG_CONTENT),
            redact_mode=mode,  # type: ignore[arg-type]
            redact_salt=text(REDACT_SALT) or "",
            redact_patterns=patterns,
            flush_each_call=text(FUNCTIONS_RUNTIME) is not None,
            process=_switch(text(LOG_PROCESS), LOG_PROCESS),
        )


@dataclass(frozen=True)
class TraceSettings:
    """MLflow traces and OpenTelemetry metrics of each call (see llmops/tracing)."""

    enabled: bool = True
    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment_name: str = DEFAULT_EXPERIMENT_NAME
    queue_records: int = 10_000
    flush_timeout_s: float = 10.0
    sample: float = 1.0  # share of successful calls traced, by trace id; failed calls: all
    export: Literal["otlp", "mlflow"] = "mlflow"  # how traces leave (LLMOPS_TRACE_EXPORT)
    process: bool = True  # OTLP spans built and sent by a child process (LLMOPS_TRACE_PROCESS)
    appinsights_connection_string: str | None = field(default=None, repr=False)
    appinsights_authentication: str | None = None  # APPLICATIONINSIGHTS_AUTHENTICATION_STRING

    @property
    def metrics(self) -> bool:
        """True when metrics go to Azure Monitor (Application Insights is configured)."""
        return self.appinsights_connection_string is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> TraceSettings:
        """Read the tracing and metrics settings from `env`."""

        text = partial(_text, env)

        enabled = _switch(text(TRACING), TRACING)
        uri = text(MLFLOW_TRACKING_URI) or DEFAULT_TRACKING_URI
        experiment = text(MLFLOW_EXPERIMENT_NAME) or DEFAULT_EXPERIMENT_NAME
        if uri.startswith("databricks") and not experiment.startswith("/"):
            raise SettingsError(
                f"{MLFLOW_EXPERIMENT_NAME}={experiment!r}: on Databricks an experiment is an "
                "absolute workspace path, e.g. /Shared/llmops-gateway"
            )
        server = uri.split(":", 1)[0].lower() in ("http", "https")
        exports = ("otlp", "mlflow") if server else ("mlflow", "otlp")  # the first: the default
        export = _choice(text(TRACE_EXPORT), TRACE_EXPORT, exports)
        if export == "otlp" and not server:
            raise SettingsError(
                f"{TRACE_EXPORT}=otlp needs an MLflow tracking server (http:// or https://), "
                f"not {MLFLOW_TRACKING_URI}={uri!r}"
            )
        return cls(
            enabled=enabled,
            tracking_uri=uri,
            experiment_name=experiment,
            export="otlp" if export == "otlp" else "mlflow",
            process=_switch(text(TRACE_PROCESS), TRACE_PROCESS),
            queue_records=int(_number(env, TRACE_QUEUE_RECORDS, 10_000, minimum=1)),
            flush_timeout_s=_number(env, TRACE_FLUSH_TIMEOUT_S, 10.0, minimum=0.0),
            sample=_number(env, TRACE_SAMPLE, 1.0, minimum=0.0, maximum=1.0),
            appinsights_connection_string=text(APPINSIGHTS_CONNECTION_STRING),
            appinsights_authentication=text(APPINSIGHTS_AUTHENTICATION_STRING),
        )


@dataclass(frozen=True)
class DriftSettings:
    """The drift monitor's windows, tests and retraining hand-off (see docs/drift.md)."""

    schedule: str = DEFAULT_DRIFT_SCHEDULE
    reference_hours: float = 168.0  # the 7 days before the current window
    baseline: tuple[datetime, datetime] | None = None  # a pinned reference window instead
    share: float = 0.5
    min_samples: int = 30
    tests: Mapping[str, tuple[str, float | None]] = field(default_factory=dict)
    text_sample: int = 5_000
    max_rows: int = 1_000_000
    workers: int = 0  # 0: one per CPU, at most 4; 1: read in the calling process
    size_rule: SizeRule = "smaller"  # whose rows pick the default test
    catchup: int = 24
    experiment_name: str = DEFAULT_DRIFT_EXPERIMENT
    retrain_after: int = 2
    retrain_cooldown_hours: float = 24.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DriftSettings:
        """Read the drift monitor's settings from `env`."""
        from llmops.drift.features import CATEGORICAL, NUMERIC
        from llmops.drift.schedule import Schedule, ScheduleError
        from llmops.drift.stats import NUMERIC_ONLY, parse_tests

        text = partial(_text, env)
        schedule = text(DRIFT_SCHEDULE) or DEFAULT_DRIFT_SCHEDULE
        try:
            Schedule.parse(schedule)
        except ScheduleError as exc:
            raise SettingsError(f"{DRIFT_SCHEDULE}={schedule!r}: {exc}") from None
        try:
            tests = parse_tests(text(DRIFT_TESTS) or "")
        except ValueError as exc:
            raise SettingsError(f"{DRIFT_TESTS}: {exc}") from None
        for feature, (method, _) in tests.items():
            if feature not in NUMERIC and feature not in CATEGORICAL:
                raise SettingsError(
                    f"{DRIFT_TESTS}: no feature {feature!r} to override; the features are "
                    + ", ".join((*NUMERIC, *CATEGORICAL))
                )
            if feature in CATEGORICAL and method in NUMERIC_ONLY:
                raise SettingsError(
                    f"{DRIFT_TESTS}: {feature} is categorical; {method} needs numbers "
                    "(use chisquare, z or jensenshannon)"
                )
        uri = text(MLFLOW_TRACKING_URI) or ""
        on_databricks = uri.startswith("databricks")
        default = (
            f"/Shared/{DEFAULT_DRIFT_EXPERIMENT}" if on_databricks else DEFAULT_DRIFT_EXPERIMENT
        )
        experiment = text(DRIFT_EXPERIMENT) or default
        if on_databricks and not experiment.startswith("/"):
            raise SettingsError(
                f"{DRIFT_EXPERIMENT}={experiment!r}: on Databricks an experiment is an "
                "absolute workspace path, e.g. /Shared/llmops-drift"
            )
        return cls(
            schedule=schedule,
            reference_hours=_number(env, DRIFT_REFERENCE_HOURS, 168.0, minimum=0.01),
            baseline=_window(text(DRIFT_BASELINE), DRIFT_BASELINE),
            share=_number(env, DRIFT_SHARE, 0.5, minimum=0.0, maximum=1.0),
            min_samples=int(_number(env, DRIFT_MIN_SAMPLES, 30, minimum=2)),
            tests=tests,
            text_sample=int(_number(env, DRIFT_TEXT_SAMPLE, 5_000, minimum=0)),
            max_rows=int(_number(env, DRIFT_MAX_ROWS, 1_000_000, minimum=100)),
            workers=int(_number(env, DRIFT_WORKERS, 0, minimum=0, maximum=64)),
            size_rule=cast(
                SizeRule, _choice(text(DRIFT_SIZE_RULE), DRIFT_SIZE_RULE, ("smaller", "reference"))
            ),
            catchup=int(_number(env, DRIFT_CATCHUP, 24, minimum=1, maximum=10_000)),
            experiment_name=experiment,
            retrain_after=int(_number(env, RETRAIN_AFTER, 2, minimum=1)),
            retrain_cooldown_hours=_number(env, RETRAIN_COOLDOWN, 24.0, minimum=0.0),
        )


@dataclass(frozen=True)
class RegistryBinding:
    """A public model name served from an MLflow registry alias."""

    public: str
    kind: Literal["model", "prompt"]
    name: str
    alias: str

    @property
    def uri(self) -> str:
        """`models:/<name>@<alias>` or `prompts:/<name>@<alias>`."""
        return f"{self.kind}s:/{self.name}@{self.alias}"


def parse_registry_models(raw: str) -> dict[str, RegistryBinding]:
    """Parse `public=models:/name@alias` and `public=prompts:/name@alias` pairs."""
    bindings: dict[str, RegistryBinding] = {}
    for item in _items(raw):
        public, sep, uri = (part.strip() for part in item.partition("="))
        scheme, _, rest = uri.partition(":/")
        name, at, alias = rest.partition("@")
        if not sep or not public or scheme not in ("models", "prompts") or not at:
            raise SettingsError(
                f"{REGISTRY_MODELS}: {item!r} is not 'public=models:/NAME@ALIAS' "
                "or 'public=prompts:/NAME@ALIAS'"
            )
        if not name.strip("/") or not alias:
            raise SettingsError(f"{REGISTRY_MODELS}: {item!r} needs a name and an alias")
        kind: Literal["model", "prompt"] = "model" if scheme == "models" else "prompt"
        bindings[public] = RegistryBinding(public, kind, name.strip("/"), alias)
    return bindings


@dataclass(frozen=True)
class RetrainSettings:
    """The retraining trigger's Databricks job and how hard it tries (see docs/retraining.md)."""

    job_id: int | None = None
    databricks_host: str | None = None
    databricks_token: str | None = field(default=None, repr=False)
    attempts: int = 4
    timeout_s: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> RetrainSettings:
        """Read the retraining settings from `env`."""
        text = partial(_text, env)
        raw_job = text(RETRAIN_JOB_ID)
        job_id = None
        if raw_job is not None:
            if not raw_job.isdigit() or int(raw_job) < 1:
                raise SettingsError(f"{RETRAIN_JOB_ID}={raw_job!r} is not a Databricks job id")
            job_id = int(raw_job)
        host = text(DATABRICKS_HOST)
        if host and not host.startswith(("http://", "https://")):
            host = f"https://{host}"
        return cls(
            job_id=job_id,
            databricks_host=host.rstrip("/") if host else None,
            databricks_token=text(DATABRICKS_TOKEN),
            attempts=int(_number(env, RETRAIN_ATTEMPTS, 4, minimum=1, maximum=20)),
            timeout_s=_number(env, RETRAIN_TIMEOUT_S, 30.0, minimum=1.0, maximum=600.0),
        )


def retrain_blob_source(env: Mapping[str, str] | None = None) -> str:
    """The retraining trigger's blob source, read when the Functions app is indexed:
    `EventGrid` (the default, the only one Flex Consumption supports) or
    `LogsAndContainerScan` (polling; for `func start` against Azurite)."""
    raw = _text(os.environ if env is None else env, RETRAIN_BLOB_SOURCE)
    return _choice(raw, RETRAIN_BLOB_SOURCE, ("EventGrid", "LogsAndContainerScan"))


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
    logs: LogSettings = field(default_factory=LogSettings)
    traces: TraceSettings = field(default_factory=TraceSettings)
    drift: DriftSettings = field(default_factory=DriftSettings)
    retrain: RetrainSettings = field(default_factory=RetrainSettings)
    registry_models: Mapping[str, RegistryBinding] = field(default_factory=dict)
    registry_ttl_s: float = 60.0
    registry_timeout_s: float = 10.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every setting from `environ` (default: `os.environ`)."""
        env = os.environ if environ is None else environ

        text = partial(_text, env)

        azure_endpoint = text(AZURE_OPENAI_ENDPOINT)
        openai_base_url = text(OPENAI_BASE_URL)
        explicit = text(UPSTREAM)
        upstream: UpstreamKind
        if explicit is not None:
            upstream = cast(UpstreamKind, _choice(explicit, UPSTREAM, _UPSTREAM_KINDS))
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
        for secret in (API_KEYS, AZURE_OPENAI_API_KEY, DATABRICKS_TOKEN, REDACT_SALT):
            if (text(secret) or "").startswith("@Microsoft.KeyVault("):
                raise SettingsError(
                    f"{secret} is an unresolved Key Vault reference: grant the app's identity "
                    "'Key Vault Secrets User' and check the secret URI"
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
            logs=LogSettings.from_env(env),
            traces=TraceSettings.from_env(env),
            drift=DriftSettings.from_env(env),
            retrain=RetrainSettings.from_env(env),
            registry_models=parse_registry_models(text(REGISTRY_MODELS) or ""),
            registry_ttl_s=_number(env, REGISTRY_TTL_S, 60.0, minimum=0.0),
            registry_timeout_s=_number(env, REGISTRY_TIMEOUT_S, 10.0, minimum=0.1, maximum=120.0),
        )

    @property
    def open_access(self) -> bool:
        """True when no consumer keys are configured: every call is consumer `anonymous`."""
        return not self.api_keys

    def describe(self) -> dict[str, object]:
        """What is configured, safe to show on /health and at start-up: never a secret."""
        target = {
            "azure": _without_credentials(self.azure_endpoint or ""),
            "openai": _without_credentials(self.openai_base_url or ""),
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
            "models": sorted({*self.model_map, *self.registry_models}),
            "registry": {b.public: b.uri for b in self.registry_models.values()},
            "model_map": "configured" if self.model_map else "pass-through",
            "consumers": len(self.api_keys),
            "request_log": {
                "storage": self.logs.storage,
                "container": self.logs.container,
                "target": self.logs.blob_service_uri
                or ("connection string" if self.logs.connection_string else self.logs.local_dir),
                "redaction": self.logs.redact_mode,
            },
            "traces": {
                "enabled": self.traces.enabled,
                "tracking_uri": _without_credentials(self.traces.tracking_uri),
                "experiment": self.traces.experiment_name,
                "sample": self.traces.sample,
                "metrics": "azure-monitor" if self.traces.metrics else "off",
            },
            "open_access": self.open_access,
        }


def _without_credentials(uri: str) -> str:
    """A URI fit to show: any `user:password@` part and any query string removed."""
    uri = uri.split("?", 1)[0]
    scheme, sep, rest = uri.partition("://")
    return f"{scheme}{sep}{rest.rpartition('@')[2]}" if sep and "@" in rest.split("/")[0] else uri


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


def _text(env: Mapping[str, str], name: str) -> str | None:
    """The setting's value, stripped; None when it is unset or blank."""
    value = env.get(name, "").strip()
    return value or None


def parse_instant(raw: str) -> datetime:
    """An ISO 8601 instant; without an offset it is taken as UTC."""
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{raw!r} is not an ISO 8601 time such as 2026-11-22T14:00Z") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _window(raw: str | None, name: str) -> tuple[datetime, datetime] | None:
    if raw is None:
        return None
    start, sep, end = raw.partition("/")
    try:
        if not sep:
            raise ValueError("expected START/END")
        window = parse_instant(start), parse_instant(end)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: {exc}") from None
    if window[0] >= window[1]:
        raise SettingsError(f"{name}={raw!r}: the start must be before the end")
    return window


def _items(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


def _names(raw: str, name: str) -> tuple[str, ...]:
    items = _items(raw)
    if any("=" in item for item in items):
        raise SettingsError(f"{name} is a comma-separated list of deployment names")
    return tuple(items)


def _choice(raw: str | None, name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first when unset), matched whatever the case."""
    if raw is None:
        return choices[0]
    for choice in choices:
        if raw.lower() == choice.lower():
            return choice
    raise SettingsError(f"{name}={raw!r} is not one of {', '.join(choices)}")


def _switch(raw: str | None, name: str) -> bool:
    """An on/off setting (also true/false, 1/0); on when unset."""
    value = (raw or "on").lower()
    if value not in ("on", "off", "true", "false", "1", "0"):
        raise SettingsError(f"{name}={raw!r} is not on or off")
    return value in ("on", "true", "1")


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
