"""Configuration models: how an agent should behave.

Operators create these over the API; the ConfigStore keeps them. Enums are upper-case
``StrEnum`` values, matching the database CHECK constraints.

Two kinds of version, not to be confused:

- ``revision`` (every agent, rule, scenario, template, variable and tool activation) is the row's
  optimistic-concurrency counter. The store keeps it: 1 when the row is created, +1 on every
  save, whatever value the saved model carries. ``save_*(..., expected_revision=n)`` writes only
  if the stored revision is still ``n`` (``StaleRevisionError`` otherwise); the API exposes it as
  the ``ETag`` and honours ``If-Match``.
- ``Agent.current_version`` and ``Scenario.version`` are *behaviour* versions that sessions record
  (``Session.config_version``, ``active_scenario_version``) and migration plans refer to. A
  scenario's ``version`` changes only when its flow changes and never decreases: a save that
  would lower it is a ``ConflictError``.

Scenario size is bounded (``ScenarioLimits``, checked by ``scenario_limit_errors`` when a
scenario is saved), so loading one for a turn stays cheap for every tenant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Self
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field, JsonValue, model_validator

from focal.conversation.models import Channel
from focal.models import MAX_INT4, FocalModel, JsonDict, require_embedding_model, utc_now

TOOL_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
"""Tool ids: a lower-case letter, then up to 63 lower-case letters, digits or underscores. They
appear in URL paths (``/tools/{tool_id}``), so they never hold ``/``, spaces or other escapes."""


def _revision() -> Any:
    return Field(default=1, ge=1, le=MAX_INT4, description="row revision, kept by the store")


class Scope(StrEnum):
    GLOBAL = "GLOBAL"
    SCENARIO = "SCENARIO"
    STEP = "STEP"


class TemplateMode(StrEnum):
    SUGGEST = "SUGGEST"  # offered to the LLM as a suggested answer
    EXCLUSIVE = "EXCLUSIVE"  # returned verbatim (rendered), bypassing the LLM
    FALLBACK = "FALLBACK"  # used when the LLM provider fails


class VariableUpdatePolicy(StrEnum):
    REPLACE = "REPLACE"
    APPEND = "APPEND"
    MERGE = "MERGE"


class MigrationPlanStatus(StrEnum):
    DRAFT = "DRAFT"
    APPROVED = "APPROVED"
    DEPLOYED = "DEPLOYED"
    REJECTED = "REJECTED"


class Agent(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    system_prompt: str | None = None
    default_model: str | None = Field(default=None, max_length=255)
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1024, ge=1, le=200_000)
    enabled: bool = True
    current_version: int = Field(default=1, ge=1, le=MAX_INT4)
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None


class _Scoped(FocalModel):
    """Shared validation: ``scope_id`` is required unless the scope is GLOBAL."""

    scope: Scope = Scope.GLOBAL
    scope_id: UUID | None = None

    @model_validator(mode="after")
    def _scope_id_matches_scope(self) -> Self:
        if self.scope is Scope.GLOBAL and self.scope_id is not None:
            raise ValueError("scope_id must be empty for a GLOBAL scope")
        if self.scope is not Scope.GLOBAL and self.scope_id is None:
            raise ValueError(f"scope_id is required for scope {self.scope.value}")
        return self


class Rule(_Scoped):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    condition_text: str = Field(min_length=1)
    action_text: str = Field(min_length=1)
    priority: int = Field(default=0, ge=-100, le=100)
    enabled: bool = True
    max_fires_per_session: int = Field(default=0, ge=0, le=MAX_INT4)  # 0 = unlimited
    cooldown_turns: int = Field(default=0, ge=0, le=MAX_INT4)
    is_hard_constraint: bool = False
    attached_tool_ids: list[str] = Field(default_factory=list)
    attached_template_ids: list[UUID] = Field(default_factory=list)
    # A turn matching this rule answers, then hands the session to a person (MANUAL mode) and
    # emits the ``session.handoff_requested`` webhook (``focal/alignment/turn/handoff.py``).
    requests_handoff: bool = False
    embedding: list[float] | None = None
    embedding_model: str | None = None
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _embedding_names_its_model(self) -> Self:
        require_embedding_model(self.embedding, self.embedding_model)
        return self


class StepTransition(FocalModel):
    to_step_id: UUID
    condition_text: str = Field(min_length=1)
    condition_embedding: list[float] | None = None
    priority: int = 0


class ScenarioStep(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    transitions: list[StepTransition] = Field(default_factory=list)
    rule_ids: list[UUID] = Field(default_factory=list)
    template_ids: list[UUID] = Field(default_factory=list)
    is_terminal: bool = False
    collects_fields: list[str] = Field(default_factory=list)


class Scenario(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    version: int = Field(default=1, ge=1, le=MAX_INT4)
    entry_step_id: UUID
    entry_condition_text: str | None = None
    entry_embedding: list[float] | None = None
    embedding_model: str | None = None
    steps: list[ScenarioStep] = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _entry_embedding_names_its_model(self) -> Self:
        require_embedding_model(self.entry_embedding, self.embedding_model)
        return self

    @model_validator(mode="after")
    def _graph_is_closed(self) -> Self:
        step_ids = {step.id for step in self.steps}
        if len(step_ids) != len(self.steps):
            raise ValueError("step ids must be unique within a scenario")
        if self.entry_step_id not in step_ids:
            raise ValueError(f"entry_step_id {self.entry_step_id} is not one of the scenario's steps")
        for step in self.steps:
            for transition in step.transitions:
                if transition.to_step_id not in step_ids:
                    raise ValueError(
                        f"step {step.name!r} has a transition to unknown step {transition.to_step_id}"
                    )
        return self

    def step(self, step_id: UUID | None) -> ScenarioStep | None:
        """The step with this id, or None."""
        return next((s for s in self.steps if s.id == step_id), None)


@dataclass(frozen=True)
class ScenarioLimits:
    """The largest scenario Focal accepts (``SCENARIO_LIMITS``; documented for operators).

    A scenario is loaded whole on every turn of a session in it, so its size is bounded: the
    largest one decodes in tens of milliseconds, in slices that leave the event loop free (see
    ``benchmarks/scenario_load.py``). Checked on save (``scenario_limit_errors``), not on read, so
    a row stored before the limits existed still loads.
    """

    max_steps: int = 100
    max_transitions_per_step: int = 20
    max_transitions: int = 200  # in the whole scenario
    max_condition_length: int = 1_000  # transition condition_text and entry_condition_text
    max_description_length: int = 2_000  # scenario and step descriptions
    max_tags: int = 32
    max_tag_length: int = 64
    max_step_references: int = 32  # rule_ids, template_ids and collects_fields of one step (each)
    max_field_name_length: int = 255  # an entry of collects_fields


SCENARIO_LIMITS = ScenarioLimits()


def scenario_limit_errors(scenario: Scenario, limits: ScenarioLimits = SCENARIO_LIMITS) -> list[str]:
    """What makes ``scenario`` larger than ``limits`` (empty when it fits), one message each."""
    errors: list[str] = []

    def longer(text: str | None, limit: int, what: str) -> None:
        if text is not None and len(text) > limit:
            errors.append(f"{what} has {len(text)} characters, more than {limit}")

    def more(items: list[Any], limit: int, what: str) -> None:
        if len(items) > limit:
            errors.append(f"{what} has {len(items)} entries, more than {limit}")

    more(scenario.steps, limits.max_steps, "steps")
    total = sum(len(step.transitions) for step in scenario.steps)
    if total > limits.max_transitions:
        errors.append(f"the scenario has {total} transitions, more than {limits.max_transitions}")
    longer(scenario.description, limits.max_description_length, "description")
    longer(scenario.entry_condition_text, limits.max_condition_length, "entry_condition_text")
    more(scenario.tags, limits.max_tags, "tags")
    for tag in scenario.tags:
        longer(tag, limits.max_tag_length, "a tag")
    for step in scenario.steps:
        where = f"step {step.name!r}"
        more(step.transitions, limits.max_transitions_per_step, f"{where} transitions")
        longer(step.description, limits.max_description_length, f"{where} description")
        more(step.rule_ids, limits.max_step_references, f"{where} rule_ids")
        more(step.template_ids, limits.max_step_references, f"{where} template_ids")
        more(step.collects_fields, limits.max_step_references, f"{where} collects_fields")
        for name in step.collects_fields:
            longer(name, limits.max_field_name_length, f"{where} collects_fields entry")
        for transition in step.transitions:
            longer(
                transition.condition_text, limits.max_condition_length, f"{where} transition condition_text"
            )
    return errors


class Template(_Scoped):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255)
    text: str = Field(min_length=1)
    mode: TemplateMode = TemplateMode.SUGGEST
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None


VARIABLE_NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_]*$")


class Variable(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255, pattern=VARIABLE_NAME_PATTERN.pattern)
    description: str | None = None
    default_value: JsonValue = None
    update_policy: VariableUpdatePolicy = VariableUpdatePolicy.REPLACE
    resolver_tool_id: str | None = None
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None


class ToolActivation(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    tool_id: str = Field(pattern=TOOL_ID_PATTERN.pattern, description="see TOOL_ID_PATTERN")
    enabled: bool = True
    policy_overrides: JsonDict = Field(default_factory=dict)
    revision: int = _revision()
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)


class ScopeFilter(FocalModel):
    """Which sessions a scenario migration applies to."""

    include_channels: list[Channel] = Field(default_factory=list)
    exclude_channels: list[Channel] = Field(default_factory=list)
    include_step_names: list[str] = Field(default_factory=list)
    exclude_step_names: list[str] = Field(default_factory=list)
    max_session_age_days: int | None = Field(default=None, ge=0)
    min_session_age_days: int | None = Field(default=None, ge=0)


class MigrationPlan(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    scenario_id: UUID
    from_version: int = Field(ge=1, le=MAX_INT4)
    to_version: int = Field(ge=1, le=MAX_INT4)
    status: MigrationPlanStatus = MigrationPlanStatus.DRAFT
    transformation_map: JsonDict = Field(default_factory=dict)
    anchor_policies: JsonDict = Field(default_factory=dict)
    scope_filter: ScopeFilter | None = None
    created_at: AwareDatetime = Field(default_factory=utc_now)
    approved_at: AwareDatetime | None = None
    deployed_at: AwareDatetime | None = None

    @model_validator(mode="after")
    def _forward_only(self) -> Self:
        if self.to_version <= self.from_version:
            raise ValueError("to_version must be greater than from_version")
        return self
