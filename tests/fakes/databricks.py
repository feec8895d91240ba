"""A fake Databricks workspace on 127.0.0.1 that speaks the Jobs REST API, for `databricks-sdk`.

- Jobs 2.1 and 2.2 (the SDK calls 2.2): `POST jobs/run-now`, `GET jobs/runs/get`,
  `GET jobs/runs/get-output`; also `GET /api/2.0/preview/scim/v2/Me` and the
  unauthenticated `GET /.well-known/databricks-config` that `Config()` probes on construction.
- Auth like the service: no bearer credential -> 401, a wrong token -> 403 "Invalid access
  token."; both with a numeric `error_code`, as the service sends them.
- Errors in the service's shape `{"error_code": ..., "message": ...}`: an unknown job or run is a
  400 INVALID_PARAMETER_VALUE "Job 999 does not exist." / "Run 5 does not exist." (the SDK turns
  the runs/get one into ResourceDoesNotExist), an unknown path is 404 ENDPOINT_NOT_FOUND.
- `idempotency_token` (at most 64 characters): a token seen before returns the run it started
  and starts nothing.
- Each run has one task (`main`) with its own run id; get-output takes the task's run id and
  refuses the job run's, as the multi-task service does.
- Faults, planned per endpoint in order: any status with Databricks' error body and
  `Retry-After`, and a delay. A delay on a request that succeeds is served after the work is
  done (the run exists, the answer is late): the case idempotency tokens exist for.
Every request is recorded (method, path, query, headers, parsed body, endpoint) for assertions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web

MAX_IDEMPOTENCY_TOKEN = 64
ENDPOINTS = ("run-now", "runs/get", "runs/get-output", "me", "host-metadata")
ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    404: "RESOURCE_DOES_NOT_EXIST",
    409: "RESOURCE_CONFLICT",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
ERROR_MESSAGES = {
    429: "Too many requests. Please wait a moment and try again.",
    500: "Internal error occurred while processing the request.",
    503: "The service is temporarily unavailable. Please try again later.",
}
TERMINAL_STATES = ("TERMINATED", "SKIPPED", "INTERNAL_ERROR")
# RunState.life_cycle_state (deprecated) -> RunStatus.state
STATUS_STATES = {
    **{same: same for same in ("QUEUED", "PENDING", "RUNNING", "TERMINATING", "TERMINATED")},
    **{"BLOCKED": "BLOCKED", "WAITING_FOR_RETRY": "WAITING"},
    **{"SKIPPED": "TERMINATED", "INTERNAL_ERROR": "TERMINATED"},
}
# result_state -> (termination_details.code, termination_details.type)
TERMINATIONS = {
    "SUCCESS": ("SUCCESS", "SUCCESS"),
    "SUCCESS_WITH_FAILURES": ("SUCCESS_WITH_FAILURES", "SUCCESS"),
    "FAILED": ("RUN_EXECUTION_ERROR", "CLIENT_ERROR"),
    "TIMEDOUT": ("CANCELED", "CLIENT_ERROR"),
    "CANCELED": ("USER_CANCELED", "SUCCESS"),
}


@dataclass
class Recorded:
    """One request as the fake received it (header names lower-cased)."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    endpoint: str | None
    at: float  # time.monotonic() on arrival, to measure a client's backoff


@dataclass
class Fault:
    """How the fake answers one request instead of normally."""

    status: int | None = None  # None: answer normally (after `delay_s`)
    retry_after: int | str | None = None  # the Retry-After header, in seconds
    delay_s: float = 0.0
    body: Any = None  # None: Databricks' error body for `status`


@dataclass
class FakeRun:
    """A job run the fake started. Read it with `fake.run(run_id)` (a copy)."""

    run_id: int
    task_run_id: int
    job_id: int
    run_name: str
    job_parameters: dict[str, str]
    idempotency_token: str | None
    start_time: int
    life_cycle_state: str = "PENDING"
    result_state: str | None = None
    state_message: str = ""
    end_time: int = 0
    output: str | None = None


class ApiError(Exception):
    """A Databricks error answer, raised by a handler."""

    def __init__(self, status: int, error_code: str | int, message: str) -> None:
        super().__init__(message)
        self.status, self.error_code, self.message = status, error_code, message


