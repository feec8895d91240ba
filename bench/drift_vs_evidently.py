"""Our drift verdicts side by side with the `evidently` package's DataDriftPreset, and the speed.

    .venv/bin/python bench/drift_vs_evidently.py --setup    # once: bench/.venv-evidently
    .venv/bin/python bench/drift_vs_evidently.py            # every scenario, 5 timed runs each
    .venv/bin/python bench/drift_vs_evidently.py --scenario near-threshold --repeat 3

Evidently is installed only in its own venv, `bench/.venv-evidently` (`--setup` creates it with
the project's Python and pins `evidently==0.7.23` and `pandas<3`: evidently 0.7.23 fails to
import with pandas 3). It is never a requirement of the project.

For each scenario, realistic request-log records are generated (`bench/drift_scale.py`'s
traffic), the per-call features our `WindowSample` extracts are put in a table (numeric:
prompt_tokens, completion_tokens, latency_ms, ttft_ms, prompt_chars, messages, missing values
as NaN, which both sides leave out; categorical: model, deployment, finish_reason,
status_class, consumer, a missing value written `(none)`, the category our `WindowSample`
counts it as), optionally transformed (a shifted feature, a new category), and then:

- ours: two `WindowSample`s filled from the table (numeric arrays without the NaNs, counts per
  value) and `llmops.drift.analysis.analyse` with the default settings;
- Evidently: the same table as CSV, read by a child process in `bench/.venv-evidently`,
  `Report([DataDriftPreset()], include_tests=True).run(...)` with a `DataDefinition` naming
  the numeric and categorical columns; per column its method, score and verdict (the
  ValueDrift test's FAIL = drift).

The prompt text is compared too where the scenario has it (Evidently: a text column, its
text-content drift; ours: `text.text_drift`), but not counted in the verdict target.
Timing: the median of `--repeat` runs of each side's analysis of data already in memory (ours:
`analyse` on filled samples; Evidently: `Dataset.from_pandas` + `Report.run`), numeric and
categorical features only. Prints a table per scenario and a summary; exit status 1 when a
verdict differs where the two sides chose the same test.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / "bench" / ".venv-evidently"
EVIDENTLY = "evidently==0.7.23"
PINS = (EVIDENTLY, "pandas<3")
sys.path.insert(0, str(ROOT))  # the feature names (stdlib-only module, also in the child)
from llmops.drift.features import CATEGORICAL, NONE, NUMERIC, TEXT  # noqa: E402

SIZE_RULE = "smaller"  # --size-rule: ours, LLMOPS_DRIFT_SIZE_RULE

# Evidently's display names of its tests -> ours
METHODS = {
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "Z-test p_value": "z",
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "Absolute text content drift": "domain_classifier",
    "Percentile text content drift": "domain_classifier",
}


# ---------------------------------------------------------------------------------------------
# Scenarios: rows of per-call features
# ---------------------------------------------------------------------------------------------

Row = dict[str, Any]


def _number(value: object) -> float:
    """As our `WindowSample` reads a number: a real number (not a bool, not NaN) or missing."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        return float("nan")
    return float(value)


def row_of(record: dict[str, Any]) -> Row:
    """The per-call features of one record (as `llmops.drift.features` extracts them; checked
    against `WindowSample.add` by `check_extraction`)."""
    usage = record.get("usage") if isinstance(record.get("usage"), dict) else {}
    messages = (record.get("request") or {}).get("messages") or []
    status = record.get("status") if isinstance(record.get("status"), int) else 0
    last_user = next((m["content"] for m in reversed(messages) if m.get("role") == "user"), "")
    return {
        "prompt_tokens": _number(usage.get("prompt_tokens")),
        "completion_tokens": _number(usage.get("completion_tokens")),
        "latency_ms": _number(record.get("latency_ms")),
        "ttft_ms": _number(record.get("ttft_ms")),
        "prompt_chars": float(sum(len(m.get("content") or "") for m in messages)),
        "messages": float(len(messages)),
        "model": record.get("model"),
        "deployment": record.get("deployment"),
        "finish_reason": record.get("finish_reason"),
        "status_class": f"{status // 100}xx" if status else None,
        "consumer": record.get("consumer"),
        TEXT: last_user,
    }


