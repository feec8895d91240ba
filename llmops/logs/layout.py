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


_SECONDS: dict[int, str] = {}  # recent whole seconds, formatted ("YYYY-MM-DDTHH:MM:SS.")
_SECONDS_KEPT = 64


def iso(ts: float) -> str:
    """A Unix time as the record's fixed-width UTC timestamp (microseconds, `Z`).

    The seconds are formatted once and remembered (a record's received and done times differ
    by its latency, and a batch's records share a few seconds): `strftime` costs ten times
    the rest."""
    second = int(ts // 1)
    micros = round((ts - second) * 1_000_000)
    if micros == 1_000_000:
        second, micros = second + 1, 0
    text = _SECONDS.get(second)
    if text is None:
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        moment = datetime.fromtimestamp(second, UTC)
        text = _SECONDS[second] = moment.strftime("%Y-%m-%dT%H:%M:%S.")
    return text + str(1_000_000 + micros)[1:] + "Z"  # zero-padded: cheaper than a format


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
