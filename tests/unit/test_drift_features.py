"""What the drift monitor takes from each request-log record, in bounded memory."""

from __future__ import annotations

import statistics
from typing import Any

import pytest

from llmops.drift.features import (
    CATEGORICAL,
    MAX_CATEGORIES,
    NONE,
    NUMERIC,
    OTHER,
    WindowSample,
    merge,
)
from llmops.drift.records import calls_in
from llmops.logs.reader import ReadStats

pytestmark = pytest.mark.unit


def record(**changes: Any) -> dict[str, Any]:
    """A successful chat call's request-log record (schema version 1), with `changes`."""
    base: dict[str, Any] = {
        "schema": "llmops.request_log",
        "schema_version": 1,
        "request_id": "req-1",
        "trace_id": "0" * 32,
        "parent_span_id": None,
        "received_at": "2026-11-22T13:05:00.000000Z",
        "first_byte_at": "2026-11-22T13:05:00.420000Z",
        "done_at": "2026-11-22T13:05:01.250000Z",
        "latency_ms": 1250.0,
        "ttft_ms": 420.0,
        "consumer": "team-a",
        "route": "openai",
        "model": "gpt-4o",
        "deployment": "gpt-4o-east",
        "upstream": "azure",
        "stream": False,
        "status": 200,
        "error": None,
        "finish_reason": "stop",
        "usage": {
            "prompt_tokens": 31,
            "completion_tokens": 12,
            "total_tokens": 43,
            "cached_tokens": 0,
            "estimated": False,
        },
        "retries": 0,
        "fallbacks": 0,
        "attempts": [{"deployment": "gpt-4o-east", "status": 200, "error": None, "waited_ms": 0}],
        "request": {
            "messages": [
                {"role": "system", "content": "You are a support agent."},
                {"role": "user", "content": "How do I reset my password?"},
            ],
            "params": {"temperature": 0.2},
        },
        "response": {
            "choices": [
                {
                    "index": 0,
                    "role": "assistant",
                    "content": "Open settings.",
                    "finish_reason": "stop",
                }
            ]
        },
        "redaction": "mask",
        "gateway_version": "0.1.0",
        "instance": "host-1-abc",
    }
    base.update(changes)
    return base


def failed(status: int, code: str, **changes: Any) -> dict[str, Any]:
    """A call the client got an error for: no answer, no usage."""
    return record(
        status=status,
        error={"type": "invalid_request_error", "code": code, "message": "..."},
        finish_reason=None,
        usage=None,
        response=None,
        first_byte_at=None,
        ttft_ms=None,
        **changes,
    )


def values(sample: WindowSample, name: str) -> list[float]:
    return list(sample.numeric[name])


def test_a_successful_call_gives_every_feature() -> None:
    sample = WindowSample()
    sample.add(record())
    assert {name: values(sample, name) for name in NUMERIC} == {
        "prompt_tokens": [31.0],
        "completion_tokens": [12.0],
        "latency_ms": [1250.0],
        "ttft_ms": [420.0],
        "prompt_chars": [
            float(len("You are a support agent.") + len("How do I reset my password?"))
        ],
        "messages": [2.0],
    }
    assert {name: dict(sample.categorical[name]) for name in CATEGORICAL} == {
        "model": {"gpt-4o": 1},
        "deployment": {"gpt-4o-east": 1},
        "finish_reason": {"stop": 1},
        "status_class": {"2xx": 1},
        "consumer": {"team-a": 1},
    }
    assert sample.texts == ["How do I reset my password?"]
    assert (sample.calls, sample.errors, sample.content_filtered) == (1, 0, 0)
    assert all(sample.seen[name] == 1 for name in NUMERIC)
    assert sample.texts_seen == 1


def test_content_parts_count_their_text_only() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is in"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "this picture?"},
            ],
        },
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1"}]},
        {"role": "tool", "content": "42"},
    ]
    sample = WindowSample()
    sample.add(record(request={"messages": messages, "params": {}}))
    assert values(sample, "messages") == [4.0]
    assert values(sample, "prompt_chars") == [
        float(len("Be brief.") + len("What is in this picture?") + len("42"))
    ]
    assert sample.texts == ["What is in this picture?"]


