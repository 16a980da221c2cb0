"""The records one turn leaves behind: its audit events, its scenario state, its TURN episodes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from focal.alignment.turn.models import ScenarioPosition
from focal.alignment.turn.retrieval import RuleMatch
from focal.alignment.turn.scenario import ScenarioOutcome
from focal.audit.models import AuditEvent, TokenCounts, TurnRecord
from focal.conversation.models import Session
from focal.errors import ProviderError
from focal.memory.models import Episode, EpisodeType


@dataclass
class Reply:
    """How the turn was answered: by a template or by the LLM (and whether the LLM failed)."""

    text: str
    template_id: UUID | None = None
    template_name: str | None = None
    template_mode: str | None = None
    usage: TokenCounts = field(default_factory=TokenCounts)
    llm_model: str | None = None
    finish_reason: str | None = None
    provider_error: ProviderError | None = None


def build_events(
    record: TurnRecord, matches: list[RuleMatch], outcome: ScenarioOutcome, reply: Reply
) -> list[AuditEvent]:
    found: list[tuple[str, dict[str, Any]]] = [
        ("rule_matched", {"rule_id": str(m.rule.id), "name": m.rule.name, "score": round(m.score, 4)})
        for m in matches
    ]
    found += outcome.events
    if reply.provider_error is not None:
        error = reply.provider_error
        found.append(
            (
                "provider_error",
                {"error": type(error).__name__, "message": str(error), "provider": error.provider},
            )
        )
    if reply.template_id is not None:
        found.append(
            (
                "template_used",
                {
                    "template_id": str(reply.template_id),
                    "name": reply.template_name,
                    "mode": reply.template_mode,
                },
            )
        )
    return [
        AuditEvent(
            tenant_id=record.tenant_id,
            session_id=record.session_id,
            turn_id=record.id,
            event_type=event_type,
            event_data={"turn_number": record.turn_number, **data},
        )
        for event_type, data in found
    ]


def scenario_position(outcome: ScenarioOutcome) -> ScenarioPosition | None:
    if outcome.scenario is None or outcome.step is None:
        return None
    return ScenarioPosition(
        id=outcome.scenario.id,
        name=outcome.scenario.name,
        step_id=outcome.step.id,
        step_name=outcome.step.name,
        finished=outcome.finished,
    )


def scenario_state(outcome: ScenarioOutcome, saved: Session) -> dict[str, Any]:
    position = scenario_position(outcome)
    return {
        "answered_from": position.model_dump(mode="json") if position else None,
        "active_scenario_id": str(saved.active_scenario_id) if saved.active_scenario_id else None,
        "current_step_id": str(saved.current_step_id) if saved.current_step_id else None,
        "moves": [{"event": kind, **data} for kind, data in outcome.events],
    }


def turn_episode(
    record: TurnRecord,
    profile_id: UUID,
    content: str,
    embedding: list[float],
    embedding_model: str,
    role: str,
) -> Episode:
    return Episode(
        tenant_id=record.tenant_id,
        agent_id=record.agent_id,
        customer_profile_id=profile_id,
        session_id=record.session_id,
        group_id=str(record.session_id),
        content=content,
        episode_type=EpisodeType.TURN,
        embedding=embedding,
        embedding_model=embedding_model,
        metadata={"turn_id": str(record.id), "turn_number": record.turn_number, "role": role},
    )
