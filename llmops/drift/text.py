"""Text drift of the prompts: a domain classifier on TF-IDF features, as Evidently does it.

A logistic regression learns to tell current prompts from reference ones on half of each
sample and is scored (ROC AUC) on the other half. When the prompts are alike it cannot do
better than chance (AUC near 0.5); when what users ask about changed, it can. The threshold is
0.55 for large samples; for small ones it is the 95th percentile of the AUC a random guesser
reaches on the same test set, so chance alone does not read as drift. The words that weigh
most for each side are the evidence, with a few current prompts the classifier found most
typical of the new traffic. scikit-learn is imported here only, on first use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

METHOD = "domain_classifier"
LARGE_TEST_SET = 1000  # from this many test prompts on, the fixed threshold applies
FIXED_THRESHOLD = 0.55
TOP_TERMS = 12
EXAMPLES = 5
EXAMPLE_CHARS = 240


@dataclass(frozen=True)
class TextDrift:
    """The classifier's verdict and the evidence for it."""

    roc_auc: float
    threshold: float
    drift: bool
    reference_terms: list[dict[str, Any]] = field(default_factory=list)
    current_terms: list[dict[str, Any]] = field(default_factory=list)
    current_examples: list[str] = field(default_factory=list)


def text_drift(reference: list[str], current: list[str], *, seed: int = 0) -> TextDrift | None:
    """Compare two samples of prompts; None when they have no usable words."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    texts = reference + current
    labels = np.array([0] * len(reference) + [1] * len(current))
    vectorizer = TfidfVectorizer(
        lowercase=True,
        stop_words="english",
        token_pattern=r"(?u)\b[^\W\d_][\w'-]+\b",  # words of two letters or more, no numbers
        sublinear_tf=True,
        max_features=20_000,
    )
    try:
        matrix = vectorizer.fit_transform(texts)
    except ValueError:  # no words at all (empty vocabulary)
        return None
    indices = np.arange(len(texts))
    train, test = train_test_split(indices, test_size=0.5, stratify=labels, random_state=seed)
    model = LogisticRegression(max_iter=1000, random_state=seed)
    model.fit(matrix[train], labels[train])
    scores = model.decision_function(matrix[test])
    auc = float(roc_auc_score(labels[test], scores))
    threshold = _threshold(labels[test], seed)

    terms = vectorizer.get_feature_names_out()
    weights = model.coef_[0]
    order = np.argsort(weights)
    reference_terms = [
        {"term": str(terms[i]), "weight": round(float(-weights[i]), 4)}
        for i in order[:TOP_TERMS]
        if weights[i] < 0
    ]
    current_terms = [
        {"term": str(terms[i]), "weight": round(float(weights[i]), 4)}
        for i in order[::-1][:TOP_TERMS]
        if weights[i] > 0
    ]
    current_test = [(float(s), int(i)) for s, i in zip(scores, test, strict=True) if labels[i] == 1]
    current_test.sort(reverse=True)
    examples = [_shorten(texts[i]) for _, i in current_test[:EXAMPLES]]
    return TextDrift(
        roc_auc=auc,
        threshold=threshold,
        drift=auc > threshold,
        reference_terms=reference_terms,
        current_terms=current_terms,
        current_examples=examples,
    )


def _threshold(test_labels: Any, seed: int) -> float:
    """0.55, or for a small test set the AUC a random guesser beats only 5% of the time."""
    import numpy as np

    labels = np.asarray(test_labels)
    if len(labels) >= LARGE_TEST_SET:
        return FIXED_THRESHOLD
    rng = np.random.default_rng(seed)
    # 1000 random guessers at once. Their scores have no ties, so each one's ROC AUC is the
    # Mann-Whitney statistic of the ranks (what roc_auc_score computes, ~300x faster in bulk).
    ranks = rng.random((1000, len(labels))).argsort(axis=1).argsort(axis=1) + 1
    positive = labels == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    guesses = (ranks[:, positive].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    return max(FIXED_THRESHOLD, float(np.percentile(guesses, 95)))


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= EXAMPLE_CHARS else text[: EXAMPLE_CHARS - 1] + "…"
