"""The records one turn leaves behind: its turn record, audit events, scenario state, TURN episodes.

Every record is built before anything is written, so the stores' checks can refuse the turn
while it has still changed nothing (``checks.py``). A value a model refuses at construction (a
lone surrogate, say) is an ``InvalidDataError`` here, like any other refusal of a store.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from pydantic import ValidationError

from focal.alignment.turn.models import ScenarioPosition
from focal.alignment.turn.persist import TurnWrites
from focal.alignment.turn.retrieval import RuleMatch
from focal.alignment.turn.scenario import ScenarioOutcome
from focal.audit.models import AuditEvent, MatchedRule, TokenCounts, TurnRecord
from focal.conversation.models import Session
from focal.errors import InvalidDataError, ProviderError
from focal.memory.models import Episode, EpisodeType

if TYPE_CHECKING:  # these modules build on Reply; their types are only annotations here
    from focal.alignment.turn.constraints import ConstraintReport
    from focal.alignment.turn.relevance import RelevanceOutcome
    from focal.alignment.turn.tool_loop import ToolExecution
    from focal.alignment.turn.variables import TurnVariables


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
    constraints: ConstraintReport | None = None  # None: no hard constraint applied


@dataclass(frozen=True)
class Answered:
    """How the turn was answered, and from what: the rest of what its records say."""

    reply: Reply
    answer_embedding: list[float]
    matches: list[RuleMatch]
    outcome: ScenarioOutcome
    memories: list[tuple[Episode, float]]
    new_session: bool
    relevance: RelevanceOutcome | None = None  # None: the relevance check did not run
    tool_calls: tuple[ToolExecution, ...] = ()  # every tool call of the turn (tool_loop.ToolLedger)
    variables: TurnVariables | None = None  # what the turn set (variables.py)


def matched_rules(matches: list[RuleMatch]) -> list[MatchedRule]:
    return [MatchedRule(rule_id=m.rule.id, name=m.rule.name, score=round(m.score, 4)) for m in matches]


def build_writes(
    draft: TurnDraft,
    session: Session,
    answered: Answered,
    profile_id: UUID,
    timings_ms: dict[str, float],
    latency_ms: float,
) -> TurnWrites:
    """Every record of the turn, for the customer ``profile_id`` (set on ``session`` too)."""
    reply = answered.reply
    session.customer_profile_id = profile_id
    context: dict[str, Any] = {
        "timings_ms": timings_ms,
        "new_session": answered.new_session,
        "customer_profile_id": str(profile_id),
        "recalled_episode_ids": [str(episode.id) for episode, _ in answered.memories],
        "llm_model": reply.llm_model,
        "finish_reason": reply.finish_reason,
        "template_id": str(reply.template_id) if reply.template_id else None,
    }
    if reply.constraints is not None:
        context["constraint_outcome"] = reply.constraints.outcome
    record = draft.record(
        reply.text,
        context=context,
        matched=matched_rules(answered.matches),
        scenario=scenario_state(answered.outcome, session),
        usage=reply.usage,
        latency_ms=latency_ms,
        constraints=reply.constraints,
        tools=[call.record() for call in answered.tool_calls],
    )
    extra = [answered.relevance.event()] if answered.relevance is not None else []
    found = outcome_event_data(answered.matches, answered.outcome, reply, extra)
    events = turn_events(record, found + acting_event_data(answered))
    variables = answered.variables
    return TurnWrites(
        session=session,
        record=record,
        events=events,
        episodes=[
            draft.episode(draft.message, draft.message_embedding, "customer", profile_id),
            draft.episode(reply.text, answered.answer_embedding, "agent", profile_id),
        ],
        profile_fields=variables.profile_fields(draft.tenant_id, profile_id) if variables else [],
    )


def turn_events(record: TurnRecord, found: list[tuple[str, dict[str, Any]]]) -> list[AuditEvent]:
    """The turn's audit events, one per (event type, data), each carrying the turn number."""
    with refused_as_invalid_data("an audit event"):
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


