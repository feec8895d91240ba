"""How long the request log's flush keeps the event loop from the calls it serves.

    .venv/bin/python bench/flush_stalls.py [--rounds 7] [--records 500]

At concurrency 1 each call needs a few turns of the loop, and each turn can wait behind
whatever background work holds the loop at that moment: the longest such stretch bounds what
the request log adds to a call's p99. This measures it directly, in one process, on the loop
`llmops serve` runs (uvloop when installed): a batch of `--records` finished calls
(`bench/request_log_writer.py`'s) is flushed to a local store while a probe task takes every
turn it can get and notes how long it waited for each, in the loop thread's CPU time (which
the hypervisor's steal does not lengthen, unlike wall time).

Sides, alternating within each round, each a fresh writer:

- **sliced**: the writer as shipped: records built in slices, and once the blobs exist the
  records, their JSON lines and the calls freed a slice at a time (`llmops.slices.release`);
- **at once**: the same writer with everything the blobs were made from freed in one go (the
  list emptied at once), as it was before session 9.

Prints a table: the longest wait per flush and the 99th percentile of waits (median and p99
over rounds), turns per flush, and the ratio sliced / at once of the longest wait per round.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from request_log_writer import finished_call  # noqa: E402

from llmops.logs import writer as writer_module  # noqa: E402
from llmops.logs.store import LocalStore  # noqa: E402
from llmops.logs.writer import RequestLogWriter  # noqa: E402
from llmops.redact import Redactor  # noqa: E402
from llmops.settings import LogSettings  # noqa: E402
from llmops.slices import Slices, release  # noqa: E402


async def at_once(items: list[Any], slices: Slices) -> None:
    """The baseline: the list emptied in one go, so everything in it is freed in one turn."""
    items.clear()


async def waits_during_flush(records: int, folder: Path) -> list[float]:
    """The probe's waits (loop thread CPU seconds) while one batch of `records` is flushed."""
    settings = LogSettings(local_dir=str(folder), spool_dir=str(folder / "spool"))
    writer = RequestLogWriter(settings, LocalStore(folder, settings.container), Redactor())
    writer.add(finished_call(records))
    await writer.flush()  # as in a server that has flushed before: the store's thread exists
    for n in range(records):
        writer.add(finished_call(n))
    waits: list[float] = []
    done = False

    async def probe() -> None:
        while not done:
            before = time.thread_time()
            await asyncio.sleep(0)
            waits.append(time.thread_time() - before)

    task = asyncio.create_task(probe())
    await asyncio.sleep(0)
    await writer.flush()
    done = True
    await task
    assert writer.stats["written"] == records + 1, writer.stats
    return waits


def run(main: Coroutine[Any, Any, list[float]]) -> list[float]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--records", type=int, default=500)
    args = parser.parse_args()
    sides: dict[str, Callable[[list[Any], Slices], Coroutine[Any, Any, None]]] = {
        "sliced": release,
        "at once": at_once,
    }
    longest: dict[str, list[float]] = {side: [] for side in sides}
    p99: dict[str, list[float]] = {side: [] for side in sides}
    turns: dict[str, list[int]] = {side: [] for side in sides}
    ratios = []
    with tempfile.TemporaryDirectory() as tmp:
        run(waits_during_flush(args.records, Path(tmp) / "warm-up"))
        for index in range(args.rounds):
            order = list(sides) if index % 2 == 0 else list(sides)[::-1]
            for side in order:
                writer_module.release = sides[side]  # type: ignore[assignment]
                waits = sorted(run(waits_during_flush(args.records, Path(tmp) / f"{side}{index}")))
                longest[side].append(waits[-1] * 1000)
                p99[side].append(waits[int(len(waits) * 0.99)] * 1000)
                turns[side].append(len(waits))
            ratios.append(longest["sliced"][-1] / longest["at once"][-1])
    writer_module.release = release

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, int(len(ordered) * q))]

    print(f"flush of {args.records} records, {args.rounds} rounds; waits in loop-thread CPU ms")
    print("| side | longest wait p50 | longest wait p99 | wait p99 (p50) | turns (p50) |")
    print("| --- | --- | --- | --- | --- |")
    for side in sides:
        print(
            f"| {side} | {statistics.median(longest[side]):.3f} | {pct(longest[side], 0.99):.3f}"
            f" | {statistics.median(p99[side]):.3f} | {statistics.median(turns[side]):.0f} |"
        )
    print(f"longest wait, sliced / at once (median of rounds): x{statistics.median(ratios):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
