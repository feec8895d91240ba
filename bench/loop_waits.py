"""What the request log makes a call wait for the event loop, at concurrency 1.

    .venv/bin/python bench/loop_waits.py [--rounds 5] [--calls 3000]

A call at concurrency 1 needs about four turns of the loop (its request, the upstream write,
the upstream answer, its response), and at each it can wait behind whatever else the loop
runs first: that wait is what the request log adds to a call's latency, and its tail is what
it adds to p99. This measures it in one process, on the loop `llmops serve` runs (uvloop
when installed), in the loop thread's CPU time, which the hypervisor's steal does not
lengthen (wall-clock p99 on this shared machine moves by milliseconds between minutes).

Each side serves `--calls` calls one after another. A call spins ~0.3 ms of CPU over four
turns (about the gateway's own work per call here), then, as the gateway does, hands a
finished call (`bench/request_log_writer.py`'s) to the writer. The CPU time that passes
between yielding a turn and getting it back is counted as the call's wait. Sides, alternating
within each round:

- **no log**: the same calls, no writer (the loop's own cost of a turn: the baseline);
- **log**: a `RequestLogWriter` with its default batches (500 records or 1 s) into a local
  store, closed (last batch written) at the end of the side.

Prints a table: per-call wait in ms, median and p99 over all calls of all rounds, the longest,
and the p99 excess of the log over no log.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _report import pct  # noqa: E402
from request_log_writer import finished_call  # noqa: E402

from llmops.logs.store import LocalStore  # noqa: E402
from llmops.logs.writer import RequestLogWriter  # noqa: E402
from llmops.redact import Redactor  # noqa: E402
from llmops.settings import LogSettings  # noqa: E402

TURNS = 4  # turns of the loop per call
WORK_S = 0.3e-3 / TURNS  # the call's own CPU per turn


def spin(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


async def serve(calls: int, folder: Path | None) -> list[float]:
    """Each call's wait for the loop (CPU seconds), with a writer into `folder` if given."""
    writer = None
    if folder is not None:
        settings = LogSettings(local_dir=str(folder), spool_dir=str(folder / "spool"))
        writer = RequestLogWriter(settings, LocalStore(folder, settings.container), Redactor())
    waits = []
    for n in range(calls):
        waited = 0.0
        for _ in range(TURNS):
            spin(WORK_S)
            before = time.thread_time()
            await asyncio.sleep(0)
            waited += time.thread_time() - before
        if writer is not None:
            writer.add(finished_call(n))
        waits.append(waited)
    if writer is not None:
        await writer.aclose()
        assert writer.stats["written"] == calls, writer.stats
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args()
    waits: dict[str, list[float]] = {"no log": [], "log": []}
    with tempfile.TemporaryDirectory() as tmp:
        run(serve(500, Path(tmp) / "warm-up"))
        for index in range(args.rounds):
            for side in ("no log", "log") if index % 2 == 0 else ("log", "no log"):
                folder = Path(tmp) / f"round{index}" if side == "log" else None
                waits[side] += run(serve(args.calls, folder))

    def ms(values: list[float], q: float) -> float:
        return pct(values, q) * 1000

    print(f"{args.rounds} rounds of {args.calls} calls at concurrency 1; wait per call, CPU ms")
    print("| side | p50 | p99 | longest |")
    print("| --- | --- | --- | --- |")
    for side, values in waits.items():
        print(f"| {side} | {ms(values, 50):.3f} | {ms(values, 99):.3f} | {ms(values, 100):.3f} |")
    excess = ms(waits["log"], 99) - ms(waits["no log"], 99)
    print(f"p99 excess of the log: +{excess:.3f} ms")
    ratio = statistics.median(waits["log"]) / statistics.median(waits["no log"])
    print(f"median wait, log / no log: x{ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
