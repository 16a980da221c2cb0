"""The reads of a turn (``focal/alignment/turn/reads.py``): started together, none outliving the turn,
and the hard constraints read for every scope then kept exactly as the store would select them."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from focal.alignment.models import Rule, Scope
from focal.alignment.turn.retrieval import admitted_scopes, in_scopes
from focal.conversation.models import Channel
from focal.errors import NotFoundError
from focal.profile.models import CustomerProfile
from focal.profile.stores.inmemory import InMemoryProfileStore
from tests.unit.turn.support import RecordingLLM, TurnStack


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
