"""The gateway's Azure Functions: thin HTTP triggers over the shared handlers.

The request/response annotations come from `azurefunctions-extensions-http-fastapi`, which
tells the Python worker to hand these functions FastAPI (Starlette) requests and to stream
their responses (app setting `PYTHON_ENABLE_INIT_INDEXING=1`). Routes sit under the host's
`api` prefix (host.json). Chat and model routes need a function key on Azure (auth level
FUNCTION) on top of the gateway's own consumer keys; health is anonymous so that probes can
call it, and it returns no secret.
"""

# No `from __future__ import annotations`: the worker inspects these annotations as classes.
import azure.functions as func
from azurefunctions.extensions.http.fastapi import Request, Response

from llmops.gateway.http import dispatch
from llmops.gateway.routes import AZURE_CHAT_ROUTE, CHAT_ROUTE, HEALTH_ROUTE, MODELS_ROUTE

bp = func.Blueprint()  # type: ignore[no-untyped-call]


@bp.function_name("chat_completions")
@bp.route(route=CHAT_ROUTE, methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION)
async def chat_completions(req: Request) -> Response:
    """OpenAI-style chat completions (streaming and not)."""
    return await dispatch("chat_completions", req)


@bp.function_name("azure_chat_completions")
@bp.route(
    route=AZURE_CHAT_ROUTE, methods=[func.HttpMethod.POST], auth_level=func.AuthLevel.FUNCTION
)
async def azure_chat_completions(req: Request) -> Response:
    """Azure OpenAI-style chat completions: the deployment is in the path."""
    return await dispatch("azure_chat_completions", req)


@bp.function_name("list_models")
@bp.route(route=MODELS_ROUTE, methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.FUNCTION)
async def list_models(req: Request) -> Response:
    """The public model names this gateway serves."""
    return await dispatch("models", req)


@bp.function_name("health")
@bp.route(route=HEALTH_ROUTE, methods=[func.HttpMethod.GET], auth_level=func.AuthLevel.ANONYMOUS)
async def health(req: Request) -> Response:
    """Liveness and configuration summary."""
    return await dispatch("health", req)