def traffic(n: int, seed: int, shift: float = 0.0) -> list[dict[str, Any]]:
    """`n` records of `bench/drift_scale.py`'s traffic, a share `shift` of them shifted."""
    sys.path.insert(0, str(ROOT / "bench"))
    from drift_scale import record  # the same realistic traffic as the scale benchmark

    rng = random.Random(seed)
    start = 1_790_000_000.0
    return [record(rng, start + i * 0.5, rng.random() < shift, "bench-0") for i in range(n)]


def rows(n: int, seed: int, shift: float = 0.0) -> list[Row]:
    return [row_of(r) for r in traffic(n, seed, shift)]


def scale(name: str, factor: float) -> Callable[[list[Row]], list[Row]]:
    def change(data: list[Row]) -> list[Row]:
        return [{**r, name: r[name] * factor} for r in data]

    return change


def reassign(name: str, value: str, share: float, seed: int) -> Callable[[list[Row]], list[Row]]:
    """A share of the rows get `value` for `name` (a mix change or, if new, a new category)."""

    def change(data: list[Row]) -> list[Row]:
        rng = random.Random(seed)
        return [{**r, name: value} if rng.random() < share else r for r in data]

    return change


def both(*changes: Callable[[list[Row]], list[Row]]) -> Callable[[list[Row]], list[Row]]:
    def change(data: list[Row]) -> list[Row]:
        for one in changes:
            data = one(data)
        return data

    return change


def scenarios() -> dict[str, dict[str, Any]]:
    """name: reference rows, current rows, what changes, a note."""
    big, small = (20_000, 5_000), (800, 800)
    found: dict[str, dict[str, Any]] = {
        "identical-large": {"size": big, "note": "same traffic, two samples"},
        "identical-small": {"size": small, "note": "same traffic, reference <= 1000"},
        "traffic-shift-small": {
            "size": small,
            "shift": 0.6,
            "note": "60% of current calls from the shifted traffic (scale benchmark's)",
        },
        "traffic-shift-large": {"size": big, "shift": 0.6, "note": "as above, large"},
        "numeric-shift-small": {
            "size": small,
            "change": both(scale("latency_ms", 1.3), scale("ttft_ms", 1.3)),
            "note": "latency and ttft x1.3",
        },
        "numeric-shift-large": {
            "size": big,
            "change": both(scale("latency_ms", 1.3), scale("ttft_ms", 1.3)),
            "note": "latency and ttft x1.3",
        },
        "categorical-shift-small": {
            "size": small,
            "change": reassign("consumer", "support-bot", 0.3, 1),
            "note": "30% of calls moved to consumer support-bot",
        },
        "categorical-shift-large": {
            "size": big,
            "change": reassign("consumer", "support-bot", 0.3, 1),
            "note": "30% of calls moved to consumer support-bot",
        },
        "new-category-small": {
            "size": small,
            "change": both(
                reassign("model", "gpt-4.1", 0.08, 2),
                reassign("finish_reason", "max_output_tokens", 0.05, 3),
            ),
            "note": "new values: model gpt-4.1 (8%), finish_reason max_output_tokens (5%)",
        },
        "new-category-large": {
            "size": big,
            "change": both(
                reassign("model", "gpt-4.1", 0.08, 2),
                reassign("finish_reason", "max_output_tokens", 0.05, 3),
            ),
            "note": "new values: model gpt-4.1 (8%), finish_reason max_output_tokens (5%)",
        },
        "small-current": {
            "size": (20_000, 500),
            "shift": 0.6,
            "note": "reference > 1000, current <= 1000: we test with p-values on purpose "
            "(docs/decisions.md), Evidently with distances",
        },
        "missing-as-none": {
            "size": big,
            "shift": 0.6,
            "none": True,
            "note": "missing categorical values given to Evidently as None (it drops them); "
            "we count them as (none)",
        },
    }
    # near the thresholds: one pair of samples (one seed), the change stepped across the line
    for share in (0.17, 0.19, 0.21, 0.23):
        found[f"near-threshold-consumer-{share:.2f}"] = {
            "size": big,
            "seed": 500,
            "change": reassign("consumer", "support-bot", share, 4),
            "note": f"{share:.0%} of calls moved to support-bot: Jensen-Shannon near 0.1",
        }
    for factor in (1.11, 1.12, 1.13, 1.14):
        found[f"near-threshold-latency-{factor:.2f}"] = {
            "size": big,
            "seed": 600,
            "change": scale("latency_ms", factor),
            "note": f"latency x{factor:.2f}: normalized Wasserstein near 0.1",
        }
    found["timing-large"] = {
        "size": (200_000, 50_000),
        "shift": 0.3,
        "note": "for the timing: 250,000 calls",
    }
    return found


