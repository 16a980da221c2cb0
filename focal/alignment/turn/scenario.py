"""Scenario state for one turn: enter a scenario, follow a step transition, finish at a terminal step.

At most one move per turn: a session outside any scenario may enter one (the best entry-condition
score above ``scenario_entry_min_score``); a session inside one may follow one transition of its
current step (the best condition score above ``transition_min_score``, ties broken by the
transition's priority). Every entry and move appends a ``StepVisit`` carrying the step's content
hash, which scenario migration uses to find sessions parked on a step whose definition changed.

The session keeps only the latest ``max_step_history`` visits (every turn trims it, so a session
saved before the bound existed shrinks on its next turn): a scenario that loops would otherwise
grow the session by one visit per turn without end. The latest visit, which gives the current
step's hash, is always kept; every entry and move is in the audit trail as a ``scenario_entered``
or ``step_changed`` event with the step's content hash (and, for a move, its condition). A visit's
reason quotes at most ``MAX_REASON_CHARS`` of the transition condition.

Reaching a terminal step finishes the scenario: the visit is recorded, then the session's active
scenario and step are cleared. The turn itself is still answered from that terminal step (its
templates and step-scoped rules apply), so the caller keeps the scenario and step of the outcome.

Scores are only computed against embeddings made by the same embedding model as the message:
vectors of two models are not comparable, so a scenario embedded by another model never matches
(re-save it to re-embed it).
"""

from __future__ import annotations

import hashlib
import json
import math
import operator
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol
from uuid import UUID

from focal.alignment.models import Scenario, ScenarioStep
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.models import TurnConfig
from focal.conversation.models import Session, StepVisit

MAX_REASON_CHARS = 200


class FieldCapture(Protocol):
    """Takes the fields a step collects from the turn's message; returns those still empty
    (``variables.StepCapture``). ``use_llm=False``: by pattern only."""

    def __call__(self, step: ScenarioStep, *, use_llm: bool = True) -> Awaitable[list[str]]: ...


def step_content_hash(step: ScenarioStep) -> str:
    """A stable sha256 of what defines a step (not its embeddings, which are derived from its text).

    Covers name, description, transitions (target, condition, priority, in order), rule_ids,
    template_ids, collects_fields and tool_ids (when there are some); the same content always
    gives the same hash, in any process.
    """
    content = {
        "name": step.name,
        "description": step.description,
        "transitions": [
            {"to_step_id": str(t.to_step_id), "condition_text": t.condition_text, "priority": t.priority}
            for t in step.transitions
        ],
        "rule_ids": [str(rule_id) for rule_id in step.rule_ids],
        "template_ids": [str(template_id) for template_id in step.template_ids],
        "collects_fields": list(step.collects_fields),
    }
    if step.tool_ids:  # only when set: steps without tools keep the hash they had before tool_ids
        content["tool_ids"] = list(step.tool_ids)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass
class ScenarioOutcome:
    """The scenario and step this turn answers from, and what happened to get there."""

    scenario: Scenario | None = None
    step: ScenarioStep | None = None
    finished: bool = False
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def _score(vector: list[float] | None, query: list[float], query_norm: float) -> float | None:
    """Cosine similarity, or None for a missing, zero or differently sized vector.

    ``map(operator.mul)`` keeps the loops in C: about twice as fast as a generator over ``zip`` for
    1536-d vectors, and a turn scores the entry condition of every scenario or every transition.
    """
    if vector is None or len(vector) != len(query):
        return None
    norm = vector_norm(vector)
    if norm == 0.0 or query_norm == 0.0:
        return None
    return float(sum(map(operator.mul, vector, query))) / (norm * query_norm)


def vector_norm(vector: list[float]) -> float:
    return math.sqrt(float(sum(map(operator.mul, vector, vector))))


def _visit(step: ScenarioStep, turn_number: int, reason: str) -> StepVisit:
    if len(reason) > MAX_REASON_CHARS:
        reason = reason[: MAX_REASON_CHARS - 1] + "…"
    return StepVisit(
        step_id=step.id,
        step_name=step.name,
        step_content_hash=step_content_hash(step),
        turn_number=turn_number,
        transition_reason=reason,
    )


