"""Immutable records of what happened: one per turn, plus events."""

from __future__ import annotations

from uuid import UUID, uuid4

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

from focal.models import MAX_INT4, FrozenFocalModel, JsonDict, utc_now


class MatchedRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: UUID
    name: str
    score: float


class TokenCounts(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    def __add__(self, other: TokenCounts) -> TokenCounts:
        """The tokens of two calls together (a turn may make several)."""
        return TokenCounts(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


class CheckedConstraint(BaseModel):
    """A hard constraint that applied to a turn's answer (``TurnRecord.constraints_checked``):
    how many patterns it has, and whether LLM answers were judged against it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: UUID
    name: str
    patterns: int = Field(default=0, ge=0)
    judged: bool = False


class ConstraintFailure(BaseModel):
    """One candidate answer of a turn that broke one hard constraint
    (``TurnRecord.constraints_failed``). ``attempt`` counts the candidates checked in the turn
    (1 = the first); ``source`` says where the candidate came from ("llm", "template",
    "fallback_template", "safe_message"); ``reasons`` say how it broke the constraint."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_id: UUID
    name: str
    attempt: int = Field(ge=1)
    source: str
    reasons: list[str]


class TurnRecord(FrozenFocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    agent_id: UUID
    session_id: UUID
    turn_number: int = Field(ge=1, le=MAX_INT4)
    user_message: str
    assistant_response: str
    context_extracted: JsonDict = Field(default_factory=dict)
    rules_matched: list[MatchedRule] = Field(default_factory=list)
    scenario_state: JsonDict = Field(default_factory=dict)
    tools_executed: list[dict[str, JsonValue]] = Field(default_factory=list)
    token_usage: TokenCounts = Field(default_factory=TokenCounts)
    latency_ms: float = Field(default=0.0, ge=0)
    created_at: AwareDatetime = Field(default_factory=utc_now)
    # Hard constraints (revision 0008): every constraint that applied to the answer, and every
    # violation found on a candidate answer (the answer given never violates; see
    # focal.alignment.turn.constraints).
    constraints_checked: list[CheckedConstraint] = Field(default_factory=list)
    constraints_failed: list[ConstraintFailure] = Field(default_factory=list)


class AuditEvent(FrozenFocalModel):
    id: UUID = Field(default_factory=uuid4)
    tenant_id: UUID
    session_id: UUID | None = None
    turn_id: UUID | None = None  # not a foreign key: events may precede their turn
    event_type: str = Field(min_length=1, max_length=100)
    event_data: JsonDict = Field(default_factory=dict)
    created_at: AwareDatetime = Field(default_factory=utc_now)
