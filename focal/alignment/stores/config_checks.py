"""Input checks every ConfigStore backend runs before it touches its storage.

The in-memory reference and the PostgreSQL backend both call these, so a bad argument raises the
same ``InvalidDataError`` everywhere and nothing is written. Models are re-validated here because
``model_construct`` and ``model_copy(update=...)`` skip pydantic validation: the store is the
boundary that must not trust its caller.

Besides the model's own constraints, values must be storable by every backend:
- embeddings in ``vector(D)`` columns (``Rule.embedding``, ``Scenario.entry_embedding``) are
  float32 in PostgreSQL, so their values must fit a float32 and must not all round to zero;
  the in-memory store keeps the same float32-rounded values, so both backends return equal lists;
- other vectors (``StepTransition.condition_embedding``) have the store's dimension too;
- JSON fields (``default_value``, ``policy_overrides``, ...) must be plain JSON (no NaN, no
  arbitrary objects) and are normalised through a JSON round trip (e.g. tuples become lists);
- text has no NUL character (PostgreSQL text refuses it); integers in scalar columns fit int32;
- timestamps are timezone-aware and are normalised to UTC; ``deleted_at`` is set only by
  ``delete_*``, so a model carrying one is refused by ``save_*``;
- a rule's constraint patterns compile (RE2) within their limits
  (``focal.alignment.constraint_patterns.constraint_errors``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from focal.alignment.constraint_patterns import constraint_errors
from focal.alignment.models import (
    Agent,
    MigrationPlan,
    MigrationPlanStatus,
    Rule,
    Scenario,
    Scope,
    Template,
    ToolActivation,
    ToolDefinition,
    Variable,
)
from focal.errors import InvalidDataError
from focal.validation import (
    as_enum,
    check_aware,
    check_int4,
    check_limit,
    check_min_score,
    check_no_nul,
    check_storable,
    check_vector,
    float32,
    json_text,
)

__all__ = [
    "ConfigModel",
    "checked_agent",
    "checked_embedding",
    "checked_migration_plan",
    "checked_rule",
    "checked_rule_search",
    "checked_scenario",
    "checked_scope",
    "checked_scopes",
    "checked_status",
    "checked_template",
    "checked_tool_activation",
    "checked_tool_definition",
    "checked_variable",
]

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)

_JSON_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    Variable: ("default_value",),
    ToolActivation: ("policy_overrides",),
    ToolDefinition: ("parameters",),
    MigrationPlan: ("transformation_map", "anchor_policies"),
}


def checked_embedding(vector: Sequence[float], dimensions: int, *, what: str = "embedding") -> list[float]:
    """A vector for a ``vector(D)`` column or a query: right length, finite, not zero as float32."""
    check_vector(vector, dimensions, what=what)
    rounded = float32(vector)
    if not any(rounded):
        raise InvalidDataError(f"{what} rounds to all zeros as float32; cosine similarity is undefined")
    return rounded


def checked_scope(scope: Scope | str | None) -> Scope | None:
    return None if scope is None else as_enum(Scope, scope, "scope")


def checked_status(status: MigrationPlanStatus | str | None) -> MigrationPlanStatus | None:
    return None if status is None else as_enum(MigrationPlanStatus, status, "migration plan status")


def in_scopes(rule: Rule, scopes: Sequence[tuple[Scope, UUID | None]]) -> bool:
    """``rule`` is admitted by the scope selector ``scopes`` (as every backend's rule search and
    ``get_hard_constraints`` admit it): a pair with ``None`` admits every rule of that scope."""
    return any(
        rule.scope is scope and (scope_id is None or rule.scope_id == scope_id) for scope, scope_id in scopes
    )


def checked_scopes(
    scopes: Sequence[tuple[Scope | str, UUID | None]] | None,
) -> list[tuple[Scope, UUID | None]] | None:
    """A rule-search scope selector: ``(scope, scope_id | None)`` pairs; GLOBAL takes no id."""
    if scopes is None:
        return None
    checked: list[tuple[Scope, UUID | None]] = []
    for pair in scopes:
        try:
            raw_scope, scope_id = pair
        except (TypeError, ValueError) as exc:
            raise InvalidDataError(
                f"a scope selector entry must be a (scope, scope_id) pair, got {pair!r}"
            ) from exc
        scope = checked_scope(raw_scope)
        assert scope is not None
        if scope_id is not None and not isinstance(scope_id, UUID):
            raise InvalidDataError(f"scope_id must be a UUID or None, got {scope_id!r}")
        if scope is Scope.GLOBAL and scope_id is not None:
            raise InvalidDataError("a GLOBAL scope selector takes no scope_id")
        checked.append((scope, scope_id))
    return checked


def checked_rule_search(
    query_embedding: Sequence[float],
    dimensions: int,
    *,
    scopes: Sequence[tuple[Scope | str, UUID | None]] | None,
    limit: int,
    min_score: float,
    embedding_model: str | None,
) -> tuple[list[float], list[tuple[Scope, UUID | None]] | None]:
    """The arguments of ``vector_search_rules``, checked alike by every backend: the query rounded
    to float32 (as the stored embeddings are) and the scope selector parsed."""
    query = checked_embedding(query_embedding, dimensions, what="query embedding")
    check_no_nul(embedding_model, "embedding_model")
    check_limit(limit)
    check_min_score(min_score)
    return query, checked_scopes(scopes)


def checked_agent(agent: Agent) -> Agent:
    return _checked(agent, Agent)


def checked_rule(rule: Rule, dimensions: int) -> Rule:
    checked = _checked(rule, Rule)
    errors = constraint_errors(checked)
    if errors:
        described = "; ".join(f"{'.'.join(map(str, location))}: {message}" for location, message in errors)
        raise InvalidDataError(f"invalid Rule: {described}")
    if checked.embedding is not None:
        checked.embedding = checked_embedding(checked.embedding, dimensions, what="rule embedding")
    return checked


def checked_scenario(scenario: Scenario, dimensions: int, *, snapshot: bool = False) -> Scenario:
    """A scenario to save, or (``snapshot=True``) to archive.

    A snapshot may carry ``deleted_at`` (it records the scenario as it was) and keeps
    ``entry_embedding`` exactly: archives are stored as JSON, not in a float32 column.
    """
    checked = _checked(scenario, Scenario, allow_deleted=snapshot)
    if checked.entry_embedding is not None:
        rounded = checked_embedding(checked.entry_embedding, dimensions, what="scenario entry_embedding")
        if not snapshot:
            checked.entry_embedding = rounded
    for step in checked.steps:
        for transition in step.transitions:
            check_vector(transition.condition_embedding, dimensions, what="transition condition_embedding")
    return checked


def checked_template(template: Template) -> Template:
    return _checked(template, Template)


def checked_variable(variable: Variable) -> Variable:
    return _checked(variable, Variable)


def checked_tool_activation(activation: ToolActivation) -> ToolActivation:
    return _checked(activation, ToolActivation)


def checked_tool_definition(definition: ToolDefinition) -> ToolDefinition:
    """A validated copy; the secret is text a backend can store (its value is never in a message)."""
    checked = _checked(definition, ToolDefinition)
    if checked.secret is not None:
        check_no_nul(checked.secret.get_secret_value(), "ToolDefinition.secret")
    return checked


def checked_migration_plan(plan: MigrationPlan) -> MigrationPlan:
    return _checked(plan, MigrationPlan)


def _checked(
    model: ConfigModel, model_type: type[ConfigModel], *, allow_deleted: bool = False
) -> ConfigModel:
    """A validated deep copy of ``model`` (InvalidDataError when it does not validate)."""
    if not isinstance(model, model_type):
        raise InvalidDataError(f"expected a {model_type.__name__}, got {type(model).__name__}")
    name = model_type.__name__
    check_storable(model, name)  # before dumping: dumping is what fails on such values
    try:
        data = model.model_dump(warnings=False)
        if not allow_deleted and data.get("deleted_at") is not None:
            raise InvalidDataError(f"{name}.deleted_at is set only by delete, not by save")
        json_fields = _JSON_FIELDS.get(model_type, ())
        for field in json_fields:
            data[field] = json.loads(json_text(data[field], f"{name}.{field}"))
        for field, value in data.items():
            if field not in json_fields:  # a JSON value is no int4 column: 10**16 is a fine default
                data[field] = _checked_scalar(name, field, value)
        check_no_nul(data, name)
        return model_type.model_validate(data)
    except ValidationError as exc:
        raise InvalidDataError(f"invalid {name}: {exc}") from exc


def _checked_scalar(model_name: str, field: str, value: Any) -> Any:
    """Timestamps aware (normalised to UTC), integers (not bools) within int32."""
    if isinstance(value, datetime):
        check_aware(value, f"{model_name}.{field}")
        return value.astimezone(UTC)
    if isinstance(value, int) and not isinstance(value, bool):
        check_int4(value, f"{model_name}.{field}")
    return value
