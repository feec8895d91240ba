"""Building the request-log record: streams reassembled, usage reported or estimated."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from llmops.gateway.service import Attempt, CallInfo
from llmops.logs import layout
from llmops.logs.layout import batch_name, hour_prefixes, iso, parse_iso
from llmops.logs.record import build_record
from llmops.redact import Redactor

pytestmark = pytest.mark.unit


def sse(*events: object) -> list[bytes]:
    data = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    return [data[:37], data[37:120], data[120:], b"data: [DONE]\n\n"]  # split mid-event


def info(**fields: object) -> CallInfo:
    call = CallInfo(
        request_id="r1",
        route="openai",
        trace_id="t" * 32,
        consumer="team-a",
        model="gpt-4o",
        deployment="gpt-4o",
        status=200,
    )
    call.request_body = {
        "model": "gpt-4o",
        "temperature": 0.2,
        "user": "bob@example.com",
        "messages": [{"role": "user", "content": "call +44 20 7946 0958"}],
    }
    call.first_byte = call.started + 0.05
    call.done = call.started + 0.2
    for name, value in fields.items():
        setattr(call, name, value)
    return call


def test_stream_is_reassembled_with_tool_calls_and_usage() -> None:
    chunks = sse(
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "c1",
                                "function": {"name": "get_", "arguments": '{"ci'},
                            }
                        ]
                    },
                }
            ]
        },
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "function": {"name": "weather", "arguments": 'ty": 1}'}}
                        ]
                    },
                    "finish_reason": "tool_calls",
                }
            ]
        },
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 4,
                "total_tokens": 13,
                "prompt_tokens_details": {"cached_tokens": 2},
            },
        },
    )
    record = build_record(info(stream=True, chunks=chunks), Redactor(), content=True, instance="i")
    [choice] = record["response"]["choices"]
    assert choice["content"] == "Hello" and choice["finish_reason"] == "tool_calls"
    assert choice["tool_calls"] == [
        {
            "id": "c1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": 1}'},
        }
    ]
    assert record["usage"] == {
        "prompt_tokens": 9,
        "completion_tokens": 4,
        "total_tokens": 13,
        "cached_tokens": 2,
        "estimated": False,
    }
    assert record["latency_ms"] == pytest.approx(200, abs=0.01)
    assert record["ttft_ms"] == pytest.approx(50, abs=0.01)


def test_usage_is_estimated_and_flagged_when_the_upstream_has_none() -> None:
    chunks = sse(
        {"choices": [{"index": 0, "delta": {"content": "x" * 40}, "finish_reason": "stop"}]}
    )
    record = build_record(info(stream=True, chunks=chunks), Redactor(), content=True, instance="i")
    # "call +44 20 7946 0958" = 21 chars -> 6 tokens + 4 for the message; 40 chars -> 10
    assert record["usage"] == {
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "total_tokens": 20,
        "cached_tokens": None,
        "estimated": True,
    }


def test_everything_persisted_is_redacted() -> None:
    body = (
        b'{"choices": [{"index": 0, "message": {"role": "assistant", "content": '
        b'"Reach bob@example.com"}, "finish_reason": "stop"}]}'
    )
    record = build_record(info(response_body=body), Redactor(), content=True, instance="i")
    text = json.dumps(record)
    assert "bob@example.com" not in text and "7946" not in text
    assert record["request"]["params"] == {"model": "gpt-4o", "temperature": 0.2, "user": "[EMAIL]"}


def test_content_off_keeps_no_text() -> None:
    body = b'{"choices": [{"index": 0, "message": {"content": "secret plan"}}]}'
    record = build_record(
        info(response_body=body), Redactor(mode="off"), content=False, instance="i"
    )
    assert record["response"] is None
    assert record["request"] == {"params": {"model": "gpt-4o", "temperature": 0.2}}
    assert "secret plan" not in json.dumps(record)


def test_errors_and_attempts() -> None:
    body = (
        b'{"error": {"message": "Rate limit for key sk-proj-4fJ9xQ2mB7kLp0Zr8TvWcY1n", '
        b'"type": "rate_limit_error", "code": "429"}}'
    )
    call = info(
        response_body=body, status=429, attempts=[Attempt("a", 429, None, 0.25), Attempt("a", 429)]
    )
    record = build_record(call, Redactor(), content=True, instance="i")
    assert record["error"]["code"] == "429" and "4fJ9xQ2m" not in record["error"]["message"]
    assert (record["retries"], record["fallbacks"]) == (1, 0)
    assert record["attempts"][0] == {
        "deployment": "a",
        "status": 429,
        "error": None,
        "waited_ms": 250.0,
    }


def test_timestamps_match_strftime_across_interleaved_and_many_seconds() -> None:
    def reference(ts: float) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    # a batch's received and done times alternate between seconds; then more seconds than
    # are remembered; then a fraction that rounds up to the next second
    base = 1795356000.0
    stamps = [base + 0.25, base + 1.75] * 3 + [base + n + 0.000001 for n in range(200)]
    for ts in stamps:
        assert iso(ts) == reference(ts)
    assert iso(base + 0.9999996) == "2026-11-22T14:00:01.000000Z"
    assert len(layout._SECONDS) <= layout._SECONDS_KEPT


def test_layout_partitions_by_hour() -> None:
    stamp = iso(1795356000.5)  # 2026-11-22T14:00:00.5Z
    assert stamp == "2026-11-22T14:00:00.500000Z" and parse_iso(stamp).timestamp() == 1795356000.5
    assert batch_name(stamp, "host-1", 7) == "v1/date=2026-11-22/hour=14/host-1-0000000007.jsonl"
    start, end = parse_iso("2026-11-22T22:30:00.000000Z"), parse_iso("2026-11-23T01:00:00.000000Z")
    assert list(hour_prefixes(start, end)) == [
        "v1/date=2026-11-22/hour=22/",
        "v1/date=2026-11-22/hour=23/",
        "v1/date=2026-11-23/hour=00/",
    ]


async def test_usage_chunk_is_stripped_from_crlf_streams_too() -> None:
    from llmops.gateway.http import _relay
    from llmops.gateway.service import Gateway
    from llmops.gateway.upstream import UpstreamResponse
    from llmops.settings import Settings

    events = [
        {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}},
    ]
    wire = b"".join(b"data: " + json.dumps(e).encode() + b"\r\n\r\n" for e in events)
    wire += b"data: [DONE]\r\n\r\n"

    async def chunks() -> Any:
        for start in range(0, len(wire), 7):  # boundaries fall inside "\r\n" pairs too
            yield wire[start : start + 7]

    gateway = Gateway(Settings.from_env({"LLMOPS_UPSTREAM": "mock", "LLMOPS_REQUEST_LOG": "off"}))
    call = info(stream=True)
    relayed = b"".join(
        [
            part
            async for part in _relay(
                UpstreamResponse(200, {}, chunks=chunks()), call, gateway, strip_usage=True
            )
        ]
    )
    assert b'"usage"' not in relayed
    assert relayed.count(b"data: ") == 2 and relayed.endswith(b"data: [DONE]\n\n")
    assert b"".join(call.chunks) == wire  # the record still sees the usage
