"""The `llmops` command: local entry points to the same use cases the Functions app runs."""

from __future__ import annotations

import argparse
import logging
import sys

from llmops.settings import Settings, SettingsError


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run one subcommand."""
    parser = argparse.ArgumentParser(prog="llmops", description="LLMOps gateway tools.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the gateway's HTTP API with uvicorn")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=7071)
    serve.add_argument(
        "--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"]
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"llmops: configuration error: {exc}", file=sys.stderr)
        return 2
    return _serve(settings, args.host, args.port, args.log_level)


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


if __name__ == "__main__":
    raise SystemExit(main())
