"""A refused turn leaves no trace, on the in-memory stores and on PostgreSQL + Redis.

Each refusal path (a message or an answer some store cannot keep, an embedding of the wrong
length) is run for a returning customer (session, profile, audit trail and memory exist) and for
a newcomer (nothing exists yet). After the refusal every store reads back exactly as before, and
the next successful turn is numbered right after the last recorded one, so the audit trail has no
gap and no event without its turn.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from uuid import uuid4

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from focal.alignment.models import Agent
from focal.alignment.stores.inmemory import InMemoryConfigStore
from focal.alignment.turn import TurnConfig, TurnEngine
from focal.conversation.stores.redis import RedisSessionStore
from focal.errors import FocalError, InvalidDataError, InvalidResponseError
from focal.memory.stores.inmemory import InMemoryMemoryStore
from focal.providers.embedding.hashing import HashingEmbeddingProvider
from tests.support import TEST_EMBEDDING_DIMENSIONS
from tests.unit.turn.support import RecordingLLM, TurnStack

DIMS = TEST_EMBEDDING_DIMENSIONS  # the pg_pool database's vector(D)
BACKENDS = ["memory", pytest.param("postgres_redis", marks=[pytest.mark.postgres, pytest.mark.redis])]
# No rule retrieval: a message embedding of the wrong length then reaches the writes instead of
# being refused by the rule search (with rules on, that read refuses it first; also tested).
NO_RULES = TurnConfig(max_rules=0, rule_candidates=0)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def refusal_redis(redis_url: str) -> AsyncIterator[Redis]:
    pool = BlockingConnectionPool.from_url(redis_url, max_connections=16, timeout=10)
    client = Redis(connection_pool=pool)
    try:
        yield client
    finally:
        await client.aclose()
        await pool.aclose()


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

    pool, client = request.getfixturevalue("pg_pool"), request.getfixturevalue("refusal_redis")
    return TurnStack(
        llm=llm,
        embedder=embedder,
        config_store=PostgresConfigStore(pool, embedding_dimensions=DIMS),
        memory_store=PostgresMemoryStore(pool, embedding_dimensions=DIMS),
        session_store=RedisSessionStore(client, key_prefix=f"refusal{uuid4().hex[:8]}"),
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

    if refusal.answer is not None:
        stack.llm = RecordingLLM(queued=[refusal.answer])
    with pytest.raises(refusal.error):
        await stack.turn(agent, refusal.message, user=user, engine=refusal.engine(stack))

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
