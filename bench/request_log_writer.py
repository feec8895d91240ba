"""Request-log writer benchmark: sustained records/s into Azurite, and memory during an outage.

    .venv/bin/python bench/request_log_writer.py [--records 20000] [--outage-s 60] [--rate 500]
                                                 [--outage-builder child|loop]

1. Throughput: N finished calls are added to a `RequestLogWriter` backed by Azurite and flushed;
   records/s is measured end to end (build, redact, serialise, upload), with the records built
   in the builder child (`LLMOPS_LOG_PROCESS=on`, the default) and on the event loop (`off`),
   alternating. The floor, measured in the same run, uploads the same number of
   already-serialised bytes in the same batch sizes straight through the blob SDK: the ratio
   says what the writer's own work costs.
2. Outage: Azurite is stopped; calls are added at `--rate` per second for `--outage-s` seconds
   (records built in the child unless `--outage-builder loop`); the process's peak RSS and the
   writer's pending calls (to build, in the child, or built) are sampled; Azurite comes back,
   the spool is replayed, and every record is checked to be in the store exactly once.
Needs `npm ci` (Azurite in node_modules). Prints a table; exit status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llmops.gateway.service import CallInfo  # noqa: E402
from llmops.logs.reader import WindowReader  # noqa: E402
from llmops.logs.record import build_record  # noqa: E402
from llmops.logs.store import BlobStore  # noqa: E402
from llmops.logs.writer import RequestLogWriter  # noqa: E402
from llmops.redact import Redactor  # noqa: E402
from llmops.settings import LogSettings  # noqa: E402
from tests.fakes.azurite import Azurite  # noqa: E402

PROMPT = (
    "Summarise the attached incident report for the on-call channel and list the "
    "three most likely root causes, citing log lines where you can."
)
ANSWER = (
    b'{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"The outage began '
    b'at 14:02 when the connection pool was exhausted; retries then amplified the load."},'
    b'"finish_reason":"stop"}],"usage":{"prompt_tokens":48,"completion_tokens":24,'
    b'"total_tokens":72}}'
)


def finished_call(n: int) -> CallInfo:
    info = CallInfo(
        request_id=f"{uuid.uuid4().hex}",
        route="openai",
        trace_id=f"{n:032x}",
        consumer="team-a",
        model="gpt-4o",
        deployment="gpt-4o",
        upstream="azure",
        status=200,
    )
    info.request_body = {
        "model": "gpt-4o",
        "temperature": 0.2,
        "messages": [
            {"role": "system", "content": "You are concise."},
            {"role": "user", "content": PROMPT},
        ],
    }
    info.response_body = ANSWER
    info.first_byte = info.done = info.started + 0.35
    return info


def rss_mb() -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return (int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024)


def settings(azurite: Azurite, spool: str, **extra: object) -> LogSettings:
    base = LogSettings(
        connection_string=azurite.connection_string,
        container=f"bench-{uuid.uuid4().hex[:10]}",
        spool_dir=spool,
    )
    return LogSettings(**{**base.__dict__, **extra})


async def count_in_store(logs: LogSettings) -> tuple[int, int]:
    store = BlobStore(logs)
    reader = WindowReader(store)
    now = datetime.now(UTC)
    count = 0
    async for _ in reader.records(now - timedelta(hours=2), now + timedelta(hours=1)):
        count += 1
    await store.aclose()
    return count, reader.stats.duplicates


async def throughput(azurite: Azurite, spool: str, records: int, process: bool) -> dict[str, float]:
    logs = settings(azurite, spool, process=process)
    writer = RequestLogWriter(logs, BlobStore(logs), Redactor())
    calls = [finished_call(n) for n in range(records)]
    started = time.perf_counter()
    for index, info in enumerate(calls):
        writer.add(info)
        if index % logs.batch_records == 0:
            await asyncio.sleep(0)  # as between requests
    await writer.aclose()
    writer_s = time.perf_counter() - started
    stored, duplicates = await count_in_store(logs)
    # Floor: the same record bytes, already built, in the same batch sizes, straight through
    # the SDK: what the upload alone costs.
    redactor = Redactor()
    lines = [
        orjson.dumps(build_record(finished_call(n), redactor, content=True, instance="i")) + b"\n"
        for n in range(records)
    ]
    floor_logs = settings(azurite, spool)
    store = BlobStore(floor_logs)
    started = time.perf_counter()
    for batch in range(0, records, logs.batch_records):
        data = b"".join(lines[batch : batch + logs.batch_records])
        await store.put(f"v1/date=x/hour=y/floor-{batch:010d}.jsonl", data)
    floor_s = time.perf_counter() - started
    await store.aclose()
    return {
        "writer_rps": records / writer_s,
        "floor_rps": records / floor_s,
        "stored": stored,
        "duplicates": duplicates,
    }


async def outage(
    azurite: Azurite, spool: str, seconds: float, rate: int, process: bool
) -> dict[str, float]:
    logs = settings(azurite, spool, retry_s=2.0, upload_timeout_s=2.0, process=process)
    writer = RequestLogWriter(logs, BlobStore(logs), Redactor())
    writer.add(finished_call(0))
    await writer.flush()  # the container exists before the outage
    gc.collect()
    base_rss = rss_mb()[0]
    azurite.stop()
    samples: list[tuple[float, int]] = []
    total = 1
    started = time.perf_counter()
    tick = 1.0 / rate
    while time.perf_counter() - started < seconds:
        due = int((time.perf_counter() - started) / tick) + 1
        while total < due:
            writer.add(finished_call(total))
            total += 1
        samples.append((rss_mb()[0], writer._pending()))
        await asyncio.sleep(0.01)
    azurite.start()
    await asyncio.sleep(logs.retry_s + 0.1)
    recovered = time.perf_counter()
    await writer.aclose()
    replay_s = time.perf_counter() - recovered
    stored, duplicates = await count_in_store(logs)
    return {
        "calls": total,
        "peak_rss_growth_mb": max(s[0] for s in samples) - base_rss,
        "max_buffer": max(s[1] for s in samples),
        "spooled": writer.stats["spooled"],
        "replay_s": replay_s,
        "stored": stored,
        "duplicates": duplicates,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--outage-s", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--outage-builder", choices=["child", "loop"], default="child")
    args = parser.parse_args()
    spool = tempfile.mkdtemp(prefix="llmops-bench-spool-")
    with Azurite() as azurite:
        rounds: dict[bool, list[dict[str, float]]] = {True: [], False: []}
        for _ in range(args.rounds):
            for process in (True, False):
                rounds[process].append(
                    asyncio.run(throughput(azurite, spool, args.records, process))
                )
        process = args.outage_builder == "child"
        down = asyncio.run(outage(azurite, spool, args.outage_s, args.rate, process))
    child = statistics.median(r["writer_rps"] for r in rounds[True])
    loop = statistics.median(r["writer_rps"] for r in rounds[False])
    floor = statistics.median(r["floor_rps"] for r in rounds[True] + rounds[False])
    lost = [
        r for r in rounds[True] + rounds[False] if r["stored"] != args.records or r["duplicates"]
    ]
    rows = [
        (
            f"writer -> Azurite, records/s, built in the child (median of {args.rounds})",
            f"{child:,.0f}",
            ">= 5,000",
            "pass" if child >= 5000 else "FAIL",
        ),
        (
            f"writer -> Azurite, records/s, built on the loop (median of {args.rounds})",
            f"{loop:,.0f}",
            ">= 5,000",
            "pass" if loop >= 5000 else "FAIL",
        ),
        ("floor: SDK upload of the same record bytes, records/s", f"{floor:,.0f}", "", ""),
        ("writer (child) / floor", f"x{child / floor:.2f}", "", ""),
        (
            "every record stored exactly once (throughput rounds)",
            "yes" if not lost else "NO",
            "yes",
            "pass" if not lost else "FAIL",
        ),
        (
            f"outage {args.outage_s:g} s at {args.rate}/s ({args.outage_builder}): calls",
            f"{down['calls']:,.0f}",
            "",
            "",
        ),
        ("outage: peak RSS growth", f"{down['peak_rss_growth_mb']:.1f} MB", "bounded", ""),
        (
            "outage: most calls pending in the writer",
            f"{down['max_buffer']:,.0f} records",
            "<= LLMOPS_LOG_BUFFER_RECORDS",
            "pass" if down["max_buffer"] <= 10_000 else "FAIL",
        ),
        (
            "outage: spooled, then replayed in",
            f"{down['spooled']:,.0f} in {down['replay_s']:.1f} s",
            "",
            "",
        ),
        (
            "outage: stored exactly once",
            f"{down['stored']:,.0f} / {down['calls']:,.0f}, {down['duplicates']:.0f} duplicates",
            "all, 0",
            "pass" if down["stored"] == down["calls"] and not down["duplicates"] else "FAIL",
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in [("measure", "value", "target", "result"), *rows]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
    return 0 if all(r[3] != "FAIL" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
