"""Registry-driven serving against a real MLflow store: the openai SDK calls a public model
bound to `models:/support-bot@champion`; the sample retraining job registers version 2 and
moves the alias; the gateway serves version 2 within the TTL, without a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from jobs.retrain_job import main as retrain_job
from tests.conftest import GATEWAY_KEYS
from tests.fakes.served import sdk_client, served_gateway
from tests.fakes.upstream import FakeUpstream

pytestmark = pytest.mark.integration


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)  # MLflow puts a local store's artifacts under ./mlruns
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def register(uri: str, deployment: str, prompt: str, params: dict[str, Any] | None = None) -> None:
    argv = ["--tracking-uri", uri, "--model", "support-bot", "--deployment", deployment]
    argv += ["--system-prompt", prompt, "--params", json.dumps(params or {})]
    assert retrain_job(argv) == 0


def env_for(fake: FakeUpstream, uri: str, tmp_path: Path, ttl: str = "0.5") -> dict[str, str]:
    return {
        "AZURE_OPENAI_ENDPOINT": fake.url,
        "AZURE_OPENAI_API_KEY": fake.api_key,
        "LLMOPS_API_KEYS": GATEWAY_KEYS,
        "MLFLOW_TRACKING_URI": uri,
        "LLMOPS_REGISTRY_MODELS": "support-bot=models:/support-bot@champion",
        "LLMOPS_REGISTRY_TTL_S": ttl,
        "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store"),
    }


def records(tmp_path: Path) -> list[dict[str, Any]]:
    paths = sorted((tmp_path / "store" / "request-logs").rglob("*.jsonl"))
    found = [json.loads(line) for p in paths for line in p.read_text().splitlines()]
    return sorted(found, key=lambda r: r["received_at"])


def ask(url: str) -> str:
    answer = sdk_client(url).chat.completions.create(
        model="support-bot", messages=[{"role": "user", "content": "Is the service down?"}]
    )
    return answer.choices[0].message.content or ""


def test_a_promoted_version_is_served_without_a_redeploy(
    fake_upstream: FakeUpstream, store: str, tmp_path: Path
) -> None:
    register(store, "dep-v1", "You are support v1.", {"temperature": 0.2})

    with served_gateway(env_for(fake_upstream, store, tmp_path)) as (url, gateway):
        ask(url)
        first = fake_upstream.calls()[-1]
        assert first.deployment == "dep-v1"
        assert first.body["messages"][0] == {"role": "system", "content": "You are support v1."}
        assert first.body["messages"][1]["content"] == "Is the service down?"
        assert first.body["temperature"] == 0.2

        register(store, "dep-v2", "You are support v2.")  # the job's last step moves @champion
        deadline = time.monotonic() + 15
        while fake_upstream.calls()[-1].deployment != "dep-v2":
            assert time.monotonic() < deadline, "version 2 was never served"
            time.sleep(0.2)
            ask(url)  # a stale resolution answers at once and starts one refresh
        latest = fake_upstream.calls()[-1]
        assert latest.body["messages"][0]["content"] == "You are support v2."
        assert "temperature" not in latest.body
        assert gateway.registry is not None and gateway.registry.stats["lookups"] >= 2

    logged = records(tmp_path)
    assert logged[0]["registry"] == {
        "kind": "model",
        "name": "support-bot",
        "alias": "champion",
        "version": "1",
        "uri": "models:/support-bot@champion",
    }
    assert logged[-1]["registry"]["version"] == "2"
    assert logged[-1]["deployment"] == "dep-v2"
    assert logged[0]["request"]["messages"] == [
        {"role": "user", "content": "Is the service down?"}
    ]  # the log keeps what the client sent; `registry` says what was added


class FakeMlflowRegistry:
    """An MLflow tracking server's registry endpoint on 127.0.0.1 (REST 2.0), which a test
    can take down: `get-by-alias` answers a model version until `down` is set, then 503."""

    def __init__(self) -> None:
        import threading

        self.down = False
        self.hang = False  # hold each answer until `release` is set (a registry that hangs)
        self.release = threading.Event()
        self.calls = 0
        self._server: Any = None

    def __enter__(self) -> str:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                registry.calls += 1
                if registry.hang:
                    registry.release.wait(30)
                if registry.down or "/registered-models/alias" not in self.path:
                    self.send_response(503)
                    self.end_headers()
                    return
                version = {
                    "name": "support-bot",
                    "version": "1",
                    "aliases": ["champion"],
                    "tags": [
                        {"key": "llmops.deployment", "value": "dep-v1"},
                        {"key": "llmops.system_prompt", "value": "You are support v1."},
                    ],
                }
                payload = json.dumps({"model_version": version}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def test_an_unreachable_registry_keeps_the_last_known_good_version(
    fake_upstream: FakeUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    registry = FakeMlflowRegistry()
    with registry as uri:
        env = env_for(fake_upstream, uri, tmp_path, ttl="0.2")
        with served_gateway(env) as (url, gateway):
            ask(url)
            registry.down = True
            time.sleep(0.3)
            started = time.monotonic()
            for _ in range(5):
                ask(url)
                time.sleep(0.2)
            assert time.monotonic() - started < 5  # no call waited for the failing registry
            assert gateway.registry is not None
            assert gateway.registry.stats["failures"] >= 1

    assert {c.deployment for c in fake_upstream.calls()} == {"dep-v1"}
    assert all(
        c.body["messages"][0]["content"] == "You are support v1." for c in fake_upstream.calls()
    )
    assert registry.calls >= 2


def test_a_hanging_registry_never_holds_calls(fake_upstream: FakeUpstream, tmp_path: Path) -> None:
    """MLflow's own HTTP timeout is 120 s with 7 retries: the gateway bounds the first lookup
    (LLMOPS_REGISTRY_TIMEOUT_S), shares it among the calls that wait for it, and refreshes in
    the background only, so a registry that stops answering never holds a call."""
    import openai

    registry = FakeMlflowRegistry()
    registry.hang = True
    with registry as uri:
        env = {**env_for(fake_upstream, uri, tmp_path, ttl="0.2"), "LLMOPS_REGISTRY_TIMEOUT_S": "1"}
        with served_gateway(env) as (url, gateway):
            started = time.monotonic()
            with pytest.raises(openai.APIStatusError) as caught:
                ask(url)
            waited = time.monotonic() - started
            assert caught.value.status_code == 503
            assert "no answer within 1 s" in str(caught.value.body)
            assert 0.9 < waited < 5
            with pytest.raises(openai.APIStatusError):
                ask(url)  # still hanging: the same lookup, not a second one
            assert gateway.registry is not None
            assert gateway.registry.stats["lookups"] == 1
            assert registry.calls <= 1

            registry.hang = False
            registry.release.set()  # the lookup in flight now answers
            deadline = time.monotonic() + 10
            while gateway.registry is None or "support-bot" not in gateway.registry._entries:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            ask(url)

            registry.release.clear()
            registry.hang = True  # hangs again: refreshes wait, calls do not
            time.sleep(0.3)
            started = time.monotonic()
            for _ in range(3):
                ask(url)
            assert time.monotonic() - started < 3
            registry.release.set()  # let the hung refresh end before the gateway stops
    assert {c.deployment for c in fake_upstream.calls()} == {"dep-v1"}
    assert len(fake_upstream.calls()) == 4


def test_a_model_whose_registry_never_answered_is_a_clear_503(
    fake_upstream: FakeUpstream, store: str, tmp_path: Path
) -> None:
    import openai

    with served_gateway(env_for(fake_upstream, store, tmp_path)) as (url, _):
        with pytest.raises(openai.APIStatusError) as caught:
            ask(url)

    assert caught.value.status_code == 503
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["code"] == "registry_unavailable"
    assert "models:/support-bot@champion" in error["message"]
    assert fake_upstream.calls() == []


def served_prompt(
    fake_upstream: FakeUpstream,
    store: str,
    tmp_path: Path,
    template: str,
    model_config: dict[str, Any] | None = None,
) -> dict[str, str]:
    """Register `template` as prompt version 1 (alias production, deployment dep-prompted) and
    return the environment that serves it as the model `support-bot`."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store)
    client.register_prompt(
        "support-prompt",
        template,
        tags={"llmops.deployment": "dep-prompted"},
        model_config=model_config,
    )
    client.set_prompt_alias("support-prompt", "production", 1)
    env = env_for(fake_upstream, store, tmp_path)
    return {**env, "LLMOPS_REGISTRY_MODELS": "support-bot=prompts:/support-prompt@production"}