def test_the_prompt_text_is_the_last_user_message() -> None:
    messages = [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "an answer"},
        {"role": "user", "content": "the follow-up"},
        {"role": "assistant", "content": "prefilled"},
    ]
    sample = WindowSample()
    sample.add(record(request={"messages": messages, "params": {}}))
    assert sample.texts == ["the follow-up"]


def test_no_user_text_is_no_prompt_text() -> None:
    sample = WindowSample()
    sample.add(record(request={"messages": [{"role": "system", "content": "x"}], "params": {}}))
    sample.add(record(request={"messages": [{"role": "user", "content": "   "}], "params": {}}))
    assert sample.texts == []
    assert sample.texts_seen == 0
    assert values(sample, "messages") == [1.0, 1.0]


def test_a_failed_call_skips_what_it_does_not_have() -> None:
    sample = WindowSample()
    sample.add(record())
    sample.add(failed(400, "invalid_request"))
    assert values(sample, "prompt_tokens") == [31.0]  # not 0 for the failure
    assert values(sample, "completion_tokens") == [12.0]
    assert values(sample, "ttft_ms") == [420.0]
    assert sample.seen["prompt_tokens"] == 1
    assert sample.seen["ttft_ms"] == 1
    assert sample.seen["latency_ms"] == 2
    assert sample.calls == 2
    assert sample.errors == 1
    assert dict(sample.categorical["finish_reason"]) == {"stop": 1, NONE: 1}
    assert dict(sample.categorical["status_class"]) == {"2xx": 1, "4xx": 1}


def test_usage_without_a_field_skips_that_field() -> None:
    sample = WindowSample()
    sample.add(record(usage={"prompt_tokens": 9}))
    assert values(sample, "prompt_tokens") == [9.0]
    assert values(sample, "completion_tokens") == []
    assert sample.seen["completion_tokens"] == 0


@pytest.mark.parametrize("bad", [True, False, float("nan"), "12", None, [3], {"v": 1}])
def test_only_real_numbers_are_numbers(bad: object) -> None:
    sample = WindowSample()
    sample.add(record(latency_ms=bad, ttft_ms=bad, usage={"prompt_tokens": bad}))
    assert values(sample, "latency_ms") == []
    assert values(sample, "ttft_ms") == []
    assert values(sample, "prompt_tokens") == []
    assert sample.seen["latency_ms"] == 0


def test_integers_and_floats_are_taken() -> None:
    sample = WindowSample()
    sample.add(record(latency_ms=12, ttft_ms=0.5))
    assert values(sample, "latency_ms") == [12.0]
    assert values(sample, "ttft_ms") == [0.5]


def test_status_classes() -> None:
    sample = WindowSample()
    for status in (200, 201, 401, 429, 500, 503):
        sample.add(record(status=status))
    sample.add(record(status=None))
    sample.add(record(status="500"))
    assert dict(sample.categorical["status_class"]) == {"2xx": 2, "4xx": 2, "5xx": 2, NONE: 2}
    assert sample.errors == 4


def test_errors_and_content_filter_are_counted() -> None:
    sample = WindowSample()
    sample.add(record())
    sample.add(record(finish_reason="content_filter"))  # the answer was filtered
    sample.add(failed(400, "content_filter"))  # the prompt was filtered
    sample.add(failed(429, "rate_limited"))
    sample.add(failed(502, "upstream_error"))
    sample.add(record(error="content_filter"))  # not an error object: not counted
    assert sample.calls == 6
    assert sample.errors == 3
    assert sample.content_filtered == 2
    assert sample.categorical["finish_reason"]["content_filter"] == 1
    assert sample.rate(sample.errors) == pytest.approx(0.5)
    assert sample.rate(sample.content_filtered) == pytest.approx(2 / 6)


def test_rejected_key_records_count_as_no_consumer() -> None:
    sample = WindowSample()
    sample.add(failed(401, "invalid_api_key", consumer=None, model=None, deployment=None))
    assert dict(sample.categorical["consumer"]) == {NONE: 1}
    assert dict(sample.categorical["model"]) == {NONE: 1}
    assert dict(sample.categorical["deployment"]) == {NONE: 1}


