"""Instructions per call: the floor, the gateway and the gateway with its request log, counted
by valgrind, which a noisy machine cannot disturb.

    .venv/bin/python bench/instructions.py [--calls 1000] [--repeat 1] [--only chat|stream]

On a shared machine the hypervisor takes 10-50% of the CPU at times, and wall-clock figures
(requests/s, added latency) move by up to 2x from one minute to the next. `valgrind
--tool=callgrind` instead counts the instructions a process executes: the same code doing the
same work gives the same count (to about 0.1% here) whatever else the machine is doing. It
counts user-space instructions only (not the kernel's work in system calls) and runs the
process ~50x slower, so it measures cost per call, not latency or throughput.

Each side runs under callgrind behind the same nginx upstream (`gateway_overhead.py`'s), gets
300 warm-up calls, has its counters zeroed (`callgrind_control -z`), serves `--calls` calls
one after another on one keep-alive connection (concurrency 1), and has its counters dumped:
instructions / calls. The sides:

- **floor**: `floor_proxy.py` (uvicorn + Starlette + aiohttp, forwarding the raw body);
- **gateway**: `llmops serve`, request log off;
- **gateway+log**: the same with the request log on, writing JSON Lines to a temp folder, and
  traces on, sent over OTLP to nginx (standing in for an MLflow server). Only the gateway's
  own process is counted: its children (the record builder, `LLMOPS_LOG_PROCESS`, and the
  trace exporter) are not; `gateway_overhead.py`'s CPU per request includes them.
  Batches are cut by size only (`LLMOPS_LOG_FLUSH_S=60`, 500 records a batch), so that
  valgrind's slowdown does not change how many records a batch holds.

Needs valgrind (Debian's package); the script says so and exits when it is missing.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _runner import (
    BIN,
    CHAT_REQUEST,
    OUT,
    PROXY_CHAT,
    STREAM_REQUEST,
    Processes,
    free_port,
    python_env,
    start_nginx,
    wait_ok,
)

WARM_UP = 300
SIDES = ("floor", "gateway", "gateway+log")


def proxy_argv(
    side: str, port: int, upstream: str, store: Path
) -> tuple[list[str], dict[str, str]]:
    """The command and environment that serve `side` on `port` (what gateway_overhead runs)."""
    python = str(BIN / "python")
    if side == "floor":
        env = {**python_env(), "FLOOR_UPSTREAM_URL": upstream}
        argv = [python, "-m", "uvicorn", "--app-dir", str(Path(__file__).parent), "floor_proxy:app"]
        argv += ["--port", str(port), "--no-access-log", "--log-level", "warning"]
        return [*argv, "--no-proxy-headers", "--no-server-header"], env
    ours = ("LLMOPS_", "AZURE_", "OPENAI", "AzureWebJobs", "FUNCTIONS_", "APPLICATIONINSIGHTS_")
    env = {k: v for k, v in python_env().items() if not k.startswith(ours)}
    env.update(OPENAI_BASE_URL=upstream, LLMOPS_UPSTREAM="openai")
    logged = side == "gateway+log"  # the request log, and traces over OTLP to nginx
    env.update(
        LLMOPS_REQUEST_LOG="on" if logged else "off", LLMOPS_TRACING="on" if logged else "off"
    )
    env.update(MLFLOW_TRACKING_URI=upstream.removesuffix("/v1"), MLFLOW_EXPERIMENT_NAME="bench")
    env.update(LLMOPS_LOCAL_STORE_DIR=str(store), LLMOPS_SPOOL_DIR=str(store / "spool"))
    env.update(LLMOPS_LOG_FLUSH_S="60", LLMOPS_LOG_BATCH_RECORDS="500")
    argv = [python, "-m", "llmops.cli", "serve", "--port", str(port), "--log-level", "warning"]
    return argv, env


def post(conn: http.client.HTTPConnection, body: bytes, calls: int) -> None:
    """`calls` chat calls, one after another, each read to its end."""
    for _ in range(calls):
        conn.request("POST", PROXY_CHAT, body, {"content-type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200 or not payload:
            raise RuntimeError(f"the proxy answered {response.status}: {payload[:200]!r}")


def total_instructions(dump: Path) -> int:
    """The `totals:` (or `summary:`) line of a callgrind dump."""
    for line in reversed(dump.read_text().splitlines()):
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {dump}")


def count(procs: Processes, side: str, stream: bool, calls: int, upstream: str) -> float:
    """Instructions per call of `side` serving `calls` calls under callgrind."""
    work = Path(tempfile.mkdtemp(prefix="instr-", dir=OUT))
    port = free_port()
    argv, env = proxy_argv(side, port, upstream, work / "store")
    out = work / "callgrind.%p"
    pid = procs.start(
        f"callgrind-{side}",
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
        env,
    )
    body = STREAM_REQUEST if stream else CHAT_REQUEST
    try:
        wait_ok(procs, pid, (port, PROXY_CHAT), CHAT_REQUEST, limit_s=180)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        post(conn, body, WARM_UP)
        subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
        post(conn, body, calls)
        subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
        conn.close()
        dumps: list[Path] = []
        deadline = time.monotonic() + 30
        while not dumps and time.monotonic() < deadline:
            dumps = [p for p in work.glob(f"callgrind.{pid}.*") if p.stat().st_size]
            time.sleep(0.2)
        if not dumps:
            raise RuntimeError(f"callgrind wrote no dump for {side} in {work}")
        return total_instructions(max(dumps, key=lambda p: p.stat().st_mtime)) / calls
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=1000, help="measured calls per side (1000)")
    parser.add_argument("--repeat", type=int, default=1, help="counts per side and kind (1)")
    parser.add_argument("--only", choices=("chat", "stream"), help="one kind of call")
    args = parser.parse_args()
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind is not installed: apt-get install valgrind", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    (OUT / "logs").mkdir(exist_ok=True)
    kinds = [args.only] if args.only else ["chat", "stream"]
    results: dict[tuple[str, str], list[float]] = {}
    upstream_procs = Processes(OUT / "logs")
    try:
        nginx_dir = Path(tempfile.mkdtemp(prefix="instr-nginx-", dir=OUT))
        upstream = f"http://127.0.0.1:{start_nginx(upstream_procs, nginx_dir)}/v1"
        for round_ in range(args.repeat):
            for kind in kinds:
                for side in SIDES:
                    procs = Processes(OUT / "logs")
                    per_call = count(procs, side, kind == "stream", args.calls, upstream)
                    results.setdefault((kind, side), []).append(per_call)
                    print(f"round {round_ + 1} {kind} {side}: {per_call:,.0f} instructions/call")
    finally:
        upstream_procs.stop_all()
    print()
    print(table(results, kinds))
    return 0


def table(results: dict[tuple[str, str], list[float]], kinds: list[str]) -> str:
    """Markdown: instructions per call (the rounds' median; spread: (max - min) / median)."""
    rows = [
        "| call   | side        | instructions / call | spread | vs floor | vs gateway |",
        "| ------ | ----------- | ------------------- | ------ | -------- | ---------- |",
    ]
    for kind in kinds:
        floor = statistics.median(results[(kind, "floor")])
        gateway = statistics.median(results[(kind, "gateway")])
        for side in SIDES:
            values = results[(kind, side)]
            value = statistics.median(values)
            spread = f"{(max(values) - min(values)) / value:.2%}" if len(values) > 1 else "-"
            versus_gateway = f"x{value / gateway:.3f}" if side == "gateway+log" else ""
            rows.append(
                f"| {kind:<6} | {side:<11} | {value:>19,.0f} | {spread:>6} "
                f"| x{value / floor:.3f}   | {versus_gateway:<10} |"
            )
    return "\n".join(rows)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
