"""Request and response bodies of ``POST /v1/agents/{agent_id}/chat``."""

from __future__ import annotations

from typing import Annotated
from uuid import UUID

from pydantic import BaseModel, Field, StringConstraints

from focal.alignment.turn.models import MAX_MESSAGE_CHARS, TurnResult
from focal.api.schemas.common import RequestModel
from focal.api.schemas.conversations import ChannelUserId
from focal.conversation.models import Channel, SessionMode

__all__ = ["ChatRequest", "ChatResponse", "ChatScenario", "ChatUsage", "MatchedRuleOut"]


class ChatRequest(RequestModel):
    """One customer message. Without ``session_id`` the channel identity's open session with this
    agent continues, or a new one starts; with it, that session must be this agent's and open."""

    channel: Channel
    user_channel_id: ChannelUserId
    message: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_MESSAGE_CHARS)
    ] = Field(
        description=f"The customer message, stripped of surrounding whitespace: 1..{MAX_MESSAGE_CHARS} chars"
    )
    session_id: UUID | None = None
    stream: bool = Field(
        default=False, description="answer with Server-Sent Events (like Accept: text/event-stream)"
    )


class MatchedRuleOut(BaseModel):
    rule_id: UUID
    name: str
    score: float


class ChatScenario(BaseModel):
    """The scenario step the answer came from (a terminal step means the scenario just finished)."""

    id: UUID
    step_id: UUID
    step_name: str


class ChatUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatResponse(BaseModel):
    session_id: UUID
    turn_id: UUID
    turn_number: int
    response: str
    matched_rules: list[MatchedRuleOut]
    scenario: ChatScenario | None
    template_id: UUID | None = Field(description="The EXCLUSIVE or FALLBACK template that answered, if any")
    usage: ChatUsage
    latency_ms: float
    session_mode: SessionMode = Field(
        description="MANUAL once a rule handed the session to a person: later messages get 202"
    )

    @classmethod
    def from_result(cls, result: TurnResult) -> ChatResponse:
        scenario = result.scenario
        return cls(
            session_id=result.session_id,
            turn_id=result.turn_id,
            turn_number=result.turn_number,
            response=result.response,
            matched_rules=[
                MatchedRuleOut(rule_id=m.rule_id, name=m.name, score=m.score) for m in result.matched_rules
            ],
            scenario=ChatScenario(id=scenario.id, step_id=scenario.step_id, step_name=scenario.step_name)
            if scenario
            else None,
            template_id=result.template_id,
            usage=ChatUsage(**result.usage.model_dump()),
            latency_ms=result.latency_ms,
            session_mode=result.session_mode,
        )
