"""The drift report's body: two windows' features in, verdicts, rates and evidence out."""

from __future__ import annotations

import math
import random
from typing import Any

import orjson
import pytest

from llmops.drift.analysis import HISTOGRAM_BINS, TOP_CATEGORIES, analyse
from llmops.drift.features import CATEGORICAL, NUMERIC, TEXT, WindowSample

pytestmark = pytest.mark.unit

MIN_SAMPLES = 30
BILLING = (
    "How do I reset my password for the {product} account?",
    "Can you explain the charges on my latest {product} invoice?",
    "How can I update the billing address on my {product} subscription?",
    "Which payment methods does {product} accept?",
)
OUTAGE = (
    "The {product} service is down again, when will the outage be fixed?",
    "I want a refund for the {product} outage yesterday.",
    "Is there an incident? {product} shows an error on every page.",
)
PRODUCTS = ("Contoso Cloud", "Fabrikam Files", "Northwind Mail")


def call(rng: random.Random, *, shifted: bool = False) -> dict[str, Any]:
    """One request-log record of the usual traffic, or of traffic that changed.

    A shift makes calls slower, moves the model mix towards gpt-4o and changes what users
    ask about (and so how long prompts are); consumers, finish reasons, statuses, answer
    lengths and TTFT stay the same.
    """
    topics = OUTAGE if shifted else BILLING
    prompt = rng.choice(topics).format(product=rng.choice(PRODUCTS))
    model = rng.choices(("gpt-4o", "gpt-4o-mini"), weights=(0.8, 0.2) if shifted else (0.3, 0.7))[0]
    status = rng.choices((200, 429, 500), weights=(0.94, 0.04, 0.02))[0]
    finish = rng.choices(("stop", "length", "content_filter"), weights=(0.9, 0.08, 0.02))[0]
    return {
        "schema": "llmops.request_log",
        "schema_version": 1,
        "status": status,
        "latency_ms": rng.lognormvariate(math.log(900 if shifted else 600), 0.25),
        "ttft_ms": rng.lognormvariate(math.log(250), 0.3),
        "consumer": rng.choice(("support-bot", "web-app", "ops-dashboard")),
        "model": model,
        "deployment": f"{model}-east",
        "finish_reason": finish if status == 200 else None,
        "usage": {"prompt_tokens": len(prompt) // 4 + 4, "completion_tokens": rng.randint(5, 80)}
        if status == 200
        else None,
        "error": None if status == 200 else {"code": "upstream_error", "message": "..."},
        "request": {
            "messages": [{"role": "user", "content": prompt}],
            "params": {"temperature": 0.2},
        },
    }


def window(n: int, seed: int, *, shifted: bool = False, **options: Any) -> WindowSample:
    """A window of `n` calls of generated traffic."""
    rng = random.Random(seed)
    sample = WindowSample(**options)
    for _ in range(n):
        sample.add(call(rng, shifted=shifted))
    return sample


def run(
    reference: WindowSample,
    current: WindowSample,
    *,
    share: float = 0.5,
    min_samples: int = MIN_SAMPLES,
    tests: dict[str, tuple[str, float | None]] | None = None,
) -> dict[str, Any]:
    return analyse(reference, current, min_samples=min_samples, share=share, tests=tests or {})


def feature(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in report["features"] if f["name"] == name)


def test_every_feature_is_reported_once_in_order() -> None:
    report = run(window(200, 1), window(100, 2))
    assert [f["name"] for f in report["features"]] == [*NUMERIC, *CATEGORICAL, TEXT]
    kinds = {f["name"]: f["kind"] for f in report["features"]}
    assert {kinds[n] for n in NUMERIC} == {"numeric"}
    assert {kinds[n] for n in CATEGORICAL} == {"categorical"}
    assert kinds[TEXT] == "text"


def test_identical_traffic_does_not_drift() -> None:
    report = run(window(900, 1), window(300, 2))
    summary = report["summary"]
    assert summary["dataset_drift"] is False
    assert summary["verdict"] == "no drift"
    assert summary["features_tested"] == len(NUMERIC) + len(CATEGORICAL) + 1
    assert summary["features_drifted"] <= 1
    assert summary["not_enough_data"] == []
    assert feature(report, TEXT)["drift"] is False
    assert feature(report, "latency_ms")["drift"] is False


def test_shifted_traffic_drifts_and_names_what_changed() -> None:
    report = run(window(900, 1), window(300, 2, shifted=True))
    summary = report["summary"]
    assert summary["dataset_drift"] is True
    assert summary["verdict"] == "drift"
    assert set(summary["drifted"]) >= {
        "latency_ms",
        "model",
        "deployment",
        "prompt_chars",
        "prompt_tokens",
        TEXT,
    }
    assert not {"consumer", "finish_reason", "status_class", "ttft_ms"} & set(summary["drifted"])
    assert summary["features_drifted"] == len(summary["drifted"])
    assert summary["drift_share"] == round(summary["features_drifted"] / 12, 4)
    latency = feature(report, "latency_ms")
    assert latency["method"] == "ks"
    assert latency["score_kind"] == "p_value"
    assert latency["score"] < 0.05
    assert latency["stats"]["current"]["mean"] > latency["stats"]["reference"]["mean"] * 1.3
    assert feature(report, "model")["method"] == "z"  # two values, small reference
    evidence = report["text_evidence"]
    assert evidence["sampled"] == {"reference": 900, "current": 300}
    assert {"outage", "refund", "incident"} & {t["term"] for t in evidence["current_terms"]}


def test_large_reference_uses_distances() -> None:
    report = run(window(3000, 1, text_sample=0), window(3000, 2, shifted=True, text_sample=0))
    methods = {f["name"]: f["method"] for f in report["features"]}
    assert methods["latency_ms"] == "wasserstein"
    assert methods["completion_tokens"] == "wasserstein"
    assert methods["model"] == "jensenshannon"
    assert methods["consumer"] == "jensenshannon"
    assert methods["messages"] == "jensenshannon"  # a single distinct value: a category
    assert feature(report, "latency_ms")["drift"] is True
    assert feature(report, "latency_ms")["score_kind"] == "distance"
    assert feature(report, "consumer")["drift"] is False


def test_a_small_window_on_either_side_keeps_p_value_tests() -> None:
    busy, quiet = window(3000, 1, text_sample=0), window(200, 2, text_sample=0)
    for reference, current in ((busy, quiet), (quiet, busy)):
        methods = {f["name"]: f["method"] for f in run(reference, current)["features"]}
        assert methods["latency_ms"] == "ks"
        assert methods["model"] == "z"
        assert methods["consumer"] == "chisquare"


def test_the_reference_rule_follows_evidently_for_a_quiet_current_window() -> None:
    """LLMOPS_DRIFT_SIZE_RULE=reference: the reference's rows pick the test, as in Evidently."""
    busy, quiet = window(3000, 1, text_sample=0), window(200, 2, text_sample=0)
    report = analyse(
        busy, quiet, min_samples=MIN_SAMPLES, share=0.5, tests={}, size_rule="reference"
    )
    methods = {f["name"]: f["method"] for f in report["features"]}
    assert methods["latency_ms"] == "wasserstein"
    assert methods["consumer"] == "jensenshannon"
    small_reference = analyse(
        quiet, busy, min_samples=MIN_SAMPLES, share=0.5, tests={}, size_rule="reference"
    )
    assert {f["name"]: f["method"] for f in small_reference["features"]}["latency_ms"] == "ks"


def test_the_size_rule_setting_is_checked() -> None:
    from llmops.settings import Settings, SettingsError

    assert Settings.from_env({}).drift.size_rule == "smaller"
    assert Settings.from_env({"LLMOPS_DRIFT_SIZE_RULE": "Reference"}).drift.size_rule == "reference"
    with pytest.raises(SettingsError, match="LLMOPS_DRIFT_SIZE_RULE"):
        Settings.from_env({"LLMOPS_DRIFT_SIZE_RULE": "largest"})


def test_few_distinct_numbers_are_tested_as_categories() -> None:
    report = run(window(500, 1), window(200, 2))
    messages = feature(report, "messages")
    assert messages["kind"] == "numeric"
    assert messages["method"] == "z"  # every call has one message
    assert (messages["score"], messages["drift"]) == (1.0, False)


def test_share_threshold_is_respected() -> None:
    reference, current = window(900, 1), window(300, 2, shifted=True)
    drifted = run(reference, current)["summary"]["features_drifted"]
    assert 0 < drifted < 12
    exact = drifted / 12
    assert run(reference, current, share=exact)["summary"]["dataset_drift"] is True
    assert run(reference, current, share=exact + 0.01)["summary"]["dataset_drift"] is False
    assert run(reference, current, share=1.0)["summary"]["dataset_drift"] is False
    assert run(reference, current, share=1.0)["summary"]["share_threshold"] == 1.0


def test_share_one_drifts_when_every_tested_feature_drifts() -> None:
    reference, current = window(600, 1, text_sample=0), window(300, 2, text_sample=0)
    everything: dict[str, tuple[str, float | None]] = {
        name: ("jensenshannon", 0.0) for name in (*NUMERIC, *CATEGORICAL)
    }
    report = run(reference, current, share=1.0, tests=everything)
    assert report["summary"]["features_drifted"] == 11  # any distance >= 0 drifts
    assert report["summary"]["features_tested"] == 11  # the text has no prompts to compare
    assert report["summary"]["not_enough_data"] == [TEXT]
    assert report["summary"]["dataset_drift"] is True


def test_not_enough_data_is_listed_and_not_counted() -> None:
    reference = window(600, 1)
    current = window(300, 2, shifted=True)
    # The same current traffic, but TTFT was reported for only 10 calls.
    rng = random.Random(2)
    current_sparse = WindowSample()
    for i in range(300):
        record = call(rng, shifted=True)
        if i >= 10:
            record["ttft_ms"] = None
        current_sparse.add(record)
    full = run(reference, current)["summary"]
    sparse = run(reference, current_sparse)
    summary = sparse["summary"]
    assert summary["not_enough_data"] == ["ttft_ms"]
    assert summary["features_tested"] == full["features_tested"] - 1
    assert summary["drift_share"] == round(summary["features_drifted"] / 11, 4)
    ttft = feature(sparse, "ttft_ms")
    assert ttft["verdict"] == "not enough data"
    assert (ttft["drift"], ttft["method"], ttft["score"], ttft["threshold"]) == (
        None,
        None,
        None,
        None,
    )
    assert ttft["samples"] == {"reference": 600, "current": 10}
    assert ttft["distribution"] is not None  # still drawn


def test_min_samples_applies_to_both_windows() -> None:
    report = run(window(25, 1), window(300, 2), min_samples=30)
    assert report["summary"]["verdict"] == "not enough data"
    assert report["summary"]["features_tested"] == 0
    report = run(window(300, 1), window(300, 2), min_samples=301)
    assert report["summary"]["verdict"] == "not enough data"
    report = run(window(300, 1), window(300, 2), min_samples=300)
    assert report["summary"]["features_tested"] > 0


def test_empty_windows_are_not_enough_data() -> None:
    report = run(WindowSample(), WindowSample())
    summary = report["summary"]
    assert summary["verdict"] == "not enough data"
    assert summary["dataset_drift"] is False
    assert summary["features_tested"] == 0
    assert summary["drift_share"] is None
    assert summary["drifted"] == []
    assert summary["not_enough_data"] == [*NUMERIC, *CATEGORICAL, TEXT]
    assert report["text_evidence"] is None
    assert report["rates"] == {
        "calls": {"reference": 0, "current": 0},
        "error_rate": {"reference": None, "current": None},
        "content_filter_rate": {"reference": None, "current": None},
        "latency_p95_ms": {"reference": None, "current": None},
    }
    assert feature(report, "latency_ms")["distribution"] is None
    assert orjson.loads(orjson.dumps(report)) == report


def test_an_empty_current_window_is_not_enough_data() -> None:
    report = run(window(300, 1), WindowSample())
    assert report["summary"]["verdict"] == "not enough data"
    assert report["rates"]["calls"] == {"reference": 300, "current": 0}


def test_per_feature_override_changes_method_and_threshold() -> None:
    reference, current = window(900, 1, text_sample=0), window(300, 2, shifted=True, text_sample=0)
    default = run(reference, current)
    tests: dict[str, tuple[str, float | None]] = {
        "latency_ms": ("wasserstein", 5.0),
        "model": ("jensenshannon", None),
        "consumer": ("chisquare", 1.0),
    }
    report = run(reference, current, tests=tests)
    latency = feature(report, "latency_ms")
    assert (latency["method"], latency["threshold"], latency["score_kind"]) == (
        "wasserstein",
        5.0,
        "distance",
    )
    assert latency["drift"] is False  # the shift is about 1.5 spreads, below 5
    assert feature(default, "latency_ms")["drift"] is True
    model = feature(report, "model")
    assert (model["method"], model["threshold"], model["drift"]) == ("jensenshannon", 0.1, True)
    consumer = feature(report, "consumer")
    assert (consumer["method"], consumer["threshold"], consumer["drift"]) == (
        "chisquare",
        1.0,
        True,  # any p-value below 1 drifts
    )
    assert feature(report, "ttft_ms")["method"] == feature(default, "ttft_ms")["method"] == "ks"


def test_rates() -> None:
    reference = WindowSample()
    for i in range(100):
        reference.add({"status": 200, "latency_ms": float(i + 1)})
    current = WindowSample()
    for i in range(40):
        if i < 4:
            current.add({"status": 500, "latency_ms": 2000.0})
        elif i < 6:
            current.add({"status": 400, "error": {"code": "content_filter"}, "latency_ms": 50.0})
        elif i < 9:
            current.add({"status": 200, "finish_reason": "content_filter", "latency_ms": 900.0})
        else:
            current.add({"status": 200, "latency_ms": 100.0})
    rates = run(reference, current)["rates"]
    assert rates["calls"] == {"reference": 100, "current": 40}
    assert rates["error_rate"] == {"reference": 0.0, "current": 0.15}
    assert rates["content_filter_rate"] == {"reference": 0.0, "current": 0.125}
    assert rates["latency_p95_ms"]["reference"] == pytest.approx(95.05)
    assert rates["latency_p95_ms"]["current"] == 2000.0


def test_the_report_is_plain_json() -> None:
    report = run(window(900, 1), window(300, 2, shifted=True))
    assert orjson.loads(orjson.dumps(report)) == report  # no numpy values inside


def test_numeric_distributions_share_bins_and_sum_to_one() -> None:
    reference, current = window(900, 1), window(300, 2, shifted=True)
    current.add({"latency_ms": 1e9})  # an outlier lands in the last bin, not off the chart
    current.add({"latency_ms": -1e9})
    report = run(reference, current)
    distribution = feature(report, "latency_ms")["distribution"]
    edges = distribution["edges"]
    assert len(edges) == HISTOGRAM_BINS + 1
    assert edges == sorted(edges)
    assert edges[-1] < 1e6
    for side in ("reference", "current"):
        assert len(distribution[side]) == HISTOGRAM_BINS
        assert sum(distribution[side]) == pytest.approx(1.0, abs=1e-3)
        assert min(distribution[side]) >= 0
    assert distribution["current"][-1] > 0


def test_a_constant_numeric_feature_still_has_bins() -> None:
    reference = WindowSample()
    current = WindowSample()
    for _ in range(50):
        reference.add({"latency_ms": 7.0})
        current.add({"latency_ms": 7.0})
    distribution = feature(run(reference, current), "latency_ms")["distribution"]
    assert distribution["edges"][0] == 7.0
    assert distribution["edges"][-1] > 7.0
    assert sum(distribution["reference"]) == pytest.approx(1.0)


def test_categorical_distributions_sum_to_one() -> None:
    distribution = feature(run(window(900, 1), window(300, 2)), "consumer")["distribution"]
    assert sorted(distribution["values"]) == ["ops-dashboard", "support-bot", "web-app"]
    assert "(rest)" not in distribution["values"]
    for side in ("reference", "current"):
        assert sum(distribution[side]) == pytest.approx(1.0, abs=1e-4)


def consumers_window(names: list[str], repeat: int) -> WindowSample:
    sample = WindowSample(text_sample=0)
    for _ in range(repeat):
        for name in names:
            sample.add({"status": 200, "consumer": name})
    return sample


def test_many_categories_keep_the_top_and_sum_the_rest() -> None:
    names = [f"team-{i:02d}" for i in range(30)]
    reference = consumers_window(names, 3)
    current = consumers_window(names[:5] * 4 + names, 2)  # the first five grew
    distribution = feature(run(reference, current), "consumer")["distribution"]
    assert len(distribution["values"]) == TOP_CATEGORIES + 1
    assert distribution["values"][-1] == "(rest)"
    assert distribution["values"][:5] == names[:5]  # the largest combined shares first
    for side in ("reference", "current"):
        assert sum(distribution[side]) == pytest.approx(1.0, abs=1e-4)
        assert distribution[side][-1] > 0
    assert distribution["reference"][-1] == pytest.approx(18 / 30, abs=1e-4)


def test_an_empty_window_has_no_share_of_any_category() -> None:
    names = [f"team-{i:02d}" for i in range(TOP_CATEGORIES + 8)]
    report = run(WindowSample(), consumers_window(names, 2))
    distribution = feature(report, "consumer")["distribution"]
    assert distribution["values"][-1] == "(rest)"
    assert sum(distribution["current"]) == pytest.approx(1.0, abs=1e-4)
    assert sum(distribution["reference"]) == 0.0
