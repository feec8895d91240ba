"""Compare a current window's features with the reference window's: the report's body.

Pure: two `WindowSample`s in, a JSON-ready dict out.

The default test of a feature follows Evidently's table (`stats.default_method`) with one
deliberate difference: the row count that picks between p-value tests and distances is the
SMALLER window's, not the reference's. Evidently moves to distances for large data because
p-values flag negligible differences when both samples are huge; with a busy week as the
reference and a quiet hour as the current window, the distance's own sampling noise exceeds
its 0.1 threshold (measured: normalized Wasserstein ~0.13 between two samples of the same
traffic at 60 current calls), so the quiet hour would raise false alarms. Whenever the current
window has more than 1000 rows, or the reference at most 1000, the choice is Evidently's.
`size_rule="reference"` (`LLMOPS_DRIFT_SIZE_RULE=reference`) uses Evidently's rule throughout.

The dict is what `report.json` holds and what the HTML page, the MLflow run and the metrics
are made from (see docs/drift.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmops.drift.features import CATEGORICAL, NUMERIC, TEXT, WindowSample
from llmops.drift.stats import (
    Comparison,
    compare_categorical,
    compare_numeric,
    default_method,
)
from llmops.drift.text import METHOD as TEXT_METHOD
from llmops.drift.text import text_drift

HISTOGRAM_BINS = 20
TOP_CATEGORIES = 12


def analyse(
    reference: WindowSample,
    current: WindowSample,
    *,
    min_samples: int,
    share: float,
    tests: Mapping[str, tuple[str, float | None]],
    size_rule: str = "smaller",
) -> dict[str, Any]:
    """Every feature's verdict, the window rates and the dataset verdict."""
    by_reference = size_rule == "reference"
    features = [
        _numeric(name, reference, current, min_samples, tests.get(name), by_reference)
        for name in NUMERIC
    ]
    features += [
        _categorical(name, reference, current, min_samples, tests.get(name), by_reference)
        for name in CATEGORICAL
    ]
    text, evidence = _text(reference, current, min_samples)
    features.append(text)
    tested = [f for f in features if f["drift"] is not None]
    drifted = [f["name"] for f in tested if f["drift"]]
    dataset_drift = bool(tested) and len(drifted) / len(tested) >= share
    return {
        "summary": {
            "dataset_drift": dataset_drift,
            "verdict": "drift" if dataset_drift else ("no drift" if tested else "not enough data"),
            "features_tested": len(tested),
            "features_drifted": len(drifted),
            "drifted": drifted,
            "drift_share": round(len(drifted) / len(tested), 4) if tested else None,
            "share_threshold": share,
            "not_enough_data": [f["name"] for f in features if f["drift"] is None],
        },
        "rates": _rates(reference, current),
        "features": features,
        "text_evidence": evidence,
    }


def _feature(
    name: str,
    kind: str,
    reference_n: int,
    current_n: int,
    result: Comparison | None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "method": result.method if result else None,
        "score_kind": result.score_kind if result else None,
        "score": _round(result.score) if result else None,
        "threshold": result.threshold if result else None,
        "drift": result.drift if result else None,
        "verdict": ("drift" if result.drift else "no drift") if result else "not enough data",
        "samples": {"reference": reference_n, "current": current_n},
        **extra,
    }


def _numeric(
    name: str,
    reference: WindowSample,
    current: WindowSample,
    min_samples: int,
    override: tuple[str, float | None] | None,
    by_reference: bool = False,
) -> dict[str, Any]:
    import numpy as np

    ref = np.frombuffer(reference.numeric[name], dtype=np.float64)
    cur = np.frombuffer(current.numeric[name], dtype=np.float64)
    result = None
    if len(ref) >= min_samples and len(cur) >= min_samples:
        method, threshold = override or (None, None)
        if method is None:
            distinct = len(np.unique(np.concatenate([ref, cur])))
            rows = len(ref) if by_reference else min(len(ref), len(cur))
            method = default_method(False, rows, distinct)
        result = compare_numeric(ref, cur, method, threshold)
    return _feature(
        name,
        "numeric",
        reference.seen[name],
        current.seen[name],
        result,
        stats={"reference": _summary(ref), "current": _summary(cur)},
        distribution=_histogram(ref, cur),
    )


