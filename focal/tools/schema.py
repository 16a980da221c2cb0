"""JSON Schema checks for tool parameters (jsonschema, Draft 2020-12).

A definition's ``parameters`` must be a valid schema of ``type: object`` (checked when it is
written: ``InvalidDataError``); a call's arguments are validated against it before anything is
sent, and the errors are returned to the model instead.
"""

from __future__ import annotations

from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from focal.errors import InvalidDataError

_MAX_ERRORS = 5


def check_parameters_schema(schema: Any, what: str = "parameters") -> None:
    """``schema`` must be a valid JSON Schema describing an object; ``InvalidDataError`` otherwise."""
    if not isinstance(schema, dict):
        raise InvalidDataError(f"{what} must be a JSON Schema object")
    if schema.get("type") != "object":
        raise InvalidDataError(f'{what} must be a JSON Schema with "type": "object"')
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise InvalidDataError(f"{what} is not a valid JSON Schema: {exc.message}") from exc


def argument_errors(schema: dict[str, Any], arguments: Any) -> list[str]:
    """Why ``arguments`` do not satisfy ``schema`` (empty when they do), at most a few messages."""
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    messages = []
    for error in errors[:_MAX_ERRORS]:
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        messages.append(f"{where}: {error.message}")
    return messages
