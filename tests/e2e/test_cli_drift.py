"""`llmops drift` and `llmops simulate` as a newcomer runs them: the console script, real files."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmops.logs.store import LocalStore
from tests.fakes.records import traffic, write_records

pytestmark = pytest.mark.e2e
LLMOPS = Path(sys.executable).parent / "llmops"


def llmops(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("LLMOPS_", "MLFLOW_"))},
        "LLMOPS_LOCAL_STORE_DIR": str(tmp_path / "store"),
        "LLMOPS_SPOOL_DIR": str(tmp_path / "spool"),
        "LLMOPS_TRACING": "off",
    }
    return subprocess.run(
        [str(LLMOPS), *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


def test_drift_over_explicit_windows(tmp_path: Path) -> None:
    start = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    records = traffic(start, start + 6 * hour, 600, seed=1)
    records += traffic(start + 6 * hour, start + 7 * hour, 300, shifted=True, seed=2)
    asyncio.run(write_records(LocalStore(tmp_path / "store", "request-logs"), records))

    result = llmops(
        tmp_path,
        "drift",
        "--current-start=2026-11-20T06:00Z",
        "--current-end=2026-11-20T07:00Z",
        "--reference-start=2026-11-20T00:00Z",
        "--reference-end=2026-11-20T06:00Z",
    )

    assert result.returncode == 0, result.stderr
    assert "drift 20261120T0600Z-20261120T0700Z: DRIFT" in result.stdout
    assert "300 calls" in result.stdout and "600 calls (explicit)" in result.stdout
    report = tmp_path / "store/drift-reports/reports/20261120T0600Z-20261120T0700Z.json"
    assert json.loads(report.read_text())["windows"]["reference"]["records"] == 600
    assert str(tmp_path / "store" / "drift-reports") in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--current-start=2026-11-20T06:00Z"], "give both --current-start and --current-end"),
        (
            ["--current-start=2026-11-20T07:00Z", "--current-end=2026-11-20T06:00Z"],
            "start must be before its end",
        ),
        (["--current-start=yesterday", "--current-end=2026-11-20T06:00Z"], "ISO 8601"),
        (
            ["--reference-start=2026-11-20T00:00Z", "--reference-end=2026-11-20T06:00Z"],
            "needs a current window",
        ),
    ],
)
def test_drift_refuses_bad_windows(tmp_path: Path, args: list[str], message: str) -> None:
    result = llmops(tmp_path, "drift", *args)

    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_shows_drift_end_to_end(tmp_path: Path) -> None:
    result = llmops(tmp_path, "simulate", "--calls", "150", "--shift", "1")

    assert result.returncode == 0, result.stderr
    assert ": DRIFT (" in result.stdout
    assert "prompt_text" in result.stdout
    logs = list((tmp_path / "store" / "request-logs").rglob("*.jsonl"))
    records = [json.loads(line) for path in logs for line in path.read_text().splitlines()]
    assert len(records) == 300  # every simulated call went through the gateway's request log
    assert {r["consumer"] for r in records} >= {"support-bot", "web-app", "ops-dashboard"}


def test_simulate_without_shift_does_not_drift(tmp_path: Path) -> None:
    result = llmops(tmp_path, "simulate", "--calls", "150", "--shift", "0")

    assert result.returncode == 0, result.stderr
    assert ": NO DRIFT (" in result.stdout