def _categorical(
    name: str,
    reference: WindowSample,
    current: WindowSample,
    min_samples: int,
    override: tuple[str, float | None] | None,
    by_reference: bool = False,
) -> dict[str, Any]:
    ref, cur = reference.categorical[name], current.categorical[name]
    ref_n, cur_n = sum(ref.values()), sum(cur.values())
    result = None
    if ref_n >= min_samples and cur_n >= min_samples:
        method, threshold = override or (None, None)
        if method is None:
            rows = ref_n if by_reference else min(ref_n, cur_n)
            method = default_method(True, rows, len(set(ref) | set(cur)))
        result = compare_categorical(ref, cur, method, threshold)
    return _feature(
        name,
        "categorical",
        ref_n,
        cur_n,
        result,
        distribution=_categories(ref, cur),
    )


def _text(
    reference: WindowSample, current: WindowSample, min_samples: int
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    ref, cur = reference.texts, current.texts
    found = None
    if len(ref) >= min_samples and len(cur) >= min_samples:
        found = text_drift(ref, cur)
    result = (
        Comparison(
            method=TEXT_METHOD, score=found.roc_auc, threshold=found.threshold, drift=found.drift
        )
        if found
        else None
    )
    feature = _feature(TEXT, "text", reference.texts_seen, current.texts_seen, result)
    feature["score_kind"] = "roc_auc" if found else None
    evidence = None
    if found is not None:
        evidence = {
            "sampled": {"reference": len(ref), "current": len(cur)},
            "current_terms": found.current_terms,
            "reference_terms": found.reference_terms,
            "current_examples": found.current_examples,
        }
    return feature, evidence


def _rates(reference: WindowSample, current: WindowSample) -> dict[str, Any]:
    import numpy as np

    def p95(sample: WindowSample) -> float | None:
        values = np.frombuffer(sample.numeric["latency_ms"], dtype=np.float64)
        return _round(float(np.percentile(values, 95))) if len(values) else None

    return {
        "calls": {"reference": reference.calls, "current": current.calls},
        "error_rate": {
            "reference": _round(reference.rate(reference.errors)),
            "current": _round(current.rate(current.errors)),
        },
        "content_filter_rate": {
            "reference": _round(reference.rate(reference.content_filtered)),
            "current": _round(current.rate(current.content_filtered)),
        },
        "latency_p95_ms": {"reference": p95(reference), "current": p95(current)},
    }


def _summary(values: Any) -> dict[str, float | int | None]:
    import numpy as np

    if not len(values):
        return {"count": 0, "mean": None, "p50": None, "p95": None}
    p50, p95 = np.percentile(values, [50, 95])
    return {
        "count": len(values),
        "mean": _round(float(values.mean())),
        "p50": _round(float(p50)),
        "p95": _round(float(p95)),
    }


def _histogram(ref: Any, cur: Any) -> dict[str, Any] | None:
    """Shares per bin on shared bins spanning both windows' 1st to 99th percentiles."""
    import numpy as np

    if not len(ref) and not len(cur):
        return None
    both = np.concatenate([ref, cur])
    low, high = (float(v) for v in np.percentile(both, [1, 99]))
    if high <= low:
        low, high = float(both.min()), float(both.max())
    if high <= low:
        high = low + 1.0
    edges = np.linspace(low, high, HISTOGRAM_BINS + 1)

    def shares(values: Any) -> list[float]:
        if not len(values):
            return [0.0] * HISTOGRAM_BINS
        counts = np.histogram(np.clip(values, low, high), edges)[0]
        return [round(float(c) / len(values), 5) for c in counts]

    return {
        "edges": [_round(float(e)) for e in edges],
        "reference": shares(ref),
        "current": shares(cur),
    }


def _categories(ref: Mapping[str, int], cur: Mapping[str, int]) -> dict[str, Any]:
    """Shares of the most frequent values of both windows; the rest summed as `(rest)`."""
    ref_n, cur_n = max(sum(ref.values()), 1), max(sum(cur.values()), 1)
    weight = {k: ref.get(k, 0) / ref_n + cur.get(k, 0) / cur_n for k in set(ref) | set(cur)}
    top = sorted(weight, key=lambda k: (-weight[k], k))[:TOP_CATEGORIES]
    ref_shares = [round(ref.get(k, 0) / ref_n, 5) for k in top]
    cur_shares = [round(cur.get(k, 0) / cur_n, 5) for k in top]
    if len(weight) > len(top):
        rest = set(weight) - set(top)  # an empty window has no share of the rest either
        ref_shares.append(round(sum(ref.get(k, 0) for k in rest) / ref_n, 5))
        cur_shares.append(round(sum(cur.get(k, 0) for k in rest) / cur_n, 5))
        top.append("(rest)")
    return {"values": top, "reference": ref_shares, "current": cur_shares}


def _round(value: float | None) -> float | None:
    if value is None:
        return None
    return float(f"{value:.6g}")
