"""What exporting one MLflow trace costs the gateway's process: MLflow's client vs OTLP batches.

    .venv/bin/python bench/trace_export.py    # 3 rounds: 300 traces (client), 1,500 (OTLP)

Starts a real `mlflow server` (SQLite store in a temporary folder, one worker) on 127.0.0.1 and
sends it the same kind of traces two ways, each into its own experiment:

- **mlflow client**: `MlflowTraceSink` (LLMOPS_TRACE_EXPORT=mlflow): a worker thread turns each
  record into a trace with MLflow's Python client, whose own threads export it, one trace at a
  time; `flush()` waits until MLflow's export queue is drained;
- **otlp**: `OtlpTraceSink` (LLMOPS_TRACE_EXPORT=otlp, the default for http(s):// stores): spans
  built on the event loop, POSTed in batches to the server's `/v1/traces`; `aflush()` waits
  until they are sent. All its rounds run on one asyncio event loop.

Records are built like `bench/record_build.py`'s (a system and a user message, a ~100-character
answer, redacted), each with its own random trace id, so each is its own trace. Each side first
exports a warm-up batch (mlflow import, experiment lookup or creation, connections: not counted).
A round hands a side its records in batches of 100 and times, until the flush returns, the CPU
time of this whole process (`time.process_time()`: every thread, the server excluded) and the
wall time. Sides alternate. Prints a line per round, then a table: CPU per trace (median and
worst round), traces/s (wall, median: mostly the server's pace) and the ratio otlp / mlflow
client of CPU per trace (median of the per-round ratios), and the CPU the process uses idle
(both sinks alive, measured for 3 s after the warm-up), which every round's figure includes.
Then counts the traces in each experiment; exit status 1 if a count differs from the records
sent (warm-up included), a flush timed out, or a sink counted errors or drops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from request_log_writer import finished_call  # noqa: E402

from llmops.logs.record import build_record  # noqa: E402
from llmops.redact import Redactor  # noqa: E402
from llmops.settings import TraceSettings  # noqa: E402
from llmops.tracing.mlflow_sink import MlflowTraceSink  # noqa: E402
from llmops.tracing.otlp import OtlpTraceSink  # noqa: E402

BIN = Path(sys.executable).parent
WARM_UP = 50  # records per side before the first round
CHUNK = 100  # records per sink(...) call, as the request-log writer hands them over
FLUSH_S = 600.0
IDLE_S = 3.0  # idle CPU measured for this long after the warm-up
HEALTH_S = 120.0  # the server's first start (database migrations) can take ~20 s
MLFLOW, OTLP = "mlflow client", "otlp"
Record = dict[str, Any]


def records(count: int) -> list[Record]:
    """`count` redacted request-log records, each with its own random trace id."""
    redactor = Redactor("mask")
    built = []
    for n in range(count):
        record = build_record(finished_call(n), redactor, content=True, instance="bench")
        record["trace_id"] = f"{random.getrandbits(128):032x}"
        built.append(record)
    return built


def chunks(batch: list[Record]) -> list[list[Record]]:
    return [batch[start : start + CHUNK] for start in range(0, len(batch), CHUNK)]


# --- the server -----------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    command = [
        str(BIN / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--default-artifact-root",
        str(folder / "artifacts"),
        "--workers",
        "1",
    ]
    with (folder / "server.log").open("wb") as log_file:
        server = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
            start_new_session=True,
        )
    return server, f"http://127.0.0.1:{port}"


def wait_healthy(server: subprocess.Popen[bytes], url: str, folder: Path) -> float:
    """Seconds until GET /health answered 200; raises if the server exits or never does."""
    started = time.monotonic()
    while time.monotonic() - started < HEALTH_S:
        if server.poll() is not None:
            break
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.25)
    tail = (folder / "server.log").read_text(errors="replace")[-3000:]
    raise RuntimeError(f"mlflow server at {url} did not become healthy:\n{tail}")


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group, SIGKILL after 10 s."""
    for sig, wait_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:
            pass
        try:
            server.wait(wait_s)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the group's other processes (uvicorn's worker) too
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


# --- the two sides --------------------------------------------------------------------------
def settings(url: str, experiment: str, export: Literal["otlp", "mlflow"]) -> TraceSettings:
    return TraceSettings(
        tracking_uri=url,
        experiment_name=experiment,
        queue_records=100_000,
        flush_timeout_s=FLUSH_S,
        export=export,
    )


class MlflowSide:
    """`MlflowTraceSink`: MLflow's Python client, on the sink's thread and MLflow's own."""

    def __init__(self, url: str, experiment: str) -> None:
        self.sink = MlflowTraceSink(settings(url, experiment, "mlflow"))
        self.flushed = True

    def send(self, batch: list[Record]) -> tuple[float, float]:
        """CPU seconds (this process) and wall seconds from handing over to flushed."""
        cpu, wall = time.process_time(), time.perf_counter()
        for chunk in chunks(batch):
            self.sink(chunk)
        self.flushed &= self.sink.flush(FLUSH_S)
        return time.process_time() - cpu, time.perf_counter() - wall

    def close(self) -> None:
        self.sink.close(60)


class OtlpSide:
    """`OtlpTraceSink` on one asyncio event loop, kept for every round."""

    def __init__(self, url: str, experiment: str) -> None:
        self.runner = asyncio.Runner()
        self.sink = self.runner.run(self._create(settings(url, experiment, "otlp")))
        self.flushed = True

    @staticmethod
    async def _create(trace_settings: TraceSettings) -> OtlpTraceSink:
        return OtlpTraceSink(trace_settings)  # created inside the running loop

    async def _send(self, batch: list[Record]) -> tuple[float, float]:
        cpu, wall = time.process_time(), time.perf_counter()
        for chunk in chunks(batch):
            self.sink(chunk)
        self.flushed &= await self.sink.aflush(FLUSH_S)
        return time.process_time() - cpu, time.perf_counter() - wall

    def send(self, batch: list[Record]) -> tuple[float, float]:
        return self.runner.run(self._send(batch))

    def close(self) -> None:
        try:
            self.runner.run(self.sink.aclose(60))
        finally:
            self.runner.close()


