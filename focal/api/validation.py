"""Building domain models from request bodies, with the domain's errors reported like FastAPI's.

Request schemas check what they can; the domain models add cross-field rules (a scope_id that must
match the scope, a closed scenario graph). A ``pydantic.ValidationError`` raised while building
the domain model is re-raised as a ``RequestValidationError`` located in ``body``, so the client
gets the same 422 envelope (``body.scope_id: ...``) whichever layer refused the input.
"""

from __future__ import annotations

from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from focal.models import utc_now

__all__ = ["build_model", "patched"]

ModelT = TypeVar("ModelT", bound=BaseModel)


def _as_request_error(exc: ValidationError) -> RequestValidationError:
    errors: list[dict[str, Any]] = []
    for error in exc.errors(include_url=False, include_input=False):
        errors.append({**error, "loc": ("body", *error["loc"])})
    return RequestValidationError(errors)


def build_model(model_cls: type[ModelT], data: dict[str, Any]) -> ModelT:
    """``model_cls(**data)``, with validation errors reported as 422 on the body."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise _as_request_error(exc) from exc


def patched(model: ModelT, changes: dict[str, Any]) -> ModelT:
    """A re-validated copy of ``model`` with ``changes`` applied and ``updated_at`` refreshed."""
    data = model.model_dump()
    data.update(changes)
    if "updated_at" in data:
        data["updated_at"] = utc_now()
    return build_model(type(model), data)
