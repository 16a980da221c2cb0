"""Sessions, scenarios, persistence, concurrency and memory of the turn pipeline."""

from __future__ import annotations

import asyncio
from uuid import UUID, uuid4

import pytest

from focal.alignment.turn import TurnConfig, TurnRequest, step_content_hash
from focal.conversation.models import Channel, SessionStatus
from focal.errors import (
    ConflictError,
    InvalidDataError,
    InvalidResponseError,
    NotFoundError,
    ProviderUnavailableError,
)
from focal.memory.models import Episode
from tests.support import new_tenant
from tests.unit.turn.support import RecordingLLM, StepSpec, TurnStack


async def _episodes(stack: TurnStack, tenant: UUID, agent_id: UUID) -> list[Episode]:
    """Every currently valid episode of the agent (a search that admits any score)."""
    query = await stack.embedder.embed("anything")
    found = await stack.memory_store.vector_search_episodes(
        query, tenant, agent_id, limit=1000, min_score=-1.0
    )
    return sorted((episode for episode, _ in found), key=lambda e: (e.recorded_at, e.metadata["role"]))


async def _snapshot(stack: TurnStack, tenant: UUID, agent_id: UUID) -> tuple[object, ...]:
    """Everything a turn could have written for this tenant and agent."""
    sessions = await stack.session_store.list_by_agent(tenant, agent_id)
    turns = await stack.audit_store.list_turns_by_tenant(tenant)
    events = await stack.audit_store.list_events(tenant)
    episodes = await _episodes(stack, tenant, agent_id)
    return (
        [(s.session_id, s.version, s.turn_count) for s in sessions],
        [t.id for t in turns],
        [e.id for e in events],
        [e.id for e in episodes],
    )


