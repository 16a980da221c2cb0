"""One error envelope for every failure the API reports: ``{"error": {"code", "message", "details"}}``.

Routers contain no ``try/except`` for Focal's errors: they let them propagate and the handlers
below translate the exception tree of ``focal.errors`` into HTTP:

    RequestValidationError / pydantic ValidationError  422 validation_error (one message per field)
    InvalidDataError, ProviderInputError               422 invalid_data
    HTTPException (401 from auth, 404 unknown path...)  its status, code from the status
    NotFoundError                                      404 not_found
    ConflictError                                      409 conflict
    RateLimitError                                     429 rate_limited (Retry-After when known)
    ProviderUnavailableError, StoreConnectionError     503 service_unavailable
    SchemaVersionError                                 503 schema_mismatch
    other ProviderError                                502 provider_error
    ConfigurationError, anything else                  500 internal_error (logged, no stack trace in the body)

The last line is not a handler here: ``RequestContextMiddleware`` catches what no handler took,
so the 500 and its log line carry the request id and tenant. 413 for oversized bodies
(``BodySizeLimitMiddleware``) and 422 for text that is not Unicode (``RequestTextMiddleware``) are
answered by middleware with the same envelope.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from focal.errors import (
    ConflictError,
    InvalidDataError,
    NotFoundError,
    ProviderError,
    ProviderInputError,
    ProviderUnavailableError,
    RateLimitError,
    SchemaVersionError,
    StoreConnectionError,
)
from focal.logging import get_logger

__all__ = [
    "error_body",
    "error_response",
    "install_error_handlers",
    "internal_error_body",
    "log_unhandled_error",
    "validation_details",
    "validation_error_body",
]

_log = get_logger("focal.api.errors")

_CODES_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    412: "precondition_failed",  # If-Match did not admit the current revision (config PATCH)
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    502: "provider_error",
    503: "service_unavailable",
}


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details if details is not None else {}}}


def error_response(
    status_code: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status_code, headers=headers)


def _location(loc: Sequence[int | str]) -> str:
    return ".".join(str(part) for part in loc)


def _jsonable(value: Any) -> Any:
    """Pydantic's error ``input``/``ctx`` may hold anything (bytes, exceptions, NaN): keep it JSON-safe."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def validation_details(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """One ``{field, message, type}`` per pydantic error; the raw input is never echoed back."""
    details = []
    for error in errors:
        loc = error.get("loc", ())
        details.append(
            {
                "field": _location(loc),
                "message": str(error.get("msg", "invalid value")),
                "type": _jsonable(error.get("type")),
            }
        )
    return details


def _validation_message(details: list[dict[str, Any]]) -> str:
    if not details:
        return "the request is invalid"
    return "; ".join(
        f"{d['field']}: {d['message']}" if d["field"] else str(d["message"]) for d in details[:5]
    ) + ("" if len(details) <= 5 else f"; and {len(details) - 5} more")


def validation_error_body(errors: Sequence[Any]) -> dict[str, Any]:
    """The 422 envelope for pydantic-style errors (``{loc, msg, type}``)."""
    details = validation_details(errors)
    return error_body("validation_error", _validation_message(details), {"errors": details})


async def _request_validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError | ValidationError)
    return JSONResponse(validation_error_body(exc.errors()), status_code=422)


async def _http_exception(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODES_BY_STATUS.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(exc.status_code, code, message, headers=getattr(exc, "headers", None))


async def _not_found(request: Request, exc: Exception) -> JSONResponse:
    return error_response(404, "not_found", str(exc) or "not found")


async def _conflict(request: Request, exc: Exception) -> JSONResponse:
    return error_response(409, "conflict", str(exc) or "conflict")


async def _invalid_data(request: Request, exc: Exception) -> JSONResponse:
    return error_response(422, "invalid_data", str(exc) or "invalid data")


async def _rate_limited(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RateLimitError)
    headers = None
    details: dict[str, Any] = {"provider": exc.provider}
    if exc.retry_after is not None:
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
        details["retry_after_seconds"] = exc.retry_after
    _log.warning("provider rate limited", provider=exc.provider, retry_after=exc.retry_after)
    return error_response(
        429, "rate_limited", "the model provider is rate limiting requests", details, headers
    )


async def _unavailable(request: Request, exc: Exception) -> JSONResponse:
    _log.warning("dependency unavailable", error_type=type(exc).__name__, error=str(exc))
    if isinstance(exc, ProviderError):
        return error_response(
            503, "service_unavailable", "the model provider is unavailable", {"provider": exc.provider}
        )
    return error_response(503, "service_unavailable", "a storage backend is unavailable")


async def _schema_mismatch(request: Request, exc: Exception) -> JSONResponse:
    _log.error("database schema mismatch", error=str(exc))
    return error_response(503, "schema_mismatch", str(exc))


async def _provider_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProviderError)
    _log.warning("provider error", provider=exc.provider, error_type=type(exc).__name__, error=str(exc))
    return error_response(
        502,
        "provider_error",
        f"the model provider failed: {type(exc).__name__}",
        {"provider": exc.provider, "type": type(exc).__name__},
    )


def log_unhandled_error(exc: BaseException) -> None:
    """A bug: the stack trace goes to the log (with the bound request context), never to the client."""
    _log.error("unhandled error", error_type=type(exc).__name__, exc_info=exc)


def internal_error_body() -> dict[str, Any]:
    return error_body("internal_error", "internal server error")


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers; the most specific class wins (Starlette walks the MRO)."""
    app.add_exception_handler(RequestValidationError, _request_validation)
    app.add_exception_handler(ValidationError, _request_validation)
    app.add_exception_handler(StarletteHTTPException, _http_exception)
    app.add_exception_handler(NotFoundError, _not_found)
    app.add_exception_handler(ConflictError, _conflict)
    app.add_exception_handler(InvalidDataError, _invalid_data)
    app.add_exception_handler(ProviderInputError, _invalid_data)
    app.add_exception_handler(RateLimitError, _rate_limited)
    app.add_exception_handler(ProviderUnavailableError, _unavailable)
    app.add_exception_handler(StoreConnectionError, _unavailable)
    app.add_exception_handler(SchemaVersionError, _schema_mismatch)
    app.add_exception_handler(ProviderError, _provider_error)