class FakeDatabricks:
    """The fake workspace. Use as a context manager; `host` is its address, `token` its PAT."""

    def __init__(
        self,
        *,
        jobs: Mapping[int, str] | None = None,
        token: str = "dapi-fake-token-0123456789abcdef",
        workspace_id: str = "1234567890123456",
        user: str = "retrain-bot@example.com",
        host_metadata: bool = True,
    ) -> None:
        self.jobs = dict(jobs if jobs is not None else {123: "retrain-llm"})
        self.token = token
        self.workspace_id = workspace_id
        self.user = user
        self.host_metadata = host_metadata  # False: 404, like control planes that predate it
        self.requests: list[Recorded] = []
        self.port = 0
        self._lock = threading.Lock()
        self._runs: dict[int, FakeRun] = {}
        self._tokens: dict[str, int] = {}
        self._faults: dict[str, list[Fault]] = defaultdict(list)
        self._next_id = 700_000_000_000_001
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # --- control (from the test's thread) ------------------------------------------------
    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(
        self,
        endpoint: str,
        *,
        status: int | None = None,
        retry_after: int | str | None = None,
        delay: float = 0.0,
        times: int = 1,
        body: Any = None,
    ) -> None:
        """Answer the next `times` requests to `endpoint` (one of ENDPOINTS) with `status`
        (and Databricks' error body unless `body` is given), after `delay` seconds; with no
        status, answer normally but `delay` seconds late."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")
        with self._lock:
            self._faults[endpoint].extend(
                Fault(status, retry_after, delay, body) for _ in range(times)
            )

    def set_state(self, run_id: int, life_cycle_state: str, message: str = "") -> None:
        """Move a run to a non-finished lifecycle state (RUNNING, QUEUED, ...), or to SKIPPED /
        INTERNAL_ERROR; use `finish` for TERMINATED."""
        if life_cycle_state not in STATUS_STATES or life_cycle_state == "TERMINATED":
            raise ValueError(f"cannot set {life_cycle_state!r}; use finish() for TERMINATED")
        with self._lock:
            run = self._runs[run_id]
            run.life_cycle_state, run.state_message = life_cycle_state, message
            if life_cycle_state in TERMINAL_STATES:
                run.end_time = _now_ms()

    def finish(
        self,
        run_id: int,
        result_state: str = "SUCCESS",
        message: str | None = None,
        output: str | None = None,
    ) -> None:
        """Terminate a run with `result_state` (SUCCESS, FAILED, TIMEDOUT, CANCELED, ...);
        `output` is what the task's notebook returned (get-output's notebook_output.result)."""
        if result_state not in TERMINATIONS:
            raise ValueError(f"unknown result state {result_state!r}")
        with self._lock:
            run = self._runs[run_id]
            run.life_cycle_state, run.result_state = "TERMINATED", result_state
            run.end_time = _now_ms()
            if message is None:
                message = "" if result_state == "SUCCESS" else "Task main failed."
            run.state_message, run.output = message, output

    def run(self, run_id: int) -> FakeRun:
        """A copy of one run, by its job run id."""
        with self._lock:
            return dataclasses.replace(self._runs[run_id])

    @property
    def runs(self) -> list[FakeRun]:
        """Copies of every run started, in order."""
        with self._lock:
            return [dataclasses.replace(run) for run in self._runs.values()]

    def calls(self, endpoint: str | None = None) -> list[Recorded]:
        """Requests received, optionally only those to one endpoint."""
        with self._lock:
            return [r for r in self.requests if endpoint is None or r.endpoint == endpoint]

    def __enter__(self) -> FakeDatabricks:
        ready = threading.Event()

        def serve() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)
            loop.run_until_complete(runner.setup())
            site = web.TCPSite(runner, "127.0.0.1", 0)
            loop.run_until_complete(site.start())
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=serve, name="fake-databricks", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("fake Databricks did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._thread is not None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # --- HTTP ----------------------------------------------------------------------------
    def _app(self) -> web.Application:
        app = web.Application()
        route = self._route
        for version in ("2.1", "2.2"):
            jobs = f"/api/{version}/jobs"
            app.router.add_post(f"{jobs}/run-now", route("run-now", self._run_now))
            app.router.add_get(f"{jobs}/runs/get", route("runs/get", self._get_run))
            app.router.add_get(f"{jobs}/runs/get-output", route("runs/get-output", self._output))
        app.router.add_get("/api/2.0/preview/scim/v2/Me", route("me", self._me))
        app.router.add_get(
            "/.well-known/databricks-config",
            route("host-metadata", self._metadata, authenticated=False),
        )
        app.router.add_route("*", "/{tail:.*}", route(None, self._unknown, authenticated=False))
        return app

    def _route(
        self,
        endpoint: str | None,
        handler: Callable[[web.Request, Any], dict[str, Any]],
        *,
        authenticated: bool = True,
    ) -> Callable[[web.Request], Any]:
        async def serve(request: web.Request) -> web.Response:
            raw = await request.read()
            try:
                body = json.loads(raw) if raw else None
            except ValueError:
                body = raw
            with self._lock:
                self.requests.append(
                    Recorded(
                        request.method,
                        request.path,
                        dict(request.query),
                        {k.lower(): v for k, v in request.headers.items()},
                        body,
                        endpoint,
                        time.monotonic(),
                    )
                )
                plan = self._faults.get(endpoint or "")
                fault = plan.pop(0) if plan else None
            if fault is not None and fault.status is not None:
                await asyncio.sleep(fault.delay_s)
                return _fault_response(fault)
            try:
                if authenticated:
                    self._authenticate(request)
                with self._lock:
                    response = web.json_response(handler(request, body))
            except ApiError as error:
                response = _error(error)
            if fault is not None:
                await asyncio.sleep(fault.delay_s)
            return response

        return serve

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise ApiError(
                401,
                401,
                "Credential was not sent or was of an unsupported type for this API. "
                f"[ReqId: {uuid.uuid4()}]",
            )
        if credential.strip() != self.token:
            raise ApiError(403, 403, "Invalid access token.")

    # --- handlers (called with the lock held) ---------------------------------------------
    def _run_now(self, request: web.Request, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ApiError(400, "MALFORMED_REQUEST", "Could not parse request object.")
        token = body.get("idempotency_token")
        if token is not None and (not isinstance(token, str) or len(token) > MAX_IDEMPOTENCY_TOKEN):
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                f"The idempotency token must have at most {MAX_IDEMPOTENCY_TOKEN} characters.",
            )
        parameters = body.get("job_parameters") or {}
        if not isinstance(parameters, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in parameters.items()
        ):
            raise ApiError(
                400,
                "MALFORMED_REQUEST",
                "Could not parse request object: job_parameters must map strings to strings.",
            )
        if token is not None and token in self._tokens:
            run_id = self._tokens[token]
            return {"run_id": run_id, "number_in_job": run_id}
        job_id = body.get("job_id")
        if not isinstance(job_id, int) or isinstance(job_id, bool):
            raise ApiError(400, "INVALID_PARAMETER_VALUE", "Missing required field: job_id")
        if job_id not in self.jobs:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Job {job_id} does not exist.")
        run_id, task_run_id = self._next_id, self._next_id + 1
        self._next_id += 2
        self._runs[run_id] = FakeRun(
            run_id=run_id,
            task_run_id=task_run_id,
            job_id=job_id,
            run_name=self.jobs[job_id],
            job_parameters=dict(parameters),
            idempotency_token=token,
            start_time=_now_ms(),
        )
        if token is not None:
            self._tokens[token] = run_id
        return {"run_id": run_id, "number_in_job": run_id}

    def _get_run(self, request: web.Request, body: Any) -> dict[str, Any]:
        run_id = _run_id(request)
        run = self._runs.get(run_id)
        if run is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        return self._run_json(run)

    def _output(self, request: web.Request, body: Any) -> dict[str, Any]:
        run_id = _run_id(request)
        if run_id in self._runs:
            raise ApiError(
                400,
                "INVALID_PARAMETER_VALUE",
                "Retrieving the output of runs with multiple tasks is not supported. "
                "Please retrieve the output of each individual task run instead.",
            )
        run = next((r for r in self._runs.values() if r.task_run_id == run_id), None)
        if run is None:
            raise ApiError(400, "INVALID_PARAMETER_VALUE", f"Run {run_id} does not exist.")
        answer: dict[str, Any] = {"metadata": self._task_json(run, with_job=True)}
        if run.result_state == "SUCCESS" and run.output is not None:
            answer["notebook_output"] = {"result": run.output, "truncated": False}
        elif run.result_state not in (None, "SUCCESS"):
            answer["error"] = run.state_message
        return answer

    def _me(self, request: web.Request, body: Any) -> dict[str, Any]:
        return {
            "id": "8000000000000001",
            "userName": self.user,
            "displayName": self.user.split("@")[0],
            "active": True,
            "emails": [{"value": self.user, "type": "work", "primary": True}],
            "schemas": [
                "urn:ietf:params:scim:schemas:core:2.0:User",
                "urn:ietf:params:scim:schemas:extension:workspace:2.0:User",
            ],
        }

    def _metadata(self, request: web.Request, body: Any) -> dict[str, Any]:
        if not self.host_metadata:
            raise ApiError(404, "ENDPOINT_NOT_FOUND", "Not Found")
        return {
            "host_type": "WORKSPACE_HOST",
            "workspace_id": self.workspace_id,
            "oidc_endpoint": f"{self.host}/oidc",
        }

    def _unknown(self, request: web.Request, body: Any) -> dict[str, Any]:
        raise ApiError(
            404, "ENDPOINT_NOT_FOUND", f"No API found for '{request.method} {request.path}'"
        )

    # --- the Run object ------------------------------------------------------------------
    def _page_url(self, job_id: int, run_id: int) -> str:
        return f"{self.host}/?o={self.workspace_id}#job/{job_id}/run/{run_id}"

    def _run_json(self, run: FakeRun) -> dict[str, Any]:
        finished = run.life_cycle_state in TERMINAL_STATES
        return {
            "job_id": run.job_id,
            "run_id": run.run_id,
            "job_run_id": run.run_id,
            "number_in_job": run.run_id,
            "original_attempt_run_id": run.run_id,
            "creator_user_name": self.user,
            "run_name": run.run_name,
            "run_page_url": self._page_url(run.job_id, run.run_id),
            "run_type": "JOB_RUN",
            "trigger": "ONE_TIME",
            "format": "MULTI_TASK",
            "attempt_number": 0,
            "start_time": run.start_time,
            "end_time": run.end_time,
            "setup_duration": 0,
            "execution_duration": 0,
            "cleanup_duration": 0,
            "run_duration": run.end_time - run.start_time if finished else 0,
            "queue_duration": 0,
            "state": _state(run),
            "status": _status(run),
            "job_parameters": [{"name": k, "value": v} for k, v in run.job_parameters.items()],
            "overriding_parameters": {"job_parameters": dict(run.job_parameters)},
            "tasks": [self._task_json(run)],
            "has_more": False,
        }

    def _task_json(self, run: FakeRun, *, with_job: bool = False) -> dict[str, Any]:
        task: dict[str, Any] = {
            "task_key": "main",
            "run_id": run.task_run_id,
            "run_page_url": self._page_url(run.job_id, run.task_run_id),
            "attempt_number": 0,
            "start_time": run.start_time,
            "end_time": run.end_time,
            "state": _state(run),
            "status": _status(run),
            "notebook_task": {
                "notebook_path": f"/Workspace/llmops/{run.run_name}",
                "source": "WORKSPACE",
            },
        }
        if with_job:
            task.update(job_id=run.job_id, job_run_id=run.run_id, run_name="main")
        return task


def _state(run: FakeRun) -> dict[str, Any]:
    state: dict[str, Any] = {
        "life_cycle_state": run.life_cycle_state,
        "state_message": run.state_message,
        "user_cancelled_or_timedout": run.result_state in ("CANCELED", "TIMEDOUT"),
    }
    if run.result_state is not None:
        state["result_state"] = run.result_state
    return state


def _status(run: FakeRun) -> dict[str, Any]:
    status: dict[str, Any] = {"state": STATUS_STATES[run.life_cycle_state]}
    if run.result_state is not None:
        code, kind = TERMINATIONS[run.result_state]
    elif run.life_cycle_state == "SKIPPED":
        code, kind = "SKIPPED", "SUCCESS"
    elif run.life_cycle_state == "INTERNAL_ERROR":
        code, kind = "INTERNAL_ERROR", "INTERNAL_ERROR"
    else:
        return status
    status["termination_details"] = {"code": code, "type": kind, "message": run.state_message}
    return status


def _run_id(request: web.Request) -> int:
    try:
        return int(request.query.get("run_id", ""))
    except ValueError:
        raise ApiError(400, "INVALID_PARAMETER_VALUE", "Invalid run_id.") from None


def _error(error: ApiError) -> web.Response:
    headers = {"X-Databricks-Reason-Phrase": error.message}
    body = {"error_code": error.error_code, "message": error.message}
    return web.json_response(body, status=error.status, headers=headers)


def _fault_response(fault: Fault) -> web.Response:
    assert fault.status is not None
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    body = fault.body
    if body is None:
        phrase = HTTPStatus(fault.status).phrase
        code = ERROR_CODES.get(fault.status, phrase.upper().replace(" ", "_"))
        body = {"error_code": code, "message": ERROR_MESSAGES.get(fault.status, phrase)}
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    content_type = "text/html" if isinstance(body, bytes) else "application/json"
    return web.Response(
        status=fault.status, body=payload, headers={**headers, "Content-Type": content_type}
    )


def _now_ms() -> int:
    return int(time.time() * 1000)
