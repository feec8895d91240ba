"""Settings: parsed once, validated, secrets never shown."""

from __future__ import annotations

import hashlib
import re

import pytest

from llmops.settings import LogSettings, Settings, SettingsError

pytestmark = pytest.mark.unit


def test_nothing_configured_means_the_mock_said_so() -> None:
    settings = Settings.from_env({})
    assert (settings.upstream, settings.upstream_explicit) == ("mock", False)
    assert settings.open_access
    assert "no upstream configured" in str(settings.describe()["target"])


def test_upstream_is_chosen_from_what_is_configured() -> None:
    assert (
        Settings.from_env({"AZURE_OPENAI_ENDPOINT": "https://a.openai.azure.com/"}).upstream
        == "azure"
    )
    assert Settings.from_env({"OPENAI_BASE_URL": "http://x/v1"}).upstream == "openai"
    both = {"AZURE_OPENAI_ENDPOINT": "https://a", "OPENAI_BASE_URL": "http://x/v1"}
    assert Settings.from_env(both).upstream == "azure"
    assert Settings.from_env({**both, "LLMOPS_UPSTREAM": "OpenAI"}).upstream == "openai"
    assert Settings.from_env({**both, "LLMOPS_UPSTREAM": "mock"}).upstream_explicit


def test_endpoint_trailing_slash_is_dropped() -> None:
    settings = Settings.from_env({"AZURE_OPENAI_ENDPOINT": "https://a.openai.azure.com/"})
    assert settings.azure_endpoint == "https://a.openai.azure.com"


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"LLMOPS_UPSTREAM": "bedrock"}, "LLMOPS_UPSTREAM"),
        ({"LLMOPS_UPSTREAM": "azure"}, "AZURE_OPENAI_ENDPOINT"),
        ({"LLMOPS_UPSTREAM": "openai"}, "OPENAI_BASE_URL"),
        ({"AZURE_OPENAI_ENDPOINT": "contoso.openai.azure.com"}, "AZURE_OPENAI_ENDPOINT"),
        ({"LLMOPS_TOTAL_TIMEOUT_S": "240"}, "230"),
        ({"LLMOPS_MAX_RETRIES": "many"}, "LLMOPS_MAX_RETRIES"),
        ({"LLMOPS_MAX_RETRIES": "50"}, "between 0 and 10"),
        ({"LLMOPS_MODEL_MAP": "gpt-4o"}, "LLMOPS_MODEL_MAP"),
        ({"LLMOPS_MODEL_MAP": "gpt-4o=|"}, "LLMOPS_MODEL_MAP"),
        ({"LLMOPS_FALLBACK_DEPLOYMENTS": "a=b"}, "LLMOPS_FALLBACK_DEPLOYMENTS"),
        ({"LLMOPS_API_KEYS": "team-a"}, "LLMOPS_API_KEYS"),
        ({"LLMOPS_API_KEYS": "team-a=sha256:abc"}, "64 hex digits"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], names: str) -> None:
    with pytest.raises(SettingsError, match=names):
        Settings.from_env(env)


def test_model_map_with_fallback_chains() -> None:
    settings = Settings.from_env(
        {
            "LLMOPS_MODEL_MAP": " gpt-4o = east | west , mini=mini-east ",
            "LLMOPS_FALLBACK_DEPLOYMENTS": "global",
        }
    )
    assert settings.model_map == {"gpt-4o": ("east", "west"), "mini": ("mini-east",)}
    assert settings.fallback_deployments == ("global",)


def test_api_keys_plain_and_hashed_are_stored_as_digests() -> None:
    digest = hashlib.sha256(b"k2").hexdigest()
    settings = Settings.from_env({"LLMOPS_API_KEYS": f"a=k1,b=sha256:{digest.upper()}"})
    assert [k.consumer for k in settings.api_keys] == ["a", "b"]
    assert settings.api_keys[0].sha256 == hashlib.sha256(b"k1").digest()
    assert settings.api_keys[1].sha256 == bytes.fromhex(digest)


def test_secrets_are_not_in_repr_or_describe() -> None:
    settings = Settings.from_env(
        {
            "AZURE_OPENAI_ENDPOINT": "https://a",
            "AZURE_OPENAI_API_KEY": "azure-secret",
            "LLMOPS_API_KEYS": "a=consumer-secret",
            "OPENAI_API_KEY": "openai-secret",
        }
    )
    shown = repr(settings) + repr(settings.describe())
    for secret in ("azure-secret", "consumer-secret", "openai-secret"):
        assert secret not in shown


def test_bad_key_entry_is_not_echoed() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"LLMOPS_API_KEYS": "ok=k,sk-leaked-value"})
    assert "sk-leaked-value" not in str(raised.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("model=ks", "model is categorical; ks needs numbers"),
        ("latency=ks", "no feature 'latency' to override"),
        ("prompt_text=ks", "no feature 'prompt_text' to override"),
        ("latency_ms=magic", "is not 'feature=method[:threshold]'"),
    ],
)
def test_drift_test_overrides_are_checked_at_start_up(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=re.escape(message)):
        Settings.from_env({"LLMOPS_DRIFT_TESTS": raw})


def test_drift_test_overrides_parse() -> None:
    settings = Settings.from_env(
        {"LLMOPS_DRIFT_TESTS": "latency_ms=ks:0.01,consumer=jensenshannon"}
    )
    assert settings.drift.tests == {"latency_ms": ("ks", 0.01), "consumer": ("jensenshannon", None)}


def test_an_unresolved_key_vault_reference_is_refused_not_used_as_a_key() -> None:
    reference = "@Microsoft.KeyVault(SecretUri=https://kv.vault.azure.net/secrets/keys)"
    with pytest.raises(SettingsError, match="unresolved Key Vault reference"):
        Settings.from_env({"LLMOPS_API_KEYS": reference})


def test_the_drift_experiment_defaults_to_a_workspace_path_on_databricks() -> None:
    settings = Settings.from_env(
        {"MLFLOW_TRACKING_URI": "databricks", "MLFLOW_EXPERIMENT_NAME": "/Shared/gw"}
    )
    assert settings.drift.experiment_name == "/Shared/llmops-drift"
    with pytest.raises(SettingsError, match="absolute workspace path"):
        Settings.from_env(
            {
                "MLFLOW_TRACKING_URI": "databricks",
                "MLFLOW_EXPERIMENT_NAME": "/Shared/gw",
                "LLMOPS_DRIFT_EXPERIMENT": "llmops-drift",
            }
        )


def test_records_are_built_in_a_child_process_unless_turned_off() -> None:
    assert LogSettings.from_env({}).process is True
    assert LogSettings.from_env({"LLMOPS_LOG_PROCESS": "off"}).process is False
    assert LogSettings().process is False  # a writer made in code builds in its own process
