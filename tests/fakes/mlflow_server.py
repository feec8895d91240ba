"""A real MLflow tracking server (`mlflow server`, SQLite backend) on 127.0.0.1, for the tests
of trace export over OTLP. It starts in 10 to 20 s here, so tests share one per module."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from tests.fakes.azurite import free_port

MLFLOW = Path(sys.executable).parent / "mlflow"


class _PortTaken(RuntimeError):
    """Another process took the port between `free_port()` and the server binding it."""


class MlflowServer:
    """One `mlflow server` process group. Use as a context manager."""

    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="mlflow-server-"))
        self.url = f"http://127.0.0.1:{self.port}"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server; on a port taken meanwhile (it was free when picked, and the
        server binds it seconds later), again on another port, twice at most."""
        for attempt in range(3):
            try:
                self._start()
                return
            except _PortTaken:
                if attempt == 2:
                    raise
                self.port = free_port()
                self.url = f"http://127.0.0.1:{self.port}"

    def _start(self) -> None:
        argv = [str(MLFLOW), "server", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--backend-store-uri", f"sqlite:///{self.folder}/mlflow.db"]
        argv += ["--default-artifact-root", str(self.folder / "artifacts"), "--workers", "1"]
        env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
        with open(self.folder / "server.log", "wb") as log:  # the child keeps its own copy
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self.stop()  # its uvicorn worker may outlive it
                output = self.log()
                if "address already in use" in output.lower():
                    raise _PortTaken(self.port)
                raise RuntimeError(f"mlflow server exited: {output[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("mlflow server did not start within 90 s")

    def log(self) -> str:
        return (self.folder / "server.log").read_text(errors="replace")

    def stop(self) -> None:
        if self._process is not None:
            try:
                os.killpg(self._process.pid, signal.SIGTERM)  # the server and its worker
            except ProcessLookupError:  # the whole group is gone already
                pass
            try:
                self._process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self._process.pid, signal.SIGKILL)
                self._process.wait(15)
        self._process = None

    def __enter__(self) -> MlflowServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)
