"""What the drift monitor measures of each call, gathered per window in bounded memory.

Numeric features keep their values (up to `max_rows` per feature; beyond that a uniform
reservoir sample of that size, so memory stays bounded however busy the window). Categorical
features keep counts per value (at most `MAX_CATEGORIES` distinct values; the rest are counted
as `(other)`). Prompt texts for the text-drift classifier are a reservoir of `text_sample`.
Missing values (no usage reported, a call that failed before its first byte) are left out of
that feature's sample rather than counted as zero.
"""

from __future__ import annotations

import random
from array import array
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

NUMERIC = (
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "ttft_ms",
    "prompt_chars",
    "messages",
)
CATEGORICAL = ("model", "deployment", "finish_reason", "status_class", "consumer")
TEXT = "prompt_text"
MAX_CATEGORIES = 1000
OTHER = "(other)"
NONE = "(none)"


@dataclass
class WindowSample:
    """The features of one window's calls."""

    max_rows: int = 1_000_000
    text_sample: int = 5_000
    seed: int = 0
    calls: int = 0
    errors: int = 0
    content_filtered: int = 0
    numeric: dict[str, array[float]] = field(default_factory=dict)
    seen: dict[str, int] = field(default_factory=dict)  # values offered per numeric feature
    categorical: dict[str, Counter[str]] = field(default_factory=dict)
    texts: list[str] = field(default_factory=list)
    texts_seen: int = 0

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        for name in NUMERIC:
            self.numeric.setdefault(name, array("d"))
            self.seen.setdefault(name, 0)
        for name in CATEGORICAL:
            self.categorical.setdefault(name, Counter())

    def add(self, record: dict[str, Any]) -> None:
        """Take one request-log record's features."""
        self.calls += 1
        status = record.get("status")
        status = status if isinstance(status, int) else 0
        error = record.get("error") if isinstance(record.get("error"), dict) else None
        finish = record.get("finish_reason")
        if status >= 400:
            self.errors += 1
        if finish == "content_filter" or (
            error is not None and error.get("code") == "content_filter"
        ):
            self.content_filtered += 1

        usage = record.get("usage") if isinstance(record.get("usage"), dict) else None
        request = record.get("request") if isinstance(record.get("request"), dict) else None
        messages = request.get("messages") if request is not None else None
        messages = messages if isinstance(messages, list) else None
        number = self._number
        if usage is not None:
            number("prompt_tokens", usage.get("prompt_tokens"))
            number("completion_tokens", usage.get("completion_tokens"))
        number("latency_ms", record.get("latency_ms"))
        number("ttft_ms", record.get("ttft_ms"))
        if messages is not None:
            number("messages", len(messages))
            number("prompt_chars", sum(len(_text_of(m)) for m in messages))
            if self.text_sample:
                self._text(_last_user_text(messages))

        category = self._category
        category("model", record.get("model"))
        category("deployment", record.get("deployment"))
        category("finish_reason", finish)
        category("status_class", f"{status // 100}xx" if status else None)
        category("consumer", record.get("consumer"))

    def _number(self, name: str, value: object) -> None:
        if not isinstance(value, int | float) or isinstance(value, bool) or value != value:
            return
        seen = self.seen[name] = self.seen[name] + 1
        values = self.numeric[name]
        if len(values) < self.max_rows:
            values.append(float(value))
            return
        slot = self._random.randrange(seen)  # reservoir sampling: each value kept equally likely
        if slot < self.max_rows:
            values[slot] = float(value)

    def _category(self, name: str, value: object) -> None:
        counts = self.categorical[name]
        key = NONE if value is None else str(value)
        if key not in counts and len(counts) >= MAX_CATEGORIES:
            key = OTHER
        counts[key] += 1

    def _text(self, text: str) -> None:
        if not text.strip():
            return
        self.texts_seen += 1
        if len(self.texts) < self.text_sample:
            self.texts.append(text)
            return
        slot = self._random.randrange(self.texts_seen)
        if slot < self.text_sample:
            self.texts[slot] = text

    def rate(self, count: int) -> float | None:
        """`count` as a share of the window's calls (None for an empty window)."""
        return count / self.calls if self.calls else None


def _text_of(message: object) -> str:
    if not isinstance(message, dict):
        return ""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message)
    return ""