def count_traces(url: str, experiment: str) -> int:
    """Traces in `experiment`, counted page by page."""
    import mlflow

    client = mlflow.MlflowClient(url)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return 0
    total, token = 0, None
    while True:
        page = client.search_traces(
            locations=[found.experiment_id],
            max_results=500,
            include_spans=False,
            page_token=token,
        )
        total += len(page)
        token = page.token
        if not token:
            return total


# --- the run ---------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mlflow-records", type=int, default=300, help="traces per round")
    parser.add_argument("--otlp-records", type=int, default=1_500, help="traces per round")
    args = parser.parse_args()
    # Before mlflow is imported (by the sink's thread): MLflow's export queue must hold a whole
    # round (its default drops traces beyond 1,000), and no telemetry threads in either process.
    os.environ["MLFLOW_ASYNC_TRACE_LOGGING_MAX_QUEUE_SIZE"] = "100000"
    os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
    counts = {MLFLOW: args.mlflow_records, OTLP: args.otlp_records}
    # Every record, built before the server starts: none of it is measured.
    batches = {
        name: (records(WARM_UP), [records(count) for _ in range(args.rounds)])
        for name, count in counts.items()
    }
    suffix = uuid.uuid4().hex[:8]
    experiments = {MLFLOW: f"bench-mlflow-client-{suffix}", OTLP: f"bench-otlp-{suffix}"}
    cpu: dict[str, list[float]] = {MLFLOW: [], OTLP: []}  # microseconds per trace, per round
    rate: dict[str, list[float]] = {MLFLOW: [], OTLP: []}  # traces per wall second, per round
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-trace-export-") as tmp:
        folder = Path(tmp)
        server, url = start_server(folder)
        try:
            ready_s = wait_healthy(server, url, folder)
            sides: dict[str, MlflowSide | OtlpSide] = {}
            try:
                sides[MLFLOW] = MlflowSide(url, experiments[MLFLOW])
                sides[OTLP] = OtlpSide(url, experiments[OTLP])
                for name, side in sides.items():
                    side.send(batches[name][0])  # warm-up
                # What the process burns doing nothing, both sinks alive (their threads, the
                # idle loop): part of every round's CPU, more so the longer a round waits.
                idle_cpu, idle_wall = time.process_time(), time.perf_counter()
                time.sleep(IDLE_S)
                idle = (time.process_time() - idle_cpu) / (time.perf_counter() - idle_wall)
                for round_ in range(args.rounds):
                    order = (MLFLOW, OTLP) if round_ % 2 == 0 else (OTLP, MLFLOW)
                    for name in order:
                        seconds, wall = sides[name].send(batches[name][1][round_])
                        cpu[name].append(seconds / counts[name] * 1e6)
                        rate[name].append(counts[name] / wall)
                        print(
                            f"round {round_ + 1} {name}: {cpu[name][-1]:,.0f} us CPU per trace, "
                            f"{rate[name][-1]:,.1f} traces/s",
                            flush=True,
                        )
            finally:
                for side in sides.values():
                    side.close()
            sent = {name: WARM_UP + args.rounds * count for name, count in counts.items()}
            stored = {name: count_traces(url, experiments[name]) for name in sides}
        finally:
            stop_server(server)
    import mlflow

    ratios = [o / m for o, m in zip(cpu[OTLP], cpu[MLFLOW], strict=True)]
    print(
        f"mlflow {mlflow.__version__} server on 127.0.0.1 (SQLite, 1 worker; healthy after "
        f"{ready_s:.0f} s), {os.cpu_count()} CPUs; {args.rounds} rounds, sides alternating; "
        f"warm-up {WARM_UP} traces per side, not counted"
    )
    print()
    print(
        "| side          | traces per round | CPU us per trace, median | worst round "
        "| traces/s (wall), median | otlp / mlflow client, CPU (median) |"
    )
    print(
        "| ------------- | ---------------- | ------------------------ | ----------- "
        "| ----------------------- | ---------------------------------- |"
    )
    for name in (MLFLOW, OTLP):
        ratio = f"x{statistics.median(ratios):.3f}" if name == OTLP else ""
        print(
            f"| {name:<13} | {counts[name]:16,} | {statistics.median(cpu[name]):24,.0f} "
            f"| {max(cpu[name]):11,.0f} | {statistics.median(rate[name]):23,.1f} "
            f"| {ratio:<34} |"
        )
    print()
    print("CPU: time.process_time() of this process (all its threads; not the server's),")
    print("from handing the records to the sink until its flush returned. Idle, both sinks")
    print(f"alive, the process used {idle * 1e3:.2f} ms CPU per second of wall time.")
    print()
    for name, side in sides.items():
        ok = stored[name] == sent[name]
        print(
            f"check {name}: {stored[name]:,} traces in experiment {experiments[name]!r}, "
            f"{sent[name]:,} sent: {'ok' if ok else 'MISMATCH'}; sink stats {side.sink.stats}"
        )
        if not ok:
            problems.append(f"{name}: {stored[name]} traces stored, {sent[name]} sent")
        if side.sink.stats["errors"] or side.sink.stats["dropped"]:
            problems.append(f"{name}: sink stats {side.sink.stats}")
        if not side.flushed:
            problems.append(f"{name}: a flush timed out after {FLUSH_S:.0f} s")
    for problem in problems:
        print(f"FAILED: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
