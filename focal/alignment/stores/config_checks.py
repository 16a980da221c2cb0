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
  ``delete_*``, so a model carrying one is refused by ``save_*``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID

from pydantic import BaseModel, ValidationError

from focal.alignment.models import (
    Agent,
    MigrationPlan,
    MigrationPlanStatus,
    Rule,
    Scenario,
    Scope,
    Template,
    ToolActivation,
    Variable,
)
from focal.errors import InvalidDataError
from focal.validation import check_vector

__all__ = [
    "ConfigModel",
    "check_lookup_int",
    "check_lookup_text",
    "checked_agent",
    "checked_embedding",
    "checked_migration_plan",
    "checked_rule",
    "checked_scenario",
    "checked_scope",
    "checked_scopes",
    "checked_status",
    "checked_template",
    "checked_tool_activation",
    "checked_variable",
    "float32",
    "json_text",
]

ConfigModel = TypeVar("ConfigModel", bound=BaseModel)

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_FLOAT32 = struct.Struct("<f")  # standard size: raises OverflowError instead of giving inf
_JSON_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {
    Variable: ("default_value",),
    ToolActivation: ("policy_overrides",),
    MigrationPlan: ("transformation_map", "anchor_policies"),
}


def float32(values: Iterable[float]) -> list[float]:
    """``values`` rounded to float32 exactly as pgvector stores them."""
    out: list[float] = []
    for value in values:
        try:
            out.append(_FLOAT32.unpack(_FLOAT32.pack(value))[0])
        except (OverflowError, struct.error) as exc:
            raise InvalidDataError(f"embedding value {value!r} does not fit a float32") from exc
    return out


def checked_embedding(vector: Sequence[float], dimensions: int, *, what: str = "embedding") -> list[float]:
    """A vector for a ``vector(D)`` column or a query: right length, finite, not zero as float32."""
    check_vector(vector, dimensions, what=what)
    rounded = float32(vector)
    if not any(rounded):
        raise InvalidDataError(f"{what} rounds to all zeros as float32; cosine similarity is undefined")
    return rounded


def checked_scope(scope: Scope | str | None) -> Scope | None:
    if scope is None:
        return None
    try:
        return Scope(scope)
    except ValueError as exc:
        raise InvalidDataError(f"unknown scope {scope!r}") from exc


def checked_status(status: MigrationPlanStatus | str | None) -> MigrationPlanStatus | None:
    if status is None:
        return None
    try:
        return MigrationPlanStatus(status)
    except ValueError as exc:
        raise InvalidDataError(f"unknown migration plan status {status!r}") from exc


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


def check_lookup_text(value: str | None, what: str) -> None:
    """A string used to look rows up (name, tool id, model): PostgreSQL text cannot hold NUL."""
    if value is not None and "\x00" in value:
        raise InvalidDataError(f"{what} contains a NUL character")


def check_lookup_int(value: int, what: str) -> None:
    """An integer used to look rows up (a version): it must fit the int32 column."""
    if not _INT32_MIN <= value <= _INT32_MAX:
        raise InvalidDataError(f"{what} = {value} is out of range")


def checked_agent(agent: Agent) -> Agent:
    return _checked(agent, Agent)


def checked_rule(rule: Rule, dimensions: int) -> Rule:
    checked = _checked(rule, Rule)
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


def checked_migration_plan(plan: MigrationPlan) -> MigrationPlan:
    return _checked(plan, MigrationPlan)


def json_text(value: Any) -> str:
    """``value`` as JSON text, refusing NaN, infinities, NUL characters and non-JSON objects."""
    try:
        text = json.dumps(value, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(f"value is not plain JSON: {exc}") from exc
    if "\\u0000" in text:
        raise InvalidDataError("JSON text contains a NUL character, which PostgreSQL refuses")
    return text


def _checked(
    model: ConfigModel, model_type: type[ConfigModel], *, allow_deleted: bool = False
) -> ConfigModel:
    """A validated deep copy of ``model`` (InvalidDataError when it does not validate)."""
    if not isinstance(model, model_type):
        raise InvalidDataError(f"expected a {model_type.__name__}, got {type(model).__name__}")
    name = model_type.__name__
    try:
        data = model.model_dump(warnings=False)
        if not allow_deleted and data.get("deleted_at") is not None:
            raise InvalidDataError(f"{name}.deleted_at is set only by delete, not by save")
        for field in _JSON_FIELDS.get(model_type, ()):
            data[field] = json.loads(json_text(data[field]))
        for field, value in data.items():
            data[field] = _checked_scalar(name, field, value)
        _refuse_nul(name, data)
        return model_type.model_validate(data)
    except ValidationError as exc:
        raise InvalidDataError(f"invalid {name}: {exc}") from exc


def _checked_scalar(model_name: str, field: str, value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InvalidDataError(f"{model_name}.{field} must be timezone-aware")
        return value.astimezone(UTC)
    if isinstance(value, int) and not isinstance(value, bool) and not _INT32_MIN <= value <= _INT32_MAX:
        raise InvalidDataError(f"{model_name}.{field} = {value} is out of range")
    return value


def _refuse_nul(model_name: str, value: Any) -> None:
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidDataError(f"{model_name} contains a NUL character, which PostgreSQL refuses")
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(model_name, key)
            _refuse_nul(model_name, item)
    elif isinstance(value, list | tuple):
        for item in value:
            _refuse_nul(model_name, item)
