"""The figures `gateway_overhead.py` collects, and the table it prints from them.

Three sides per scenario: "direct" (the upstream itself), "floor" (floor_proxy.py: the same
server/client stack as the gateway doing the least a proxy can do) and "gateway"
(`llmops serve`). "vs direct" is what a proxy adds over the upstream: the median of the
per-round differences for latency, of the per-round ratios for throughput. "gateway / floor"
compares the two proxies: the per-round throughput ratio, the ratio of the added latencies,
the ratio of CPU time per request. A second table compares "gateway+log" (the gateway with
its request log on) with "gateway" (log off), per round, against the request log's targets.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from _runner import Run

SIDES = ("direct", "floor", "gateway")
PROXIES = ("floor", "gateway")
LOGGED = "gateway+log"  # the gateway with its request log and traces (over OTLP) on
ALL_PROXIES = (*PROXIES, LOGGED)
THROUGHPUT = ("chat c=16", "chat c=64", "stream c=16", "slow c=64")  # scenarios under load
CPU_ROWS = ("chat c=1", "chat c=64", "stream c=16")  # scenarios with a CPU-per-request row


@dataclass
class Findings:
    """Everything measured; `runs` maps "SCENARIO/SIDE" to one Run per round."""

    runs: dict[str, list[Run]] = field(default_factory=dict)
    first_answer_s: dict[str, list[float]] = field(default_factory=dict)  # per proxy side
    memory_mb: dict[str, tuple[float, float]] = field(default_factory=dict)  # VmRSS, VmHWM: max
    ttfb_ms: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    imports_s: dict[str, list[float]] = field(default_factory=dict)
    litellm: str = ""  # why LiteLLM Proxy was not measured, when it was asked for
    litellm_memory_mb: tuple[float, float] = (0.0, 0.0)
    log_records: dict[str, dict[str, int]] = field(default_factory=dict)  # per gateway+log
    traces: dict[str, int] = field(default_factory=dict)  # the OTLP POSTs of every gateway+log
    retried: int = 0  # wrk runs run again because of steal (see gateway_overhead.quiet_wrk)
    noisy: int = 0  # measured runs kept with more steal than --max-steal (retries ran out)

    def med(self, key: str, attr: str) -> float:
        """Median of one figure across rounds."""
        return float(statistics.median(getattr(run, attr) for run in self.runs[key]))

    def added(self, scenario: str, attr: str, side: str, over: str = "direct") -> float:
        """Median of the per-round differences, `side` minus `over`."""
        pairs = zip(self.runs[f"{scenario}/{over}"], self.runs[f"{scenario}/{side}"], strict=True)
        return float(statistics.median(getattr(s, attr) - getattr(d, attr) for d, s in pairs))

    def ratio(self, scenario: str, side: str, over: str = "direct") -> float:
        """Median of the per-round throughput ratios, `side` over `over`."""
        pairs = zip(self.runs[f"{scenario}/{over}"], self.runs[f"{scenario}/{side}"], strict=True)
        return statistics.median(s.rps / o.rps for o, s in pairs)

    def errors(self, key: str) -> int:
        """Errors summed across rounds."""
        return sum(run.errors for run in self.runs[key])


def pct(values: list[float], q: float) -> float:
    """The q-th percentile, interpolated linearly."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100
    low, high = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


HEADER = [
    "scenario",
    "direct",
    "floor",
    "gateway",
    "floor vs direct",
    "gateway vs direct",
    "gateway / floor",
    "target",
    "floor result",
    "gateway result",
]
Verdicts = tuple[bool | None, bool | None]  # (floor, gateway) against the target; None: none
RESULT = {True: "pass", False: "FAIL", None: ""}


def _times(gw: float, floor: float) -> str:
    """gw / floor as "x1.23"; "-" unless both are positive (a ratio of noise otherwise)."""
    return f"x{gw / floor:.2f}" if gw > 0 and floor > 0 else "-"


