"""Reading windows in worker processes gives the sample that one process reads.

Real stores (a local folder and Azurite), real `spawn` worker processes, the settings the
workers open their store from. Also: corrupt and duplicated records are counted the same way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from llmops.drift import sampling
from llmops.drift.features import CATEGORICAL, NUMERIC, WindowSample
from llmops.drift.schedule import Window
from llmops.logs.layout import batch_name
from llmops.logs.reader import ReadStats
from llmops.logs.store import store_for
from llmops.settings import Settings
from tests.fakes.azurite import Azurite
from tests.fakes.records import traffic, write_records

pytestmark = pytest.mark.integration
HOUR = timedelta(hours=1)
NOW = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
REFERENCE = Window(NOW - 12 * HOUR, NOW - HOUR)
CURRENT = Window(NOW - HOUR, NOW)


def seed(config: Settings) -> None:
    """12 hours of traffic in batches of 20 (over 32 blobs), plus a duplicate and bad lines."""

    async def go() -> None:
        store = store_for(config.logs)
        records = []
        for hour in range(12, 0, -1):
            start = NOW - hour * HOUR
            records += traffic(start, start + HOUR, 60, shifted=hour == 1, seed=hour)
        await write_records(store, records, batch=20)
        # a replayed batch that also landed, and a blob with a corrupt and a foreign line
        replay = records[100:110]
        lines = b"".join(orjson.dumps(r) + b"\n" for r in replay)
        await store.put(batch_name(replay[0]["received_at"], "replay", 1), lines)
        odd = b'{"schema_version": 1, "received_at": "x"\n[1, 2]\n{"schema_version": 99}\n'
        await store.put(batch_name(replay[0]["received_at"], "odd", 1), odd)
        await store.aclose()

    asyncio.run(go())


def sample(config: Settings, workers: int) -> list[tuple[WindowSample, ReadStats]]:
    drift = dataclasses.replace(config.drift, workers=workers)

    async def go() -> list[tuple[WindowSample, ReadStats]]:
        store = store_for(config.logs)
        try:
            return await sampling.sample_windows([REFERENCE, CURRENT], store, drift, config.logs)
        finally:
            await store.aclose()

    return asyncio.run(go())


def assert_same(one: WindowSample, other: WindowSample) -> None:
    assert (one.calls, one.errors, one.content_filtered) == (
        other.calls,
        other.errors,
        other.content_filtered,
    )
    for name in NUMERIC:
        assert sorted(one.numeric[name]) == sorted(other.numeric[name]), name
        assert one.seen[name] == other.seen[name]
    for name in CATEGORICAL:
        assert one.categorical[name] == other.categorical[name], name
    assert sorted(one.texts) == sorted(other.texts)
    assert one.texts_seen == other.texts_seen


def check_workers_match_one_process(config: Settings) -> None:
    seed(config)
    alone = sample(config, workers=1)
    shared = sample(config, workers=2)
    for (a, a_stats), (b, b_stats) in zip(alone, shared, strict=True):
        assert a.calls > 0
        assert_same(a, b)
        assert a_stats == b_stats
    reference_stats = alone[0][1]
    assert reference_stats.blobs >= sampling.PARALLEL_MIN_BLOBS
    assert reference_stats.duplicates == 10
    assert reference_stats.corrupt == 2  # the unterminated object and the array
    assert reference_stats.unknown_schema == 1


def test_workers_read_the_local_store_as_one_process_does() -> None:
    config = Settings.from_env({**os.environ, "LLMOPS_DRIFT_TEXT_SAMPLE": "100000"})
    check_workers_match_one_process(config)


def test_workers_read_azurite_as_one_process_does() -> None:
    with Azurite() as azurite:
        env = {**os.environ, "AzureWebJobsStorage": azurite.connection_string}
        config = Settings.from_env({**env, "LLMOPS_DRIFT_TEXT_SAMPLE": "100000"})
        check_workers_match_one_process(config)


def test_a_worker_start_failure_falls_back_to_one_process(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = Settings.from_env(dict(os.environ))
    seed(config)
    alone = sample(config, workers=1)

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("An attempt has been made to start a new process ...")

    monkeypatch.setattr(sampling, "ProcessPoolExecutor", broken)
    fallback = sample(config, workers=2)
    for (a, _), (b, _) in zip(alone, fallback, strict=True):
        assert_same(a, b)


def test_few_blobs_are_read_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    config = Settings.from_env(dict(os.environ))

    async def go() -> None:
        store = store_for(config.logs)
        await write_records(store, traffic(NOW - HOUR, NOW, 30, seed=1), batch=200)
        await store.aclose()

    asyncio.run(go())

    def no_pool(*args: object, **kwargs: object) -> None:
        raise AssertionError("no worker process for a few blobs")

    monkeypatch.setattr(sampling, "ProcessPoolExecutor", no_pool)
    (_, _), (current, stats) = sample(config, workers=4)
    assert current.calls == 30 and stats.blobs == 1