def build(spec: dict[str, Any], seed: int) -> tuple[list[Row], list[Row]]:
    n_ref, n_cur = spec["size"]
    seed = spec.get("seed", seed)
    reference = rows(n_ref, seed)
    current = rows(n_cur, seed + 1, spec.get("shift", 0.0))
    if "change" in spec:
        current = spec["change"](current)
    return reference, current


# ---------------------------------------------------------------------------------------------
# Ours
# ---------------------------------------------------------------------------------------------


def sample_of(data: list[Row]) -> Any:
    """A `WindowSample` filled from the rows, as `WindowSample.add` would fill it."""
    from llmops.drift.features import WindowSample

    sample = WindowSample()
    sample.calls = len(data)
    for name in NUMERIC:
        values = array("d", (r[name] for r in data if r[name] == r[name]))
        sample.numeric[name] = values
        sample.seen[name] = len(values)
    for name in CATEGORICAL:
        sample.categorical[name] = Counter(NONE if r[name] is None else r[name] for r in data)
    return sample


def check_extraction(seed: int) -> str:
    """`row_of` + `sample_of` against `WindowSample.add` on the same records."""
    from llmops.drift.features import WindowSample

    records = traffic(3000, seed, 0.5)
    added = WindowSample()
    for record in records:
        added.add(record)
    filled = sample_of([row_of(r) for r in records])
    same = all(list(added.numeric[n]) == list(filled.numeric[n]) for n in NUMERIC) and all(
        added.categorical[n] == filled.categorical[n] for n in CATEGORICAL
    )
    return "identical" if same else "DIFFERENT"


def ours(reference: list[Row], current: list[Row], repeat: int) -> tuple[dict[str, Any], float]:
    from llmops.drift.analysis import analyse

    ref, cur = sample_of(reference), sample_of(current)
    options: dict[str, Any] = {"min_samples": 30, "share": 0.5, "tests": {}, "size_rule": SIZE_RULE}
    analyse(ref, cur, **options)  # warm-up: imports, caches
    times = []
    report: dict[str, Any] = {}
    for _ in range(repeat):
        started = time.perf_counter()
        report = analyse(ref, cur, **options)
        times.append(time.perf_counter() - started)
    found = {
        f["name"]: {"method": f["method"], "score": f["score"], "drift": f["drift"]}
        for f in report["features"]
        if f["name"] != TEXT
    }
    return found, statistics.median(times)


def ours_text(reference: list[Row], current: list[Row]) -> dict[str, Any] | None:
    from llmops.drift.text import text_drift

    ref = [r[TEXT] for r in reference if r[TEXT].strip()][:5000]
    cur = [r[TEXT] for r in current if r[TEXT].strip()][:5000]
    found = text_drift(ref, cur)
    if found is None:
        return None
    return {"method": "domain_classifier", "score": found.roc_auc, "drift": found.drift}


# ---------------------------------------------------------------------------------------------
# Evidently, in its own venv
# ---------------------------------------------------------------------------------------------


