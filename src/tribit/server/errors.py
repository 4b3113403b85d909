"""Error responses in OpenAI's shape, and the app's exception handlers."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import ContextLengthError, TribitError


def error(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    etype: str = "invalid_request_error",
    **extra: Any,
) -> JSONResponse:
    body = {"error": {"message": message, "type": etype, "param": param, "code": code, **extra}}
    return JSONResponse(body, status_code=status)


def context_error(e: ContextLengthError) -> JSONResponse:
    """llama-server's `exceed_context_size_error`, with the numbers."""
    return error(
        400,
        f"the prompt has {e.n_prompt_tokens} tokens; the context holds {e.n_ctx}",
        "exceed_context_size_error",
        n_prompt_tokens=e.n_prompt_tokens,
        n_ctx=e.n_ctx,
    )


async def on_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errs = exc.errors()
    first = errs[0] if errs else {}
    loc = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
    msg = first.get("msg", "invalid request")
    if first.get("type") == "json_invalid":
        msg = "the request body is not valid JSON (or not UTF-8)"
    return error(400, f"{loc + ': ' if loc else ''}{msg}", "invalid_request", param=loc or None)


async def on_tribit(request: Request, exc: TribitError) -> JSONResponse:
    # bad input found below the routes (text that is not valid Unicode, ...)
    if isinstance(exc, ContextLengthError):
        return context_error(exc)
    return error(400, str(exc), "invalid_request")


async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    return error(
        500, f"internal error: {type(exc).__name__}: {exc}", "internal_error", etype="server_error"
    )


async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 400:
        return error(400, "the request body is not valid JSON (or not UTF-8)", "invalid_json")
    etype = "invalid_request_error" if exc.status_code < 500 else "server_error"
    return error(exc.status_code, str(exc.detail), None, etype=etype)


HANDLERS = {
    RequestValidationError: on_invalid,
    TribitError: on_tribit,
    Exception: on_unexpected,
    StarletteHTTPException: on_http,
}
