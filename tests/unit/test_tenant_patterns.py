"""Tenant-written regular expressions run with RE2 everywhere (focal.patterns): a pattern that
makes Python's backtracking ``re`` run for minutes finishes at once, and syntax RE2 does not have
(backreferences, look-arounds) is refused when the pattern is written.

The adversarial inputs below take Python's ``re`` far longer than the suite's per-test timeout
(2**40 backtracking steps), so these tests fail by timeout if any path falls back to ``re``.
"""

from __future__ import annotations

from uuid import uuid4

import pytest
from pydantic import ValidationError

from focal.alignment.models import Variable
from focal.alignment.turn.variables import _pattern_value
from focal.errors import InvalidDataError
from focal.providers.llm.offline import choose_tool_calls
from focal.providers.llm.types import ToolSpec
from focal.tools.schema import argument_errors, check_parameters_schema

EVIL = "^(a+)+$"
ATTACK = "a" * 40 + "!"


def _schema(pattern: str) -> dict[str, object]:
    return {"type": "object", "properties": {"code": {"type": "string", "pattern": pattern}}}


def test_a_backtracking_pattern_in_a_tool_schema_is_matched_in_linear_time() -> None:
    check_parameters_schema(_schema(EVIL))  # valid RE2: accepted
    assert argument_errors(_schema(EVIL), {"code": ATTACK}) == [f"code: {ATTACK!r} does not match {EVIL!r}"]
    assert argument_errors(_schema(EVIL), {"code": "aaaa"}) == []


@pytest.mark.parametrize("pattern", [r"(a)\1", r"a(?=b)", r"(?<!x)y"])
def test_syntax_re2_lacks_is_refused_when_a_tool_schema_is_written(pattern: str) -> None:
    with pytest.raises(InvalidDataError, match="not a valid RE2 pattern"):
        check_parameters_schema(_schema(pattern))


def test_a_property_named_pattern_is_a_schema_not_a_pattern() -> None:
    check_parameters_schema({"type": "object", "properties": {"pattern": {"type": "string"}}})


def test_variable_extraction_patterns_are_re2() -> None:
    with pytest.raises(ValidationError, match="RE2"):
        Variable(tenant_id=uuid4(), agent_id=uuid4(), name="code", extraction_pattern=r"(\d)\1")
    variable = Variable(tenant_id=uuid4(), agent_id=uuid4(), name="code", extraction_pattern=EVIL)
    assert variable.extraction_pattern is not None
    assert _pattern_value(variable.extraction_pattern, ATTACK) is None
    assert _pattern_value(r"order (FD-\d+)", "my order FD-7 please") == "FD-7"


def test_the_offline_model_fills_arguments_with_re2() -> None:
    # The offline model drops anchors and searches the message: (a+)+b backtracks in Python's re.
    tool = ToolSpec(name="t", parameters={**_schema("(a+)+b"), "required": ["code"]})
    assert choose_tool_calls(f"Customer: {ATTACK}", [tool], []) == ()
    (call,) = choose_tool_calls("Customer: my code is aab", [tool], [])
    assert call.arguments == {"code": "aab"}
