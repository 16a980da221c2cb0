"""``FOCAL_TURN__CONCURRENCY=enqueue`` over HTTP (one process, in-memory locks): the second message
of a conversation waits for the first and becomes the next turn with the first in its history.
Waiting is observed through the locks' ``waiting`` gauge, never by sleeping. The same across
processes on Redis: ``tests/integration/stores/test_redis_turn_ordering.py``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from uuid import UUID

import pytest_asyncio

from tests.api.control_support import ControlApi, history_of, open_control_api
from tests.support import until


@pytest_asyncio.fixture
async def enqueue_api() -> AsyncIterator[ControlApi]:
    async with open_control_api(turn={"concurrency": "enqueue", "enqueue_wait_seconds": 10}) as api:
        yield api


async def test_a_second_message_waits_and_becomes_the_next_turn(enqueue_api: ControlApi) -> None:
    api = enqueue_api
    agent = await api.agent()
    api.llm.gated = True
    api.llm.enqueue("First answer.", "Second answer.")
    first = asyncio.create_task(api.chat(agent["id"], "first message"))  # a new customer: no session yet
    await api.llm.entered.wait()
    second = asyncio.create_task(api.chat(agent["id"], "second message"))
    await until(lambda: api.services.conversation_locks.waiting == 1)
    assert api.llm.arrived == 1  # the second waits before reading anything
    api.llm.release.set()
    one, two = (await first).json(), (await second).json()
    assert (one["turn_number"], two["turn_number"]) == (1, 2)
    assert one["session_id"] == two["session_id"]
    assert len(api.llm.calls) == 2
    assert history_of(api.llm.calls[1]) == [("user", "first message"), ("assistant", "First answer.")]


async def test_another_conversation_does_not_wait(enqueue_api: ControlApi) -> None:
    api = enqueue_api
    agent = await api.agent()
    api.llm.gated = True
    api.llm.enqueue("For Ann.", "For Bob.")
    ann = asyncio.create_task(api.chat(agent["id"], "hello", user="ann"))
    await api.llm.entered.wait()
    api.llm.entered.clear()
    bob = asyncio.create_task(api.chat(agent["id"], "hello", user="bob"))
    await api.llm.entered.wait()  # Bob reached the LLM while Ann's turn is still held
    assert api.services.conversation_locks.waiting == 0
    api.llm.release.set()
    assert {(await ann).status_code, (await bob).status_code} == {200}


async def test_a_message_waiting_past_its_bound_is_a_409_that_writes_nothing() -> None:
    async with open_control_api(turn={"concurrency": "enqueue", "enqueue_wait_seconds": 0.05}) as api:
        agent = await api.agent()
        api.llm.gated = True
        api.llm.enqueue("Slow answer.")
        first = asyncio.create_task(api.chat(agent["id"], "first"))
        await api.llm.entered.wait()
        busy = await api.chat(agent["id"], "second")
        assert (busy.status_code, busy.json()["error"]["code"]) == (409, "conflict")
        assert "still being answered" in busy.json()["error"]["message"]
        api.llm.release.set()
        assert (await first).status_code == 200
        sessions = await api.services.session_store.list_by_agent(api.tenant_id, UUID(agent["id"]))
        assert [s.turn_count for s in sessions] == [1]
        assert len(api.llm.calls) == 1


async def test_a_turn_that_an_operator_overtook_runs_again_with_the_reply_in_its_history(
    enqueue_api: ControlApi,
) -> None:
    api = enqueue_api
    agent = await api.agent()
    api.llm.enqueue("Hello!")
    session_id = (await api.chat(agent["id"], "hi")).json()["session_id"]
    api.llm.gated = True
    api.llm.entered.clear()
    api.llm.enqueue("Answer from a stale read.", "Answer after the operator.")
    turn = asyncio.create_task(api.chat(agent["id"], "question", session_id=session_id))
    await api.llm.entered.wait()
    reply = await api.client.post(
        f"/v1/sessions/{session_id}/messages", json={"text": "Operator here."}, headers=api.headers
    )
    assert reply.json()["turn_number"] == 2
    api.llm.release.set()
    answered = await turn
    assert (answered.status_code, answered.json()["turn_number"]) == (200, 3)
    assert answered.json()["response"] == "Answer after the operator."
    assert history_of(api.llm.calls[-1])[-1] == ("assistant", "Hello!\n\nOperator here.")
    turns = await api.turns(session_id)
    assert [t["assistant_response"] for t in turns] == [
        "Hello!",
        "Operator here.",
        "Answer after the operator.",
    ]