def test_a_prompt_version_supplies_prompt_deployment_and_parameters(
    fake_upstream: FakeUpstream, store: str, tmp_path: Path
) -> None:
    env = served_prompt(
        fake_upstream,
        store,
        tmp_path,
        "You answer support questions briefly.",
        model_config={"temperature": 0.1, "max_tokens": 120},
    )

    with served_gateway(env) as (url, _):
        ask(url)

    sent = fake_upstream.calls()[-1]
    assert sent.deployment == "dep-prompted"
    assert sent.body["messages"][0]["content"] == "You answer support questions briefly."
    assert (sent.body["temperature"], sent.body["max_tokens"]) == (0.1, 120)
    assert records(tmp_path)[0]["registry"]["kind"] == "prompt"


def test_a_prompt_with_variables_is_refused_clearly(
    fake_upstream: FakeUpstream, store: str, tmp_path: Path
) -> None:
    """A call has nothing to fill `{{product}}` with: a clear 503, never the placeholder."""
    import openai

    env = served_prompt(fake_upstream, store, tmp_path, "You answer questions about {{product}}.")

    with served_gateway(env) as (url, _):
        with pytest.raises(openai.APIStatusError) as caught:
            ask(url)

    assert caught.value.status_code == 503
    assert "variables product" in str(caught.value.body)
    assert fake_upstream.calls() == []
