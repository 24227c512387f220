"""OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``, every failure of
the OpenAI edge, rendered once (never a traceback)."""

from __future__ import annotations

from typing import Any


class OpenAIError(Exception):
    """A request refused the way OpenAI refuses it."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad_request(message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def not_found(message: str, *, param: str | None = None) -> OpenAIError:
    return OpenAIError(404, message, param=param)


def server_error(message: str) -> OpenAIError:
    return OpenAIError(500, message, type="server_error")
