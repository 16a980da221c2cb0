"""Scenario moves against their thresholds, and the bound on the session's step history."""

from __future__ import annotations

from uuid import UUID, uuid4

import pytest

from focal.alignment.turn import TurnConfig
from focal.conversation.models import StepVisit
from tests.unit.turn.support import StepSpec, TurnStack

STEPS = [
    StepSpec("Ask for the order number", [("Ask for the reason", "order number is")]),
    StepSpec("Ask for the reason"),
]
MESSAGE = "my order number is 4711, I think"  # shares words with the condition: a partial match


async def test_a_transition_below_transition_min_score_keeps_the_session_on_its_step(
    stack: TurnStack, tenant: UUID
):
    agent = await stack.agent(tenant)
    await stack.scenario(agent, "Return an item", "return an item", STEPS)
    strict = TurnConfig(transition_min_score=0.99)

    # The same message moves a session under the default threshold...
    lenient = await stack.turn(agent, "return an item", user="lenient")
    moved = await stack.turn(agent, MESSAGE, user="lenient", session_id=lenient.session_id)
    assert moved.scenario is not None and moved.scenario.step_name == "Ask for the reason"
    # ...and not under 0.99: the session stays where it was, and no move is recorded.
    first = await stack.turn(agent, "return an item", user="strict", config=strict)
    stayed = await stack.turn(agent, MESSAGE, user="strict", session_id=first.session_id, config=strict)

    assert stayed.scenario is not None and stayed.scenario.step_name == "Ask for the order number"
    session = await stack.session_store.get(tenant, first.session_id)
    assert session is not None and session.current_step_id == stayed.scenario.step_id
    assert [visit.step_name for visit in session.step_history] == ["Ask for the order number"]
    moves = await stack.audit_store.list_events(
        tenant, session_id=first.session_id, event_type="step_changed"
    )
    assert moves == []


async def test_a_history_longer_than_the_bound_is_trimmed_on_the_next_turn(stack: TurnStack, tenant: UUID):
    """A session saved before the bound existed shrinks even on a turn without a move."""
    agent = await stack.agent(tenant)
    await stack.scenario(agent, "Return an item", "return an item", STEPS)
    first = await stack.turn(agent, "return an item")
    session = await stack.session_store.get(tenant, first.session_id)
    assert session is not None and len(session.step_history) == 1
    current = session.step_history[-1]
    old = [
        StepVisit(step_id=uuid4(), step_name=f"old {n}", step_content_hash="0" * 64, turn_number=n)
        for n in range(50)
    ]
    session.step_history = [*old, current]
    await stack.session_store.save(session)

    config = TurnConfig(max_step_history=5)
    await stack.turn(agent, "hello", session_id=first.session_id, config=config)

    trimmed = await stack.session_store.get(tenant, first.session_id)
    assert trimmed is not None and len(trimmed.step_history) == 5
    assert trimmed.step_history[-1] == current and trimmed.current_step_hash() == current.step_content_hash


@pytest.mark.parametrize("bad", [0, -1])
def test_max_step_history_must_keep_the_current_visit(bad: int):
    with pytest.raises(ValueError, match="max_step_history"):
        TurnConfig(max_step_history=bad)
