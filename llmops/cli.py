"""The `llmops` command: local entry points to the same use cases the Functions app runs."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from datetime import datetime

from llmops.settings import Settings, SettingsError, parse_instant

_LEVELS = ["critical", "error", "warning", "info", "debug"]


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one subcommand."""
    parser = argparse.ArgumentParser(prog="llmops", description="LLMOps gateway tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the gateway's HTTP API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument("--log-level", default="info", choices=_LEVELS)
    drift = commands.add_parser(
        "drift",
        help="compare a current window of the request log with a reference window",
        description="Without times: the window the schedule (LLMOPS_DRIFT_SCHEDULE) last "
        "closed, against the reference the settings give. Times are ISO 8601, UTC unless "
        "they carry an offset, e.g. 2026-11-22T14:00Z.",
    )
    drift.add_argument("--current-start", type=_instant)
    drift.add_argument("--current-end", type=_instant)
    drift.add_argument("--reference-start", type=_instant)
    drift.add_argument("--reference-end", type=_instant)
    drift.add_argument("--json", action="store_true", help="print the whole report as JSON")
    simulate = commands.add_parser(
        "simulate",
        help="send synthetic traffic through a local gateway (mock upstream), then run drift",
    )
    simulate.add_argument("--calls", type=int, default=500, help="calls per phase")
    simulate.add_argument(
        "--shift", type=float, default=1.0, help="0 = same traffic twice, 1 = fully shifted"
    )
    simulate.add_argument("--no-drift", action="store_true", help="only send the traffic")
    retrain = commands.add_parser(
        "retrain",
        help="submit a retraining request, or refresh a request's Databricks run state",
    )
    retrain_actions = retrain.add_subparsers(dest="action", required=True)
    submit = retrain_actions.add_parser(
        "submit", help="write FILE to retrain-requests/ and start the job as the trigger would"
    )
    submit.add_argument("file")
    submit.add_argument("--name", help="blob name (default: the file's name)")
    status = retrain_actions.add_parser("status", help="refresh retrain-runs/NAME.json")
    status.add_argument("name")
    registry = commands.add_parser("registry", help="MLflow registry aliases the gateway serves")
    registry_actions = registry.add_subparsers(dest="action", required=True)
    promote = registry_actions.add_parser(
        "promote", help="point an alias (default champion) at a model or prompt version"
    )
    promote.add_argument("name")
    promote.add_argument("version")
    promote.add_argument("--alias", default="champion")
    promote.add_argument("--prompt", action="store_true", help="NAME is a registered prompt")
    for command in (drift, simulate, submit, status, promote):
        command.add_argument("--log-level", default="warning", choices=_LEVELS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"llmops: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "drift":
        return _drift(settings, args)
    if args.command == "simulate":
        return _simulate(settings, args)
    if args.command == "registry":
        return _promote(settings, args)
    if args.command == "retrain":
        from llmops.retrain.run import run_cli

        target = args.file if args.action == "submit" else args.name
        name = args.name if args.action == "submit" else None
        return asyncio.run(run_cli(settings, args.action, target, name))
    return _serve(settings, args.host, args.port, args.log_level)


def _instant(raw: str) -> datetime:
    try:
        return parse_instant(raw)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _drift(settings: Settings, args: argparse.Namespace) -> int:
    from llmops.drift.run import run_cli

    bounds = (args.current_start, args.current_end, args.reference_start, args.reference_end)
    if (bounds[0] is None) != (bounds[1] is None) or (bounds[2] is None) != (bounds[3] is None):
        print(
            "llmops drift: give both --current-start and --current-end, and both "
            "--reference-start and --reference-end",
            file=sys.stderr,
        )
        return 2
    if bounds[2] is not None and bounds[0] is None:
        print("llmops drift: a reference window needs a current window too", file=sys.stderr)
        return 2
    for start, end in (bounds[:2], bounds[2:]):
        if start is not None and end is not None and start >= end:
            print("llmops drift: a window's start must be before its end", file=sys.stderr)
            return 2
    return asyncio.run(run_cli(settings, *bounds, as_json=args.json))


def _simulate(settings: Settings, args: argparse.Namespace) -> int:
    from llmops.drift.run import run_simulation

    if args.calls < 1 or not 0.0 <= args.shift <= 1.0:
        print("llmops simulate: --calls must be >= 1 and --shift between 0 and 1", file=sys.stderr)
        return 2
    return asyncio.run(run_simulation(settings, args.calls, args.shift, drift=not args.no_drift))


def _serve(settings: Settings, host: str, port: int, log_level: str) -> int:
    import uvicorn

    from llmops.gateway.service import Gateway
    from llmops.server import create_app

    described = settings.describe()
    print(
        f"llmops gateway on http://{host}:{port}/api -> upstream {settings.upstream}: "
        f"{described['target']}",
        file=sys.stderr,
    )
    if settings.upstream == "mock":
        print(
            "llmops: serving the OFFLINE MOCK model"
            + (
                ""
                if settings.upstream_explicit
                else " because no upstream is configured (set AZURE_OPENAI_ENDPOINT or "
                "OPENAI_BASE_URL)"
            ),
            file=sys.stderr,
        )
    if settings.open_access:
        print(
            "llmops: OPEN ACCESS: no LLMOPS_API_KEYS configured, every call is consumer "
            "'anonymous'",
            file=sys.stderr,
        )
    app = create_app(Gateway(settings), tune_gc=True)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,  # no client addresses are used; saves a middleware per call
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


def _promote(settings: Settings, args: argparse.Namespace) -> int:
    from llmops.registry.promote import promote

    try:
        print(promote(settings, args.name, args.version, args.alias, prompt=args.prompt))
    except Exception as exc:  # MLflow's own errors say what is missing
        print(f"llmops registry promote: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