class _Table:
    """Rows with the columns of HEADER, built one scenario at a time."""

    def __init__(self, f: Findings) -> None:
        self.f = f
        self.rows: list[list[str]] = []

    def add(
        self,
        name: str,
        sides: tuple[str, str, str],
        added: tuple[str, str] = ("", ""),
        ratio: str = "",
        target: str = "",
        ok: Verdicts = (None, None),
    ) -> None:
        """One row: direct/floor/gateway, floor/gateway vs direct, gateway / floor, target."""
        self.rows.append([name, *sides, *added, ratio, target, RESULT[ok[0]], RESULT[ok[1]]])

    def diff(self, name: str, values: list[float], bound: float | None = None) -> None:
        """`values` in ms: direct, floor, gateway, floor added, gateway added."""
        d, fl, g, fa, ga = values
        ok: Verdicts = (None, None) if bound is None else (fa < bound, ga < bound)
        target = "" if bound is None else f"< +{bound:g} ms"
        sides = (f"{d:.3f} ms", f"{fl:.3f} ms", f"{g:.3f} ms")
        self.add(name, sides, (f"{fa:+.3f} ms", f"{ga:+.3f} ms"), _times(ga, fa), target, ok)

    def latency(self, name: str, sc: str, attr: str, bound: float | None = None) -> None:
        """A wrk latency percentile (`attr`) of scenario `sc`."""
        f = self.f
        meds = [f.med(f"{sc}/{side}", attr) for side in SIDES]
        self.diff(name, [*meds, *(f.added(sc, attr, side) for side in PROXIES)], bound)

    def throughput(self, name: str, sc: str, floor: float | None = None) -> None:
        """Two rows: req/s (errors summed over rounds), then p50 / p99."""
        f = self.f
        rps = [f.med(f"{sc}/{side}", "rps") for side in SIDES]
        errs = [f.errors(f"{sc}/{side}") for side in SIDES]
        ok: Verdicts = (None, None)
        if floor is not None:
            ok = (rps[1] >= floor and errs[1] == 0, rps[2] >= floor and errs[2] == 0)
        target = "" if floor is None else f">= {floor:g} req/s, 0 errors"
        r = [f"{x:,.0f} ({e})" for x, e in zip(rps, errs, strict=True)]
        vs = (f"x{f.ratio(sc, 'floor'):.3f}", f"x{f.ratio(sc, 'gateway'):.3f}")
        self.add(
            name, (r[0], r[1], r[2]), vs, f"x{f.ratio(sc, 'gateway', 'floor'):.2f}", target, ok
        )
        p = [f"{f.med(f'{sc}/{s}', 'p50'):.2f} / {f.med(f'{sc}/{s}', 'p99'):.2f}" for s in SIDES]
        fa50, fa99, ga50, ga99 = (f.added(sc, q, s) for s in PROXIES for q in ("p50", "p99"))
        vs = (f"{fa50:+.2f} / {fa99:+.2f}", f"{ga50:+.2f} / {ga99:+.2f}")
        ratio = f"{_times(ga50, fa50)} / {_times(ga99, fa99)}"
        self.add(name.replace("req/s (errors)", "p50 / p99 ms"), (p[0], p[1], p[2]), vs, ratio)

    def cpu(self, name: str, sc: str) -> None:
        """CPU time per request of the floor and the gateway process."""
        fl, g = (self.f.med(f"{sc}/{side}", "cpu_ms") for side in PROXIES)
        sides = ("", f"{fl:.3f} ms", f"{g:.3f} ms")
        self.add(name, sides, ratio=_times(g, fl))


