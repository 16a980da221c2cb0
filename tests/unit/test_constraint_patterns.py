"""Constraint patterns (RE2) and the constraint settings."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from focal.alignment.constraint_patterns import (
    PatternError,
    compiled,
    constraint_errors,
    pattern_violations,
)
from focal.alignment.models import Rule
from focal.settings import Settings, TurnSettings
from tests.support import new_tenant


def constraint(**fields: object) -> Rule:
    values: dict[str, object] = {
        "name": "c",
        "condition_text": "c",
        "action_text": "a",
        "is_hard_constraint": True,
    }
    values.update(fields)
    return Rule(tenant_id=new_tenant(), agent_id=new_tenant(), **values)  # type: ignore[arg-type]


def test_violations_name_each_broken_pattern() -> None:
    rule = constraint(
        forbid_patterns=[r"(?i)\bfull refund\b", r"\d+ ?€"], require_patterns=["inspect", "^We"]
    )
    assert pattern_violations(rule, "We inspect it first.") == []
    assert pattern_violations(rule, "A FULL REFUND of 20€, no inspection needed") == [
        "matches the forbidden pattern '(?i)\\\\bfull refund\\\\b'",
        "matches the forbidden pattern '\\\\d+ ?€'",
        "does not match the required pattern '^We'",
    ]
    assert pattern_violations(constraint(forbid_patterns=["refund"]), "A Refund.") == []  # case-sensitive


def test_patterns_are_matched_in_linear_time() -> None:
    # Exponential for a backtracking engine (Python's re would not finish); RE2 answers at once.
    rule = constraint(forbid_patterns=[r"^(a+)+$"], require_patterns=[r"(x|xx)+y"])
    assert pattern_violations(rule, "a" * 40 + "b" + "x" * 40) == [
        "does not match the required pattern '(x|xx)+y'"
    ]


def test_compiled_patterns_are_cached_and_refusals_say_why() -> None:
    assert compiled("(?i)refund") is compiled("(?i)refund")
    for pattern, reason in [
        (r"(a)\1", "invalid escape sequence"),
        ("(?=x)", "invalid perl operator"),
        ("[z-a]", "invalid character class range"),
        ("\ud800", "lone surrogate"),
        ("", "empty or blank"),
    ]:
        with pytest.raises(PatternError, match=reason):
            compiled(pattern)


def test_constraint_errors_locate_every_problem() -> None:
    rule = constraint(forbid_patterns=["ok", "("], require_patterns=["a"] * 21, judge_instructions="x" * 2001)
    assert [location for location, _ in constraint_errors(rule)] == [
        ("forbid_patterns", 1),
        ("require_patterns",),
        ("judge_instructions",),
    ]
    assert constraint_errors(constraint(forbid_patterns=["fine"], judge_instructions="Check it.")) == []


def test_only_hard_constraints_carry_checks() -> None:
    with pytest.raises(ValidationError, match="need is_hard_constraint=true"):
        constraint(is_hard_constraint=False, judge_instructions="x")
    with pytest.raises(ValidationError, match="need is_hard_constraint=true"):
        constraint(forbid_patterns=["x"]).is_hard_constraint = False


def test_constraint_settings_defaults_and_bounds() -> None:
    turn = TurnSettings()
    assert (turn.constraint_retries, turn.constraint_judge, turn.relevance_check) == (1, True, False)
    assert turn.constraint_safe_message.strip()
    for bad in ({"constraint_retries": 6}, {"constraint_retries": -1}, {"constraint_safe_message": "  "}):
        with pytest.raises(ValidationError):
            TurnSettings(**bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="no NUL"):
        TurnSettings(constraint_safe_message="a\x00b")


def test_the_relevance_check_needs_a_real_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOCAL_TURN__RELEVANCE_CHECK", "true")
    with pytest.raises(ValidationError, match="FOCAL_TURN__RELEVANCE_CHECK needs a language model"):
        Settings.load(storage="memory", llm={"provider": "offline"})
    settings = Settings.load(storage="memory", llm={"provider": "openai"})
    assert settings.turn.relevance_check is True
