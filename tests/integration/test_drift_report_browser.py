"""The HTML drift report in a real headless browser (Debian `chromium`).

The browser parses the page (`--dump-dom`: the DOM it built, so markup errors would show) and
draws it (`--screenshot`): the charts must actually render, which the screenshot's pixels in
the current window's colour prove. Without chromium the test is skipped locally, and fails in
CI (`.ci/run` installs it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from llmops.drift.monitor import DriftMonitor, report_name
from llmops.drift.schedule import Window
from llmops.logs.store import LocalStore
from llmops.settings import REPORT_CONTAINER, Settings
from tests.fakes.records import traffic, write_records

pytestmark = pytest.mark.integration
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
CURRENT_RED = (0xCF, 0x22, 0x2E)  # the current window's bars (llmops/drift/html.py)


def browser(*args: str) -> subprocess.CompletedProcess[str]:
    if BROWSER is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture
def report_page(tmp_path: Path) -> Path:
    now = datetime(2026, 11, 22, 14, 0, tzinfo=UTC)
    hour = timedelta(hours=1)
    records = traffic(now - 25 * hour, now - hour, 1200, seed=1)
    records += traffic(now - hour, now, 200, shifted=True, seed=2)
    records[-1]["request"]["messages"][-1]["content"] = "<script>alert('x')</script> outage"
    asyncio.run(write_records(LocalStore(tmp_path / "store", "request-logs"), records))
    settings = Settings.from_env({**os.environ, "LLMOPS_DRIFT_REFERENCE_HOURS": "24"})
    monitor = DriftMonitor(settings)
    current = Window(now - hour, now)
    asyncio.run(monitor.run_window(current))
    return tmp_path / "store" / REPORT_CONTAINER / report_name(current, "html")


def test_the_browser_builds_the_page_summary_first(report_page: Path) -> None:
    dom = browser("--dump-dom", report_page.as_uri()).stdout

    assert "<title>Drift report 20261122T1300Z-20261122T1400Z</title>" in dom
    assert dom.index("Traffic drifted") < dom.index("<h2>Features</h2>")
    assert dom.index("<h2>Features</h2>") < dom.index('id="f-latency_ms"')
    assert dom.count("<svg viewBox") == 2 * 11  # reference and current, per non-text feature
    assert "What users ask about" in dom
    assert "<script>alert" not in dom  # the user's prompt stayed text


def test_the_charts_are_drawn(report_page: Path, tmp_path: Path) -> None:
    from PIL import Image

    shot = tmp_path / "report.png"
    browser("--window-size=1200,2400", f"--screenshot={shot}", report_page.as_uri())

    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2400)
    colours = image.getcolors(maxcolors=1_000_000) or []
    red = sum(count for count, rgb in colours if rgb == CURRENT_RED)
    assert red > 5_000  # the current window's bars are on screen
    assert len(colours) > 50  # text, tables and charts, not a blank page
