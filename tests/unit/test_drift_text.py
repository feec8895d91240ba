"""Text drift of prompts: a TF-IDF domain classifier, scored by ROC AUC."""

from __future__ import annotations

import random

import pytest

from llmops.drift.text import EXAMPLE_CHARS, EXAMPLES, FIXED_THRESHOLD, TOP_TERMS, text_drift

pytestmark = pytest.mark.unit

BILLING = (
    "How do I reset my password for the {product} account?",
    "Can you explain the charges on my latest {product} invoice?",
    "How can I update the billing address on my {product} subscription?",
    "Which payment methods does {product} accept for the annual plan?",
    "Please send me a receipt for last month's {product} payment.",
)
OUTAGE = (
    "The {product} service is down again, when will the outage be fixed?",
    "I want a refund for the {product} outage yesterday.",
    "Your {product} status page says operational but nothing loads, is there an incident?",
    "Every request to {product} times out with a gateway error since this morning.",
)
PRODUCTS = ("Contoso Cloud", "Fabrikam Files", "Northwind Mail", "Tailspin Backup")
DETAIL = (
    "",
    " I have tried logging out and in again.",
    " This is the second time I am asking.",
    " Our team of forty people depends on it.",
    " Please answer in two short paragraphs.",
)
BILLING_WORDS = {"password", "invoice", "charges", "billing", "payment", "receipt", "address"}
OUTAGE_WORDS = {"outage", "refund", "down", "incident", "status", "operational", "times", "error"}


def prompts(topics: tuple[str, ...], n: int, seed: int) -> list[str]:
    """`n` prompts on `topics`, with the same products and details whatever the topics."""
    rng = random.Random(seed)
    return [
        rng.choice(topics).format(product=rng.choice(PRODUCTS)) + rng.choice(DETAIL)
        for _ in range(n)
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_same_topics_do_not_drift(seed: int) -> None:
    result = text_drift(prompts(BILLING, 120, seed), prompts(BILLING, 120, seed + 100), seed=seed)
    assert result is not None
    assert result.drift is False
    assert result.roc_auc == pytest.approx(0.5, abs=0.12)
    assert result.roc_auc < result.threshold


def test_new_topics_drift_with_the_words_that_tell_them_apart() -> None:
    reference = prompts(BILLING, 120, 1)
    current = prompts(OUTAGE, 120, 2)
    result = text_drift(reference, current)
    assert result is not None
    assert result.drift is True
    assert result.roc_auc > 0.9
    assert result.roc_auc > result.threshold
    current_terms = {t["term"] for t in result.current_terms}
    reference_terms = {t["term"] for t in result.reference_terms}
    assert len(current_terms & OUTAGE_WORDS) >= 4
    assert len(reference_terms & BILLING_WORDS) >= 4
    assert not current_terms & BILLING_WORDS
    assert not reference_terms & OUTAGE_WORDS
    assert all(t["weight"] > 0 for t in result.current_terms + result.reference_terms)
    assert len(result.current_terms) <= TOP_TERMS
    weights = [t["weight"] for t in result.current_terms]
    assert weights == sorted(weights, reverse=True)


def test_examples_come_from_the_current_prompts() -> None:
    reference = prompts(BILLING, 60, 1)
    current = prompts(OUTAGE, 60, 2)
    result = text_drift(reference, current)
    assert result is not None
    assert 0 < len(result.current_examples) <= EXAMPLES
    assert all(example in current for example in result.current_examples)


def test_partial_shift_is_still_seen() -> None:
    reference = prompts(BILLING, 150, 1)
    current = prompts(BILLING, 90, 2) + prompts(OUTAGE, 60, 3)
    result = text_drift(reference, current)
    assert result is not None
    assert result.drift is True
    assert {t["term"] for t in result.current_terms[:5]} & OUTAGE_WORDS


def test_small_samples_raise_the_threshold_above_chance() -> None:
    result = text_drift(prompts(BILLING, 20, 1), prompts(BILLING, 20, 2))
    assert result is not None
    assert result.threshold > FIXED_THRESHOLD
    assert result.threshold < 1.0
    smaller = text_drift(prompts(BILLING, 8, 1), prompts(BILLING, 8, 2))
    assert smaller is not None
    assert smaller.threshold > result.threshold  # the fewer prompts, the more chance can do


def test_large_samples_use_the_fixed_threshold() -> None:
    result = text_drift(prompts(BILLING, 1000, 1), prompts(BILLING, 1000, 2))
    assert result is not None
    assert result.threshold == FIXED_THRESHOLD
    assert result.drift is False


def test_texts_without_words_give_none() -> None:
    assert text_drift(["123", "4 5 6", "!!", "?"], ["7", "8 9", "...", "42"]) is None
    assert text_drift(["the and of", "is it"], ["a an the", "to be"]) is None  # stop words only


def test_long_examples_are_shortened() -> None:
    long_prompt = "outage " * 100
    reference = prompts(BILLING, 30, 1)
    current = [long_prompt] * 30
    result = text_drift(reference, current)
    assert result is not None
    assert result.current_examples
    assert all(len(e) <= EXAMPLE_CHARS for e in result.current_examples)
    assert result.current_examples[0].endswith("…")


def test_same_seed_same_answer() -> None:
    reference, current = prompts(BILLING, 40, 1), prompts(OUTAGE, 40, 2)
    assert text_drift(reference, current, seed=5) == text_drift(reference, current, seed=5)
