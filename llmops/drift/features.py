"""What the drift monitor measures of each call, gathered per window in bounded memory.

Numeric features keep their values (up to `max_rows` per feature; beyond that a uniform
reservoir sample of that size, so memory stays bounded however busy the window). Categorical
features keep counts per value (at most `MAX_CATEGORIES` distinct values; the rest are counted
as `(other)`). Prompt texts for the text-drift classifier are a reservoir of `text_sample`.
Missing values (no usage reported, a call that failed before its first byte) are left out of
that feature's sample rather than counted as zero.
"""

from __future__ import annotations

import math
import random
from array import array
from collections import Counter
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llmops.drift.records import Call

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
    # calls per registry version that served them ("support-bot v2"): reported, not tested
    # (a promotion changes it on purpose, and must not count as drift)
    versions: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._skips: dict[str, tuple[float, int]] = {}  # reservoir: (Algorithm L's W, next index)
        for name in NUMERIC:
            self.numeric.setdefault(name, array("d"))
            self.seen.setdefault(name, 0)
        for name in CATEGORICAL:
            self.categorical.setdefault(name, Counter())

    def add(self, record: dict[str, Any]) -> None:
        """Take one request-log record's features (a parsed record; see `add_calls`)."""
        from llmops.drift.records import call_of

        self.add_calls([call_of(record)])

    def add_calls(self, calls: list[Call]) -> None:
        """Take the features of a batch of calls, decoded by `llmops.drift.records`.

        The drift monitor's hot path (a million calls in a daily run) works column by column:
        a comprehension per feature and C-level counting, rather than calls per value.
        """
        self.calls += len(calls)
        statuses = [c.status if type(c.status) is int else 0 for c in calls]
        finishes = [c.finish_reason for c in calls]
        self.errors += sum(1 for status in statuses if status >= 400)
        self.content_filtered += sum(
            1
            for c, finish in zip(calls, finishes, strict=True)
            if finish == "content_filter"
            or (type(c.error) is dict and c.error.get("code") == "content_filter")
        )
        usages = [c.usage for c in calls if c.usage is not None]
        self._numbers("prompt_tokens", [u.prompt_tokens for u in usages])
        self._numbers("completion_tokens", [u.completion_tokens for u in usages])
        self._numbers("latency_ms", [c.latency_ms for c in calls])
        self._numbers("ttft_ms", [c.ttft_ms for c in calls])
        counts, chars, texts = [], [], []
        for c in calls:
            if c.request is None or c.request.messages is None:
                continue
            messages = c.request.messages
            total, last_user = 0, ""
            for message in messages:
                content = message.content
                text = content if type(content) is str else _text_of(content)
                total += len(text)
                if message.role == "user":
                    last_user = text
            counts.append(len(messages))
            chars.append(total)
            if last_user and not last_user.isspace():
                texts.append(last_user)
        self._numbers("messages", counts)
        self._numbers("prompt_chars", chars)
        if self.text_sample and texts:
            self._offer("texts", self.texts, self.texts_seen, texts, self.text_sample)
            self.texts_seen += len(texts)

        self._categories("model", [c.model for c in calls])
        self._categories("deployment", [c.deployment for c in calls])
        self._categories("finish_reason", finishes)
        self._categories("status_class", [f"{s // 100}xx" if s else None for s in statuses])
        self._categories("consumer", [c.consumer for c in calls])
        served = [_version_of(c.registry) for c in calls if c.registry is not None]
        if served:
            for key, count in Counter(served).items():
                if key in self.versions or len(self.versions) < MAX_CATEGORIES:
                    self.versions[key] += count

    def _numbers(self, name: str, offered: list[Any]) -> None:
        # real numbers only: not bool, not NaN, not text
        valid = [
            float(v)
            for v in offered
            if (type(v) is float and v == v)
            or type(v) is int
            or (isinstance(v, int | float) and not isinstance(v, bool) and v == v)
        ]
        if valid:
            self._offer(name, self.numeric[name], self.seen[name], valid, self.max_rows)
            self.seen[name] += len(valid)

    def _categories(self, name: str, offered: list[Any]) -> None:
        counts = self.categorical[name]
        for value, count in Counter(offered).items():
            key = NONE if value is None else value if type(value) is str else str(value)
            if key not in counts and len(counts) >= MAX_CATEGORIES:
                key = OTHER
            counts[key] += count

    def _offer(
        self, key: str, kept: MutableSequence[Any], seen: int, items: list[Any], size: int
    ) -> None:
        """Reservoir sampling with skips (Li's Algorithm L): `kept` is a uniform sample of at
        most `size` of the `seen` values offered before; offer `items` after them. Only the
        values that enter the sample cost a random draw."""
        take = min(len(items), size - len(kept))
        if take > 0:
            kept.extend(items[:take])
        end = seen + len(items)  # global index past the last item
        if len(kept) < size:
            return
        rand = self._random.random
        state = self._skips.get(key)
        if state is None:  # the sample just filled: the first replacement comes after it
            w = math.exp(math.log(rand() or _TINY) / size)
            state = (w, size + _skip(w, rand))
        w, upcoming = state
        while upcoming < end:
            kept[self._random.randrange(size)] = items[upcoming - seen]
            w *= math.exp(math.log(rand() or _TINY) / size)
            upcoming += 1 + _skip(w, rand)
        self._skips[key] = (w, upcoming)

    def rate(self, count: int) -> float | None:
        """`count` as a share of the window's calls (None for an empty window)."""
        return count / self.calls if self.calls else None


