"""Errors in the OpenAI error shape: `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations

from collections.abc import Mapping

import orjson


class GatewayError(Exception):
    """An error the gateway answers with, already shaped for the client."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = dict(headers or {})

    def body(self) -> bytes:
        """The JSON body OpenAI clients parse into an `APIError`."""
        return error_body(self.message, type=self.type, code=self.code, param=self.param)


def error_body(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> bytes:
    """Serialize one error in the OpenAI error shape."""
    return orjson.dumps({"error": {"message": message, "type": type, "param": param, "code": code}})


def bad_request(
    message: str, *, param: str | None = None, code: str = "invalid_value"
) -> GatewayError:
    """A 400 naming the offending field."""
    return GatewayError(400, message, param=param, code=code)