def _bound_history(session: Session, config: TurnConfig) -> None:
    excess = len(session.step_history) - config.max_step_history
    if excess > 0:
        del session.step_history[:excess]


def _leave(session: Session) -> None:
    session.active_scenario_id = None
    session.active_scenario_version = None
    session.current_step_id = None


def _finish_if_terminal(
    session: Session, scenario: Scenario, step: ScenarioStep, outcome: ScenarioOutcome
) -> None:
    if step.is_terminal:
        outcome.finished = True
        outcome.events.append(
            (
                "scenario_completed",
                {"scenario_id": str(scenario.id), "step_id": str(step.id), "step_name": step.name},
            )
        )
        _leave(session)


@dataclass
class ScenarioDefinitions:
    """The scenario definitions a move reads (``read_definitions``), read before the move so the
    read can run beside the turn's other reads."""

    # The session's active scenario (only its current step's transitions carry embeddings); None
    # when the session is in no scenario or the scenario is gone.
    current: Scenario | None = None
    # The agent's enabled scenarios (entry embeddings only), for entering one; None until needed:
    # a session inside a scenario reads them only when that scenario turns out to be unavailable.
    enterable: list[Scenario] | None = None


async def read_definitions(
    config_store: ConfigStore,
    tenant_id: UUID,
    agent_id: UUID,
    active_scenario_id: UUID | None,
    current_step_id: UUID | None,
) -> ScenarioDefinitions:
    """What ``advance_scenario`` needs for a session at ``active_scenario_id`` / ``current_step_id``
    (both None: a session in no scenario) of agent ``agent_id``."""
    if active_scenario_id is not None:
        current = await config_store.get_scenario(  # only the current step's embeddings are needed
            tenant_id, active_scenario_id, embeddings_of_step=current_step_id
        )
        return ScenarioDefinitions(current=current)
    return ScenarioDefinitions(enterable=await _enterable(config_store, tenant_id, agent_id))


async def _enterable(config_store: ConfigStore, tenant_id: UUID, agent_id: UUID) -> list[Scenario]:
    return await config_store.get_scenarios(  # entering needs entry embeddings only
        tenant_id, agent_id, enabled_only=True, include_transition_embeddings=False
    )


async def advance_scenario(
    config_store: ConfigStore,
    session: Session,
    message_embedding: list[float],
    *,
    embedding_model: str,
    turn_number: int,
    config: TurnConfig,
    capture: FieldCapture | None = None,
    definitions: ScenarioDefinitions | None = None,
) -> ScenarioOutcome:
    """Decide this turn's scenario move and apply it to ``session`` (a working copy, saved later).

    ``definitions``: read for this session's scenario position beforehand (``read_definitions``);
    without them they are read here.

    With ``capture``, the fields the current step collects are taken from the message first, and
    the step's transitions are gated on them: while one is empty the session stays at the step
    (a ``step_gated`` event names them). The step the turn arrives at has its fields taken from
    the same message too (by pattern only), so a customer may answer ahead.
    """
    start_step = session.current_step_id
    if definitions is None:
        definitions = await read_definitions(
            config_store, session.tenant_id, session.agent_id, session.active_scenario_id, start_step
        )
    outcome = await _move(
        config_store, session, definitions, message_embedding, embedding_model, turn_number, config, capture
    )
    if capture is not None and outcome.step is not None and outcome.step.id != start_step:
        await capture(outcome.step, use_llm=False)
    _bound_history(session, config)
    return outcome


