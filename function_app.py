"""Azure Functions entry point: composition only. Each capability lives in a Blueprint."""

import azure.functions as func

from llmops.drift.blueprint import bp as drift
from llmops.gateway.blueprint import bp as gateway
from llmops.retrain.blueprint import bp as retrain

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(gateway)
app.register_functions(drift)
app.register_functions(retrain)
