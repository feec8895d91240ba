"""The drift report as one self-contained HTML page."""

from __future__ import annotations

import math
import random
import re
from html.parser import HTMLParser
from typing import Any

import pytest

from llmops.drift.analysis import analyse
from llmops.drift.features import CATEGORICAL, NUMERIC, WindowSample
from llmops.drift.html import render

pytestmark = pytest.mark.unit

ATTACK = "<script>alert(1)</script>"
REFERENCE_TOPICS = (
    "How do I reset my password for the {product} account?",
    "Can you explain the charges on my latest {product} invoice?",
    "How can I update the billing address on my {product} subscription?",
)
CURRENT_TOPICS = (
    "The {product} outage is back " + ATTACK + " when will it be fixed?",
    "Refund the {product} outage " + ATTACK + " please.",
)
PRODUCTS = ("Contoso Cloud", "Fabrikam Files")
EVIL_MODEL = "<img src=http://evil.example/x.png onerror=alert(2)>"
VOID = {"meta", "br", "img", "input", "hr", "link", "source", "wbr", "col", "area", "base"}


def sample(n: int, seed: int, *, shifted: bool) -> WindowSample:
    rng = random.Random(seed)
    window = WindowSample()
    for _ in range(n):
        topics = CURRENT_TOPICS if shifted else REFERENCE_TOPICS
        prompt = rng.choice(topics).format(product=rng.choice(PRODUCTS))
        model = rng.choice(("gpt-4o", EVIL_MODEL) if shifted else ("gpt-4o", "gpt-4o-mini"))
        window.add(
            {
                "status": 200 if rng.random() > 0.05 else 500,
                "latency_ms": rng.lognormvariate(math.log(900 if shifted else 600), 0.3),
                "ttft_ms": rng.lognormvariate(math.log(250), 0.3),
                "consumer": rng.choice(("web-app", "support-bot")),
                "model": model,
                "deployment": "east",
                "finish_reason": "stop",
                "usage": {
                    "prompt_tokens": len(prompt) // 4,
                    "completion_tokens": rng.randint(5, 90),
                },
                "request": {"messages": [{"role": "user", "content": prompt}], "params": {}},
            }
        )
    return window


