"""Read the request-log records of a time window, streaming, one batch blob at a time.

Only the hour partitions that overlap the window are listed. Lines that are not JSON objects
are skipped and counted; records of a schema version this code does not know are skipped and
counted too; a request id seen twice (a replayed batch that also landed) is yielded once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from llmops.logs.layout import TIMESTAMP_FORMAT, hour_prefixes
from llmops.logs.record import SCHEMA_VERSION
from llmops.logs.store import LogStore


@dataclass
class ReadStats:
    """What a window read met on its way."""

    blobs: int = 0
    lines: int = 0
    records: int = 0
    corrupt: int = 0
    unknown_schema: int = 0
    duplicates: int = 0

    def add(self, other: ReadStats) -> None:
        """Count another reader's figures in (a share of the same window read elsewhere)."""
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))


class WindowReader:
    """Yields the records received in `[start, end)`; `stats` counts what was skipped."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.stats = ReadStats()

    async def records(self, start: datetime, end: datetime) -> AsyncIterator[dict[str, Any]]:
        """Every record with `start <= received_at < end`, oldest partition first."""
        low, high = bounds(start, end)
        seen: set[str] = set()
        for prefix in hour_prefixes(start, end):
            for name in await self.store.list(prefix):
                data = await self.store.get(name)
                for record in self.parse(data, low, high, seen):
                    yield record

    async def names(self, start: datetime, end: datetime) -> list[list[str]]:
        """The batch blobs that can hold the window's records, one list per hour partition."""
        return [await self.store.list(prefix) for prefix in hour_prefixes(start, end)]

    def parse(self, data: bytes, low: str, high: str, seen: set[str]) -> Iterator[dict[str, Any]]:
        """The records of one batch blob received within `[low, high)`, not in `seen`."""
        stats = self.stats
        stats.blobs += 1
        loads, error = orjson.loads, orjson.JSONDecodeError
        for line in data.splitlines():
            if not line or line.isspace():
                continue
            stats.lines += 1
            try:
                record = loads(line)
            except error:
                stats.corrupt += 1
                continue
            if type(record) is not dict:
                stats.corrupt += 1
                continue
            if record.get("schema_version") != SCHEMA_VERSION:
                stats.unknown_schema += 1
                continue
            received = record.get("received_at")
            if type(received) is not str or not low <= received < high:
                continue
            request_id = record.get("request_id")
            if type(request_id) is str:
                if request_id in seen:
                    stats.duplicates += 1
                    continue
                seen.add(request_id)
            stats.records += 1
            yield record


def bounds(start: datetime, end: datetime) -> tuple[str, str]:
    """`[start, end)` as the record timestamps' text, which sorts as the times do."""
    start, end = start.astimezone(UTC), end.astimezone(UTC)  # records are stamped in UTC
    return start.strftime(TIMESTAMP_FORMAT), end.strftime(TIMESTAMP_FORMAT)