def table(f: Findings) -> list[list[str]]:
    """One row per figure, with the columns of HEADER."""
    t = _Table(f)
    t.latency("non-stream c=1 p50", "chat c=1", "p50", 0.5)
    t.latency("non-stream c=1 p99", "chat c=1", "p99", 1.5)
    t.throughput("non-stream c=16 req/s (errors)", "chat c=16")
    t.throughput("non-stream c=64 req/s (errors)", "chat c=64", 3000)
    t.cpu("non-stream c=1 CPU per request", "chat c=1")
    t.cpu("non-stream c=64 CPU per request", "chat c=64")
    t.latency("stream c=1 whole response p50 (wrk)", "stream c=1", "p50", 1.0)
    t.latency("stream c=1 whole response p99 (wrk)", "stream c=1", "p99")
    t.throughput("stream c=16 req/s (errors)", "stream c=16", 1500)
    t.cpu("stream c=16 CPU per request", "stream c=16")
    for index, what in enumerate(("TTFB", "whole response")):
        for q in (50, 99):
            d, fl, g = (pct([s[index] for s in f.ttfb_ms[side]], q) for side in SIDES)
            bound = 1.0 if (index, q) == (0, 50) else None
            t.diff(f"stream c=1 {what} p{q} (raw client)", [d, fl, g, fl - d, g - d], bound)
    sc = "slow c=64"
    rps = [f"{f.med(f'{sc}/{side}', 'rps'):,.0f}" for side in SIDES]
    fl, g = (f.ratio(sc, side) for side in PROXIES)
    ratio = f"x{f.ratio(sc, 'gateway', 'floor'):.3f}"
    ok: Verdicts = (fl >= 0.85, g >= 0.85)
    sides = (rps[0], rps[1], rps[2])
    t.add(
        "slow upstream (50 ms) c=64 req/s",
        sides,
        (f"x{fl:.3f}", f"x{g:.3f}"),
        ratio,
        ">= x0.85",
        ok,
    )
    (frss, fhwm), (grss, ghwm) = (f.memory_mb[side] for side in PROXIES)
    sides = ("", f"{frss:.1f} / {fhwm:.1f} MB", f"{grss:.1f} / {ghwm:.1f} MB")
    ok = (fhwm < 100, ghwm < 100)
    t.add(
        "memory VmRSS / VmHWM (largest)", sides, ratio=_times(ghwm, fhwm), target="< 100 MB", ok=ok
    )
    first = [statistics.median(f.first_answer_s[side]) for side in PROXIES]
    each = [" ".join(f"{s:.2f}" for s in f.first_answer_s[side]) for side in PROXIES]
    sides = ("", f"{first[0]:.3f} s ({each[0]})", f"{first[1]:.3f} s ({each[1]})")
    ok = (first[0] < 1.0, first[1] < 1.0)
    t.add(
        "first answer after start, median (each)",
        sides,
        ratio=_times(first[1], first[0]),
        target="< 1 s",
        ok=ok,
    )
    framework, app = f.imports_s["framework"], f.imports_s["function_app"]
    fw_ms, app_ms = (
        f"{pct(x, 50) * 1000:.0f} ({pct(x, 99) * 1000:.0f}) ms" for x in (framework, app)
    )
    slower = pct(app, 50) / pct(framework, 50)
    t.add(
        "import p50 (p99): Functions framework / function_app",
        ("", fw_ms, app_ms),
        ratio=f"x{slower:.2f}",
        target="<= x1.5",
        ok=(None, slower <= 1.5),
    )
    speed = [f.ratio(sc, "gateway", "floor") for sc in THROUGHPUT]
    cpu = [f.med(f"{sc}/gateway", "cpu_ms") / f.med(f"{sc}/floor", "cpu_ms") for sc in CPU_ROWS]
    summary = f"req/s x{min(speed):.2f}-x{max(speed):.2f}, CPU x{min(cpu):.2f}-x{max(cpu):.2f}"
    t.add("gateway vs floor, range over the scenarios above", ("", "", ""), ratio=summary)
    if "litellm c=1/direct" in f.runs:
        for sc in ("litellm c=1", "litellm c=64"):
            rps_d, rps_l = (f.med(f"{sc}/{side}", "rps") for side in ("direct", "gateway"))
            p50, p99 = (f.med(f"{sc}/gateway", q) for q in ("p50", "p99"))
            sides = (f"{rps_d:,.0f} req/s", "", f"{rps_l:,.0f} req/s, {p50:.2f} / {p99:.2f} ms")
            added = ("", f"{f.added(sc, 'p50', 'gateway'):+.3f} ms p50")
            t.add(f"LiteLLM Proxy (gateway column) {sc.split()[1]}, p50 / p99", sides, added)
        rss, hwm = f.litellm_memory_mb
        t.add("LiteLLM Proxy memory VmRSS / VmHWM", ("", "", f"{rss:.1f} / {hwm:.1f} MB"))
    elif f.litellm:
        t.add(f"LiteLLM Proxy not measured: {f.litellm}", ("", "", ""))
    return t.rows


