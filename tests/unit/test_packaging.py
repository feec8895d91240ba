"""The deployed dependency set is declared twice (Functions reads requirements.txt, pip reads
pyproject.toml); they must agree, and stay lean."""

from __future__ import annotations

import ast
import re
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


def test_every_setting_is_in_the_readme() -> None:
    """Each environment variable `llmops/settings.py` names has a line in the README."""
    tree = ast.parse((ROOT / "llmops" / "settings.py").read_text())
    names = [
        node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.isupper()
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", node.value.value)
    ]
    assert len(names) > 30
    readme = (ROOT / "README.md").read_text()
    assert [name for name in names if f"`{name}`" not in readme] == []