_TINY = 5e-324  # random() may return 0.0


def _skip(w: float, rand: Callable[[], float]) -> int:
    """How many values to pass over before the next replacement (Algorithm L)."""
    if w >= 1.0:
        return 0
    return math.floor(math.log(rand() or _TINY) / math.log1p(-w))


def _version_of(registry: object) -> str:
    """`name vVERSION` of a record's `registry` object (docs/request-log.md)."""
    if type(registry) is not dict:
        return OTHER
    return f"{registry.get('name')} v{registry.get('version')}"


def _text_of(content: object) -> str:
    """The text of a message's content: itself, or its text parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return " ".join(
            part["text"]
            for part in content
            if isinstance(part, dict) and isinstance(part.get("text"), str)
        )
    return ""


def merge(samples: list[WindowSample]) -> WindowSample:
    """One sample of a window from samples of disjoint parts of it (workers' shares).

    Counts add up; categories beyond `MAX_CATEGORIES` go to `(other)`. Where a part kept a
    reservoir, the merged reservoir draws from each part in proportion to the values that part
    saw (a hypergeometric split), so every value of the window stays equally likely to be kept.
    """
    first = samples[0]
    merged = WindowSample(max_rows=first.max_rows, text_sample=first.text_sample, seed=first.seed)
    for sample in samples:
        merged.calls += sample.calls
        merged.errors += sample.errors
        merged.content_filtered += sample.content_filtered
        merged.versions.update(sample.versions)
        for name in CATEGORICAL:
            for key, count in sample.categorical[name].items():
                counts = merged.categorical[name]
                if key not in counts and len(counts) >= MAX_CATEGORIES:
                    key = OTHER
                counts[key] += count
    for name in NUMERIC:
        parts = [(s.numeric[name], s.seen[name]) for s in samples]
        merged.numeric[name] = array("d", _reservoir(parts, merged.max_rows, merged.seed))
        merged.seen[name] = sum(seen for _, seen in parts)
    texts = [(s.texts, s.texts_seen) for s in samples]
    merged.texts = [str(t) for t in _reservoir(texts, merged.text_sample, merged.seed)]
    merged.texts_seen = sum(seen for _, seen in texts)
    return merged


def _reservoir(parts: list[tuple[Any, int]], size: int, seed: int) -> list[Any]:
    """A uniform sample of `size` from streams each summarised by (its reservoir, its count)."""
    if sum(len(kept) for kept, _ in parts) <= size:
        return [value for kept, _ in parts for value in kept]
    import numpy as np

    rng = np.random.default_rng(seed)
    counts = np.array([seen for _, seen in parts], dtype=np.int64)
    # how many of the `size` draws (without replacement) fall in each stream
    take = rng.multivariate_hypergeometric(counts, size)
    out: list[Any] = []
    for (kept, _), n in zip(parts, take, strict=True):
        picks = rng.choice(len(kept), size=int(n), replace=False)
        out.extend(kept[int(i)] for i in picks)
    return out
