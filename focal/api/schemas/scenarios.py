"""Scenario request and response bodies.

Clients choose the step ids (transitions and ``entry_step_id`` refer to them); the server checks
that the graph is closed and computes the entry and transition embeddings.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID, uuid4

from pydantic import Field

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


class StepTransitionIn(RequestModel):
    to_step_id: UUID
    condition_text: NonBlankStr = Field(min_length=1)
    priority: int = 0


class ScenarioStepIn(RequestModel):
    id: UUID = Field(default_factory=uuid4)
    name: Name
    description: str | None = None
    transitions: list[StepTransitionIn] = Field(default_factory=list)
    rule_ids: list[UUID] = Field(default_factory=list)
    template_ids: list[UUID] = Field(default_factory=list)
    is_terminal: bool = False
    collects_fields: list[str] = Field(default_factory=list)


class ScenarioCreate(RequestModel):
    name: Name
    description: str | None = None
    entry_step_id: UUID
    entry_condition_text: NonBlankStr | None = Field(default=None, min_length=1)
    steps: list[ScenarioStepIn] = Field(min_length=1)
    tags: list[str] = Field(default_factory=list)
    enabled: bool = True


class ScenarioUpdate(RequestModel):
    """PATCH. Changing ``steps``, ``entry_step_id`` or ``entry_condition_text`` makes a new
    scenario version; the previous one is archived so sessions on it can still be resolved."""

    name: NotNull[Name] = None
    description: str | None = None
    entry_step_id: NotNull[UUID] = None
    entry_condition_text: NonBlankStr | None = Field(default=None, min_length=1)
    steps: NotNull[list[ScenarioStepIn]] = Field(default=None, min_length=1)
    tags: NotNull[list[str]] = None
    enabled: NotNull[bool] = None


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


class ScenarioOut(ResponseModel):
    id: UUID
    agent_id: UUID
    name: str
    description: str | None
    version: int
    entry_step_id: UUID
    entry_condition_text: str | None
    steps: list[ScenarioStepOut]
    tags: list[str]
    enabled: bool
    embedding_model: str | None
    created_at: datetime
    updated_at: datetime
