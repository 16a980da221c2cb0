"""Building domain models from request bodies, with the domain's errors reported like FastAPI's;
finding text that is not Unicode (lone surrogates) in a request.

Request schemas check what they can; the domain models add cross-field rules (a scope_id that must
match the scope, a closed scenario graph). A ``pydantic.ValidationError`` raised while building
the domain model is re-raised as a ``RequestValidationError`` located in ``body``, so the client
gets the same 422 envelope (``body.scope_id: ...``) whichever layer refused the input.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

from focal.models import utc_now

__all__ = ["build_model", "lone_surrogate_error", "patched", "path_surrogate_error"]

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


# Any surrogate code point left in a decoded str is a lone one: ``json`` joins a valid
# ``\ud83d\ude00`` pair into one character. A lone one cannot be encoded as UTF-8, so it would
# break every later response (and PostgreSQL refuses it): it is refused at the HTTP boundary.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _surrogate_error(loc: tuple[str | int, ...], text: str, what: str) -> dict[str, Any] | None:
    found = _SURROGATE.search(text)
    if found is None:
        return None
    return {
        "loc": loc,
        "msg": f"{what} holds a lone UTF-16 surrogate (U+{ord(found.group()):04X}): not Unicode text",
        "type": "string_unicode",
    }


def lone_surrogate_error(document: Any, loc: tuple[str | int, ...]) -> dict[str, Any] | None:
    """The first string (or object key) of a decoded JSON ``document`` holding a lone surrogate, as a
    pydantic-style error ``{loc, msg, type}`` located under ``loc``; ``None`` when all text is valid.

    The message never repeats the text (it could not be encoded in the response either).
    """
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(document, loc)]
    while stack:  # iterative: a deeply nested document must not exhaust the recursion limit
        value, where = stack.pop()
        if isinstance(value, str):
            error = _surrogate_error(where, value, "the text")
        elif isinstance(value, dict):
            error = next(filter(None, (_surrogate_error(where, key, "a key") for key in value)), None)
            stack.extend(((item, (*where, key)) for key, item in reversed(value.items())))
        elif isinstance(value, list):
            error = None
            stack.extend((value[i], (*where, i)) for i in reversed(range(len(value))))
        else:
            error = None
        if error is not None:
            return error
    return None


def path_surrogate_error(path: str) -> dict[str, Any] | None:
    """A lone surrogate in the decoded URL path (some ASGI servers decode it with
    ``surrogateescape``); query strings cannot hold one: Starlette decodes them with ``replace``."""
    return _surrogate_error(("path",), path, "the URL path")
