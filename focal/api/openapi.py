"""The OpenAPI document, completed with the error responses the API really gives.

FastAPI documents only the success response and its own ``{"detail": ...}`` 422. The API answers
every error with the envelope of ``focal.api.errors``, and some errors come from places FastAPI
cannot see (authentication, the body size limit, the domain's 404/409). ``document_errors`` post-
processes the generated document once, for every operation, so a new route gets it all without
extra work:

- every 4xx/5xx response an operation declares (``responses={409: {...}}`` on the route) gets the
  envelope as its body;
- every ``/v1`` operation: 401 (and 503: a store is unavailable);
- every operation with a request body: 400 (the body could not be decoded), 413 and 422;
- every operation with parameters: 422;
- every operation with a path parameter (an id): 404;
- every ``/v1`` POST: the optional ``Idempotency-Key`` header, its 409 (a request with the key is
  still running) and the ``Idempotent-Replayed`` header of success responses
  (``focal.api.idempotency``);
- every operation that takes ``If-Match`` (optimistic concurrency, ``focal.api.concurrency``): 412
  with the current ``ETag``, and 409 (a concurrent change kept winning).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel, Field

from focal.api.idempotency import document_idempotency

__all__ = ["ERROR_ENVELOPE_REF", "ErrorEnvelope", "document_errors", "install_openapi"]

ERROR_ENVELOPE_REF = "#/components/schemas/ErrorEnvelope"
_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})
# FastAPI's own 422 shapes, replaced by the envelope and dropped when nothing refers to them.
_FASTAPI_ERROR_SCHEMAS = ("HTTPValidationError", "ValidationError")

_DESCRIPTIONS = {
    400: "The request body could not be decoded",
    401: "Missing, invalid or expired bearer token",
    404: "Not found (or another tenant's: indistinguishable)",
    409: "Conflict with the stored state (e.g. a concurrent change kept winning)",
    412: "If-Match does not admit the object's current revision (its ETag is returned)",
    413: "The request body is larger than the server's limit",
    422: "Invalid input: one message per offending field in details.errors",
    503: "A storage backend is unavailable",
}


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_found, validation_error")
    message: str = Field(description="what went wrong, for a human")
    details: dict[str, Any] = Field(
        description="structured context; for validation errors, errors: [{field, message, type}]"
    )


class ErrorEnvelope(BaseModel):
    """Every error response of the API."""

    error: ErrorBody


def _envelope_content() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": ERROR_ENVELOPE_REF}}}


def _is_error(status: str) -> bool:
    return status.isdigit() and 400 <= int(status) <= 599


def _add(responses: dict[str, Any], status: int, headers: dict[str, Any] | None = None) -> None:
    entry = responses.setdefault(str(status), {"description": _DESCRIPTIONS[status]})
    if headers:
        entry.setdefault("headers", {}).update(headers)


def _document_operation(path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation.setdefault("responses", {})
    parameters = operation.get("parameters", [])
    if path.startswith("/v1/"):
        _add(
            responses,
            401,
            {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
        )
        _add(responses, 503)
    if "requestBody" in operation:
        _add(responses, 400)
        _add(responses, 413)
        _add(responses, 422)
    if parameters:
        _add(responses, 422)
    if any(parameter.get("in") == "path" for parameter in parameters):
        _add(responses, 404)
    if any(p.get("in") == "header" and p.get("name", "").lower() == "if-match" for p in parameters):
        _add(responses, 409)
        _add(responses, 412, {"ETag": {"description": "the current revision", "schema": {"type": "string"}}})
    for status, response in responses.items():
        if _is_error(status):
            if status == "422" and response.get("description") == "Validation Error":
                response["description"] = _DESCRIPTIONS[422]  # FastAPI's, whose body was not ours
            response["content"] = _envelope_content()
    operation["responses"] = dict(sorted(responses.items()))


def _references(node: Any, name: str) -> bool:
    target = f"#/components/schemas/{name}"
    if isinstance(node, dict):
        return any(
            value == target if key == "$ref" else _references(value, name) for key, value in node.items()
        )
    if isinstance(node, list):
        return any(_references(item, name) for item in node)
    return False


def document_errors(document: dict[str, Any]) -> dict[str, Any]:
    """Complete ``document`` (FastAPI's generated OpenAPI) in place with the error responses; returns it."""
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas.update(envelope.pop("$defs", {}))
    schemas["ErrorEnvelope"] = envelope
    for path, item in document.get("paths", {}).items():
        for method, operation in item.items():
            if method == "post" and path.startswith("/v1/"):
                document_idempotency(operation)  # before the errors: its 409 gets the envelope
            if method in _HTTP_METHODS:
                _document_operation(path, operation)
    for name in _FASTAPI_ERROR_SCHEMAS:  # HTTPValidationError first: it refers to ValidationError
        others = {key: value for key, value in schemas.items() if key != name}
        rest = {**document, "components": {**document["components"], "schemas": others}}
        if name in schemas and not _references(rest, name):
            del schemas[name]
    return document


def install_openapi(app: FastAPI) -> None:
    """Make ``app.openapi()`` (and ``/openapi.json``) return the completed document (built once)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
