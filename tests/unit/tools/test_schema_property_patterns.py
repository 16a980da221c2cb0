"""``patternProperties`` in tool parameter schemas: RE2, like the ``pattern`` keyword.

jsonschema matches ``patternProperties`` keys (and, through them, ``additionalProperties``) with
Python ``re`` against the argument names the model writes: ``^(a+)+$`` and a 40-character name
held the event loop, every tenant's turns with it, for minutes. RE2 differs from ``re`` in ways
a test can see without timing: its ``$`` matches only at the end of the text, where ``re``'s also
matches before a final newline.
"""

from __future__ import annotations

from typing import Any

import pytest

from focal.errors import InvalidDataError
from focal.tools.schema import argument_errors, check_parameters_schema


def test_pattern_properties_match_argument_names_with_re2() -> None:
    typed = {"type": "object", "patternProperties": {"^ab$": {"type": "string"}}}
    check_parameters_schema(typed)
    assert argument_errors(typed, {"ab": 1})  # matched: must be a string
    assert argument_errors(typed, {"ab\n": 1}) == []  # RE2: "ab\n" is not matched, so not typed


def test_additional_properties_read_pattern_properties_with_re2() -> None:
    closed = {
        "type": "object",
        "patternProperties": {"^ab$": {"type": "integer"}},
        "additionalProperties": False,
    }
    assert argument_errors(closed, {"ab": 1}) == []
    assert argument_errors(closed, {"ab\n": 1})  # not matched by RE2: an additional property


def test_a_catastrophic_pattern_answers_at_once() -> None:
    schema = {"type": "object", "patternProperties": {"^(a+)+$": {"type": "string"}}}
    assert argument_errors(schema, {"a" * 40 + "!": 1}) == []
    assert argument_errors(schema, {"a" * 40: 1})


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "patternProperties": {"(?=a)b": {}}},  # a look-ahead: not RE2
        {"type": "object", "properties": {"x": {"type": "object", "patternProperties": {"(a)\\1": {}}}}},
        # unevaluatedProperties would evaluate the patterns with Python re (jsonschema's own code)
        {"type": "object", "patternProperties": {"^a": {}}, "unevaluatedProperties": False},
        {
            "type": "object",
            "allOf": [{"patternProperties": {"^a": {}}}],
            "properties": {"x": {"unevaluatedProperties": False}},
        },
    ],
)
def test_schemas_whose_property_patterns_re2_cannot_run_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(InvalidDataError, match="patternProperties"):
        check_parameters_schema(schema)


def test_a_stored_schema_mixing_them_fails_its_calls_instead_of_running_re() -> None:
    stored = {"type": "object", "patternProperties": {"^(a+)+$": {}}, "unevaluatedProperties": False}
    errors = argument_errors(stored, {"a" * 40 + "!": 1})
    assert errors and "patternProperties" in errors[0]
