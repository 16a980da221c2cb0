"""Configuration models: how an agent should behave.

Operators create these over the API; the ConfigStore keeps them. Enums are upper-case
``StrEnum`` values, matching the database CHECK constraints.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Self
from uuid import UUID, uuid4

from pydantic import AwareDatetime, Field, JsonValue, model_validator

from focal.conversation.models import Channel
from focal.models import MAX_INT4, FocalModel, JsonDict, require_embedding_model, utc_now


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
    embedding: list[float] | None = None
    embedding_model: str | None = None
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


class Template(_Scoped):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    name: str = Field(min_length=1, max_length=255)
    text: str = Field(min_length=1)
    mode: TemplateMode = TemplateMode.SUGGEST
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
    created_at: AwareDatetime = Field(default_factory=utc_now)
    updated_at: AwareDatetime = Field(default_factory=utc_now)
    deleted_at: AwareDatetime | None = None


class ToolActivation(FocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    tool_id: str = Field(min_length=1, max_length=255)
    enabled: bool = True
    policy_overrides: JsonDict = Field(default_factory=dict)
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
