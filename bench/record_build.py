"""What building one request-log record costs, with redaction's shallow fast path and without.

    .venv/bin/python bench/record_build.py            # 7 rounds of 5,000 records per side

Each round times, per side, `build_record` + `orjson.dumps` of the same finished chat calls
(`bench/request_log_writer.py`'s: a system and a user message, a ~100-character answer):

- **fast**: the redactor as shipped (`Redactor.value` takes a list of flat dicts or a flat
  dict with comprehensions, deeper values through the iterative walk);
- **baseline**: the same redactor with `value` forced through the iterative walk alone
  (`_walk_deep`), as every value went before the fast path.

Sides alternate within each round. Prints a table: per-record time (median and p99 over the
rounds' per-record means) and the ratio fast / baseline per round (median).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from request_log_writer import finished_call  # noqa: E402

from llmops.logs.record import build_record  # noqa: E402
from llmops.redact import Redactor  # noqa: E402


def timed(infos: list[Any], redactor: Redactor) -> float:
    """Mean microseconds per record over `infos`."""
    started = time.perf_counter()
    for info in infos:
        orjson.dumps(build_record(info, redactor, content=True, instance="bench"))
    return (time.perf_counter() - started) / len(infos) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--records", type=int, default=5_000)
    args = parser.parse_args()
    infos = [finished_call(n) for n in range(args.records)]
    fast = Redactor("mask")
    baseline = Redactor("mask")
    walk_deep: Callable[[object, Any], object] = baseline._walk_deep
    object.__setattr__(baseline, "_walk", walk_deep)  # a frozen dataclass
    timed(infos[:500], fast)  # warm-up: regexes, short-string cache
    timed(infos[:500], baseline)
    results: dict[str, list[float]] = {"fast": [], "baseline": []}
    for round_ in range(args.rounds):
        order = (("fast", fast), ("baseline", baseline))
        for name, redactor in order if round_ % 2 == 0 else order[::-1]:
            results[name].append(timed(infos, redactor))
    ratios = [f / b for f, b in zip(results["fast"], results["baseline"], strict=True)]

    def p99(values: list[float]) -> float:
        return sorted(values)[min(len(values) - 1, round(0.99 * (len(values) - 1)))]

    print(f"{args.rounds} rounds x {args.records:,} records per side, sides alternating")
    print()
    print("| side     | us per record, median | p99 of the rounds | fast / baseline (median) |")
    print("| -------- | --------------------- | ----------------- | ------------------------ |")
    for name in ("baseline", "fast"):
        ratio = f"x{statistics.median(ratios):.2f}" if name == "fast" else ""
        med, top = statistics.median(results[name]), p99(results[name])
        print(f"| {name:<8} | {med:21.1f} | {top:17.1f} | {ratio:<24} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