def test_records_without_content_give_no_text_features() -> None:
    sample = WindowSample()
    sample.add(record(request={"params": {"temperature": 0.2}}, response=None))
    assert values(sample, "prompt_chars") == []
    assert values(sample, "messages") == []
    assert sample.seen["prompt_chars"] == sample.seen["messages"] == 0
    assert sample.texts == []
    assert values(sample, "prompt_tokens") == [31.0]  # usage is still logged
    assert values(sample, "latency_ms") == [1250.0]


def test_malformed_parts_are_ignored_not_fatal() -> None:
    sample = WindowSample()
    sample.add(record(request="not an object", usage=[1, 2]))
    sample.add(record(request={"messages": "nope"}))
    sample.add(record(request={"messages": ["x", {"role": "user", "content": 7}]}))
    sample.add({})
    assert sample.calls == 4
    assert values(sample, "messages") == [2.0]
    assert values(sample, "prompt_chars") == [0.0]
    assert values(sample, "prompt_tokens") == [31.0, 31.0]
    assert sample.texts == []


def test_no_text_sample_keeps_no_texts() -> None:
    sample = WindowSample(text_sample=0)
    sample.add(record())
    assert sample.texts == []
    assert values(sample, "prompt_chars") != []


def test_the_reservoir_keeps_at_most_max_rows_and_counts_all() -> None:
    sample = WindowSample(max_rows=1000, seed=3)
    for i in range(100_000):
        sample.add({"latency_ms": float(i)})
    kept = values(sample, "latency_ms")
    assert len(kept) == 1000
    assert sample.seen["latency_ms"] == 100_000
    assert len(set(kept)) == 1000  # each value offered once, kept at most once
    # A uniform sample of 0..99999 has mean 50000 and standard error about 913.
    assert abs(statistics.fmean(kept) - 50_000) < 5_000
    assert sum(v >= 90_000 for v in kept) > 50  # late values are kept too (about 100)
    assert sum(v < 10_000 for v in kept) > 50  # and early ones stay (about 100)


def test_the_reservoir_through_records() -> None:
    sample = WindowSample(max_rows=100)
    for i in range(1000):
        sample.add(record(latency_ms=float(i)))
    assert len(values(sample, "latency_ms")) == 100
    assert sample.seen["latency_ms"] == 1000
    assert sample.calls == 1000
    assert max(values(sample, "latency_ms")) > 500


def test_the_reservoir_is_deterministic_per_seed() -> None:
    def kept(seed: int) -> list[float]:
        sample = WindowSample(max_rows=10, seed=seed)
        for i in range(1000):
            sample.add({"ttft_ms": float(i)})
        return values(sample, "ttft_ms")

    assert kept(1) == kept(1)
    assert kept(1) != kept(2)


def test_categories_are_capped_the_rest_is_other() -> None:
    sample = WindowSample()
    for i in range(MAX_CATEGORIES + 50):
        sample.add(record(consumer=f"team-{i}"))
    sample.add(record(consumer="team-0"))  # a known value still counts as itself
    counts = sample.categorical["consumer"]
    assert len(counts) == MAX_CATEGORIES + 1
    assert counts[OTHER] == 50
    assert counts["team-0"] == 2
    assert f"team-{MAX_CATEGORIES}" not in counts
    assert sum(counts.values()) == sample.calls


def test_the_text_reservoir_is_bounded() -> None:
    sample = WindowSample(text_sample=20)
    for i in range(500):
        sample.add(record(request={"messages": [{"role": "user", "content": f"q {i}"}]}))
    assert len(sample.texts) == 20
    assert sample.texts_seen == 500
    assert len(set(sample.texts)) == 20
    assert any(int(t.split()[1]) >= 20 for t in sample.texts)  # not just the first twenty


def test_rate_of_an_empty_window_is_none() -> None:
    sample = WindowSample()
    assert sample.rate(0) is None
    sample.add(record())
    sample.add(record())
    assert sample.rate(1) == 0.5


# Batches (the hot path) and merging workers' samples


