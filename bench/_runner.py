"""Plumbing for `gateway_overhead.py`: processes, ports, nginx, wrk, the TTFB client, /proc.

Every process is started through `Processes`, which logs it to bench/.out/logs/NAME.log and
stops it (SIGTERM, then SIGKILL) in `stop_all`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from fake_upstream import CHAT_PATH, nginx_config

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
OUT = BENCH / ".out"
BIN = Path(sys.executable).parent
SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/usr/local/sbin"
PROXY_CHAT = "/api/v1/chat/completions"  # the gateway's route, and the floor proxy's
_MESSAGES = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello."}]'
CHAT_REQUEST = _MESSAGES + b',"max_tokens":16}'  # the same bodies as wrk_post.lua
STREAM_REQUEST = _MESSAGES + b',"stream":true,"max_tokens":16}'
Target = tuple[int, str]  # (port, path) on 127.0.0.1


@dataclass
class Run:
    """One wrk run: requests/s, latency percentiles in ms, errors (socket errors + non-2xx)."""

    rps: float
    p50: float
    p99: float
    errors: int
    steal: float  # share of CPU time the hypervisor took from this machine during the run
    cpu_ms: float = 0.0  # CPU time (user + system) of the proxy process per request
    sent: int = 0  # requests wrk sent to a proxy, answered or cut off at the end of the run
    requests: int = 0  # requests wrk got an answer to

    def __str__(self) -> str:
        latency = f"p50 {self.p50:.3f} ms, p99 {self.p99:.3f} ms"
        cpu = f", CPU {self.cpu_ms:.3f} ms/request" if self.cpu_ms else ""
        return (
            f"{self.rps:,.0f} req/s, {latency}, {self.errors} errors{cpu}, steal {self.steal:.0%}"
        )


class Processes:
    """Every process the benchmark starts; `stop_all` ends them, newest first. `calls` counts
    the POSTs each proxy (by pid) was sent, for checking the request log against them."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.running: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []
        self.calls: dict[int, int] = {}
        self.pids: dict[str, int] = {}  # by name

    def count(self, pid: int, calls: int) -> None:
        """Note `calls` more POSTs sent to `pid`."""
        self.calls[pid] = self.calls.get(pid, 0) + calls

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        """Start `argv` with its output in `logs/NAME.log`; its pid."""
        log = (self.logs / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.running.append((proc, log))
        self.pids[name] = proc.pid
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
    """Poll every 5 ms until `target` answers 200; fail if `pid` exits or time runs out.
    POSTs that got an answer are counted in `procs.calls`."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not procs.alive(pid):
            raise RuntimeError(f"process {pid} exited; its log is in {procs.logs}")
        try:
            status = call(target, body)[0]
            if body is not None:
                procs.count(pid, 1)
            if status == 200:
                return
        except OSError:
            pass
        time.sleep(0.005)
    raise RuntimeError(f"127.0.0.1:{target[0]}{target[1]} did not answer 200 in {limit_s:g} s")


def check(target: Target, stream: bool) -> None:
    """Fail early unless `target` answers 200 with the expected kind of body."""
    status, body = call(target, STREAM_REQUEST if stream else CHAT_REQUEST)
    if status != 200 or (b"data: [DONE]" if stream else b'"chat.completion"') not in body:
        raise RuntimeError(f"127.0.0.1:{target[0]}{target[1]} answered {status}: {body[:200]!r}")


def python_env() -> dict[str, str]:
    """The environment for the Python processes measured: bytecode cached under bench/.out
    (as a deployed app has it), even when PYTHONDONTWRITEBYTECODE is set, never in llmops/."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**env, "PYTHONPYCACHEPREFIX": str(OUT / "pycache")}


def start_nginx(procs: Processes, tmp: Path) -> int:
    """nginx serving fake_upstream's canned answers from a config in `tmp`: its port."""
    port = free_port()
    (tmp / "nginx.conf").write_text(nginx_config(tmp, port))
    conf = ["-c", str(tmp / "nginx.conf"), "-p", str(tmp), "-e", str(tmp / "error.log")]
    nginx = str(shutil.which("nginx", path=SEARCH_PATH))
    pid = procs.start("nginx", [nginx, *conf, "-g", "daemon off;"])
    wait_ok(procs, pid, (port, CHAT_PATH), CHAT_REQUEST)
    return port


def start_slow_upstream(procs: Processes, delay_ms: float) -> int:
    """fake_upstream.py answering after `delay_ms`: its port."""
    port = free_port()
    argv = [sys.executable, str(BENCH / "fake_upstream.py"), "--port", str(port)]
    pid = procs.start("slow-upstream", [*argv, "--delay-ms", f"{delay_ms:g}"])
    wait_ok(procs, pid, (port, CHAT_PATH), CHAT_REQUEST)
    return port


def start_gateway(
    procs: Processes, name: str, base_url: str, extra: dict[str, str] | None = None
) -> tuple[int, int, float]:
    """`llmops serve` against `base_url`, request log off unless `extra` (environment) turns it
    on: (pid, port, seconds from spawn to first chat answer)."""
    port = free_port()
    # none of the environment's own gateway, storage or telemetry settings: only those set here
    ours = ("LLMOPS_", "AZURE_", "OPENAI", "AzureWebJobs", "FUNCTIONS_", "APPLICATIONINSIGHTS_")
    env = {k: v for k, v in python_env().items() if not k.startswith(ours)}
    env.update(OPENAI_BASE_URL=base_url, LLMOPS_UPSTREAM="openai", LLMOPS_REQUEST_LOG="off")
    env.update(extra or {})
    argv = [str(BIN / "llmops"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    pid = procs.start(name, [*argv, "--log-level", "warning"], env)
    wait_ok(procs, pid, (port, "/api/health"), None)
    wait_ok(procs, pid, (port, PROXY_CHAT), CHAT_REQUEST)
    return pid, port, time.perf_counter() - started


def start_floor(procs: Processes, name: str, base_url: str) -> tuple[int, int, float]:
    """floor_proxy.py on uvicorn against `base_url`: (pid, port, seconds to first answer)."""
    port = free_port()
    env = {**python_env(), "FLOOR_UPSTREAM_URL": base_url}
    argv = [str(BIN / "uvicorn"), "--app-dir", str(BENCH), "floor_proxy:app"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--no-access-log"]
    argv += ["--log-level", "warning", "--no-proxy-headers", "--no-server-header"]
    started = time.perf_counter()
    pid = procs.start(name, argv, env)
    wait_ok(procs, pid, (port, PROXY_CHAT), CHAT_REQUEST)
    return pid, port, time.perf_counter() - started


def machine_ticks() -> tuple[int, int]:
    """CPU ticks of the whole machine so far: (stolen by the hypervisor, total)."""
    cpu = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return cpu[7], sum(cpu)


def process_ticks(pid: int) -> int:
    """CPU ticks (user + system) process `pid` and its live children (the gateway's trace
    exporter) have used so far; 0 for pid 0."""
    if not pid:
        return 0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        try:
            ticks += process_ticks(int(child))
        except OSError:  # it exited meanwhile
            pass
    return ticks


def wrk(target: Target, conns: int, seconds: int, stream: bool = False, pid: int = 0) -> Run:
    """One wrk run posting wrk_post.lua's body (-t1 at one connection, -t2 above); `pid`: the
    proxy process whose CPU time per request to measure and whose requests sent wrk counts
    (0: none; counting builds each request in Lua, which costs wrk ~1 us per request)."""
    url = f"http://127.0.0.1:{target[0]}{target[1]}"
    argv = ["wrk", f"-t{1 if conns == 1 else 2}", f"-c{conns}", f"-d{seconds}s", "--latency"]
    argv += ["--timeout", "10s", "-s", str(BENCH / "wrk_post.lua"), url]
    env = {**os.environ, "BENCH_STREAM": "1" if stream else "0", "BENCH_COUNT": "1" if pid else ""}
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
    p50, p99 = data["p50_us"] / 1000, data["p99_us"] / 1000
    return Run(rps, p50, p99, data["errors"], steal, cpu_ms, data["sent"], data["requests"])


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
    """`n` sequential streamed requests per side (after 20 warm-ups), sides taking turns."""
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


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of `pid` in MB."""
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    status = dict(line.split(":", 1) for line in lines if ":" in line)
    return int(status["VmRSS"].split()[0]) / 1024, int(status["VmHWM"].split()[0]) / 1024


def machine() -> str:
    """One line on the machine the figures come from."""
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((ln.split(":")[1].strip() for ln in cpuinfo if ln.startswith("model name")), "?")
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return (
        f"{os.cpu_count()} CPUs ({cpu}), load {load} at start, "
        f"Python {platform.python_version()}, Linux {platform.release()}"
    )


def measured_code() -> str:
    """Which llmops the gateways run: its directory, and its git revision when it has one."""
    code = "import llmops, pathlib; print(pathlib.Path(llmops.__file__).parent)"
    argv = [sys.executable, "-c", code]
    where = subprocess.run(argv, cwd=ROOT, env=python_env(), capture_output=True, text=True)
    package = where.stdout.strip() or "?"
    git = ["git", "-C", package, "rev-parse", "--short", "HEAD"]
    rev = subprocess.run(git, capture_output=True, text=True)
    if rev.returncode:
        return f"llmops from {package} (not a git checkout)"
    status = ["git", "-C", package, "status", "--porcelain", "--", "."]
    dirty = subprocess.run(status, capture_output=True, text=True).stdout.strip()
    changes = " with uncommitted changes" if dirty else ""
    return f"llmops from {package}, git {rev.stdout.strip()}{changes}"


def say(text: str) -> None:
    """Progress, on stderr."""
    print(text, file=sys.stderr, flush=True)