async def _move(
    config_store: ConfigStore,
    session: Session,
    definitions: ScenarioDefinitions,
    message_embedding: list[float],
    embedding_model: str,
    turn_number: int,
    config: TurnConfig,
    capture: FieldCapture | None = None,
) -> ScenarioOutcome:
    outcome = ScenarioOutcome()
    if session.active_scenario_id is not None:
        scenario = definitions.current
        step = scenario.step(session.current_step_id) if scenario is not None else None
        if (
            scenario is None
            or step is None
            or not scenario.enabled
            or scenario.id != session.active_scenario_id
            or scenario.agent_id != session.agent_id
        ):
            # The scenario was deleted or disabled, or the step vanished from it: leave it rather than
            # answer from a definition that no longer exists; the message may still enter another one.
            outcome.events.append(
                (
                    "scenario_exited",
                    {"scenario_id": str(session.active_scenario_id), "reason": "scenario_unavailable"},
                )
            )
            _leave(session)
        else:
            missing = await capture(step) if capture is not None else []
            if missing:
                outcome.scenario, outcome.step = scenario, step
                outcome.events.append(
                    (
                        "step_gated",
                        {"scenario_id": str(scenario.id), "step_id": str(step.id), "missing_fields": missing},
                    )
                )
                return outcome
            _follow_transition(
                session, scenario, step, message_embedding, embedding_model, turn_number, config, outcome
            )
            return outcome
    scenarios = definitions.enterable
    if scenarios is None:
        scenarios = await _enterable(config_store, session.tenant_id, session.agent_id)
    _enter_best(session, scenarios, message_embedding, embedding_model, turn_number, config, outcome)
    return outcome


def _follow_transition(
    session: Session,
    scenario: Scenario,
    step: ScenarioStep,
    query: list[float],
    embedding_model: str,
    turn_number: int,
    config: TurnConfig,
    outcome: ScenarioOutcome,
) -> None:
    outcome.scenario, outcome.step = scenario, step
    best: tuple[float, int, UUID, str] | None = None
    query_norm = vector_norm(query)
    if scenario.embedding_model == embedding_model:
        for transition in step.transitions:
            score = _score(transition.condition_embedding, query, query_norm)
            if score is None or score < config.transition_min_score:
                continue
            candidate = (score, transition.priority, transition.to_step_id, transition.condition_text)
            if best is None or candidate[:2] > best[:2]:
                best = candidate
    if best is None:
        return
    score, _, to_step_id, condition_text = best
    target = scenario.step(to_step_id)
    if target is None:  # the model validator forbids this; kept as a guard against stored bad data
        return
    session.current_step_id = target.id
    visit = _visit(target, turn_number, f"transition ({score:.3f}): {condition_text}")
    session.step_history.append(visit)
    outcome.step = target
    outcome.events.append(
        (
            "step_changed",
            {
                "scenario_id": str(scenario.id),
                "from_step_id": str(step.id),
                "from_step_name": step.name,
                "to_step_id": str(target.id),
                "to_step_name": target.name,
                "step_content_hash": visit.step_content_hash,
                "score": round(score, 4),
                "condition_text": condition_text,
            },
        )
    )
    _finish_if_terminal(session, scenario, target, outcome)


def _enter_best(
    session: Session,
    scenarios: list[Scenario],
    query: list[float],
    embedding_model: str,
    turn_number: int,
    config: TurnConfig,
    outcome: ScenarioOutcome,
) -> None:
    best: tuple[float, Scenario] | None = None
    query_norm = vector_norm(query)
    for scenario in scenarios:
        if scenario.embedding_model != embedding_model or scenario.agent_id != session.agent_id:
            continue
        score = _score(scenario.entry_embedding, query, query_norm)
        if score is None or score < config.scenario_entry_min_score:
            continue
        if best is None or score > best[0]:  # get_scenarios orders by name: ties keep the first name
            best = (score, scenario)
    if best is None:
        return
    score, scenario = best
    entry = scenario.step(scenario.entry_step_id)
    if entry is None:  # forbidden by the model validator
        return
    session.active_scenario_id = scenario.id
    session.active_scenario_version = scenario.version
    session.current_step_id = entry.id
    visit = _visit(entry, turn_number, f"entered ({score:.3f})")
    session.step_history.append(visit)
    outcome.scenario, outcome.step = scenario, entry
    outcome.events.append(
        (
            "scenario_entered",
            {
                "scenario_id": str(scenario.id),
                "scenario_name": scenario.name,
                "version": scenario.version,
                "step_id": str(entry.id),
                "step_name": entry.name,
                "step_content_hash": visit.step_content_hash,
                "score": round(score, 4),
            },
        )
    )
    _finish_if_terminal(session, scenario, entry, outcome)
