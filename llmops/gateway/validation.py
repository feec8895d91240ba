"""Parse and validate a chat completion request body, without changing what passes through.

Only what the gateway relies on is checked (the request is a JSON object with a usable
`messages` list, and the types of the parameters it reads); every other field, including
fields that do not exist yet, passes to the upstream untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from llmops.errors import bad_request

MAX_CHOICES = 128  # OpenAI's own limit on `n`
MAX_DEPTH = 64  # nesting of the JSON body; no chat request comes near it
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})

# Parameters whose types we check because a wrong type is a client bug the upstream would
# answer less clearly (or bill for). Values are (accepted types, description).
_INT = (int,)
_NUMBER = (int, float)
_PARAM_TYPES: dict[str, tuple[tuple[type, ...], str]] = {
    "stream": ((bool,), "a boolean"),
    "n": (_INT, "an integer"),
    "seed": (_INT, "an integer"),
    "max_tokens": (_INT, "an integer"),
    "max_completion_tokens": (_INT, "an integer"),
    "temperature": (_NUMBER, "a number"),
    "top_p": (_NUMBER, "a number"),
    "presence_penalty": (_NUMBER, "a number"),
    "frequency_penalty": (_NUMBER, "a number"),
    "stream_options": ((dict,), "an object"),
    "tools": ((list,), "an array"),
    "response_format": ((dict,), "an object"),
    "user": ((str,), "a string"),
}


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat request: the parsed body plus the fields the gateway reads."""

    body: dict[str, Any]
    raw: bytes
    model: str | None
    stream: bool
    wants_usage: bool = False  # the client set stream_options.include_usage
    strip_usage: bool = False  # the gateway added it: drop the usage chunk from the stream


def parse_chat_request(raw: bytes, *, model_required: bool) -> ChatRequest:
    """Parse `raw` as a chat completion request or raise a 400 `GatewayError` naming the field."""
    if not raw.strip():
        raise bad_request(
            "The request body is empty; send a JSON chat completion request.", code="invalid_json"
        )
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise bad_request(
            f"The request body is not valid JSON: {exc}", code="invalid_json"
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.", code="invalid_json")
    # Every level opens a bracket, so a body with few brackets needs no walk (the usual case).
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _depth(body) > MAX_DEPTH:
        raise bad_request(
            f"The request body nests deeper than {MAX_DEPTH} levels.", code="invalid_json"
        )

    model = body.get("model")
    if model is None:
        if model_required:
            raise bad_request(
                "Missing required parameter: 'model'.",
                param="model",
                code="missing_required_parameter",
            )
    elif not isinstance(model, str) or not model.strip():
        raise bad_request("'model' must be a non-empty string.", param="model")

    _check_messages(body)
    for name, (types, description) in _PARAM_TYPES.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise bad_request(
                f"'{name}' must be {description}, got {_json_type(value)}.",
                param=name,
                code="invalid_type",
            )
    if body.get("n") is not None and not 1 <= body["n"] <= MAX_CHOICES:
        raise bad_request(f"'n' must be between 1 and {MAX_CHOICES}.", param="n")
    wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return ChatRequest(
        body=body, raw=raw, model=model, stream=body.get("stream") is True, wants_usage=wants_usage
    )


def _check_messages(body: dict[str, Any]) -> None:
    messages = body.get("messages")
    if messages is None:
        raise bad_request(
            "Missing required parameter: 'messages'.",
            param="messages",
            code="missing_required_parameter",
        )
    if not isinstance(messages, list):
        raise bad_request(
            f"'messages' must be an array, got {_json_type(messages)}.",
            param="messages",
            code="invalid_type",
        )
    if not messages:
        raise bad_request(
            "'messages' must contain at least one message.", param="messages", code="empty_array"
        )
    for index, message in enumerate(messages):
        if (
            isinstance(message, dict)
            and isinstance(message.get("content"), str)
            and isinstance(role := message.get("role"), str)
            and role in ROLES
        ):
            continue  # the usual message, valid as it is: skip the checks that name the field
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise bad_request(
                f"'{where}' must be an object, got {_json_type(message)}.",
                param=where,
                code="invalid_type",
            )
        role = message.get("role")
        if role is None:
            raise bad_request(
                f"Missing required parameter: '{where}.role'.",
                param=f"{where}.role",
                code="missing_required_parameter",
            )
        if not isinstance(role, str) or role not in ROLES:
            raise bad_request(
                f"'{where}.role' is {role!r}; expected one of {', '.join(sorted(ROLES))}.",
                param=f"{where}.role",
            )
        content = message.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise bad_request(
                f"'{where}.content' must be a string or an array of content parts, "
                f"got {_json_type(content)}.",
                param=f"{where}.content",
                code="invalid_type",
            )
        if content is None and role in ("system", "developer", "user"):
            raise bad_request(
                f"Missing required parameter: '{where}.content'.",
                param=f"{where}.content",
                code="missing_required_parameter",
            )


_NESTING = (dict, list)  # a tuple of types: `dict | list` inline builds a union at each test


def _depth(value: object) -> int:
    """How deeply `value` nests (iterative: a hostile body cannot exhaust the stack)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            deepest = max(deepest, level)
            if deepest > MAX_DEPTH:
                return deepest
            stack.extend((child, level + 1) for child in item if isinstance(child, _NESTING))
    return deepest


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
