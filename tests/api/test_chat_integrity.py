"""Turn integrity on the in-memory stores and on PostgreSQL + Redis.

A refused turn leaves no trace. Each refusal path (a message or an answer some store cannot keep,
an embedding of the wrong length) is run for a returning customer (session, profile, audit trail
and memory exist) and for a newcomer (nothing exists yet). After the refusal every store reads
back exactly as before, and the next successful turn is numbered right after the last recorded
one, so the audit trail has no gap and no event without its turn.

A scenario that loops forever keeps a bounded session (``max_step_history``), so it never grows
past the Redis session size cap; the audit trail keeps every move. Memory recall never crosses
customers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from uuid import uuid4

import pytest

from focal.alignment.models import Agent
from focal.alignment.stores.inmemory import InMemoryConfigStore
from focal.alignment.turn import TurnConfig, TurnEngine
from focal.conversation.models import Channel
from focal.conversation.stores.redis import RedisSessionStore
from focal.errors import FocalError, InvalidDataError, InvalidResponseError
from focal.memory.stores.inmemory import InMemoryMemoryStore
from focal.providers.embedding.hashing import HashingEmbeddingProvider
from focal.providers.llm.scripted import ScriptedLLMProvider
from tests.support import TEST_EMBEDDING_DIMENSIONS
from tests.unit.turn.support import RecordingLLM, StepSpec, TurnStack

DIMS = TEST_EMBEDDING_DIMENSIONS  # the pg_pool database's vector(D)
BACKENDS = ["memory", pytest.param("postgres_redis", marks=[pytest.mark.postgres, pytest.mark.redis])]
# No rule retrieval: a message embedding of the wrong length then reaches the writes instead of
# being refused by the rule search (with rules on, that read refuses it first; also tested).
NO_RULES = TurnConfig(max_rules=0, rule_candidates=0)
# A small Redis session cap, so that a session growing by one step visit per turn hits it within a
# test (a visit is ~250 bytes: about 60 turns), where the 1 MiB default takes thousands of turns.
SESSION_CAP_BYTES = 16_384


@pytest.fixture(params=BACKENDS)
def stack(request: pytest.FixtureRequest) -> TurnStack:
    """Synchronous: ``getfixturevalue`` of the async session fixtures only works from here."""
    llm, embedder = RecordingLLM(), HashingEmbeddingProvider(dimensions=DIMS)
    if request.param == "memory":
        return TurnStack(
            llm=llm,
            embedder=embedder,
            config_store=InMemoryConfigStore(embedding_dimensions=DIMS),
            memory_store=InMemoryMemoryStore(embedding_dimensions=DIMS),
        )
    from focal.alignment.stores.postgres import PostgresConfigStore
    from focal.audit.stores.postgres import PostgresAuditStore
    from focal.memory.stores.postgres import PostgresMemoryStore
    from focal.profile.stores.postgres import PostgresProfileStore

    pool, client = request.getfixturevalue("pg_pool"), request.getfixturevalue("redis_client")
    return TurnStack(
        llm=llm,
        embedder=embedder,
        config_store=PostgresConfigStore(pool, embedding_dimensions=DIMS),
        memory_store=PostgresMemoryStore(pool, embedding_dimensions=DIMS),
        session_store=RedisSessionStore(
            client, key_prefix=f"integrity{uuid4().hex[:8]}", max_session_bytes=SESSION_CAP_BYTES
        ),
        audit_store=PostgresAuditStore(pool),
        profile_store=PostgresProfileStore(pool),
    )


@dataclass(frozen=True)
class Refusal:
    """One way a turn is refused: the message sent, the engine that runs it, the error expected."""

    message: str
    engine: Callable[[TurnStack], TurnEngine]
    error: type[FocalError]
    answer: str | None = None  # what the LLM answers in the refused turn


def _plain(stack: TurnStack) -> TurnEngine:
    return stack.engine()


def _wrong_dimensions(stack: TurnStack) -> TurnEngine:
    return stack.engine(NO_RULES, embedder=HashingEmbeddingProvider(dimensions=DIMS * 2))


def _wrong_dimensions_with_rules(stack: TurnStack) -> TurnEngine:
    return stack.engine(embedder=HashingEmbeddingProvider(dimensions=DIMS * 2))


REFUSALS = {
    "nul-in-message": Refusal("refund please\x00", _plain, InvalidDataError),
    "lone-surrogate-in-message": Refusal("refund please \ud800", _plain, InvalidDataError),
    "message-embedding-of-another-length": Refusal("refund please", _wrong_dimensions, InvalidDataError),
    "another-length-with-rule-search": Refusal(
        "refund please", _wrong_dimensions_with_rules, InvalidDataError
    ),
    # The model's answer is what the stores refuse: a provider failure (502), never half a turn.
    "nul-in-answer": Refusal("refund please", _plain, InvalidResponseError, answer="Sure\x00 thing"),
    "lone-surrogate-in-answer": Refusal("refund please", _plain, InvalidResponseError, answer="Sure \udc00"),
}


async def _agent_with_a_rule(stack: TurnStack) -> Agent:
    agent = await stack.agent(uuid4())
    # The refused messages match this rule, so a refused turn would have a fire and an event to leak.
    await stack.rule(agent, "refund please", "Explain the refund policy.")
    return agent


@pytest.mark.parametrize("returning", [True, False], ids=["returning", "newcomer"])
@pytest.mark.parametrize("case", list(REFUSALS))
async def test_a_refused_turn_changes_no_store_and_the_next_turn_follows_on(
    stack: TurnStack, case: str, returning: bool
):
    refusal = REFUSALS[case]
    agent = await _agent_with_a_rule(stack)
    user = "returning-customer" if returning else "newcomer"
    if returning:
        first = await stack.turn(agent, "refund please", user=user)
        assert first.turn_number == 1 and first.matched_rules
    before = await stack.stored_state(agent, [user])

    answering, scripted = stack.llm, ScriptedLLMProvider([refusal.answer] if refusal.answer else [])
    stack.llm = scripted
    with pytest.raises(refusal.error):
        await stack.turn(agent, refusal.message, user=user, engine=refusal.engine(stack))
    assert scripted.remaining == 0  # an answer to refuse was asked for and given
    stack.llm = answering

    assert await stack.stored_state(agent, [user]) == before
    after = await stack.turn(agent, "refund please", user=user)
    expected = 2 if returning else 1
    assert after.turn_number == expected
    records = await stack.audit_store.list_turns_by_session(agent.tenant_id, after.session_id)
    assert [r.turn_number for r in records] == list(range(1, expected + 1))
    events = await stack.audit_store.list_events(agent.tenant_id, session_id=after.session_id)
    assert {e.turn_id for e in events} == {r.id for r in records}  # every event has its turn
    session = await stack.session_store.get(agent.tenant_id, after.session_id)
    assert session is not None and session.turn_count == expected
    assert session.rule_fires == {str(after.matched_rules[0].rule_id): expected}


async def test_stored_state_sees_every_store(stack: TurnStack):
    """The snapshot the refusal test compares must change when any store changes."""
    agent = await _agent_with_a_rule(stack)
    empty = await stack.stored_state(agent, ["someone"])
    assert all(not value or value == [None] for value in empty.values())
    await stack.turn(agent, "refund please", user="someone")
    after = await stack.stored_state(agent, ["someone"])
    assert all(after[key] != empty[key] for key in after)


async def test_a_looping_scenario_keeps_a_bounded_session_and_a_full_audit_trail(stack: TurnStack):
    agent = await stack.agent(uuid4())
    await stack.scenario(
        agent,
        "Loop",
        "start the loop",
        [StepSpec("alpha", [("bravo", "go to bravo")]), StepSpec("bravo", [("alpha", "go to alpha")])],
    )
    config = TurnConfig()
    first = await stack.turn(agent, "start the loop")
    assert first.scenario is not None and first.scenario.step_name == "alpha"
    sizes: dict[int, int] = {}
    for turn_number in range(2, 101):  # 99 moves: about 25 KB of visits without the bound
        result = await stack.turn(
            agent, "go to bravo" if turn_number % 2 == 0 else "go to alpha", session_id=first.session_id
        )
        assert result.turn_number == turn_number
        assert (
            result.scenario is not None and result.scenario.step_name == ("bravo", "alpha")[turn_number % 2]
        )
        if turn_number in (50, 100):
            session = await stack.session_store.get(agent.tenant_id, first.session_id)
            assert session is not None
            sizes[turn_number] = len(session.model_dump_json())

    assert session is not None and len(session.step_history) == config.max_step_history
    assert [visit.turn_number for visit in session.step_history] == list(range(81, 101))
    assert session.current_step_hash() == session.step_history[-1].step_content_hash  # still known
    assert sizes[100] <= sizes[50] + 64  # (a few more digits in the turn numbers)
    moves = await stack.audit_store.list_events(
        agent.tenant_id, session_id=first.session_id, event_type="step_changed", limit=1000
    )
    entered = await stack.audit_store.list_events(
        agent.tenant_id, session_id=first.session_id, event_type="scenario_entered"
    )
    trail = [(e.event_data["turn_number"], e.event_data["to_step_name"]) for e in moves]
    assert len(entered) == 1 and sorted(trail) == [(n, ("bravo", "alpha")[n % 2 == 1]) for n in range(2, 101)]
    assert all(len(e.event_data["step_content_hash"]) == 64 for e in [*entered, *moves])


async def test_memory_recall_never_returns_another_customers_episodes(stack: TurnStack):
    """Both customers have a profile and episodes; each recalls only their own."""
    agent = await stack.agent(uuid4())
    tenant = agent.tenant_id
    story = "my blender model X200 arrived with a cracked jug"
    alice_first = await stack.turn(agent, story, user="alice")
    await stack.session_store.delete(tenant, alice_first.session_id)  # her next turn opens a new session
    bob_first = await stack.turn(agent, "hello there", user="bob")
    bob_profile = await stack.profile_store.get_by_channel_identity(tenant, Channel.WEB, "bob")
    assert bob_profile is not None  # bob is known: his recall really runs

    bob_again = await stack.turn(agent, story, user="bob", session_id=bob_first.session_id)
    alice_again = await stack.turn(agent, story, user="alice")

    query = await stack.embedder.embed(story)
    episodes = await stack.memory_store.vector_search_episodes(
        query, tenant, agent.id, limit=1000, min_score=-1.0
    )
    owner = {str(episode.id): episode.customer_profile_id for episode, _ in episodes}
    bob_record = await stack.audit_store.get_turn(tenant, bob_again.turn_id)
    alice_record = await stack.audit_store.get_turn(tenant, alice_again.turn_id)
    assert bob_record is not None and alice_record is not None
    bob_recalled = bob_record.context_extracted["recalled_episode_ids"]
    alice_recalled = alice_record.context_extracted["recalled_episode_ids"]
    assert isinstance(bob_recalled, list) and isinstance(alice_recalled, list)
    assert all(owner[str(episode_id)] == bob_profile.id for episode_id in bob_recalled)
    assert alice_recalled and all(owner[str(episode_id)] != bob_profile.id for episode_id in alice_recalled)
