"""How the gateway starts its helper processes (the record builder, the trace exporter)."""

from __future__ import annotations

import json
import os
import sys
from typing import Any


def child_command(module: str, settings_var: str, config: Any) -> tuple[list[str], dict[str, str]]:
    """The command and environment of `python -m module`, its settings as JSON in
    `settings_var`. The child imports llmops and its dependencies from where this process
    does (under the Functions host sys.path holds the app's folders, PYTHONPATH does not);
    `-P`: not from the working directory first, which `-m` would otherwise put ahead."""
    env = {**os.environ, settings_var: json.dumps(config)}
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    return [sys.executable, "-P", "-m", module], env