def evidently_child(manifest_path: str) -> None:
    """Runs in bench/.venv-evidently: every scenario of the manifest, JSON on stdout."""
    started = time.perf_counter()
    import pandas as pd
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    imported = time.perf_counter() - started
    import evidently

    manifest = json.loads(Path(manifest_path).read_text())
    out: dict[str, Any] = {"version": evidently.__version__, "import_s": imported, "scenarios": {}}
    for name, item in manifest["scenarios"].items():
        dtype = {c: "object" for c in CATEGORICAL}
        ref = pd.read_csv(item["reference"], dtype=dtype, keep_default_na=False, na_values=[""])
        cur = pd.read_csv(item["current"], dtype=dtype, keep_default_na=False, na_values=[""])
        for frame in (ref, cur):
            for column in CATEGORICAL:
                frame[column] = frame[column].astype(object).where(frame[column].notna(), None)

        def run(
            columns: list[str], text: bool, ref: Any = ref, cur: Any = cur
        ) -> tuple[Any, float]:
            definition = DataDefinition(
                numerical_columns=[c for c in columns if c in NUMERIC],
                categorical_columns=[c for c in columns if c in CATEGORICAL],
                text_columns=[TEXT] if text else [],
            )
            begun = time.perf_counter()
            snapshot = Report([DataDriftPreset()], include_tests=True).run(
                current_data=Dataset.from_pandas(cur[columns], data_definition=definition),
                reference_data=Dataset.from_pandas(ref[columns], data_definition=definition),
            )
            return snapshot.dict(), time.perf_counter() - begun

        columns = list(NUMERIC + CATEGORICAL)
        run(columns, False)  # warm-up: lazy imports, caches
        times = []
        result: dict[str, Any] = {}
        for _ in range(manifest["repeat"]):
            result, seconds = run(columns, False)
            times.append(seconds)
        found = _evidently_columns(result)
        if item["text"]:
            text_result, _ = run([TEXT], True)
            found.update(_evidently_columns(text_result))
        out["scenarios"][name] = {"columns": found, "seconds": statistics.median(times)}
    print("RESULT " + json.dumps(out))


def _evidently_columns(snapshot: dict[str, Any]) -> dict[str, Any]:
    scores = {}
    for metric in snapshot["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            scores[config["column"]] = (config["method"], config["threshold"], metric["value"])
    found = {}
    for test in snapshot["tests"]:
        params = test["metric_config"]["params"]
        if not params.get("type", "").endswith("ValueDrift"):
            continue
        column = params["column"]
        method, threshold, score = scores[column]
        status = str(test["status"]).rsplit(".", 1)[-1].strip("'>").upper()
        found[column] = {
            "method": METHODS.get(method, method),
            "threshold": threshold,
            "score": score,
            "drift": status == "FAIL",
        }
    return found


def setup_venv() -> None:
    """Create bench/.venv-evidently with the project's Python and the pinned packages."""
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, *PINS], check=True)


def run_evidently(manifest: dict[str, Any], folder: Path) -> dict[str, Any]:
    path = folder / "manifest.json"
    path.write_text(json.dumps(manifest))
    python = VENV / "bin" / "python"
    if not python.exists():
        raise SystemExit(f"{python} is missing: run `{sys.argv[0]} --setup` first")
    env = {**os.environ, "DO_NOT_TRACK": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("PYTHONPATH", None)  # nothing of the project in Evidently's process
    argv = [str(python), str(Path(__file__).resolve()), "--evidently-child", str(path)]
    out = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=folder)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if out.returncode or not lines:
        raise RuntimeError(f"evidently failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("RESULT "))
    return result


def write_csv(data: list[Row], path: Path, none_as_missing: bool) -> None:
    import csv

    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*NUMERIC, *CATEGORICAL, TEXT])
        for r in data:
            numbers = ["" if r[n] != r[n] else repr(r[n]) for n in NUMERIC]
            keys = [
                ("" if none_as_missing else NONE) if r[c] is None else r[c] for c in CATEGORICAL
            ]
            writer.writerow([*numbers, *keys, r[TEXT]])


# ---------------------------------------------------------------------------------------------
# The tables
# ---------------------------------------------------------------------------------------------


def fmt(score: float | None) -> str:
    if score is None:
        return "-"
    return f"{score:.3g}" if abs(score) >= 1e-3 or score == 0 else f"{score:.1e}"


def verdict(drift: bool | None) -> str:
    return "not enough data" if drift is None else ("drift" if drift else "no drift")