def test_a_batch_gives_what_one_by_one_gives() -> None:
    from llmops.drift.records import call_of

    records = [
        record(latency_ms=float(i), consumer=f"team-{i % 3}", status=200 + (i % 2) * 300)
        for i in range(50)
    ]
    one_by_one, batch = WindowSample(), WindowSample()
    for r in records:
        one_by_one.add(r)
    batch.add_calls([call_of(r) for r in records])
    assert values(one_by_one, "latency_ms") == values(batch, "latency_ms")
    assert one_by_one.categorical == batch.categorical
    assert (one_by_one.calls, one_by_one.errors) == (batch.calls, batch.errors) == (50, 25)


def test_merging_parts_under_the_cap_keeps_every_value() -> None:
    parts = [WindowSample(seed=n) for n in range(3)]
    for i in range(300):
        parts[i % 3].add(record(latency_ms=float(i), consumer=f"team-{i % 7}"))
    merged = merge(parts)
    assert sorted(values(merged, "latency_ms")) == [float(i) for i in range(300)]
    assert merged.seen["latency_ms"] == 300
    assert merged.calls == 300
    assert sum(merged.categorical["consumer"].values()) == 300
    assert len(merged.texts) == 300 and merged.texts_seen == 300


def test_merging_reservoirs_draws_in_proportion_to_what_each_part_saw() -> None:
    small, large = WindowSample(max_rows=1000, seed=1), WindowSample(max_rows=1000, seed=2)
    for i in range(10_000):
        small.add({"latency_ms": float(i)})  # 0 .. 9,999
    for i in range(30_000):
        large.add({"latency_ms": 100_000.0 + i})  # 100,000 .. 129,999
    merged = merge([small, large])
    kept = values(merged, "latency_ms")
    assert len(kept) == 1000 and len(set(kept)) == 1000
    assert merged.seen["latency_ms"] == 40_000
    from_small = sum(v < 100_000 for v in kept)
    # hypergeometric: mean 250, standard deviation about 12
    assert 200 < from_small < 300


def test_merging_caps_categories_across_parts() -> None:
    one, two = WindowSample(), WindowSample()
    for i in range(MAX_CATEGORIES):
        one.add(record(consumer=f"a-{i}"))
    for i in range(10):
        two.add(record(consumer=f"b-{i}"))
    two.add(record(consumer="a-0"))
    counts = merge([one, two]).categorical["consumer"]
    assert counts[OTHER] == 10 and counts["a-0"] == 2
    assert len(counts) == MAX_CATEGORIES + 1


def test_decoding_a_batch_counts_what_it_skips() -> None:
    import orjson

    good = [
        record(request_id=f"r{i}", received_at=f"2026-11-22T13:0{i}:00.000000Z") for i in range(3)
    ]
    lines = [orjson.dumps(r) for r in good]
    lines += [
        orjson.dumps(good[0]),  # a duplicate
        b"{not json",
        b"[1, 2]",  # JSON, not an object
        b"",
        orjson.dumps({**good[1], "schema_version": 2, "request_id": "x"}),
        orjson.dumps({**good[1], "request_id": "late", "received_at": "2026-11-22T15:00:00Z"}),
        # an odd shape is still a record: what has the wrong shape is left out
        orjson.dumps({**good[2], "request_id": "odd", "usage": [1, 2], "request": "x"}),
    ]
    stats = ReadStats()
    calls = calls_in(b"\n".join(lines), "2026-11-22T13:00:00", "2026-11-22T14:00:00", set(), stats)
    assert [c.request_id for c in calls] == ["r0", "r1", "r2", "odd"]
    assert (stats.lines, stats.corrupt, stats.unknown_schema, stats.duplicates) == (9, 2, 1, 1)
    assert stats.records == 4 and stats.blobs == 1
    assert calls[3].usage is None and calls[3].request is None
    assert calls[0].usage is not None and calls[0].usage.prompt_tokens == 31


def test_calls_are_counted_by_the_registry_version_that_served_them() -> None:
    def served(version: str) -> dict[str, Any]:
        registry = {"kind": "model", "name": "support-bot", "alias": "champion"}
        return record(registry={**registry, "version": version})

    one, two = WindowSample(), WindowSample()
    for _ in range(3):
        one.add(served("1"))
    one.add(record())  # a model not served from the registry: not counted
    two.add(served("2"))
    two.add(served("1"))
    assert one.versions == {"support-bot v1": 3}
    assert merge([one, two]).versions == {"support-bot v1": 4, "support-bot v2": 1}
