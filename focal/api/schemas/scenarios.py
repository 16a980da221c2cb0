"""Scenario request and response bodies.

Clients choose the step ids (transitions and ``entry_step_id`` refer to them); the server checks
that the graph is closed and computes the entry and transition embeddings. Sizes are bounded by
``SCENARIO_LIMITS`` (422 naming the field beyond a limit).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Self
from uuid import UUID, uuid4

from pydantic import Field, model_validator

from focal.alignment.models import SCENARIO_LIMITS as LIMITS
from focal.api.schemas.behaviour import ToolId
from focal.api.schemas.common import Name, NonBlankStr, NotNull, RequestModel, ResponseModel

__all__ = [
    "ScenarioCreate",
    "ScenarioOut",
    "ScenarioStepIn",
    "ScenarioStepOut",
    "ScenarioUpdate",
    "StepTransitionIn",
    "StepTransitionOut",
]

_CONDITION = Field(min_length=1, max_length=LIMITS.max_condition_length)
_DESCRIPTION = Field(default=None, max_length=LIMITS.max_description_length)

Tag = Annotated[str, Field(min_length=1, max_length=LIMITS.max_tag_length)]
FieldName = Annotated[str, Field(min_length=1, max_length=LIMITS.max_field_name_length)]


class StepTransitionIn(RequestModel):
    to_step_id: UUID
    condition_text: NonBlankStr = _CONDITION
    priority: int = 0


class ScenarioStepIn(RequestModel):
    id: UUID = Field(default_factory=uuid4)
    name: Name
    description: str | None = _DESCRIPTION
    transitions: list[StepTransitionIn] = Field(
        default_factory=list, max_length=LIMITS.max_transitions_per_step
    )
    rule_ids: list[UUID] = Field(
        default_factory=list, max_length=LIMITS.max_step_references, description="rules of this agent"
    )
    template_ids: list[UUID] = Field(
        default_factory=list, max_length=LIMITS.max_step_references, description="templates of this agent"
    )
    is_terminal: bool = False
    collects_fields: list[FieldName] = Field(
        default_factory=list,
        max_length=LIMITS.max_step_references,
        description="variables the step collects; its transitions wait until all are filled",
    )
    tool_ids: list[ToolId] = Field(
        default_factory=list,
        max_length=LIMITS.max_step_references,
        description="tools offered to the model at this step (they must be activated for the agent)",
    )


def _check_total_transitions(steps: list[ScenarioStepIn] | None) -> None:
    total = sum(len(step.transitions) for step in steps or ())
    if total > LIMITS.max_transitions:
        raise ValueError(
            f"the scenario has {total} transitions, more than the limit of {LIMITS.max_transitions}"
        )


class ScenarioCreate(RequestModel):
    name: Name
    description: str | None = _DESCRIPTION
    entry_step_id: UUID
    entry_condition_text: NonBlankStr | None = Field(
        default=None, min_length=1, max_length=LIMITS.max_condition_length
    )
    steps: list[ScenarioStepIn] = Field(min_length=1, max_length=LIMITS.max_steps)
    tags: list[Tag] = Field(default_factory=list, max_length=LIMITS.max_tags)
    enabled: bool = True

    @model_validator(mode="after")
    def _within_transition_limit(self) -> Self:
        _check_total_transitions(self.steps)
        return self


class ScenarioUpdate(RequestModel):
    """PATCH. Changing ``steps``, ``entry_step_id`` or ``entry_condition_text`` makes a new
    scenario version; the previous one is archived so sessions on it can still be resolved."""

    name: NotNull[Name] = None
    description: str | None = _DESCRIPTION
    entry_step_id: NotNull[UUID] = None
    entry_condition_text: NonBlankStr | None = Field(
        default=None, min_length=1, max_length=LIMITS.max_condition_length
    )
    steps: NotNull[list[ScenarioStepIn]] = Field(default=None, min_length=1, max_length=LIMITS.max_steps)
    tags: NotNull[list[Tag]] = Field(default=None, max_length=LIMITS.max_tags)
    enabled: NotNull[bool] = None

    @model_validator(mode="after")
    def _within_transition_limit(self) -> Self:
        _check_total_transitions(self.steps)
        return self


class StepTransitionOut(ResponseModel):
    to_step_id: UUID
    condition_text: str
    priority: int


class ScenarioStepOut(ResponseModel):
    id: UUID
    name: str
    description: str | None
    transitions: list[StepTransitionOut]
    rule_ids: list[UUID]
    template_ids: list[UUID]
    is_terminal: bool
    collects_fields: list[str]
    tool_ids: list[str]


class ScenarioOut(ResponseModel):
    id: UUID
    agent_id: UUID
    name: str
    description: str | None
    version: int = Field(description="flow version: +1 when steps or entry change; never decreases")
    entry_step_id: UUID
    entry_condition_text: str | None
    steps: list[ScenarioStepOut]
    tags: list[str]
    enabled: bool
    embedding_model: str | None
    revision: int = Field(description="row revision, also the ETag; +1 on every change")
    created_at: datetime
    updated_at: datetime
