"""Read the request-log records of a time window, streaming, one batch blob at a time.

Only the hour partitions that overlap the window are listed. Lines that are not JSON objects
are skipped and counted; records of a schema version this code does not know are skipped and
counted too; a request id seen twice (a replayed batch that also landed) is yielded once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
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


class WindowReader:
    """Yields the records received in `[start, end)`; `stats` counts what was skipped."""

    def __init__(self, store: LogStore) -> None:
        self.store = store
        self.stats = ReadStats()

    async def records(self, start: datetime, end: datetime) -> AsyncIterator[dict[str, Any]]:
        """Every record with `start <= received_at < end`, oldest partition first."""
        start, end = start.astimezone(UTC), end.astimezone(UTC)  # records are stamped in UTC
        low, high = start.strftime(TIMESTAMP_FORMAT), end.strftime(TIMESTAMP_FORMAT)
        seen: set[str] = set()
        for prefix in hour_prefixes(start, end):
            for name in await self.store.list(prefix):
                self.stats.blobs += 1
                data = await self.store.get(name)
                for line in data.splitlines():
                    if not line.strip():
                        continue
                    self.stats.lines += 1
                    record = _parse(line)
                    if record is None:
                        self.stats.corrupt += 1
                        continue
                    if record.get("schema_version") != SCHEMA_VERSION:
                        self.stats.unknown_schema += 1
                        continue
                    received = record.get("received_at")
                    if not isinstance(received, str) or not low <= received < high:
                        continue
                    request_id = record.get("request_id")
                    if isinstance(request_id, str):
                        if request_id in seen:
                            self.stats.duplicates += 1
                            continue
                        seen.add(request_id)
                    self.stats.records += 1
                    yield record


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None
