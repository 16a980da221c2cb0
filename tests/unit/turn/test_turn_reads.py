"""The reads of a turn (``focal/alignment/turn/reads.py``): started together, none outliving the turn,
and the hard constraints read for every scope then kept exactly as the store would select them."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.alignment.models import Rule, Scope
from focal.alignment.stores.config_checks import in_scopes
from focal.alignment.turn import TurnConfig
from focal.alignment.turn.retrieval import admitted_scopes
from focal.conversation.models import Channel
from focal.errors import NotFoundError
from focal.profile.models import CustomerProfile
from focal.profile.stores.inmemory import InMemoryProfileStore
from tests.unit.turn.support import RecordingLLM, StepSpec, TurnStack


class StalledProfiles(InMemoryProfileStore):
    """A profile read that never answers until cancelled, and says what happened to it."""

    def __init__(self) -> None:
        super().__init__()
        self.started = asyncio.Event()
        self.cancelled = False

    async def get_by_channel_identity(
        self, tenant_id: UUID, channel: Channel, channel_user_id: str
    ) -> CustomerProfile | None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        raise AssertionError("unreachable")


async def test_a_refused_turn_cancels_the_reads_it_started_and_leaves_none_running(tenant: UUID) -> None:
    profiles = StalledProfiles()
    stack = TurnStack(llm=RecordingLLM(), profile_store=profiles)
    ghost = await stack.agent(tenant)
    await stack.config_store.delete_agent(tenant, ghost.id)

    with pytest.raises(NotFoundError, match=f"agent {ghost.id} not found"):
        await asyncio.wait_for(stack.turn(ghost, "hello"), timeout=10)

    assert profiles.started.is_set()  # started beside the agent read, before it was known absent
    assert profiles.cancelled  # and stopped with the turn, not left pending
    assert asyncio.all_tasks() == {asyncio.current_task()}


async def test_an_unknown_agent_is_reported_before_a_foreign_session(tenant: UUID) -> None:
    stack = TurnStack(llm=RecordingLLM())
    ghost = await stack.agent(tenant)
    await stack.config_store.delete_agent(tenant, ghost.id)
    with pytest.raises(NotFoundError, match=f"agent {ghost.id} not found"):
        await stack.turn(ghost, "hello", session_id=uuid4())


async def test_constraints_kept_by_scope_are_those_the_store_selects(tenant: UUID) -> None:
    stack = TurnStack(llm=RecordingLLM())
    agent = await stack.agent(tenant)
    scenarios, steps = [uuid4(), uuid4()], [uuid4(), uuid4()]
    scoped: list[tuple[Scope, UUID | None]] = [
        (Scope.GLOBAL, None),
        *((Scope.SCENARIO, s) for s in scenarios),
        *((Scope.STEP, s) for s in steps),
    ]
    for n, (scope, scope_id) in enumerate(scoped):
        rule = Rule(
            tenant_id=tenant,
            agent_id=agent.id,
            name=f"constraint {n}",
            condition_text="always",
            action_text=f"Constraint {n}.",
            is_hard_constraint=True,
            forbid_patterns=[f"forbidden{n}"],
            scope=scope,
            scope_id=scope_id,
            priority=n % 3,
        )
        await stack.config_store.save_rule(rule)

    every_scope = await stack.config_store.get_hard_constraints(tenant, agent.id)
    assert len(every_scope) == len(scoped)
    positions = [(None, None), (scenarios[0], None), (scenarios[1], steps[0]), (None, steps[1])]
    for scenario_id, step_id in positions:
        scopes = admitted_scopes(scenario_id, step_id)
        selected = await stack.config_store.get_hard_constraints(tenant, agent.id, scopes=scopes)
        assert [r.id for r in every_scope if in_scopes(r, scopes)] == [r.id for r in selected]
        assert 1 <= len(selected) <= 3


async def test_rules_searched_by_scope_then_merged_are_those_one_search_of_every_scope_finds(
    tenant: UUID,
) -> None:
    # The GLOBAL candidates are searched before the scenario move, the scenario's and step's after
    # it: merged and cut to rule_candidates, they must be exactly what one search of the three
    # scopes returns, however the best rules are spread over them.
    stack = TurnStack(llm=RecordingLLM())
    agent = await stack.agent(tenant)
    scenario = await stack.scenario(agent, "Returns", "return an item", [StepSpec("ask"), StepSpec("done")])
    step_id = scenario.entry_step_id
    words = ["return", "item", "broken", "refund", "label", "parcel", "order", "late"]
    for n in range(12):  # overlapping word sets, so the scores spread and interleave across scopes
        condition = " ".join(words[(n + k) % len(words)] for k in range(1 + n % 4))
        scope: dict[str, Any] = {}
        if n % 3 == 1:
            scope = {"scope": Scope.SCENARIO, "scope_id": scenario.id}
        elif n % 3 == 2:
            scope = {"scope": Scope.STEP, "scope_id": step_id}
        await stack.rule(agent, condition, f"Action {n}.", name=f"rule {n}", **scope)
    config = TurnConfig(rule_candidates=4, max_rules=4, rule_min_score=0.05)
    message = "I want to return an item, the parcel is broken"

    result = await stack.turn(agent, message, config=config)

    assert result.scenario is not None and result.scenario.step_id == step_id
    expected = await stack.config_store.vector_search_rules(
        await stack.embedder.embed(message),
        tenant,
        agent.id,
        scopes=admitted_scopes(scenario.id, step_id),
        limit=config.rule_candidates,
        min_score=config.rule_min_score,
        embedding_model=stack.embedder.model_id,
    )
    scopes_found = {rule.scope for rule, _ in expected}
    assert len(expected) == 4 and len(scopes_found) >= 2  # the test needs a mix to mean anything
    assert {m.rule_id for m in result.matched_rules} == {rule.id for rule, _ in expected}
