"""Per-feature drift statistics: Evidently's documented defaults, on scipy.

Which test runs (unless a feature's test is overridden):

| reference rows | numeric, > 5 distinct values | categorical, or numeric with <= 5 |
|---|---|---|
| <= 1000 | Kolmogorov-Smirnov p-value < 0.05 | chi-squared p < 0.05 (z-test if 2 values) |
| > 1000 | normalized Wasserstein >= 0.1 | Jensen-Shannon distance >= 0.1 |

p-value tests drift below their threshold, distances at or above it. The monitor passes the
smaller window's row count as "reference rows" on purpose (see `analysis`): with a small
current window a distance is mostly sampling noise. That is not a bug to mirror away.

Numeric samples are arrays of floats; categorical ones are counts per value (a numeric feature
with few distinct values is turned into counts). scipy is imported on first use, never at
`function_app` import.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]

Method = Literal["ks", "chisquare", "z", "wasserstein", "jensenshannon"]
METHODS: dict[str, tuple[Literal["p_value", "distance"], float]] = {
    "ks": ("p_value", 0.05),
    "chisquare": ("p_value", 0.05),
    "z": ("p_value", 0.05),
    "wasserstein": ("distance", 0.1),
    "jensenshannon": ("distance", 0.1),
}
NUMERIC_ONLY = frozenset({"ks", "wasserstein"})
SMALL_REFERENCE = 1000  # Evidently: up to this many reference rows, p-value tests
FEW_VALUES = 5  # numeric features with at most this many distinct values count as categories
_JS_BINS_FROM = 20  # Evidently bins a numeric feature for Jensen-Shannon above 20 values


@dataclass(frozen=True)
class Comparison:
    """One statistical comparison of a feature's reference and current samples."""

    method: str
    score: float
    threshold: float
    drift: bool

    @property
    def score_kind(self) -> str:
        """`p_value` (drift when below the threshold) or `distance` (at or above)."""
        return METHODS[self.method][0] if self.method in METHODS else "roc_auc"


def default_method(categorical: bool, reference_rows: int, distinct: int) -> Method:
    """The test Evidently's DataDriftPreset picks for a feature, given the reference's rows
    (the monitor passes the smaller window's) and the distinct values of both windows."""
    small = reference_rows <= SMALL_REFERENCE
    if categorical or distinct <= FEW_VALUES:
        if not small:
            return "jensenshannon"
        return "chisquare" if distinct > 2 else "z"
    return "ks" if small else "wasserstein"


def decide(method: str, score: float, threshold: float | None = None) -> Comparison:
    """The verdict of a score under a method's threshold (its default unless given)."""
    kind, default = METHODS[method]
    limit = default if threshold is None else threshold
    drift = score < limit if kind == "p_value" else score >= limit
    return Comparison(method=method, score=float(score), threshold=limit, drift=bool(drift))


def compare_numeric(
    reference: FloatArray, current: FloatArray, method: str, threshold: float | None = None
) -> Comparison:
    """Compare two numeric samples (no missing values) with `method`."""
    import numpy as np

    if method in ("chisquare", "z", "jensenshannon"):
        if method == "jensenshannon" and len(np.unique(reference)) > _JS_BINS_FROM:
            ref_share, cur_share = _histogram_shares(reference, current)
            return decide(method, _jensenshannon(ref_share, cur_share), threshold)
        return compare_categorical(_counts(reference), _counts(current), method, threshold)
    from scipy import stats

    if method == "ks":
        return decide(method, float(stats.ks_2samp(reference, current).pvalue), threshold)
    if method == "wasserstein":
        scale = max(float(np.std(reference)), 0.001)
        return decide(
            method, float(stats.wasserstein_distance(reference, current)) / scale, threshold
        )
    raise ValueError(f"unknown drift method {method!r}")


def compare_categorical(
    reference: Mapping[str, int],
    current: Mapping[str, int],
    method: str,
    threshold: float | None = None,
) -> Comparison:
    """Compare two categorical samples, given as counts per value, with `method`."""
    import numpy as np

    if method in NUMERIC_ONLY:
        raise ValueError(f"{method} needs numbers; use chisquare, z or jensenshannon")
    keys = sorted(k for k in set(reference) | set(current) if reference.get(k) or current.get(k))
    ref = np.array([reference.get(k, 0) for k in keys], dtype=float)
    cur = np.array([current.get(k, 0) for k in keys], dtype=float)
    if method == "jensenshannon":
        return decide(method, _jensenshannon(ref / ref.sum(), cur / cur.sum()), threshold)
    if method == "chisquare":
        from scipy import stats

        expected = ref * (cur.sum() / ref.sum())
        with np.errstate(divide="ignore", invalid="ignore"):
            p_value = float(stats.chisquare(cur, expected).pvalue)
        return decide(method, 0.0 if np.isnan(p_value) else p_value, threshold)
    if method == "z":
        return decide(method, _two_proportion_p(ref, cur), threshold)
    raise ValueError(f"unknown drift method {method!r}")


def _two_proportion_p(ref: FloatArray, cur: FloatArray) -> float:
    """Two-sided z-test that the share of values other than the first is the same."""
    import numpy as np
    from scipy import stats

    n1, n2 = ref.sum(), cur.sum()
    p1, p2 = ref[1:].sum() / n1, cur[1:].sum() / n2
    pooled = (p1 * n1 + p2 * n2) / (n1 + n2)
    if pooled in (0.0, 1.0):  # every value the same in both windows
        return 1.0
    z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return float(2 * (1 - stats.norm.cdf(abs(z))))


def _jensenshannon(ref_share: FloatArray, cur_share: FloatArray) -> float:
    from scipy.spatial import distance

    # Natural logarithm, as Evidently computes it (`base=None`): its 0.1 threshold is meant
    # for that scale; in base 2 the same distributions score x1.2 (1/sqrt(ln 2)).
    return float(distance.jensenshannon(ref_share, cur_share))


def _histogram_shares(reference: FloatArray, current: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Shares per bin, bins from both samples by Sturges' rule (as Evidently bins them)."""
    import numpy as np

    edges = np.histogram_bin_edges(np.concatenate([reference, current]), bins="sturges")
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(current, edges)[0] / len(current)
    return ref, cur


def _counts(values: FloatArray) -> dict[str, int]:
    import numpy as np

    unique, counts = np.unique(values, return_counts=True)
    return {format(float(v), "g"): int(c) for v, c in zip(unique, counts, strict=True)}


def parse_tests(raw: str) -> dict[str, tuple[str, float | None]]:
    """Parse per-feature overrides: `feature=method[:threshold],...`."""
    tests: dict[str, tuple[str, float | None]] = {}
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        feature, sep, spec = item.partition("=")
        method, _, threshold_text = spec.strip().partition(":")
        method = method.strip().lower()
        if not sep or not feature.strip() or method not in METHODS:
            raise ValueError(
                f"{item!r} is not 'feature=method[:threshold]' with a method among "
                + ", ".join(sorted(METHODS))
            )
        try:
            threshold = float(threshold_text) if threshold_text.strip() else None
        except ValueError:
            raise ValueError(f"{item!r}: the threshold is not a number") from None
        tests[feature.strip()] = (method, threshold)
    return tests
