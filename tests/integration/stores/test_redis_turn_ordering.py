"""``FOCAL_TURN__CONCURRENCY`` across processes: two turn engines, each with its own Redis client,
session store and conversation locks (as two ``focal serve`` processes have), on one Redis; the
other stores are shared (they stand for the one PostgreSQL).

With ``enqueue`` the message sent to the second "process" while the first one's turn is in its LLM
call waits for it and becomes turn 2 of the same session, with turn 1 in its history; with
``reject`` it runs at once and the loser of the version race gets ``ConcurrentTurnError``.
Real concurrency: the first LLM call is held by an event; the wait is observed through the
locks' ``waiting`` gauge (polled with a bound), never by sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import uuid4

import pytest
import pytest_asyncio
from redis.asyncio import BlockingConnectionPool, Redis

from focal.alignment.turn import TurnConfig, TurnEngine, TurnRequest
from focal.conversation.models import Channel
from focal.conversation.stores.redis import RedisSessionStore
from focal.conversation.stores.redis_locks import RedisConversationLocks
from focal.errors import ConcurrentTurnError
from tests.api.control_support import GatedLLM, history_of
from tests.support import new_tenant, until
from tests.unit.turn.support import TurnStack

pytestmark = pytest.mark.redis


@dataclass
class Process:
    engine: TurnEngine
    locks: RedisConversationLocks
    llm: GatedLLM


@pytest_asyncio.fixture
async def two_clients(redis_url: str) -> AsyncIterator[tuple[Redis, Redis]]:
    pools = [BlockingConnectionPool.from_url(redis_url, max_connections=8, timeout=5) for _ in range(2)]
    clients = [Redis(connection_pool=pool) for pool in pools]
    try:
        yield clients[0], clients[1]
    finally:
        for client, pool in zip(clients, pools, strict=True):
            await client.aclose()
            await pool.aclose()


def _processes(clients: tuple[Redis, Redis], concurrency: str) -> tuple[TurnStack, Process, Process]:
    prefix = f"order-{uuid4().hex[:8]}"
    shared = TurnStack(llm=GatedLLM())
    config = TurnConfig(concurrency=concurrency, enqueue_wait_seconds=10)  # type: ignore[arg-type]
    processes = []
    for client in clients:
        llm = GatedLLM()
        locks = RedisConversationLocks(client, key_prefix=prefix)
        engine = TurnEngine(
            config_store=shared.config_store,
            session_store=RedisSessionStore(client, key_prefix=prefix),
            memory_store=shared.memory_store,
            audit_store=shared.audit_store,
            profile_store=shared.profile_store,
            llm_provider=llm,
            embedding_provider=shared.embedder,
            config=config,
            conversation_locks=locks,
        )
        processes.append(Process(engine, locks, llm))
    return shared, processes[0], processes[1]


def _request(agent: Any, message: str) -> TurnRequest:
    return TurnRequest(
        tenant_id=agent.tenant_id,
        agent_id=agent.id,
        channel=Channel.WEB,
        user_channel_id="ann",
        message=message,
    )


async def test_enqueue_makes_the_second_process_wait_and_answer_as_the_next_turn(
    two_clients: tuple[Redis, Redis],
) -> None:
    shared, first, second = _processes(two_clients, "enqueue")
    agent = await shared.agent(new_tenant())
    first.llm.gated = True
    first.llm.enqueue("First answer.")
    second.llm.enqueue("Second answer.")
    # A new customer: neither message names a session; the second must find the one the first opens.
    one = asyncio.create_task(first.engine.run(_request(agent, "first message")))
    await first.llm.entered.wait()
    two = asyncio.create_task(second.engine.run(_request(agent, "second message")))
    await until(lambda: second.locks.waiting == 1)
    assert second.llm.arrived == 0
    first.llm.release.set()
    a, b = await one, await two
    assert (a.turn_number, b.turn_number, a.session_id) == (1, 2, b.session_id)
    assert history_of(second.llm.calls[0]) == [("user", "first message"), ("assistant", "First answer.")]
    turns = await shared.audit_store.list_turns_by_session(agent.tenant_id, a.session_id)
    assert [t.user_message for t in turns] == ["first message", "second message"]


async def test_reject_lets_the_race_decide_and_the_loser_leaves_no_trace(
    two_clients: tuple[Redis, Redis],
) -> None:
    shared, first, second = _processes(two_clients, "reject")
    agent = await shared.agent(new_tenant())
    first.llm.enqueue("Hello!")
    opened = await first.engine.run(_request(agent, "hi"))
    first.llm.gated = True
    first.llm.entered.clear()
    first.llm.enqueue("Late answer.")
    second.llm.enqueue("Fast answer.")
    held = asyncio.create_task(first.engine.run(_request(agent, "first message")))
    await first.llm.entered.wait()
    fast = await second.engine.run(_request(agent, "second message"))  # does not wait
    assert fast.turn_number == 2
    first.llm.release.set()
    with pytest.raises(ConcurrentTurnError):
        await held
    turns = await shared.audit_store.list_turns_by_session(agent.tenant_id, opened.session_id)
    assert [t.user_message for t in turns] == ["hi", "second message"]
