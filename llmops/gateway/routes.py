"""The gateway's routes under the host's `api` prefix, shared by the Functions blueprint and
`llmops serve` (kept apart so that `llmops serve` never imports the Functions libraries)."""

CHAT_ROUTE = "v1/chat/completions"
AZURE_CHAT_ROUTE = "openai/deployments/{deployment}/chat/completions"
MODELS_ROUTE = "v1/models"
HEALTH_ROUTE = "health"