def table(head: tuple[str, ...], body: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(head, widths, strict=True)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in body
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per side and scenario")
    parser.add_argument("--scenario", action="append", help="only these (prefix match)")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--setup", action="store_true", help="create bench/.venv-evidently")
    parser.add_argument(
        "--js-base2",
        action="store_true",
        help="ours with Jensen-Shannon in base 2, as before the fix (to see the difference)",
    )
    parser.add_argument(
        "--size-rule",
        choices=("smaller", "reference"),
        default="smaller",
        help="ours: LLMOPS_DRIFT_SIZE_RULE (reference = Evidently's rule)",
    )
    parser.add_argument("--evidently-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evidently_child:
        evidently_child(args.evidently_child)
        return 0
    if args.setup:
        setup_venv()
        return 0
    global SIZE_RULE
    SIZE_RULE = args.size_rule
    if args.js_base2:
        import numpy as np
        from scipy.spatial import distance

        from llmops.drift import stats

        def base2(ref: np.ndarray, cur: np.ndarray) -> float:
            return float(distance.jensenshannon(ref, cur, base=2))

        stats._jensenshannon = base2  # type: ignore[assignment]
        print("Ours with Jensen-Shannon in base 2 (before the fix)")
    chosen = {
        name: spec
        for name, spec in scenarios().items()
        if not args.scenario or any(name.startswith(s) for s in args.scenario)
    }
    folder = Path(tempfile.mkdtemp(prefix="llmops-vs-evidently-"))
    try:
        print(f"Extraction check (rows vs WindowSample.add): {check_extraction(args.seed)}")
        data: dict[str, tuple[list[Row], list[Row]]] = {}
        manifest: dict[str, Any] = {"repeat": args.repeat, "scenarios": {}}
        for index, (name, spec) in enumerate(chosen.items()):
            reference, current = build(spec, args.seed + 10 * index)
            data[name] = (reference, current)
            none = bool(spec.get("none"))
            write_csv(reference, folder / f"{name}-ref.csv", none)
            write_csv(current, folder / f"{name}-cur.csv", none)
            manifest["scenarios"][name] = {
                "reference": str(folder / f"{name}-ref.csv"),
                "current": str(folder / f"{name}-cur.csv"),
                "text": spec["size"][0] <= 20_000,
            }
        print("running Evidently ...", file=sys.stderr, flush=True)
        theirs = run_evidently(manifest, folder)
        print(f"Evidently {theirs['version']} (import {theirs['import_s']:.1f} s, not timed)")
        summary = []
        failed = False
        for name, spec in chosen.items():
            reference, current = data[name]
            print(f"ours: {name} ...", file=sys.stderr, flush=True)
            mine, seconds = ours(reference, current, args.repeat)
            if manifest["scenarios"][name]["text"]:
                mine[TEXT] = ours_text(reference, current)
            other = theirs["scenarios"][name]
            body = []
            agree = same_method = 0
            for feature in [*NUMERIC, *CATEGORICAL, TEXT]:
                a, b = mine.get(feature), other["columns"].get(feature)
                if a is None or b is None:
                    continue
                matches = a["drift"] == b["drift"]
                counted = feature != TEXT
                if counted:
                    agree += matches
                    same_method += a["method"] == b["method"]
                    if not matches and a["method"] == b["method"]:
                        failed = True
                body.append(
                    (
                        feature + ("" if counted else " (not counted)"),
                        f"{a['method']} {fmt(a['score'])} {verdict(a['drift'])}",
                        f"{b['method']} {fmt(b['score'])} {verdict(b['drift'])}",
                        "yes" if matches else "NO",
                    )
                )
            n_ref, n_cur = spec["size"]
            print()
            print(f"### {name}: {n_ref:,} reference / {n_cur:,} current calls ({spec['note']})")
            print()
            print(table(("feature", "ours", "Evidently", "agree"), body))
            ratio = other["seconds"] / seconds
            print(
                f"\ntime (median of {args.repeat}): ours {seconds * 1000:.0f} ms, Evidently "
                f"{other['seconds'] * 1000:.0f} ms, Evidently / ours x{ratio:.1f}"
            )
            counted_n = len(NUMERIC) + len(CATEGORICAL)
            summary.append(
                (
                    name,
                    f"{n_ref:,} / {n_cur:,}",
                    f"{agree}/{counted_n}",
                    f"{same_method}/{counted_n}",
                    f"{seconds * 1000:,.0f} ms",
                    f"{other['seconds'] * 1000:,.0f} ms",
                    f"x{ratio:.1f}",
                )
            )
        print()
        print("### Summary")
        print()
        head = (
            "scenario",
            "reference / current",
            "verdicts agree",
            "same test",
            "ours",
            "Evidently",
            "Evidently / ours",
        )
        print(table(head, summary))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
