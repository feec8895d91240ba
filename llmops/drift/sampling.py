"""Read the windows' records into `WindowSample`s, in worker processes when there are many.

Parsing JSON and extracting features is CPU work under the GIL: a day of traffic (a million
records, 3 GB) takes about 25 s of one core on the build machine. With more than one CPU the
hour partitions of each window are shared out among worker processes (started with `spawn`,
never `fork`: the Functions worker and `llmops serve` run threads). Each worker opens its own
store from the settings, reads its hours, and returns its sample and read counts; the parent
merges them (`features.merge`). A replayed batch lands in its records' hour, so deduplicating
request ids per worker loses nothing.

Small windows, one CPU, `LLMOPS_DRIFT_WORKERS=1` or a store that does not come from the
settings (tests inject one) read in the calling process.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing import get_context

from llmops.drift.features import WindowSample, merge
from llmops.drift.records import calls_in
from llmops.drift.schedule import Window
from llmops.logs.reader import ReadStats, WindowReader, bounds
from llmops.logs.store import LogStore, store_for
from llmops.settings import DriftSettings, LogSettings

log = logging.getLogger("llmops.drift")
PARALLEL_MIN_BLOBS = 32  # fewer batch blobs in all: not worth starting processes
MAX_AUTO_WORKERS = 4


@dataclass
class _Part:
    """One worker's share of one window: whole hour partitions."""

    window: int
    names: list[str]
    low: str
    high: str
    seed: int


def worker_count(drift: DriftSettings) -> int:
    """Processes to read with: the setting, or one per CPU (at most 4) when it is 0."""
    if drift.workers:
        return drift.workers
    return max(1, min(os.cpu_count() or 1, MAX_AUTO_WORKERS))


async def sample_windows(
    windows: list[Window],
    store: LogStore,
    drift: DriftSettings,
    logs: LogSettings | None,
) -> list[tuple[WindowSample, ReadStats]]:
    """A sample and read counts per window; `logs` opens the store in workers (None: no workers)."""
    reader = WindowReader(store)
    hours = [await reader.names(w.start, w.end) for w in windows]
    workers = worker_count(drift)
    blobs = sum(len(names) for per_window in hours for names in per_window)
    if logs is not None and workers > 1 and blobs >= PARALLEL_MIN_BLOBS:
        try:
            return await _in_workers(windows, hours, drift, logs, workers)
        except (BrokenProcessPool, OSError, RuntimeError) as exc:
            # e.g. a host whose main module cannot be imported again by `spawn`
            log.warning("drift workers failed (%r); reading in this process", exc)
    results = []
    for window, per_window in zip(windows, hours, strict=True):
        low, high = bounds(window.start, window.end)
        sample = WindowSample(max_rows=drift.max_rows, text_sample=drift.text_sample)
        stats = ReadStats()
        for names in per_window:
            await _feed(store, names, low, high, sample, stats)
        results.append((sample, stats))
    return results


async def _in_workers(
    windows: list[Window],
    hours: list[list[list[str]]],
    drift: DriftSettings,
    logs: LogSettings,
    workers: int,
) -> list[tuple[WindowSample, ReadStats]]:
    parts: list[_Part] = []
    for index, (window, per_window) in enumerate(zip(windows, hours, strict=True)):
        low, high = bounds(window.start, window.end)
        shares: list[list[str]] = [[] for _ in range(workers)]
        # the busiest hours first, each to the least loaded share
        for names in sorted(per_window, key=len, reverse=True):
            min(shares, key=len).extend(names)
        parts += [
            _Part(index, names, low, high, seed=len(parts) + n)
            for n, names in enumerate(shares)
            if names
        ]
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        reads = [
            loop.run_in_executor(pool, _read_part, logs, drift.max_rows, drift.text_sample, p)
            for p in parts
        ]
        # meanwhile this process, idle, imports what the analysis needs (seconds of a run)
        await asyncio.to_thread(import_statistics)
        done = await asyncio.gather(*reads)
    results = []
    for index in range(len(windows)):
        mine = [result for part, result in zip(parts, done, strict=True) if part.window == index]
        if not mine:
            empty = WindowSample(max_rows=drift.max_rows, text_sample=drift.text_sample)
            results.append((empty, ReadStats()))
            continue
        stats = ReadStats()
        for _, part_stats in mine:
            stats.add(part_stats)
        results.append((merge([sample for sample, _ in mine]), stats))
    return results


def import_statistics() -> None:
    """Import the libraries `analysis.analyse` uses (scipy.stats, scikit-learn)."""
    import scipy.spatial.distance
    import scipy.stats
    import sklearn.feature_extraction.text
    import sklearn.linear_model
    import sklearn.metrics
    import sklearn.model_selection

    del scipy, sklearn


def _read_part(
    logs: LogSettings, max_rows: int, text_sample: int, part: _Part
) -> tuple[WindowSample, ReadStats]:
    """In a worker process: read one share of a window."""
    return asyncio.run(_read(logs, max_rows, text_sample, part))


async def _read(
    logs: LogSettings, max_rows: int, text_sample: int, part: _Part
) -> tuple[WindowSample, ReadStats]:
    store = store_for(logs)
    try:
        sample = WindowSample(max_rows=max_rows, text_sample=text_sample, seed=part.seed)
        stats = ReadStats()
        await _feed(store, part.names, part.low, part.high, sample, stats)
        return sample, stats
    finally:
        await store.aclose()


async def _feed(
    store: LogStore, names: list[str], low: str, high: str, sample: WindowSample, stats: ReadStats
) -> None:
    """Add the calls of these blobs to `sample`. Request ids are deduplicated across the blobs
    given, so all the blobs of an hour partition go to one `_feed` (a replayed batch lands in
    its records' hour)."""
    seen: set[str] = set()
    for name in names:
        sample.add_calls(calls_in(await store.get(name), low, high, seen, stats))
