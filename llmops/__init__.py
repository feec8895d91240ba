"""LLMOps gateway: an OpenAI-compatible chat gateway for Azure Functions."""

__version__ = "0.1.0"
