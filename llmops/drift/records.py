"""Decode request-log batches for the drift monitor: only the fields it reads.

A record is about 3 KB, most of it the completion, which drift never looks at. `msgspec`
decodes each line straight into a `Call` that declares the fields the features need and skips
the rest without building Python objects for them: about twice as fast as parsing whole records
(`orjson.loads`) on the build machine (docs/benchmarks.md). Loosely typed fields stay `Any`,
so a record with an odd value still counts, as it does through the dict-based `WindowReader`.
"""

from __future__ import annotations

from typing import Any

import msgspec

from llmops.logs.reader import ReadStats
from llmops.logs.record import SCHEMA_VERSION


class Message(msgspec.Struct):
    """A chat message of the request: who wrote it and its content (text or parts)."""

    role: Any = None
    content: Any = None


class Request(msgspec.Struct):
    """The request as logged: only its messages (its parameters are skipped)."""

    messages: list[Message] | None = None


class Usage(msgspec.Struct):
    """The token counts drift compares."""

    prompt_tokens: Any = None
    completion_tokens: Any = None


class Call(msgspec.Struct):
    """The fields of a request-log record (docs/request-log.md) the drift features use."""

    schema_version: Any = None
    request_id: Any = None
    received_at: Any = None
    status: Any = None
    error: Any = None
    finish_reason: Any = None
    usage: Usage | None = None
    latency_ms: Any = None
    ttft_ms: Any = None
    request: Request | None = None
    model: Any = None
    deployment: Any = None
    consumer: Any = None
    registry: Any = None


# The same fields, each any JSON value: for the rare record whose usage or request has an
# odd shape (then `_tighten` keeps what it can).
_FIELDS = Call.__struct_fields__
_LooseCall = msgspec.defstruct("_LooseCall", [(name, Any, None) for name in _FIELDS])


_DECODER = msgspec.json.Decoder(Call)
_LOOSE = msgspec.json.Decoder(_LooseCall)


def _tighten(loose: Any) -> Call:
    """A `Call` from a loosely decoded record: what does not have the expected shape is left
    out (a non-object usage, a request without a list of messages), and a message that is not
    an object still counts as a message, without text."""
    usage = loose.usage
    request = loose.request
    messages = request.get("messages") if type(request) is dict else None
    return Call(
        **{name: getattr(loose, name) for name in _FIELDS if name not in ("usage", "request")},
        usage=Usage(usage.get("prompt_tokens"), usage.get("completion_tokens"))
        if type(usage) is dict
        else None,
        request=Request(
            [
                Message(m.get("role"), m.get("content")) if type(m) is dict else Message()
                for m in messages
            ]
        )
        if type(messages) is list
        else None,
    )


def call_of(record: dict[str, Any]) -> Call:
    """A parsed record as a `Call` (tests and other callers holding dicts)."""
    return _tighten(_LooseCall(**{name: record.get(name) for name in _FIELDS}))


def calls_in(data: bytes, low: str, high: str, seen: set[str], stats: ReadStats) -> list[Call]:
    """The calls of one batch blob received within `[low, high)` and not in `seen`.

    Counts as `WindowReader.parse` does: lines, corrupt lines (not JSON, or not an object),
    unknown schema versions, duplicates by request id, records.
    """
    stats.blobs += 1
    try:
        calls = _DECODER.decode_lines(data)
        stats.lines += len(calls)
    except (msgspec.DecodeError, msgspec.ValidationError):  # a bad line: decode one by one
        calls = []
        for line in data.splitlines():
            if not line or line.isspace():
                continue
            stats.lines += 1
            try:
                calls.append(_DECODER.decode(line))
            except msgspec.ValidationError:  # JSON, but an odd shape: decode it loosely
                try:
                    calls.append(_tighten(_LOOSE.decode(line)))
                except msgspec.ValidationError:  # not an object
                    stats.corrupt += 1
            except msgspec.DecodeError:
                stats.corrupt += 1
    found = []
    for call in calls:
        if call.schema_version != SCHEMA_VERSION:
            stats.unknown_schema += 1
            continue
        received = call.received_at
        if type(received) is not str or not low <= received < high:
            continue
        request_id = call.request_id
        if type(request_id) is str:
            if request_id in seen:
                stats.duplicates += 1
                continue
            seen.add(request_id)
        found.append(call)
    stats.records += len(found)
    return found
