"""JSON Schema checks for tool parameters (jsonschema, Draft 2020-12).

A definition's ``parameters`` must be a valid schema of ``type: object`` (checked when it is
written: ``InvalidDataError``); a call's arguments are validated against it before anything is
sent, and the errors are returned to the model instead.

The ``pattern`` keyword, and the keys of ``patternProperties`` (also where ``additionalProperties``
reads them), are matched with RE2 (``focal.patterns``), not Python ``re``: a tenant's pattern runs
on arguments (and argument names) a model wrote, and must not be able to backtrack for minutes.
They must therefore be valid RE2, which is checked when the schema is written.
``unevaluatedProperties`` is refused in a schema with ``patternProperties``: jsonschema's
implementation of it would run them with ``re``.

References (``$ref``, ``$dynamicRef``) must point within the schema (``#...``): jsonschema would
resolve any other by downloading it (a blocking ``urlopen`` without timeout, to any host, outside
``FOCAL_TOOLS__ALLOWED_HOSTS``). Validation runs on an empty registry that retrieves nothing, so a
schema stored before this check fails its calls (``invalid``) instead of fetching.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import SchemaError, ValidationError
from referencing import Registry
from referencing.exceptions import Unresolvable

from focal.errors import InvalidDataError
from focal.patterns import PatternError, compiled

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
    for pattern in _patterns(schema):
        try:
            compiled(pattern)
        except PatternError as exc:
            raise InvalidDataError(f"{what}: pattern {pattern[:100]!r}: {exc}") from exc
    for pattern in _property_patterns(schema):
        try:
            compiled(pattern)
        except PatternError as exc:
            raise InvalidDataError(f"{what}: patternProperties {pattern[:100]!r}: {exc}") from exc
    problem = _unevaluated_with_patterns(schema)
    if problem:
        raise InvalidDataError(f"{what}: {problem}")
    for reference in _keyword_strings(schema, _REFERENCE_KEYWORDS):
        if not reference.startswith("#"):
            raise InvalidDataError(
                f"{what}: {reference[:100]!r}: only references within the schema ('#...') are allowed"
            )


_REFERENCE_KEYWORDS = frozenset({"$ref", "$dynamicRef"})


def _patterns(node: Any) -> Iterator[str]:
    """Every ``pattern`` keyword of a schema (a property *named* "pattern" holds a schema, not a str)."""
    return _keyword_strings(node, frozenset({"pattern"}))


def _property_patterns(node: Any) -> Iterator[str]:
    """Every key of every ``patternProperties`` object of a schema."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "patternProperties" and isinstance(value, dict):
                yield from (k for k in value if isinstance(k, str))
            yield from _property_patterns(value)
    elif isinstance(node, list):
        for item in node:
            yield from _property_patterns(item)


def _has_keyword(node: Any, keyword: str) -> bool:
    if isinstance(node, dict):
        return keyword in node or any(_has_keyword(value, keyword) for value in node.values())
    if isinstance(node, list):
        return any(_has_keyword(item, keyword) for item in node)
    return False


def _unevaluated_with_patterns(schema: Any) -> str | None:
    """Why the schema cannot be validated with RE2 alone: jsonschema's ``unevaluatedProperties``
    walks the schema's ``patternProperties`` with Python ``re`` (its own code, which the RE2
    keywords below do not replace), so the two may not be used together."""
    if _has_keyword(schema, "unevaluatedProperties") and any(True for _ in _property_patterns(schema)):
        return "patternProperties cannot be used with unevaluatedProperties (use additionalProperties)"
    return None


def _keyword_strings(node: Any, keywords: frozenset[str]) -> Iterator[str]:
    """Every string value of one of ``keywords`` in a schema (a property so named holds a schema)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in keywords and isinstance(value, str):
                yield value
            else:
                yield from _keyword_strings(value, keywords)
    elif isinstance(node, list):
        for item in node:
            yield from _keyword_strings(item, keywords)


def _re2_pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "string"):
        return
    try:
        program = compiled(pattern)
    except PatternError as exc:  # a schema stored before RE2 was required
        yield ValidationError(f"pattern {pattern!r} cannot be used: {exc}")
        return
    if program.search(instance) is None:
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _re2_search(pattern: str, text: str) -> bool:
    """Whether RE2 finds ``pattern`` in ``text``; an unusable pattern (stored before the check)
    matches nothing."""
    try:
        return compiled(pattern).search(text) is not None
    except PatternError:
        return False


def _re2_pattern_properties(
    validator: Any, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """jsonschema's ``patternProperties`` with RE2 instead of ``re.search``."""
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _re2_search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _re2_additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    """jsonschema's ``additionalProperties``, telling the extra keys apart with RE2."""
    if not validator.is_type(instance, "object"):
        return
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = [
        key
        for key in instance
        if key not in properties and not any(_re2_search(pattern, key) for pattern in patterns)
    ]
    if validator.is_type(additional, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], additional, path=extra)
    elif additional is False and extras:
        listed = ", ".join(repr(extra) for extra in sorted(extras))
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


_Validator: Any = validators.extend(  # type: ignore[no-untyped-call]  # jsonschema's own annotation gap
    Draft202012Validator,
    {
        "pattern": _re2_pattern,
        "patternProperties": _re2_pattern_properties,
        "additionalProperties": _re2_additional_properties,
    },
)


_NOTHING_TO_RETRIEVE: Registry[Any] = Registry()  # no retrieve function: a remote $ref is Unresolvable


def argument_errors(schema: dict[str, Any], arguments: Any) -> list[str]:
    """Why ``arguments`` do not satisfy ``schema`` (empty when they do), at most a few messages."""
    problem = _unevaluated_with_patterns(schema)
    if problem:  # a schema stored before the check: refuse the call rather than run Python re
        return [f"the tool's parameters schema cannot be used: {problem}"]
    validator = _Validator(
        schema, format_checker=Draft202012Validator.FORMAT_CHECKER, registry=_NOTHING_TO_RETRIEVE
    )
    try:
        errors = sorted(validator.iter_errors(arguments), key=lambda e: list(e.absolute_path))
    except Unresolvable as exc:  # a schema stored before references were checked
        return [f"the tool's parameters schema has a reference that cannot be resolved: {exc}"[:300]]
    messages = []
    for error in errors[:_MAX_ERRORS]:
        where = "/".join(str(p) for p in error.absolute_path) or "(arguments)"
        messages.append(f"{where}: {error.message}")
    return messages
