"""Rule, template, variable and tool-activation request and response bodies.

Embeddings are computed by the server and never accepted or returned: responses carry only the
``embedding_model`` that produced them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AfterValidator, Field

from focal.alignment.constraint_patterns import (
    MAX_JUDGE_INSTRUCTIONS_LENGTH,
    MAX_PATTERN_LENGTH,
    MAX_PATTERNS,
    PatternError,
    compiled,
)
from focal.alignment.models import (
    MAX_EXTRACTION_PATTERN_LENGTH,
    TOOL_ID_PATTERN,
    VARIABLE_NAME_PATTERN,
    Scope,
    TemplateMode,
    VariableUpdatePolicy,
)
from focal.api.schemas.common import Name, NonBlankStr, NotNull, RequestModel, ResponseModel
from focal.models import MAX_INT4

__all__ = [
    "RuleCreate",
    "RuleOut",
    "RuleUpdate",
    "TemplateCreate",
    "TemplateOut",
    "TemplateUpdate",
    "ToolActivationCreate",
    "ToolActivationOut",
    "ToolActivationUpdate",
    "ToolId",
    "VariableCreate",
    "VariableOut",
    "VariableUpdate",
]

_REVISION = Field(description="row revision, also the ETag; +1 on every change")
_TTL = "a resolved value older than this is resolved again (null: it never expires)"
_PATTERN = (
    "regular expression that takes the value from the customer's message while a step collecting "
    "it is current (the first group when it has one, else the whole match)"
)
_WITH_LLM = "also ask the model to extract the value (structured output) when the pattern finds none"
_PERSIST = "also write every value a turn sets to the customer's profile field of this name"

# A tool id: a lower-case letter, then up to 63 lower-case letters, digits or underscores.
ToolId = Annotated[str, Field(pattern=TOOL_ID_PATTERN.pattern, examples=["lookup_order"])]


def _compiles(pattern: str) -> str:
    try:
        compiled(pattern)
    except PatternError as exc:
        raise ValueError(str(exc)) from exc
    return pattern


# A constraint pattern: RE2 syntax (see focal.alignment.constraint_patterns); a 422 names the
# offending entry (``body.forbid_patterns.2``) and says why RE2 refused it.
ConstraintPattern = Annotated[
    str,
    Field(min_length=1, max_length=MAX_PATTERN_LENGTH, examples=["(?i)\\bfull refund\\b"]),
    AfterValidator(_compiles),
]
_FORBID: Any = Field(
    default_factory=list,
    max_length=MAX_PATTERNS,
    description="hard constraints only: RE2 patterns no answer may match (case-sensitive unless (?i))",
)
_REQUIRE: Any = Field(
    default_factory=list,
    max_length=MAX_PATTERNS,
    description="hard constraints only: RE2 patterns every answer must match",
)
_JUDGE_DESCRIPTION = (
    "hard constraints only: what an LLM judge checks every generated answer for (null: no judge)"
)


class RuleCreate(RequestModel):
    name: Name
    description: str | None = None
    condition_text: NonBlankStr = Field(min_length=1)
    action_text: NonBlankStr = Field(min_length=1)
    scope: Scope = Scope.GLOBAL
    scope_id: UUID | None = Field(default=None, description="required unless scope is GLOBAL")
    priority: int = Field(default=0, ge=-100, le=100)
    enabled: bool = True
    max_fires_per_session: int = Field(default=0, ge=0, description="0 = unlimited")
    cooldown_turns: int = Field(default=0, ge=0)
    is_hard_constraint: bool = False
    attached_tool_ids: list[ToolId] = Field(default_factory=list)
    attached_template_ids: list[UUID] = Field(default_factory=list, description="templates of this agent")
    forbid_patterns: list[ConstraintPattern] = _FORBID
    require_patterns: list[ConstraintPattern] = _REQUIRE
    judge_instructions: NonBlankStr | None = Field(
        default=None, max_length=MAX_JUDGE_INSTRUCTIONS_LENGTH, description=_JUDGE_DESCRIPTION
    )
    requests_handoff: bool = Field(
        default=False,
        description="when the rule matches, the turn answers, then the session switches to MANUAL "
        "and the session.handoff_requested webhook is sent",
    )


class RuleUpdate(RequestModel):
    name: NotNull[Name] = None
    description: str | None = None
    condition_text: NotNull[NonBlankStr] = Field(default=None, min_length=1)
    action_text: NotNull[NonBlankStr] = Field(default=None, min_length=1)
    scope: NotNull[Scope] = None
    scope_id: UUID | None = None
    priority: NotNull[int] = Field(default=None, ge=-100, le=100)
    enabled: NotNull[bool] = None
    max_fires_per_session: NotNull[int] = Field(default=None, ge=0)
    cooldown_turns: NotNull[int] = Field(default=None, ge=0)
    is_hard_constraint: NotNull[bool] = None
    attached_tool_ids: NotNull[list[ToolId]] = None
    attached_template_ids: NotNull[list[UUID]] = None
    forbid_patterns: NotNull[list[ConstraintPattern]] = Field(default=None, max_length=MAX_PATTERNS)
    require_patterns: NotNull[list[ConstraintPattern]] = Field(default=None, max_length=MAX_PATTERNS)
    judge_instructions: NonBlankStr | None = Field(
        default=None, max_length=MAX_JUDGE_INSTRUCTIONS_LENGTH, description=_JUDGE_DESCRIPTION
    )
    requests_handoff: NotNull[bool] = None


class RuleOut(ResponseModel):
    id: UUID
    agent_id: UUID
    name: str
    description: str | None
    condition_text: str
    action_text: str
    scope: Scope
    scope_id: UUID | None
    priority: int
    enabled: bool
    max_fires_per_session: int
    cooldown_turns: int
    is_hard_constraint: bool
    attached_tool_ids: list[str]
    attached_template_ids: list[UUID]
    forbid_patterns: list[str]
    require_patterns: list[str]
    judge_instructions: str | None
    requests_handoff: bool
    embedding_model: str | None
    revision: int = _REVISION
    created_at: datetime
    updated_at: datetime


class TemplateCreate(RequestModel):
    name: Name
    text: NonBlankStr = Field(min_length=1, description="may contain {variable} placeholders")
    mode: TemplateMode = TemplateMode.SUGGEST
    scope: Scope = Scope.GLOBAL
    scope_id: UUID | None = None


class TemplateUpdate(RequestModel):
    name: NotNull[Name] = None
    text: NotNull[NonBlankStr] = Field(default=None, min_length=1)
    mode: NotNull[TemplateMode] = None
    scope: NotNull[Scope] = None
    scope_id: UUID | None = None


class TemplateOut(ResponseModel):
    id: UUID
    agent_id: UUID
    name: str
    text: str
    mode: TemplateMode
    scope: Scope
    scope_id: UUID | None
    revision: int = _REVISION
    created_at: datetime
    updated_at: datetime


class VariableCreate(RequestModel):
    name: str = Field(min_length=1, max_length=255, pattern=VARIABLE_NAME_PATTERN.pattern)
    description: str | None = None
    default_value: Any = None
    update_policy: VariableUpdatePolicy = VariableUpdatePolicy.REPLACE
    resolver_tool_id: ToolId | None = None
    cache_ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_INT4, description=_TTL)
    extraction_pattern: NonBlankStr | None = Field(
        default=None, min_length=1, max_length=MAX_EXTRACTION_PATTERN_LENGTH, description=_PATTERN
    )
    extract_with_llm: bool = Field(default=False, description=_WITH_LLM)
    persist_to_profile: bool = Field(default=False, description=_PERSIST)


class VariableUpdate(RequestModel):
    name: NotNull[str] = Field(
        default=None, min_length=1, max_length=255, pattern=VARIABLE_NAME_PATTERN.pattern
    )
    description: str | None = None
    default_value: Any = None
    update_policy: NotNull[VariableUpdatePolicy] = None
    resolver_tool_id: ToolId | None = None
    cache_ttl_seconds: int | None = Field(default=None, ge=1, le=MAX_INT4, description=_TTL)
    extraction_pattern: NonBlankStr | None = Field(
        default=None, min_length=1, max_length=MAX_EXTRACTION_PATTERN_LENGTH, description=_PATTERN
    )
    extract_with_llm: NotNull[bool] = None
    persist_to_profile: NotNull[bool] = None


class VariableOut(ResponseModel):
    id: UUID
    agent_id: UUID
    name: str
    description: str | None
    default_value: Any
    update_policy: VariableUpdatePolicy
    resolver_tool_id: str | None
    cache_ttl_seconds: int | None
    extraction_pattern: str | None
    extract_with_llm: bool
    persist_to_profile: bool
    revision: int = _REVISION
    created_at: datetime
    updated_at: datetime


class ToolActivationCreate(RequestModel):
    tool_id: ToolId
    enabled: bool = True
    policy_overrides: dict[str, Any] = Field(default_factory=dict)


class ToolActivationUpdate(RequestModel):
    enabled: NotNull[bool] = None
    policy_overrides: NotNull[dict[str, Any]] = None


class ToolActivationOut(ResponseModel):
    id: UUID
    agent_id: UUID
    tool_id: str
    enabled: bool
    policy_overrides: dict[str, Any]
    revision: int = _REVISION
    created_at: datetime
    updated_at: datetime