def acting_event_data(answered: Answered) -> list[tuple[str, dict[str, Any]]]:
    """One ``tool_called`` event per tool call and one ``variable_set`` per value the turn set."""
    found: list[tuple[str, dict[str, Any]]] = [("tool_called", call.event()) for call in answered.tool_calls]
    if answered.variables is not None:
        found += [
            ("variable_set", {"name": change.name, "source": change.source})
            for change in answered.variables.changes
        ]
    return found


def outcome_event_data(
    matches: list[RuleMatch],
    outcome: ScenarioOutcome,
    reply: Reply,
    extra: list[tuple[str, dict[str, Any]]] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The events of what the turn matched and answered: ``extra`` first, then rules, the
    scenario, constraints, a provider error and the template used."""
    found: list[tuple[str, dict[str, Any]]] = list(extra or [])
    found += [
        ("rule_matched", {"rule_id": str(m.rule.id), "name": m.rule.name, "score": round(m.score, 4)})
        for m in matches
    ]
    found += outcome.events
    if reply.constraints is not None:
        found += reply.constraints.events
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
    return found


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


def scenario_state(outcome: ScenarioOutcome, session: Session) -> dict[str, Any]:
    position = scenario_position(outcome)
    return {
        "answered_from": position.model_dump(mode="json") if position else None,
        "active_scenario_id": str(session.active_scenario_id) if session.active_scenario_id else None,
        "current_step_id": str(session.current_step_id) if session.current_step_id else None,
        "moves": [{"event": kind, **data} for kind, data in outcome.events],
    }


@contextmanager
def refused_as_invalid_data(what: str) -> Iterator[None]:
    """A model that refuses a value at construction refuses the turn like a store would."""
    try:
        yield
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidDataError(f"{what} cannot be stored: {first['msg']}") from exc


@dataclass(frozen=True)
class TurnDraft:
    """What is fixed about a turn once its message is embedded: enough to build its records."""

    tenant_id: UUID
    agent_id: UUID
    session_id: UUID
    turn_id: UUID
    turn_number: int
    message: str
    message_embedding: list[float]
    embedding_model: str

    def record(
        self,
        assistant_response: str,
        *,
        context: dict[str, Any] | None = None,
        matched: list[MatchedRule] | None = None,
        scenario: dict[str, Any] | None = None,
        usage: TokenCounts | None = None,
        latency_ms: float = 0.0,
        constraints: ConstraintReport | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> TurnRecord:
        with refused_as_invalid_data("the turn record"):
            return TurnRecord(
                id=self.turn_id,
                tenant_id=self.tenant_id,
                agent_id=self.agent_id,
                session_id=self.session_id,
                turn_number=self.turn_number,
                user_message=self.message,
                assistant_response=assistant_response,
                context_extracted=context or {},
                rules_matched=matched or [],
                scenario_state=scenario or {},
                token_usage=usage or TokenCounts(),
                latency_ms=latency_ms,
                constraints_checked=constraints.checked if constraints else [],
                constraints_failed=constraints.failures if constraints else [],
                tools_executed=tools or [],
            )

    def episode(
        self, content: str, embedding: list[float] | None, role: str, profile_id: UUID | None
    ) -> Episode:
        """A TURN episode: what the customer said (``role="customer"``) or the answer (``"agent"``)."""
        with refused_as_invalid_data(f"the {role} episode"):
            return Episode(
                tenant_id=self.tenant_id,
                agent_id=self.agent_id,
                customer_profile_id=profile_id,
                session_id=self.session_id,
                group_id=str(self.session_id),
                content=content,
                episode_type=EpisodeType.TURN,
                embedding=embedding,
                embedding_model=self.embedding_model if embedding is not None else None,
                metadata={"turn_id": str(self.turn_id), "turn_number": self.turn_number, "role": role},
            )