def monitor_report(body: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The body wrapped in the top-level keys `DriftMonitor.run_window` adds."""
    read = {"blobs": 3, "corrupt_lines": 0, "unknown_schema": 0, "duplicates": 0}
    return {
        "schema": "llmops.drift_report",
        "schema_version": 1,
        "report_id": "20261122T1300Z-20261122T1400Z",
        "generated_at": "2026-11-22T14:00:07Z",
        "gateway_version": "0.1.0",
        "windows": {
            "current": {
                "start": "2026-11-22T13:00:00Z",
                "end": "2026-11-22T14:00:00Z",
                "records": body["rates"]["calls"]["current"],
                **read,
            },
            "reference": {
                "start": "2026-11-15T13:00:00Z",
                "end": "2026-11-22T13:00:00Z",
                "kind": "rolling",
                "records": body["rates"]["calls"]["reference"],
                **read,
            },
        },
        "settings": {"min_samples": 30, "share": 0.5, "tests": {}, "schedule": "0 0 * * * *"},
        "retraining": {"after": 2, "cooldown_hours": 24.0, "consecutive": 1, "request": None},
        "duration_s": 0.42,
        **body,
        **extra,
    }


@pytest.fixture(scope="module")
def drifted() -> dict[str, Any]:
    body = analyse(
        sample(400, 1, shifted=False),
        sample(150, 2, shifted=True),
        min_samples=30,
        share=0.4,
        tests={},
    )
    assert body["summary"]["verdict"] == "drift"
    return monitor_report(body)


class Page(HTMLParser):
    """The page's tags, attributes and text, and whether its tags nest."""

    def __init__(self, page: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.attributes: list[tuple[str, str | None]] = []
        self.text: list[str] = []
        self.open: list[str] = []
        self.mismatched: list[str] = []
        self.feed(page)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs
        if tag not in VOID:
            self.open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attributes += attrs

    def handle_endtag(self, tag: str) -> None:
        if not self.open or self.open.pop() != tag:
            self.mismatched.append(tag)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def sections(page: str) -> dict[str, str]:
    """Each feature section's HTML by feature name."""
    found = {}
    for match in re.finditer(r"<div class=feature id='f-([^']+)'>", page):
        rest = page[match.end() :]
        cut = min(i for i in (rest.find("<div class=feature"), rest.find("<h2")) if i >= 0)
        found[match.group(1)] = rest[:cut]
    return found


def test_a_complete_document(drifted: dict[str, Any]) -> None:
    page = render(drifted)
    assert page.startswith("<!doctype html><html lang=en><head><meta charset=utf-8>")
    assert page.rstrip().endswith("</body></html>")
    assert "<title>Drift report 20261122T1300Z-20261122T1400Z</title>" in page
    parsed = Page(page)
    assert parsed.mismatched == []
    assert parsed.open == []
    assert parsed.tags.count("html") == parsed.tags.count("body") == 1


def test_the_summary_comes_first(drifted: dict[str, Any]) -> None:
    page = render(drifted)
    banner = page.index("<div class='banner drift'><b>Traffic drifted.</b>")
    assert banner < page.index("<h2>Windows</h2>") < page.index("<div class=feature")
    assert banner < page.index("<h2>Features</h2>")
    summary = drifted["summary"]
    assert f"{summary['features_drifted']} of {summary['features_tested']} features" in page
    for name in summary["drifted"]:
        assert name in page[banner : page.index("</div>", banner)]


def test_windows_rates_and_retraining_are_shown(drifted: dict[str, Any]) -> None:
    page = render(drifted)
    text = " ".join(Page(page).text)
    assert "reference (rolling)" in text
    assert "2026-11-15T13:00:00Z" in text and "2026-11-22T14:00:00Z" in text
    assert "no bad lines" in text
    assert "Error rate" in text and "Content-filter rate" in text and "Latency p95 (ms)" in text
    assert "Drift in 1 consecutive window(s); retraining is requested after 2." in text


def test_one_section_per_feature_with_two_charts(drifted: dict[str, Any]) -> None:
    found = sections(render(drifted))
    assert list(found) == [*NUMERIC, *CATEGORICAL]
    for name, section in found.items():
        assert section.count("<svg") == 2, name
        assert section.count("</svg>") == 2, name
        assert "<rect" in section, name
    latency = found["latency_ms"]
    assert "reference: mean" in latency and "current: mean" in latency
    assert "ks, score" in latency


def test_the_feature_table_links_to_each_section(drifted: dict[str, Any]) -> None:
    page = render(drifted)
    for feature in drifted["features"]:
        assert f"<a href='#f-{feature['name']}'>{feature['name']}</a>" in page
    assert "<h2 id='f-prompt_text'>" in page


def test_the_text_evidence(drifted: dict[str, Any]) -> None:
    page = render(drifted)
    evidence = page[page.index("<h2 id='f-prompt_text'>") :]
    text = " ".join(Page(evidence).text)
    assert "ROC AUC" in text
    assert "Words typical of the current window" in text
    assert "Words typical of the reference window" in text
    assert "outage" in text
    assert "password" in text
    assert evidence.count("<blockquote>") == len(drifted["text_evidence"]["current_examples"]) > 0


def test_user_text_is_escaped_never_raw(drifted: dict[str, Any]) -> None:
    page = render(drifted)
    assert ATTACK not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert EVIL_MODEL not in page
    parsed = Page(page)
    assert "script" not in parsed.tags
    assert "img" not in parsed.tags
    shown = "".join(parsed.text)
    assert ATTACK in shown  # the reader sees the prompt as it was written
    assert EVIL_MODEL in shown


def test_nothing_is_loaded_from_elsewhere(drifted: dict[str, Any]) -> None:
    page = render(drifted)
    parsed = Page(page)
    assert not {"script", "link", "img", "iframe", "object", "embed"} & set(parsed.tags)
    for name, value in parsed.attributes:
        if name in ("src", "href", "xlink:href", "action"):
            assert value is not None and value.startswith("#"), (name, value)
    assert "<script" not in page.lower()
    assert "@import" not in page and "url(" not in page


def test_not_enough_data_page() -> None:
    body = analyse(WindowSample(), WindowSample(), min_samples=30, share=0.5, tests={})
    report = monitor_report(body, retraining={"consecutive": 0, "request": None})
    page = render(report)
    parsed = Page(page)
    assert parsed.mismatched == [] and parsed.open == []
    assert "<div class='banner na'><b>Not enough data</b>" in page
    assert "Not enough prompts in one of the windows." in page
    assert "No values in either window." in page
    assert "Retraining" not in page and "retraining" not in page


def test_no_drift_page() -> None:
    reference, current = sample(300, 1, shifted=False), sample(300, 2, shifted=False)
    body = analyse(reference, current, min_samples=30, share=0.5, tests={})
    assert body["summary"]["verdict"] == "no drift"
    page = render(monitor_report(body))
    assert "<div class='banner ok'><b>No dataset drift.</b>" in page


def test_bad_lines_and_a_retraining_request_are_reported(drifted: dict[str, Any]) -> None:
    report = dict(drifted)
    report["windows"] = {
        "current": {**drifted["windows"]["current"], "corrupt_lines": 3, "unknown_schema": 1},
        "reference": {**drifted["windows"]["reference"], "kind": "pinned"},
    }
    report["retraining"] = {"consecutive": 2, "after": 2, "request": "drift-<b>.json"}
    page = render(report)
    text = " ".join(Page(page).text)
    assert "3 corrupt lines, 1 of an unknown schema skipped" in text
    assert "reference (pinned)" in text
    assert "retrain-requests/drift-<b>.json" in text
    assert "drift-<b>" not in page
    skipped = render({**report, "retraining": {"consecutive": 2, "skipped": "x within cooldown"}})
    assert "Retraining not requested: x within cooldown" in skipped