async def test_a_turn_writes_session_record_events_and_episodes(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    rule = await stack.rule(agent, "hello hi greeting", "Greet.")

    first = await stack.turn(agent, "  hello hi  ")
    second = await stack.turn(agent, "hello again")

    assert (first.turn_number, second.turn_number, second.session_id) == (1, 2, first.session_id)
    assert first.new_session and not second.new_session
    session = await stack.session_store.get(tenant, first.session_id)
    assert session is not None and session.turn_count == 2 and session.version == 2
    assert session.rule_fires == {str(rule.id): 2} and session.rule_last_fire_turn == {str(rule.id): 2}
    profile = await stack.profile_store.get_by_channel_identity(tenant, Channel.WEB, "alice")
    assert profile is not None and session.customer_profile_id == profile.id

    records = await stack.audit_store.list_turns_by_session(tenant, first.session_id)
    assert [(r.turn_number, r.user_message) for r in records] == [(1, "hello hi"), (2, "hello again")]
    common = {
        "load_and_embed",
        "resolve_customer",
        "scenario",
        "retrieve_rules",
        "respond",
        "embed_answer",
    }
    first_timings = records[0].context_extracted["timings_ms"]
    assert common | {"create_customer"} <= set(first_timings) and "recall_memory" not in first_timings
    second_timings = records[1].context_extracted["timings_ms"]
    assert common | {"recall_memory", "load_history"} <= set(second_timings)
    assert "create_customer" not in second_timings
    assert first.latency_ms >= records[0].latency_ms > 0
    # The record is built before it is checked and written: those timings are in the result only.
    assert {"check_records", "save_session", "save_record", "append_records"} <= set(second.timings_ms)
    assert [m.rule_id for m in records[0].rules_matched] == [rule.id]
    events = await stack.audit_store.list_events(
        tenant, session_id=first.session_id, event_type="rule_matched"
    )
    assert {e.turn_id for e in events} == {first.turn_id, second.turn_id}

    episodes = await _episodes(stack, tenant, agent.id)
    assert len(episodes) == 4
    by_role = {(e.metadata["turn_number"], e.metadata["role"]): e for e in episodes}
    assert by_role[(1, "customer")].content == "hello hi"
    assert by_role[(1, "agent")].content == first.response
    assert all(
        e.embedding_model == stack.embedder.model_id and e.customer_profile_id == profile.id for e in episodes
    )


async def test_llm_history_is_the_last_turns_of_this_session(
    stack: TurnStack, llm: RecordingLLM, tenant: UUID
):
    agent = await stack.agent(tenant)
    config = TurnConfig(history_turns=2)
    for text in ("one", "two", "three"):
        await stack.turn(agent, text, config=config)
    await stack.turn(agent, "unrelated other customer", user="bob", config=config)

    assert [(m.role, m.content) for m in llm.calls[2]["history"]] == [
        ("user", "one"),
        ("assistant", "An answer from the model."),
        ("user", "two"),
        ("assistant", "An answer from the model."),
    ]
    assert llm.calls[3]["history"] == []


async def test_scenario_entered_advanced_and_finished(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    scenario = await stack.scenario(
        agent,
        "Return an item",
        "I want to return an item",
        [
            StepSpec("ask order", transitions=[("ask reason", "my order number is")]),
            StepSpec(
                "ask reason", transitions=[("done", "it is broken damaged"), ("ask order", "wrong order")]
            ),
            StepSpec("done", is_terminal=True),
        ],
    )
    ask_order, ask_reason, done = scenario.steps

    entered = await stack.turn(agent, "I want to return an item")
    stay = await stack.turn(agent, "hmm let me look", session_id=entered.session_id)
    moved = await stack.turn(agent, "my order number is 12345", session_id=entered.session_id)
    finished = await stack.turn(agent, "it is broken and damaged", session_id=entered.session_id)
    after = await stack.turn(agent, "thanks", session_id=entered.session_id)

    assert entered.scenario is not None and entered.scenario.step_id == ask_order.id
    assert stay.scenario is not None and stay.scenario.step_id == ask_order.id
    assert moved.scenario is not None and moved.scenario.step_name == "ask reason"
    assert finished.scenario is not None and (finished.scenario.step_id, finished.scenario.finished) == (
        done.id,
        True,
    )
    assert after.scenario is None

    session = await stack.session_store.get(tenant, entered.session_id)
    assert session is not None
    assert (session.active_scenario_id, session.current_step_id, session.active_scenario_version) == (
        None,
    ) * 3
    assert [(v.step_id, v.turn_number) for v in session.step_history] == [
        (ask_order.id, 1),
        (ask_reason.id, 3),
        (done.id, 4),
    ]
    assert [v.step_content_hash for v in session.step_history] == [
        step_content_hash(ask_order),
        step_content_hash(ask_reason),
        step_content_hash(done),
    ]
    kinds = [e.event_type for e in await stack.audit_store.list_events(tenant, session_id=entered.session_id)]
    assert [k for k in kinds if k.startswith(("scenario", "step"))] == [
        "scenario_entered",
        "step_changed",
        "step_changed",
        "scenario_completed",
    ]


async def test_scenario_below_the_entry_threshold_is_not_entered(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    await stack.scenario(agent, "Return an item", "return an item", [StepSpec("only")])
    result = await stack.turn(
        agent, "return an item please", config=TurnConfig(scenario_entry_min_score=0.99)
    )
    assert (await stack.turn(agent, "return an item please", user="bob")).scenario is not None
    assert result.scenario is None


async def test_a_deleted_scenario_is_left(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    scenario = await stack.scenario(agent, "Return an item", "return an item", [StepSpec("a"), StepSpec("b")])
    entered = await stack.turn(agent, "return an item")
    await stack.config_store.delete_scenario(tenant, scenario.id)

    result = await stack.turn(agent, "hello", session_id=entered.session_id)

    assert result.scenario is None
    session = await stack.session_store.get(tenant, entered.session_id)
    assert session is not None and session.active_scenario_id is None


def test_step_content_hash_is_stable_and_content_sensitive():
    from focal.alignment.models import ScenarioStep

    step = ScenarioStep(name="ask", description="Ask for the order", collects_fields=["order_number"])
    same = ScenarioStep(
        id=uuid4(), name="ask", description="Ask for the order", collects_fields=["order_number"]
    )
    assert step_content_hash(step) == step_content_hash(same)
    assert len(step_content_hash(step)) == 64
    changed = step.model_copy(update={"description": "Ask for the order number"})
    assert step_content_hash(changed) != step_content_hash(step)


# --- sessions and refusals -----------------------------------------------------------------------


async def test_channel_session_of_another_agent_or_closed_is_not_reused(stack: TurnStack, tenant: UUID):
    agent, other_agent = await stack.agent(tenant), await stack.agent(tenant)
    first = await stack.turn(agent, "hello")
    on_other_agent = await stack.turn(other_agent, "hello")
    assert on_other_agent.session_id != first.session_id and on_other_agent.new_session

    session = await stack.session_store.get(tenant, on_other_agent.session_id)
    assert session is not None
    session.status = SessionStatus.CLOSED
    await stack.session_store.save(session)
    reopened = await stack.turn(other_agent, "hello")
    assert reopened.new_session and reopened.session_id != on_other_agent.session_id

    with pytest.raises(ConflictError, match="closed"):
        await stack.turn(other_agent, "hello", session_id=on_other_agent.session_id)


async def test_refused_turns_write_nothing(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    other_agent = await stack.agent(tenant)
    foreign_tenant = new_tenant()
    foreign_agent = await stack.agent(foreign_tenant)
    mine = await stack.turn(agent, "hello")
    foreign = await stack.turn(foreign_agent, "hello")
    before = await _snapshot(stack, tenant, agent.id)

    with pytest.raises(NotFoundError):  # a session of another tenant looks absent
        await stack.turn(agent, "hi", session_id=foreign.session_id)
    with pytest.raises(NotFoundError):  # a session of another agent in the same tenant too
        await stack.turn(other_agent, "hi", session_id=mine.session_id)
    with pytest.raises(NotFoundError):
        await stack.turn(agent, "hi", session_id=uuid4())
    with pytest.raises(InvalidDataError):  # the session belongs to another channel identity
        await stack.turn(agent, "hi", session_id=mine.session_id, user="mallory")
    with pytest.raises(NotFoundError):
        await stack.engine().run(
            TurnRequest(
                tenant_id=tenant, agent_id=uuid4(), channel=Channel.WEB, user_channel_id="x", message="hi"
            )
        )
    for blank in ("", "   \n"):
        with pytest.raises(InvalidDataError):
            await stack.turn(agent, blank, user="newcomer")
    with pytest.raises(InvalidDataError):
        await stack.turn(agent, "x" * 16_001, user="newcomer")
    disabled = agent.model_copy(update={"enabled": False})
    await stack.config_store.save_agent(disabled)
    with pytest.raises(ConflictError, match="disabled"):
        await stack.turn(agent, "hi", user="newcomer")

    assert await _snapshot(stack, tenant, agent.id) == before
    assert await stack.profile_store.get_by_channel_identity(tenant, Channel.WEB, "newcomer") is None
    assert await stack.profile_store.get_by_channel_identity(tenant, Channel.WEB, "mallory") is None
    assert await stack.session_store.list_by_agent(tenant, other_agent.id) == []


async def test_provider_failure_without_fallback_propagates_and_writes_nothing(
    stack: TurnStack, tenant: UUID
):
    agent = await stack.agent(tenant)
    await stack.rule(agent, "hello hi greeting", "Greet.")
    first = await stack.turn(agent, "hello hi")
    before = await _snapshot(stack, tenant, agent.id)

    stack.llm = RecordingLLM(fail_with=ProviderUnavailableError("vendor down", provider="openai"))
    with pytest.raises(ProviderUnavailableError):
        await stack.turn(agent, "hello hi", session_id=first.session_id)
    with pytest.raises(ProviderUnavailableError):
        await stack.turn(agent, "hello hi", user="newcomer")

    assert await _snapshot(stack, tenant, agent.id) == before
    assert await stack.profile_store.get_by_channel_identity(tenant, Channel.WEB, "newcomer") is None
    session = await stack.session_store.get(tenant, first.session_id)
    assert session is not None and session.rule_fires == {str(next(iter(session.rule_fires))): 1}


async def test_concurrent_turns_on_one_session_one_conflict_and_no_trace(
    stack: TurnStack, llm: RecordingLLM, tenant: UUID
):
    agent = await stack.agent(tenant)
    first = await stack.turn(agent, "hello")
    llm.rendezvous = (
        3  # the first call already happened: both concurrent turns reach the LLM before either saves
    )

    outcomes = await asyncio.gather(
        stack.turn(agent, "racing message one", session_id=first.session_id),
        stack.turn(agent, "racing message two", session_id=first.session_id),
        return_exceptions=True,
    )

    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1 and len(losers) == 1 and isinstance(losers[0], ConflictError)
    winner = winners[0]
    session = await stack.session_store.get(tenant, first.session_id)
    assert session is not None and (session.turn_count, session.version) == (2, 2)
    records = await stack.audit_store.list_turns_by_session(tenant, first.session_id)
    assert [r.id for r in records] == [first.turn_id, winner.turn_id]
    events = await stack.audit_store.list_events(tenant, session_id=first.session_id)
    assert {e.turn_id for e in events} <= {first.turn_id, winner.turn_id}
    episodes = await _episodes(stack, tenant, agent.id)
    assert {e.metadata["turn_id"] for e in episodes} == {str(first.turn_id), str(winner.turn_id)}
    assert len(episodes) == 4


# --- memory --------------------------------------------------------------------------------------


async def test_memory_of_an_earlier_session_is_recalled_for_the_same_customer_only(
    stack: TurnStack, llm: RecordingLLM, tenant: UUID
):
    agent = await stack.agent(tenant)
    earlier = await stack.turn(agent, "my blender model X200 arrived with a cracked jug")
    session = await stack.session_store.get(tenant, earlier.session_id)
    assert session is not None
    session.status = SessionStatus.CLOSED
    await stack.session_store.save(session)

    later = await stack.turn(agent, "about the cracked blender jug again")
    assert later.new_session and later.session_id != earlier.session_id
    record = await stack.audit_store.get_turn(tenant, later.turn_id)
    assert record is not None and record.context_extracted["recalled_episode_ids"]
    assert "the customer said: my blender model X200 arrived with a cracked jug" in llm.calls[-1]["prompt"]

    other_customer = await stack.turn(agent, "about the cracked blender jug again", user="bob")
    assert "X200" not in llm.calls[-1]["prompt"]
    record = await stack.audit_store.get_turn(tenant, other_customer.turn_id)
    assert record is not None and record.context_extracted["recalled_episode_ids"] == []

    other_tenant = new_tenant()
    foreign_agent = await stack.agent(other_tenant)
    await stack.turn(
        foreign_agent, "about the cracked blender jug again"
    )  # same channel identity, other tenant
    assert "X200" not in llm.calls[-1]["prompt"]


async def test_memory_skips_turns_already_in_the_history_window(
    stack: TurnStack, llm: RecordingLLM, tenant: UUID
):
    agent = await stack.agent(tenant)
    first = await stack.turn(agent, "cracked blender jug")
    await stack.turn(agent, "cracked blender jug once more", session_id=first.session_id)
    assert "What you remember" not in llm.calls[-1]["prompt"]


async def test_an_idle_session_is_continued_and_reactivated(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    first = await stack.turn(agent, "hello")
    session = await stack.session_store.get(tenant, first.session_id)
    assert session is not None
    session.status = SessionStatus.IDLE
    await stack.session_store.save(session)

    again = await stack.turn(agent, "hello again")

    assert again.session_id == first.session_id and not again.new_session
    stored = await stack.session_store.get(tenant, first.session_id)
    assert stored is not None and stored.status is SessionStatus.ACTIVE


async def test_a_scenario_embedded_by_another_model_is_never_entered(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    scenario = await stack.scenario(agent, "Return an item", "return an item", [StepSpec("only")])
    scenario.embedding_model = "another-model"
    await stack.config_store.save_scenario(scenario)
    assert (await stack.turn(agent, "return an item")).scenario is None


async def test_an_empty_llm_answer_counts_as_a_provider_failure(stack: TurnStack, tenant: UUID):
    stack.llm = RecordingLLM(answer="   ")
    agent = await stack.agent(tenant)
    with pytest.raises(InvalidResponseError):
        await stack.turn(agent, "hello")
    assert await stack.session_store.list_by_agent(tenant, agent.id) == []


@pytest.mark.parametrize(
    "bad",
    [
        {"rule_min_score": 1.5},
        {"max_rules": -1},
        {"max_rules": 10, "rule_candidates": 5},
        {"history_turns": 5000},
    ],
)
def test_turn_config_refuses_impossible_values(bad: dict[str, float]):
    with pytest.raises(ValueError):
        TurnConfig(**bad)  # type: ignore[arg-type]