def markdown(rows: list[list[str]], header: list[str] = HEADER) -> str:
    """A padded markdown table: readable in a terminal, pasteable into docs."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in lines
    )


LOG_HEADER = ["scenario", "gateway", LOGGED, "log vs gateway", "target", "result"]
LOG_BOUNDS = {"chat c=1 p50": 0.3, "chat c=1 p99": 1.0}  # ms added at most, from the issue


def _name(scenario: str) -> str:
    return scenario.replace("chat", "non-stream").replace("slow", "slow upstream (50 ms)")


def log_table(f: Findings) -> list[list[str]]:
    """The request log's cost: gateway+log against gateway (log off), as per-round differences
    or ratios, and the records written against the calls sent. Columns: LOG_HEADER."""
    rows: list[list[str]] = []
    g, lg = "gateway", LOGGED

    def row(
        name: str, gw: str, log: str, vs: str, target: str = "", ok: bool | None = None
    ) -> None:
        rows.append([name, gw, log, vs, target, RESULT[ok]])

    for sc, q in (
        ("chat c=1", "p50"),
        ("chat c=1", "p99"),
        ("stream c=1", "p50"),
        ("stream c=1", "p99"),
    ):
        added, bound = f.added(sc, q, lg, g), LOG_BOUNDS.get(f"{sc} {q}")
        gw, log = (f"{f.med(f'{sc}/{side}', q):.3f} ms" for side in (g, lg))
        target = "" if bound is None else f"<= +{bound:g} ms"
        row(
            f"{_name(sc)} whole response {q} (wrk)" if sc == "stream c=1" else f"{_name(sc)} {q}",
            gw,
            log,
            f"{added:+.3f} ms",
            target,
            None if bound is None else added <= bound,
        )
    for sc in ("chat c=16", "chat c=64", "stream c=16", "slow c=64"):
        rps = [f.med(f"{sc}/{side}", "rps") for side in (g, lg)]
        errs = [f.errors(f"{sc}/{side}") for side in (g, lg)]
        gw, log = (f"{x:,.0f} ({e})" for x, e in zip(rps, errs, strict=True))
        ratio, bound = f.ratio(sc, lg, g), 0.75 if sc == "chat c=64" else None
        target = "" if bound is None else f">= x{bound:g}"
        row(
            f"{_name(sc)} req/s (errors)",
            gw,
            log,
            f"x{ratio:.3f}",
            target,
            None if bound is None else ratio >= bound,
        )
        if sc == "chat c=64":
            ok = rps[1] >= 2500 and errs[1] == 0
            row(f"{_name(sc)} req/s, {lg} alone", "", log, "", ">= 2500 req/s, 0 errors", ok)
        if sc != "slow c=64":
            gw, log = (
                f"{f.med(f'{sc}/{s}', 'p50'):.2f} / {f.med(f'{sc}/{s}', 'p99'):.2f}"
                for s in (g, lg)
            )
            more = f"{f.added(sc, 'p50', lg, g):+.2f} / {f.added(sc, 'p99', lg, g):+.2f}"
            row(f"{_name(sc)} p50 / p99 ms", gw, log, more)
    for sc in ("chat c=1", "chat c=16", "chat c=64", "stream c=16"):
        cpu = [f.med(f"{sc}/{side}", "cpu_ms") for side in (g, lg)]
        pairs = zip(f.runs[f"{sc}/{g}"], f.runs[f"{sc}/{lg}"], strict=True)
        ratio = statistics.median(b.cpu_ms / a.cpu_ms for a, b in pairs if a.cpu_ms > 0)
        more = f"{f.added(sc, 'cpu_ms', lg, g):+.3f} ms (x{ratio:.2f})"
        row(f"{_name(sc)} CPU per request", f"{cpu[0]:.3f} ms", f"{cpu[1]:.3f} ms", more)
    gw_t, log_t = (pct([s[0] for s in f.ttfb_ms[side]], 50) for side in (g, lg))
    row(
        "stream c=1 TTFB p50 (raw client)",
        f"{gw_t:.3f} ms",
        f"{log_t:.3f} ms",
        f"{log_t - gw_t:+.3f} ms",
    )
    gw_m, log_m = (f.memory_mb[side][1] for side in (g, lg))
    row("memory VmHWM (largest)", f"{gw_m:.1f} MB", f"{log_m:.1f} MB", f"{log_m - gw_m:+.1f} MB")
    gw_s, log_s = (statistics.median(f.first_answer_s[side]) for side in (g, lg))
    row(
        "first answer after start, median",
        f"{gw_s:.3f} s",
        f"{log_s:.3f} s",
        f"{log_s - gw_s:+.3f} s",
    )
    found = f.log_records.values()
    keys = ("calls", "records", "request_ids", "not_200", "spooled")
    total = {key: sum(n[key] for n in found) for key in keys}
    exact = bool(found) and all(n["records"] == n["request_ids"] == n["calls"] for n in found)
    row(
        f"request-log records written / calls sent ({len(found)} processes)",
        "",
        f"{total['records']:,} / {total['calls']:,}",
        f"{total['request_ids']:,} ids, {total['not_200']} not 200",
        "= calls, once each",
        exact,
    )
    runs = [run for key, runs in f.runs.items() if key.endswith(f"/{lg}") for run in runs]
    answered, sent = sum(run.requests for run in runs), sum(run.sent for run in runs)
    row(
        "  of which measured wrk runs: answered + cut off at the end",
        "",
        f"{answered:,} + {sent - answered}",
        "",
    )
    row("  left in the spool", "", f"{total['spooled']} records", "")
    t = f.traces
    if t:
        row(
            "traces: OTLP POSTs answered 200 / sent, MB sent",
            "",
            f"{t['ok']:,} / {t['posts']:,}, {t['bytes'] / 1e6:,.1f} MB",
            f"{t['warnings']} trace warnings (drops, failures)",
            "all 200, no warning",
            t["posts"] > 0 and t["ok"] == t["posts"] and t["warnings"] == 0,
        )
    return rows
