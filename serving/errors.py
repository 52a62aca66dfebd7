"""How the API fails: every error is ``{"error", "request_id"}`` with a status, and never echoes the input."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.schemas import ErrorResponse, InvalidRequest

log = logging.getLogger("groundwork.serving")


class ApiError(Exception):
    """A request refused or failed with ``status`` and a message safe to show and to audit."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(
    status: int, message: str, request_id: str | None, headers: dict | None = None
) -> JSONResponse:
    return JSONResponse(
        ErrorResponse(error=message, request_id=request_id).model_dump(), status_code=status, headers=headers
    )


def validation_message(exc: RequestValidationError) -> str:
    """A readable summary of what was wrong, without echoing the input (it may be huge or sensitive)."""
    parts = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            return "malformed JSON body"
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if error.get("type") == "extra_forbidden":
            parts.append(f"unknown field {where!r}")
        else:
            parts.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts)


def _refused(request: Request, status: int, message: str, headers: dict | None = None) -> JSONResponse:
    """The error response, its message kept for the request's audit record."""
    request.state.audit["error"] = message
    return error_response(status, message, request.state.request_id, headers)


async def api_error(request: Request, exc: ApiError) -> JSONResponse:
    if exc.status >= 500:
        log.warning("request %s failed: %s", request.state.request_id, exc.message)
    return _refused(request, exc.status, exc.message, exc.headers)


async def invalid_request(request: Request, exc: InvalidRequest) -> JSONResponse:
    return _refused(request, 400, str(exc))


async def malformed_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return _refused(request, 400, validation_message(exc))


async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    """Starlette's own errors (unknown path, wrong method) in the same shape."""
    return error_response(exc.status_code, str(exc.detail), getattr(request.state, "request_id", None))


def add_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(InvalidRequest, invalid_request)
    app.add_exception_handler(RequestValidationError, malformed_request)
    app.add_exception_handler(StarletteHTTPException, http_error)
