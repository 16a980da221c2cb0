"""Retrieval for one turn: the rules that apply to the message, and what is remembered of the customer.

Rules. ``ConfigStore.vector_search_rules`` admits GLOBAL rules plus the rules scoped to the
scenario and step this turn answers from, compares only vectors of the embedder's model, and
returns candidates above ``rule_min_score``. Rules that are used up are dropped next:
``max_fires_per_session`` (0 = unlimited) counts earlier fires in this session, and a rule with
``cooldown_turns = N`` that fired at turn ``t`` sleeps through turns ``t+1 .. t+N`` and may fire
again at ``t+N+1``. Candidates are fetched generously (``rule_candidates``) so that rules dropped
by the fires filter do not starve the top k.
The GLOBAL candidates are searched as soon as the message is embedded, beside the turn's other
reads (``reads.py``); those of the scenario and step are searched once the move is known, and the
two lists merged exactly as one search of all three scopes would have ranked and cut them.

Order. Every candidate above the threshold is a match; the threshold decides *whether* a rule
applies, ``priority`` decides *which* rules win a crowded turn. The survivors are ordered:

1. hard constraints first (``is_hard_constraint``), all of them kept: they never count against
   ``max_rules`` (and they apply to every turn of their scope anyway, matched or not: see
   ``constraints.py``);
2. then the other rules by ``priority`` (highest first), then score (highest first), then id
   (a stable order); the first ``max_rules`` of them are kept.

So a matched priority-100 rule is never pushed out by five better-scoring priority-0 FAQ rules.

Relevance (optional, ``relevance_check``): before the cut, the ordered candidates other than hard
constraints go through one structured LLM call (``relevance.py``) and those it says do not apply
("I do NOT want a refund") are dropped, so the next candidates take their places.

Memory. ``MemoryStore.vector_search_episodes`` for this customer only (never another customer's
or tenant's episodes). Episodes of the current session that are already in the LLM history window
are skipped: sending them twice would only waste the context.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from uuid import UUID

from focal.alignment.models import Rule, Scope
from focal.alignment.stores.config_store import ConfigStore
from focal.alignment.turn.models import TurnConfig
from focal.conversation.models import Session
from focal.memory.models import Episode
from focal.memory.stores.store import MemoryStore


@dataclass(frozen=True)
class RuleMatch:
    rule: Rule
    score: float


@dataclass(frozen=True)
class SessionKey:
    """What memory recall needs of a session: the turn's reads start it before the session the turn
    works on exists (a new session's id is not known yet; no episode can carry it)."""

    tenant_id: UUID
    agent_id: UUID
    session_id: UUID | None


def admitted_scopes(scenario_id: UUID | None, step_id: UUID | None) -> list[tuple[Scope, UUID | None]]:
    """GLOBAL, plus the scenario and step this turn answers from."""
    scopes: list[tuple[Scope, UUID | None]] = [(Scope.GLOBAL, None)]
    if scenario_id is not None:
        scopes.append((Scope.SCENARIO, scenario_id))
    if step_id is not None:
        scopes.append((Scope.STEP, step_id))
    return scopes


def rule_is_spent(rule: Rule, session: Session, turn_number: int) -> bool:
    """True when the rule reached its fire limit or is still cooling down in this session."""
    key = str(rule.id)
    if rule.max_fires_per_session > 0 and session.rule_fires.get(key, 0) >= rule.max_fires_per_session:
        return True
    last_fire = session.rule_last_fire_turn.get(key)
    return (
        rule.cooldown_turns > 0 and last_fire is not None and turn_number - last_fire <= rule.cooldown_turns
    )


RelevanceFilter = Callable[[list[RuleMatch]], Awaitable[list[RuleMatch]]]
"""Keeps the candidates that really apply (``relevance.RelevanceCheck.keep``), in their order."""


def match_order(match: RuleMatch) -> tuple[bool, int, float, str]:
    """Sort key: hard constraints first, then priority desc, score desc, id."""
    return (not match.rule.is_hard_constraint, -match.rule.priority, -match.score, str(match.rule.id))


def kept_matches(ordered: list[RuleMatch], max_rules: int) -> list[RuleMatch]:
    """Every hard constraint, plus the first ``max_rules`` other rules (``ordered`` by ``match_order``)."""
    constraints = [m for m in ordered if m.rule.is_hard_constraint]
    others = [m for m in ordered if not m.rule.is_hard_constraint]
    return constraints + others[:max_rules]


async def rule_candidates(
    config_store: ConfigStore,
    tenant_id: UUID,
    agent_id: UUID,
    message_embedding: list[float],
    scopes: list[tuple[Scope, UUID | None]],
    *,
    embedding_model: str,
    config: TurnConfig,
) -> list[tuple[Rule, float]]:
    """The rules of ``scopes`` whose score passes ``rule_min_score``: at most ``rule_candidates``,
    by score desc, id (``ConfigStore.vector_search_rules``)."""
    return await config_store.vector_search_rules(
        message_embedding,
        tenant_id,
        agent_id,
        scopes=scopes,
        limit=config.rule_candidates,
        min_score=config.rule_min_score,
        embedding_model=embedding_model,
    )


async def retrieve_rules(
    config_store: ConfigStore,
    session: Session,
    message_embedding: list[float],
    *,
    embedding_model: str,
    scenario_id: UUID | None,
    step_id: UUID | None,
    turn_number: int,
    config: TurnConfig,
    relevance: RelevanceFilter | None = None,
    global_candidates: list[tuple[Rule, float]] | None = None,
) -> list[RuleMatch]:
    """The turn's matched rules, in ``match_order`` (see the module docstring);
    ``max_rules = 0`` turns matching off (hard constraints still apply, unmatched).

    ``global_candidates``: the GLOBAL scope's ``rule_candidates``, searched beforehand (the turn
    starts that search beside its other reads, before its scenario move is known); only the
    scenario and step scopes are searched here then, and both lists are merged as one search of
    all three scopes would have returned them (the scopes are disjoint: the best
    ``rule_candidates`` of their union are among the best of each)."""
    if config.max_rules == 0:
        return []
    scopes = admitted_scopes(scenario_id, step_id)
    if global_candidates is None:
        candidates = await rule_candidates(
            config_store,
            session.tenant_id,
            session.agent_id,
            message_embedding,
            scopes,
            embedding_model=embedding_model,
            config=config,
        )
    elif len(scopes) == 1:  # GLOBAL alone: the search made beforehand is the whole answer
        candidates = global_candidates
    else:
        scoped = await rule_candidates(
            config_store,
            session.tenant_id,
            session.agent_id,
            message_embedding,
            scopes[1:],
            embedding_model=embedding_model,
            config=config,
        )
        candidates = sorted([*global_candidates, *scoped], key=lambda found: (-found[1], found[0].id))
        candidates = candidates[: config.rule_candidates]
    live = [
        RuleMatch(rule, score)
        for rule, score in candidates
        if score >= config.rule_min_score and not rule_is_spent(rule, session, turn_number)
    ]
    live.sort(key=match_order)
    if relevance is not None and live:
        live = await relevance(live)
    return kept_matches(live, config.max_rules)


def record_fires(session: Session, matches: list[RuleMatch], turn_number: int) -> None:
    """Count this turn's fires on the session (saved with it, under the version check)."""
    for match in matches:
        key = str(match.rule.id)
        session.rule_fires[key] = session.rule_fires.get(key, 0) + 1
        session.rule_last_fire_turn[key] = turn_number


async def recall_memory(
    memory_store: MemoryStore,
    session: Session | SessionKey,
    customer_profile_id: UUID,
    message_embedding: list[float],
    *,
    embedding_model: str,
    turn_number: int,
    config: TurnConfig,
) -> list[tuple[Episode, float]]:
    if config.memory_results == 0:
        return []
    oldest_in_history = turn_number - config.history_turns
    found = await memory_store.vector_search_episodes(
        message_embedding,
        session.tenant_id,
        session.agent_id,
        customer_profile_id=customer_profile_id,
        limit=min(1000, config.memory_results + 2 * config.history_turns),
        min_score=config.memory_min_score,
        embedding_model=embedding_model,
    )
    recalled: list[tuple[Episode, float]] = []
    for episode, score in found:
        episode_turn = episode.metadata.get("turn_number")
        in_history = (
            session.session_id is not None
            and episode.session_id == session.session_id
            and isinstance(episode_turn, int)
            and episode_turn >= oldest_in_history
        )
        if not in_history:
            recalled.append((episode, score))
    return recalled[: config.memory_results]
