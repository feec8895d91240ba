"""The deployed dependency set is declared twice (Functions reads requirements.txt, pip reads
pyproject.toml); they must agree, and stay lean."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def requirement_lines(path: Path) -> list[str]:
    lines = [line.split("#")[0].strip() for line in path.read_text().splitlines()]
    return [line for line in lines if line]


def test_requirements_txt_matches_pyproject_dependencies() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert requirement_lines(ROOT / "requirements.txt") == pyproject["project"]["dependencies"]


def test_deployed_set_has_no_dev_or_heavy_packages() -> None:
    deployed = " ".join(requirement_lines(ROOT / "requirements.txt")).lower()
    for name in ("pytest", "ruff", "mypy", "openai", "httpx", "uvicorn", "mlflow>="):
        assert name not in deployed


def test_console_script_points_at_the_cli() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"] == {"llmops": "llmops.cli:main"}
