"""Where records live: Hive-style hour partitions, so readers list a time window cheaply.

`v1/date=2026-11-22/hour=14/<instance>-<seq>.jsonl`: Databricks Auto Loader and Spark read the
`date` and `hour` columns from the path. One blob per flushed batch and hour; its name is
fixed before the first upload attempt, so a retry or a replay overwrites, never duplicates.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

LAYOUT_VERSION = "v1"
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"  # fixed width: strings sort like the instants


_last_second: tuple[int, str] = (-1, "")  # the last whole second formatted (one tuple: atomic)


def iso(ts: float) -> str:
    """A Unix time as the record's fixed-width UTC timestamp (microseconds, `Z`)."""
    second = int(ts // 1)
    micros = round((ts - second) * 1_000_000)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    global _last_second
    cached = _last_second
    if cached[0] != second:  # records of one batch mostly share their seconds
        text = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached = _last_second = (second, text)
    return f"{cached[1]}.{micros:06d}Z"


def parse_iso(value: str) -> datetime:
    """The inverse of `iso`."""
    return datetime.strptime(value, TIMESTAMP_FORMAT).replace(tzinfo=UTC)


def hour_prefix(moment: datetime) -> str:
    """The partition folder holding records received in `moment`'s hour."""
    moment = moment.astimezone(UTC)
    return f"{LAYOUT_VERSION}/date={moment:%Y-%m-%d}/hour={moment:%H}/"


def batch_name(received_at: str, instance: str, sequence: int) -> str:
    """The blob name of one batch, partitioned by the hour of its records' `received_at`."""
    day, hour = received_at[:10], received_at[11:13]
    return f"{LAYOUT_VERSION}/date={day}/hour={hour}/{instance}-{sequence:010d}.jsonl"


def hour_prefixes(start: datetime, end: datetime) -> Iterator[str]:
    """Every partition folder that can hold a record received in `[start, end)`."""
    moment = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    end = end.astimezone(UTC)
    while moment < end:
        yield hour_prefix(moment)
        moment += timedelta(hours=1)
