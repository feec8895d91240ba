"""Per-feature drift statistics against distributions whose answer is known."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from llmops.drift.stats import (
    METHODS,
    Comparison,
    compare_categorical,
    compare_numeric,
    decide,
    default_method,
    parse_tests,
)

pytestmark = pytest.mark.unit

SEEDS = range(40)


def normal(seed: int, n: int, shift: float = 0.0) -> np.ndarray:
    """`n` draws of N(shift, 1) from a generator seeded with `seed`."""
    return np.random.default_rng(seed).normal(loc=shift, scale=1.0, size=n)


def counts(seed: int, n: int, shares: list[float]) -> dict[str, int]:
    """`n` draws over categories `a`, `b`, ... with the given shares, as counts."""
    names = [chr(ord("a") + i) for i in range(len(shares))]
    drawn = np.random.default_rng(seed).choice(names, size=n, p=shares)
    return dict(Counter(str(v) for v in drawn))


# which test runs


@pytest.mark.parametrize(
    ("categorical", "rows", "distinct", "method"),
    [
        (False, 1000, 50, "ks"),
        (False, 1001, 50, "wasserstein"),
        (False, 10, 6, "ks"),
        (False, 5000, 6, "wasserstein"),
        (False, 1000, 5, "chisquare"),  # few distinct numbers count as categories
        (False, 1000, 3, "chisquare"),
        (False, 1000, 2, "z"),
        (False, 1000, 1, "z"),
        (False, 1001, 5, "jensenshannon"),
        (False, 1001, 2, "jensenshannon"),
        (True, 1000, 3, "chisquare"),
        (True, 1000, 200, "chisquare"),
        (True, 1000, 2, "z"),
        (True, 1001, 2, "jensenshannon"),
        (True, 1001, 200, "jensenshannon"),
    ],
)
def test_default_method_follows_evidentlys_table(
    categorical: bool, rows: int, distinct: int, method: str
) -> None:
    assert default_method(categorical, rows, distinct) == method


# thresholds


def test_p_value_tests_drift_strictly_below_the_threshold() -> None:
    assert decide("ks", 0.049).drift is True
    assert decide("ks", 0.05).drift is False
    assert decide("chisquare", 0.2).drift is False
    assert decide("z", 0.0).drift is True


def test_distances_drift_at_or_above_the_threshold() -> None:
    assert decide("wasserstein", 0.1).drift is True
    assert decide("wasserstein", 0.0999).drift is False
    assert decide("jensenshannon", 0.5).drift is True
    assert decide("jensenshannon", 0.0).drift is False


def test_default_thresholds_are_evidentlys() -> None:
    assert {m: METHODS[m] for m in METHODS} == {
        "ks": ("p_value", 0.05),
        "chisquare": ("p_value", 0.05),
        "z": ("p_value", 0.05),
        "wasserstein": ("distance", 0.1),
        "jensenshannon": ("distance", 0.1),
    }
    assert decide("ks", 0.5).threshold == 0.05
    assert decide("wasserstein", 0.5).threshold == 0.1


def test_a_custom_threshold_changes_the_verdict() -> None:
    assert decide("ks", 0.03, 0.01) == Comparison("ks", 0.03, 0.01, False)
    assert decide("ks", 0.03) == Comparison("ks", 0.03, 0.05, True)
    assert decide("wasserstein", 0.15, 0.2).drift is False
    assert decide("jensenshannon", 0.05, 0.05).drift is True


def test_verdicts_are_plain_python_values() -> None:
    result = decide("ks", np.float64(0.01))
    assert type(result.score) is float
    assert type(result.drift) is bool


def test_score_kind() -> None:
    assert decide("ks", 0.5).score_kind == "p_value"
    assert decide("jensenshannon", 0.5).score_kind == "distance"
    assert Comparison("domain_classifier", 0.7, 0.55, True).score_kind == "roc_auc"


# Kolmogorov-Smirnov (numeric, reference <= 1000)


def test_ks_same_distribution_rarely_drifts_shifted_always_does() -> None:
    same = [compare_numeric(normal(s, 500), normal(s + 1000, 500), "ks") for s in SEEDS]
    shifted = [compare_numeric(normal(s, 500), normal(s + 1000, 500, 0.5), "ks") for s in SEEDS]
    assert sum(r.drift for r in same) <= 6  # about 5% of 40 by construction of a p-value
    assert all(r.drift for r in shifted)
    assert max(r.score for r in shifted) < 1e-3
    assert {r.method for r in same + shifted} == {"ks"}


def test_ks_on_one_sample_is_no_drift() -> None:
    sample = normal(1, 300)
    result = compare_numeric(sample, sample, "ks")
    assert result.score == pytest.approx(1.0)
    assert result.drift is False


def test_ks_small_samples_do_not_claim_drift_from_a_small_shift() -> None:
    assert compare_numeric(normal(1, 20), normal(2, 20, 0.1), "ks").drift is False
    assert compare_numeric(normal(1, 20), normal(2, 20, 3.0), "ks").drift is True


# normalized Wasserstein (numeric, reference > 1000)


def test_wasserstein_of_a_constant_shift_is_the_shift_over_the_spread() -> None:
    sample = normal(3, 2000)
    for shift in (0.25, 1.0, 7.0):
        result = compare_numeric(sample, sample + shift, "wasserstein")
        assert result.score * float(np.std(sample)) == pytest.approx(shift)


def test_wasserstein_scale_is_the_reference_spread() -> None:
    sample = normal(4, 2000) * 50.0 + 1000.0  # latencies in ms
    assert compare_numeric(sample, sample + 25.0, "wasserstein").score == pytest.approx(
        25.0 / float(np.std(sample))
    )


def test_wasserstein_of_a_constant_reference_is_not_divided_by_zero() -> None:
    result = compare_numeric(np.full(2000, 5.0), np.full(2000, 5.002), "wasserstein")
    assert result.score == pytest.approx(2.0)  # 0.002 over the 0.001 floor
    assert result.drift is True


@pytest.mark.parametrize("seed", range(5))
def test_wasserstein_half_a_sd_drifts_a_hundredth_does_not(seed: int) -> None:
    reference = normal(seed, 5000)
    same = compare_numeric(reference, normal(seed + 100, 5000), "wasserstein")
    slight = compare_numeric(reference, normal(seed + 100, 5000, 0.01), "wasserstein")
    half = compare_numeric(reference, normal(seed + 100, 5000, 0.5), "wasserstein")
    assert same.drift is False and same.score < 0.05
    assert slight.drift is False and slight.score < 0.1
    assert half.drift is True
    assert half.score == pytest.approx(0.5, abs=0.06)


# chi-squared and z (categorical, reference <= 1000)


def test_chisquare_same_shares_rarely_drift_other_shares_always_do() -> None:
    # As in Evidently, the reference counts are the expected ones, which holds when the
    # reference (days) is much larger than the current window (an hour).
    shares, moved = [0.5, 0.3, 0.15, 0.05], [0.3, 0.3, 0.2, 0.2]
    same = [
        compare_categorical(counts(s, 1000, shares), counts(s + 1000, 100, shares), "chisquare")
        for s in SEEDS
    ]
    shifted = [
        compare_categorical(counts(s, 1000, shares), counts(s + 1000, 100, moved), "chisquare")
        for s in SEEDS
    ]
    assert sum(r.drift for r in same) <= 6
    assert all(r.drift for r in shifted)


def test_chisquare_scales_to_the_current_window_size() -> None:
    reference = {"a": 600, "b": 300, "c": 100}
    current = {"a": 60, "b": 30, "c": 10}  # the same shares in a tenth of the calls
    result = compare_categorical(reference, current, "chisquare")
    assert result.score == pytest.approx(1.0)
    assert result.drift is False


def test_chisquare_a_value_new_in_current_is_drift() -> None:
    result = compare_categorical({"a": 500, "b": 500}, {"a": 490, "b": 490, "c": 20}, "chisquare")
    assert result.score == 0.0
    assert result.drift is True


def test_chisquare_a_value_gone_from_current_is_drift() -> None:
    result = compare_categorical({"a": 400, "b": 400, "c": 200}, {"a": 500, "b": 500}, "chisquare")
    assert result.drift is True


def test_a_value_counted_zero_times_in_both_windows_changes_nothing() -> None:
    shares = {"a": 500, "b": 300}
    result = compare_categorical({**shares, "never": 0}, {"a": 50, "b": 30}, "chisquare")
    assert result.score == pytest.approx(1.0)
    assert result.drift is False


def test_z_same_share_rarely_drifts_other_share_always_does() -> None:
    same = [
        compare_categorical(counts(s, 600, [0.9, 0.1]), counts(s + 1000, 600, [0.9, 0.1]), "z")
        for s in SEEDS
    ]
    shifted = [
        compare_categorical(counts(s, 600, [0.9, 0.1]), counts(s + 1000, 600, [0.8, 0.2]), "z")
        for s in SEEDS
    ]
    assert sum(r.drift for r in same) <= 6
    assert all(r.drift for r in shifted)


def test_z_known_value() -> None:
    # 40 of 100 vs 60 of 100: pooled 0.5, z = -0.2 / sqrt(0.25 * 0.02) = -2.828..., p = 0.00468
    result = compare_categorical({"ok": 60, "x": 40}, {"ok": 40, "x": 60}, "z")
    assert result.score == pytest.approx(0.004677734981047177, rel=1e-9)
    assert result.drift is True


def test_z_one_identical_value_in_both_windows_is_no_drift() -> None:
    result = compare_categorical({"stop": 200}, {"stop": 35}, "z")
    assert (result.score, result.drift) == (1.0, False)
    numeric = compare_numeric(np.full(50, 200.0), np.full(40, 200.0), "z")
    assert (numeric.score, numeric.drift) == (1.0, False)


def test_z_one_different_value_in_each_window_is_drift() -> None:
    assert compare_categorical({"stop": 200}, {"length": 200}, "z").drift is True


# Jensen-Shannon (categorical and binned numeric, reference > 1000)


def test_jensenshannon_identical_shares_is_zero_disjoint_is_sqrt_ln2() -> None:
    # Natural logarithm, as Evidently computes it: disjoint supports score sqrt(ln 2) ~ 0.833.
    same = compare_categorical({"a": 30, "b": 70}, {"a": 300, "b": 700}, "jensenshannon")
    assert same.score == pytest.approx(0.0, abs=1e-7)
    assert same.drift is False
    disjoint = compare_categorical({"a": 30, "b": 70}, {"c": 5, "d": 5}, "jensenshannon")
    assert disjoint.score == pytest.approx(float(np.sqrt(np.log(2))))
    assert disjoint.drift is True


def test_jensenshannon_known_value() -> None:
    # P = (1, 0), Q = (1/2, 1/2), M = (3/4, 1/4), natural log:
    # JSD = (ln(4/3) + (1/2 ln(2/3) + 1/2 ln 2)) / 2
    expected = (np.log(4 / 3) + 0.5 * np.log(2 / 3) + 0.5 * np.log(2)) / 2
    result = compare_categorical({"a": 100}, {"a": 50, "b": 50}, "jensenshannon")
    assert result.score == pytest.approx(float(np.sqrt(expected)))


def test_jensenshannon_categorical_same_vs_shifted() -> None:
    shares, moved = [0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]
    for seed in range(5):
        reference = counts(seed, 5000, shares)
        same = compare_categorical(reference, counts(seed + 10, 5000, shares), "jensenshannon")
        shifted = compare_categorical(reference, counts(seed + 10, 5000, moved), "jensenshannon")
        assert same.drift is False and same.score < 0.05
        assert shifted.drift is True and shifted.score > 0.25


def test_jensenshannon_bins_a_numeric_feature_with_many_values() -> None:
    for seed in range(5):
        reference = normal(seed, 3000)
        same = compare_numeric(reference, normal(seed + 10, 3000), "jensenshannon")
        shifted = compare_numeric(reference, normal(seed + 10, 3000, 1.0), "jensenshannon")
        assert same.drift is False and same.score < 0.06
        assert shifted.drift is True and shifted.score > 0.3


def test_jensenshannon_binned_disjoint_ranges_is_sqrt_ln2() -> None:
    reference = np.arange(100, dtype=float)
    result = compare_numeric(reference, reference + 1000.0, "jensenshannon")
    assert result.score == pytest.approx(float(np.sqrt(np.log(2))))


def test_jensenshannon_numeric_with_few_values_counts_each_value() -> None:
    rng = np.random.default_rng(7)
    reference = rng.choice([1.0, 2.0, 3.0], size=3000, p=[0.6, 0.3, 0.1])
    current = rng.choice([1.0, 2.0, 3.0], size=3000, p=[0.2, 0.3, 0.5])
    numeric = compare_numeric(reference, current, "jensenshannon")
    as_counts = compare_categorical(
        dict(Counter(format(v, "g") for v in reference)),
        dict(Counter(format(v, "g") for v in current)),
        "jensenshannon",
    )
    assert numeric.score == pytest.approx(as_counts.score)
    assert numeric.drift is True
    same = compare_numeric(
        reference, rng.choice([1.0, 2.0, 3.0], size=3000, p=[0.6, 0.3, 0.1]), "jensenshannon"
    )
    assert same.drift is False


def test_chisquare_on_numbers_counts_each_value() -> None:
    reference = np.array([1.0] * 50 + [2.0] * 30 + [4.0] * 20)
    current = np.array([1.0] * 20 + [2.0] * 30 + [4.0] * 50)
    assert compare_numeric(reference, current, "chisquare") == compare_categorical(
        {"1": 50, "2": 30, "4": 20}, {"1": 20, "2": 30, "4": 50}, "chisquare"
    )


# refusals and overrides


@pytest.mark.parametrize("method", ["ks", "wasserstein"])
def test_categorical_refuses_numeric_only_methods(method: str) -> None:
    with pytest.raises(ValueError, match=f"{method} needs numbers; use chisquare, z or"):
        compare_categorical({"a": 1}, {"a": 1}, method)


def test_unknown_methods_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown drift method 'psi'"):
        compare_categorical({"a": 1}, {"a": 1}, "psi")
    with pytest.raises(ValueError, match="unknown drift method 'psi'"):
        compare_numeric(normal(1, 10), normal(2, 10), "psi")


def test_parse_tests_reads_methods_and_thresholds() -> None:
    assert parse_tests("latency_ms=ks:0.01, model = JensenShannon ,ttft_ms=wasserstein: 0.2") == {
        "latency_ms": ("ks", 0.01),
        "model": ("jensenshannon", None),
        "ttft_ms": ("wasserstein", 0.2),
    }
    assert parse_tests("") == {}
    assert parse_tests(" , ") == {}
    assert parse_tests("consumer=z:") == {"consumer": ("z", None)}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("latency_ms=psi", "'latency_ms=psi' is not 'feature=method"),
        ("latency_ms", "'latency_ms' is not 'feature=method"),
        ("latency_ms:ks", "'latency_ms:ks' is not 'feature=method"),
        ("=ks", "'=ks' is not 'feature=method"),
        ("latency_ms=", "'latency_ms=' is not 'feature=method"),
        ("latency_ms=ks:low", "'latency_ms=ks:low': the threshold is not a number"),
    ],
)
def test_parse_tests_refuses_bad_items(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tests(raw)


def test_parse_tests_error_lists_the_methods() -> None:
    with pytest.raises(ValueError, match="chisquare, jensenshannon, ks, wasserstein, z"):
        parse_tests("model=kl")
