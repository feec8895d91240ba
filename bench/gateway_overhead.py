"""What the gateway adds on top of its upstream: latency, throughput, streaming, memory, start-up.

    .venv/bin/python bench/gateway_overhead.py [--quick] [--duration S] [--rounds N] [--litellm]

Everything runs on 127.0.0.1 with free ports, and every process started is stopped at the end.
nginx is the zero-delay upstream and a uvicorn app (fake_upstream.py) the 50 ms one. Each wrk
scenario runs against the upstream directly and through `llmops serve`, in alternating pairs
for several rounds: the table shows medians across rounds, and "added" is the median of the
per-round differences (gateway minus direct). docs/benchmarks.md explains every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

from fake_upstream import CHAT_PATH, nginx_config

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / ".out"
BIN = Path(sys.executable).parent
SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin"
GATEWAY_CHAT = "/api/v1/chat/completions"
_MESSAGES = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]'
CHAT_REQUEST = _MESSAGES + b',"max_tokens":16}'  # the same bodies as wrk_post.lua
STREAM_REQUEST = _MESSAGES + b',"stream":true,"max_tokens":16}'
SCENARIOS = [("chat", 1), ("chat", 16), ("chat", 64), ("stream", 1), ("stream", 16), ("slow", 64)]
QUICK = {"duration": 2, "rounds": 2, "ttfb_requests": 100, "import_rounds": 5}
Target = tuple[int, str]  # (port, path) on 127.0.0.1


@dataclass
class Run:
    """One wrk run: requests/s, latency percentiles in ms, errors (socket errors + non-2xx)."""

    rps: float
    p50: float
    p99: float
    errors: int
    steal: float  # share of CPU time the hypervisor took from this machine during the run
    cpu_ms: float = 0.0  # CPU time (user + system) of the gateway process per request

    def __str__(self) -> str:
        latency = f"p50 {self.p50:.3f} ms, p99 {self.p99:.3f} ms"
        cpu = f", gateway CPU {self.cpu_ms:.3f} ms/request" if self.cpu_ms else ""
        return (
            f"{self.rps:,.0f} req/s, {latency}, {self.errors} errors{cpu}, steal {self.steal:.0%}"
        )


@dataclass
class Findings:
    """Everything measured; `runs` maps "SCENARIO/direct" and "SCENARIO/gateway" to rounds."""

    runs: dict[str, list[Run]] = field(default_factory=dict)
    first_answer_s: list[float] = field(default_factory=list)  # one per gateway started
    memory_mb: tuple[float, float] = (0.0, 0.0)  # VmRSS, VmHWM: the largest of the gateways
    ttfb_ms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    imports_s: dict[str, list[float]] = field(default_factory=dict)
    litellm: str = ""  # why LiteLLM Proxy was not measured, when it was asked for
    litellm_memory_mb: tuple[float, float] = (0.0, 0.0)

    def med(self, key: str, attr: str) -> float:
        """Median of one figure across rounds."""
        return float(statistics.median(getattr(run, attr) for run in self.runs[key]))

    def added(self, scenario: str, attr: str) -> float:
        """Median of the per-round differences, gateway minus direct."""
        pairs = zip(self.runs[f"{scenario}/direct"], self.runs[f"{scenario}/gateway"], strict=True)
        return float(statistics.median(getattr(g, attr) - getattr(d, attr) for d, g in pairs))

    def ratio(self, scenario: str) -> float:
        """Median of the per-round throughput ratios, gateway over direct."""
        pairs = zip(self.runs[f"{scenario}/direct"], self.runs[f"{scenario}/gateway"], strict=True)
        return statistics.median(g.rps / d.rps for d, g in pairs)

    def errors(self, key: str) -> int:
        """Errors summed across rounds."""
        return sum(run.errors for run in self.runs[key])


class Processes:
    """Every process the benchmark starts; `stop_all` ends them, newest first."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start `argv` with its output in `logs/NAME.log`; its pid."""
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.running.append((proc, log))
        return proc.pid

    def alive(self, pid: int) -> bool:
        """True while the process `pid` started here has not exited."""
        return any(proc.pid == pid and proc.poll() is None for proc, _ in self.running)

    def stop_all(self) -> None:
        """SIGTERM each process; SIGKILL it if it has not exited 15 s later."""
        for proc, log in reversed(self.running):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            log.close()
        self.running.clear()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def call(target: Target, body: bytes | None = None) -> tuple[int, bytes]:
    """GET (no body) or POST `body` on a fresh connection: (status, response body)."""
    conn = http.client.HTTPConnection("127.0.0.1", target[0], timeout=5)
    try:
        headers = {"content-type": "application/json"}
        conn.request("GET" if body is None else "POST", target[1], body, headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def wait_ok(
    procs: Processes, pid: int, target: Target, body: bytes | None, limit_s: float = 30.0
) -> None:
    """Poll every 5 ms until `target` answers 200; fail if `pid` exits or time runs out."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            raise RuntimeError(f"process {pid} exited; its log is in {procs.logs}")
        try:
            if call(target, body)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"127.0.0.1:{target[0]}{target[1]} did not answer 200 in {limit_s:g} s")


def python_env() -> dict[str, str]:
    """The environment for the Python processes measured: bytecode cached under bench/.out
    (as a deployed app has it), even when PYTHONDONTWRITEBYTECODE is set, never in llmops/."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(OUT / "pycache")}


def start_gateway(procs: Processes, name: str, base_url: str) -> tuple[int, int, float]:
    """`llmops serve` against `base_url`: (pid, port, seconds from spawn to first chat answer)."""
    port = free_port()
    ours = ("LLMOPS_", "AZURE_", "OPENAI")  # only the upstream set below
    env = {k: v for k, v in python_env().items() if not k.startswith(ours)}
    env.update(OPENAI_BASE_URL=base_url, LLMOPS_UPSTREAM="openai")
    argv = [str(BIN / "llmops"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    pid = procs.start(name, [*argv, "--log-level", "warning"], env)
    wait_ok(procs, pid, (port, "/api/health"), None)
    wait_ok(procs, pid, (port, GATEWAY_CHAT), CHAT_REQUEST)
    return pid, port, time.perf_counter() - started


def check(target: Target, stream: bool) -> None:
    """Fail early unless `target` answers 200 with the expected kind of body."""
    status, body = call(target, STREAM_REQUEST if stream else CHAT_REQUEST)
    if status != 200 or (b"data: [DONE]" if stream else b'"chat.completion"') not in body:
        raise RuntimeError(f"127.0.0.1:{target[0]}{target[1]} answered {status}: {body[:200]!r}")


def machine_ticks() -> tuple[int, int]:
    """CPU ticks of the whole machine so far: (stolen by the hypervisor, total)."""
    cpu = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return cpu[7], sum(cpu)


def process_ticks(pid: int) -> int:
    """CPU ticks (user + system) process `pid` has used so far; 0 for pid 0."""
    if not pid:
        return 0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def wrk(target: Target, conns: int, seconds: int, stream: bool = False, pid: int = 0) -> Run:
    """One wrk run posting wrk_post.lua's body (-t1 at one connection, -t2 above); `pid`: the
    gateway whose CPU time per request to measure."""
    url = f"http://127.0.0.1:{target[0]}{target[1]}"
    argv = ["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    argv += ["--timeout", "10s", "-s", str(BENCH / "wrk_post.lua"), url]
    env = {**os.environ, "BENCH_STREAM": "1" if stream else "0"}
    (steal0, total0), cpu0 = machine_ticks(), process_ticks(pid)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    (steal1, total1), cpu1 = machine_ticks(), process_ticks(pid)
    lines = [line for line in out.stdout.splitlines() if line.startswith("BENCH ")]
    if out.returncode or not lines:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stdout}{out.stderr}")
    data = json.loads(lines[-1].removeprefix("BENCH "))
    rps = data["requests"] / (data["duration_us"] / 1e6)
    steal = (steal1 - steal0) / max(1, total1 - total0)
    cpu_ms = (cpu1 - cpu0) / os.sysconf("SC_CLK_TCK") * 1000 / max(1, data["requests"])
    return Run(rps, data["p50_us"] / 1000, data["p99_us"] / 1000, data["errors"], steal, cpu_ms)


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[float, float]:
    """One keep-alive request: (ms to the first body data, ms to the end of the body)."""
    started = time.perf_counter()
    writer.write(request)
    await writer.drain()
    head = (await reader.readuntil(b"\r\n\r\n")).lower()
    if not head.startswith(b"http/1.1 200"):
        raise RuntimeError(f"the TTFB client got {head[:100]!r}")
    if b"transfer-encoding: chunked" in head:
        first = 0.0
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
            first = first or time.perf_counter()
        await reader.readuntil(b"\r\n")
    else:
        length = int(head.split(b"content-length:")[1].split(b"\r\n")[0])
        await reader.readexactly(1)
        first = time.perf_counter()
        await reader.readexactly(length - 1)
    return (first - started) * 1000, (time.perf_counter() - started) * 1000


async def ttfb(
    sides: dict[str, Target], n: int, into: dict[str, list[tuple[float, float]]]
) -> None:
    """`n` sequential streamed requests per side (after 20 warm-ups), sides alternating."""
    conns: dict[str, tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]] = {}
    for side, (port, path) in sides.items():
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        head += f"Content-Type: application/json\r\nContent-Length: {len(STREAM_REQUEST)}\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conns[side] = (reader, writer, head.encode() + STREAM_REQUEST)
    try:
        for i in range(n + 20):
            for side, (reader, writer, request) in conns.items():
                sample = await _exchange(reader, writer, request)
                if i >= 20:
                    into.setdefault(side, []).append(sample)
    finally:
        for _, writer, _ in conns.values():
            writer.close()


def import_times(rounds: int) -> dict[str, list[float]]:
    """Seconds to import function_app and the framework floor, in alternating fresh processes."""
    modules = {
        "floor": "azure.functions, azurefunctions.extensions.http.fastapi",
        "function_app": "function_app",
    }
    code = "import time; t = time.perf_counter(); import {}; print(time.perf_counter() - t)"
    times: dict[str, list[float]] = {key: [] for key in modules}
    for i in range(rounds + 1):  # round 0 only warms the bytecode caches
        for key, module in modules.items():
            argv = [sys.executable, "-c", code.format(module)]
            out = subprocess.run(
                argv, cwd=ROOT, env=python_env(), capture_output=True, text=True, check=True
            )
            if i:
                times[key].append(float(out.stdout))
    return times


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def start_litellm(procs: Processes, tmp: Path, upstream: int) -> tuple[int, Target]:
    """LiteLLM Proxy, installed in bench/.out/litellm-venv, in front of nginx: (pid, target)."""
    venv = OUT / "litellm-venv"
    if not (venv / "bin" / "litellm").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(venv / "bin" / "pip"), "install", "-q", "litellm[proxy]"]
        subprocess.run(pip, check=True, timeout=900)
    config = tmp / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: gpt-4o-mini\n    litellm_params:\n"
        f"      model: openai/gpt-4o-mini\n      api_base: http://127.0.0.1:{upstream}/v1\n"
        "      api_key: sk-bench\n"
    )
    quiet = {"version": 1, "disable_existing_loggers": False}  # no access log, as the gateway
    (tmp / "litellm-log.json").write_text(
        json.dumps({**quiet, "loggers": {"uvicorn.access": {"level": "WARNING"}}})
    )
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LITELLM", "OPENAI"))}
    env.update(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR")
    # open access, as the gateway here (no LLMOPS_API_KEYS); the proxy refuses that by default
    env["LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY"] = "true"
    argv = [str(venv / "bin" / "litellm"), "--config", str(config), "--num_workers", "1"]
    argv += ["--log_config", str(tmp / "litellm-log.json"), "--host", "127.0.0.1"]
    pid = procs.start("litellm", [*argv, "--port", str(port)], env)
    wait_ok(procs, pid, (port, "/v1/chat/completions"), CHAT_REQUEST, limit_s=300)
    return pid, (port, "/v1/chat/completions")


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated linearly."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def table(f: Findings) -> list[list[str]]:
    """Rows of scenario, direct, gateway, added / ratio, target, result."""
    rows: list[list[str]] = []

    def ms_bound(bound: float | None) -> str:
        return "" if bound is None else f"< +{bound:g} ms"

    def add(
        name: str, direct: str, gw: str, delta: str, target: str = "", ok: bool | None = None
    ) -> None:
        rows.append([name, direct, gw, delta, target, {True: "pass", False: "FAIL", None: ""}[ok]])

    def diff(name: str, d: float, g: float, delta: float, bound: float | None = None) -> None:
        ok = None if bound is None else delta < bound
        add(name, f"{d:.3f} ms", f"{g:.3f} ms", f"{delta:+.3f} ms", ms_bound(bound), ok)

    def latency(name: str, sc: str, attr: str, bound: float | None = None) -> None:
        d, g = (f.med(f"{sc}/{side}", attr) for side in ("direct", "gateway"))
        diff(name, d, g, f.added(sc, attr), bound)

    def throughput(name: str, sc: str, floor: float | None = None) -> None:
        d, g = f.med(f"{sc}/direct", "rps"), f.med(f"{sc}/gateway", "rps")
        d_err, g_err = f.errors(f"{sc}/direct"), f.errors(f"{sc}/gateway")
        ok = None if floor is None else g >= floor and g_err == 0
        target = "" if floor is None else f">= {floor:g} req/s, 0 errors"
        add(name, f"{d:,.0f} ({d_err})", f"{g:,.0f} ({g_err})", f"x{f.ratio(sc):.2f}", target, ok)
        d_ms, g_ms = (
            f"{f.med(f'{sc}/{s}', 'p50'):.2f} / {f.med(f'{sc}/{s}', 'p99'):.2f} ms"
            for s in ("direct", "gateway")
        )
        added = f"{f.added(sc, 'p50'):+.2f} / {f.added(sc, 'p99'):+.2f} ms"
        add(name.replace(" req/s (errors)", " p50 / p99"), d_ms, g_ms, added)

    def cpu(name: str, sc: str) -> None:
        per_request = f.med(f"{sc}/gateway", "cpu_ms")
        add(name, "", f"{per_request:.3f} ms (= {1000 / per_request:,.0f} req/s per core)", "")

    latency("non-stream c=1 p50", "chat c=1", "p50", 0.5)
    latency("non-stream c=1 p99", "chat c=1", "p99", 1.5)
    throughput("non-stream c=16 req/s (errors)", "chat c=16")
    throughput("non-stream c=64 req/s (errors)", "chat c=64", 3000)
    cpu("non-stream c=1 gateway CPU per request", "chat c=1")
    cpu("non-stream c=64 gateway CPU per request", "chat c=64")
    latency("stream c=1 whole response p50 (wrk)", "stream c=1", "p50", 1.0)
    latency("stream c=1 whole response p99 (wrk)", "stream c=1", "p99")
    throughput("stream c=16 req/s (errors)", "stream c=16", 1500)
    cpu("stream c=16 gateway CPU per request", "stream c=16")
    for index, what in enumerate(("TTFB", "whole response")):
        for q in (50, 99):
            d, g = (pct([s[index] for s in f.ttfb_ms[side]], q) for side in ("direct", "gateway"))
            bound = 1.0 if (index, q) == (0, 50) else None
            diff(f"stream c=1 {what} p{q} (raw client)", d, g, g - d, bound)
    d_rps, g_rps = (f"{f.med(f'slow c=64/{side}', 'rps'):,.0f}" for side in ("direct", "gateway"))
    slow = f.ratio("slow c=64")
    add("slow upstream (50 ms) c=64 req/s", d_rps, g_rps, f"x{slow:.3f}", ">= x0.85", slow >= 0.85)
    rss, hwm = f.memory_mb
    add("gateway memory VmRSS / VmHWM", "", f"{rss:.1f} / {hwm:.1f} MB", "", "< 100 MB", hwm < 100)
    first = statistics.median(f.first_answer_s)
    each = f"{first:.3f} s ({' '.join(f'{s:.2f}' for s in f.first_answer_s)})"
    add("first answer after start, median (each)", "", each, "", "< 1 s", first < 1.0)
    floor, app = f.imports_s["floor"], f.imports_s["function_app"]
    d_ms, g_ms = (f"{pct(t, 50) * 1000:.0f} ({pct(t, 99) * 1000:.0f}) ms" for t in (floor, app))
    slower = pct(app, 50) / pct(floor, 50)
    add(
        "import function_app vs floor p50 (p99)",
        d_ms,
        g_ms,
        f"x{slower:.2f}",
        "<= x1.5",
        slower <= 1.5,
    )
    if "litellm c=1/direct" in f.runs:
        latency("LiteLLM Proxy (in gateway column) non-stream c=1 p50", "litellm c=1", "p50")
        latency("LiteLLM Proxy (in gateway column) non-stream c=1 p99", "litellm c=1", "p99")
        throughput("LiteLLM Proxy (in gateway column) c=64 req/s (errors)", "litellm c=64")
        rss, hwm = f.litellm_memory_mb
        add("LiteLLM Proxy memory VmRSS / VmHWM", "", f"{rss:.1f} / {hwm:.1f} MB", "")
    elif f.litellm:
        add(f"LiteLLM Proxy not measured: {f.litellm}", "", "", "")
    return rows


def markdown(rows: list[list[str]]) -> str:
    """A padded markdown table: readable in a terminal, pasteable into docs."""
    header = ["scenario", "direct", "gateway", "added / ratio", "target", "result"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in lines
    )


def machine() -> str:
    """One line on the machine the figures come from."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":")[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{os.cpu_count()} CPUs ({cpu}), load {load} at start, "
        f"Python {platform.python_version()}, Linux {platform.release()}"
    )


def say(text: str) -> None:
    """Progress, on stderr."""
    print(text, file=sys.stderr, flush=True)


def measure(args: argparse.Namespace, procs: Processes, tmp: Path, f: Findings) -> None:
    """Start the upstreams and gateways, then run every scenario in alternating pairs."""
    nginx_port, slow_port = free_port(), free_port()
    (tmp / "nginx.conf").write_text(nginx_config(tmp, nginx_port))
    nginx = ["-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "error.log")]
    pid = procs.start(
        "nginx", [str(shutil.which("nginx", path=SEARCH_PATH)), *nginx, "-g", "daemon off;"]
    )
    wait_ok(procs, pid, (nginx_port, CHAT_PATH), CHAT_REQUEST)
    slow = [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(slow_port)]
    pid = procs.start("slow-upstream", [*slow, "--delay-ms", "50"])
    wait_ok(procs, pid, (slow_port, CHAT_PATH), CHAT_REQUEST)
    say(f"nginx on :{nginx_port}, slow upstream on :{slow_port}; starting the gateways")
    # a first, unmeasured gateway fills the bytecode cache: the start-up figure is a warm one
    start_gateway(procs, "gateway-warm-up", f"http://127.0.0.1:{nginx_port}/v1")
    # each kind's upstream base URL is http://127.0.0.1:PORT/PREFIX/v1
    upstreams = {"chat": (nginx_port, ""), "stream": (nginx_port, "/stream")}
    upstreams["slow"] = (slow_port, "")
    targets: dict[str, dict[str, Target]] = {}
    pids: dict[str, int] = {}
    for kind, (port, prefix) in upstreams.items():
        base = f"http://127.0.0.1:{port}{prefix}/v1"
        pid, gw_port, first_s = start_gateway(procs, f"gateway-{kind}", base)
        f.first_answer_s.append(first_s)
        pids[kind] = pid
        direct: Target = (port, prefix + CHAT_PATH)
        targets[kind] = {"direct": direct, "gateway": (gw_port, GATEWAY_CHAT)}
        for target in targets[kind].values():
            check(target, kind == "stream")
            wrk(target, 64 if kind == "slow" else 16, 1, kind == "stream")  # warm-up
    for round_no in range(1, args.rounds + 1):
        for kind, conns in SCENARIOS:
            for side in ("direct", "gateway"):
                pid = pids[kind] if side == "gateway" else 0
                run = wrk(targets[kind][side], conns, args.duration, kind == "stream", pid)
                f.runs.setdefault(f"{kind} c={conns}/{side}", []).append(run)
                say(f"round {round_no} {kind} c={conns} {side}: {run}")
        asyncio.run(ttfb(targets["stream"], -(-args.ttfb_requests // args.rounds), f.ttfb_ms))
    memory = [memory_mb(pid) for pid in pids.values()]
    f.memory_mb = (max(m[0] for m in memory), max(m[1] for m in memory))
    if args.litellm:
        try:
            say("LiteLLM Proxy: installing (first run only) and starting")
            pid, litellm = start_litellm(procs, tmp, nginx_port)
            nginx_chat = targets["chat"]["direct"]
            check(litellm, False)
            wrk(litellm, 16, 1)
            for _ in range(args.rounds):
                for conns in (1, 64):
                    for side, target in (("direct", nginx_chat), ("gateway", litellm)):
                        run = wrk(target, conns, args.duration)
                        f.runs.setdefault(f"litellm c={conns}/{side}", []).append(run)
            f.litellm_memory_mb = memory_mb(pid)
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            f.litellm = f"{type(exc).__name__}: {str(exc)[:120]}"
            say(f"LiteLLM Proxy not measured: {exc}")


def main() -> int:
    """Run every scenario, print the table; exit status 1 when a target is missed."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (3)")
    parser.add_argument("--rounds", type=int, default=5, help="direct/gateway pairs (5)")
    parser.add_argument("--ttfb-requests", type=int, default=300, help="per side (300)")
    parser.add_argument("--import-rounds", type=int, default=7, help="fresh imports per module (7)")
    parser.add_argument("--quick", action="store_true", help=f"smaller defaults: {QUICK}")
    parser.add_argument("--litellm", action="store_true", help="also measure LiteLLM Proxy")
    if "--quick" in sys.argv:
        parser.set_defaults(**QUICK)
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool, path=SEARCH_PATH):
            sys.exit(f"{tool} is not installed (apt-get install wrk nginx-light)")
    (OUT / "logs").mkdir(parents=True, exist_ok=True)
    procs, findings, header = Processes(OUT / "logs"), Findings(), machine()
    with tempfile.TemporaryDirectory(prefix="llmops-bench-") as tmp:
        try:
            measure(args, procs, Path(tmp), findings)
        finally:
            procs.stop_all()
    say(f"imports: {args.import_rounds} fresh interpreters per module")
    findings.imports_s = import_times(args.import_rounds)
    rows = table(findings)
    steal = [run.steal for runs in findings.runs.values() for run in runs]
    text = f"Machine: {header}\nwrk {args.duration} s runs x {args.rounds} rounds; "
    text += f"TTFB {args.ttfb_requests} requests per side; CPU steal during wrk runs: median "
    text += f"{statistics.median(steal):.0%}, max {max(steal):.0%}.\n\n{markdown(rows)}\n"
    print(text)
    (OUT / "results.md").write_text(text)
    (OUT / "results.json").write_text(json.dumps(asdict(findings), indent=1))
    return 1 if any(row[5] == "FAIL" for row in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
