"""A message's tool calls are made once, even when its turn runs again (``enqueue``).

A turn whose session an operator wrote between the turn's read and its save loses the version
check and runs again from the start (``ordering.py``). Its tool calls reached a real loopback tool
server that creates return labels (and would happily create two): the test counts what the server
received. The operator's write happens inside the scripted model's call (``before``), so the lost
run is forced deterministically, without sleeping. Each test runs on the in-memory stores and on
Redis (the sessions and the conversation locks, as ``focal serve`` keeps them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
import pytest_asyncio
from redis.asyncio import Redis

from focal.alignment.models import Agent, Variable
from focal.alignment.turn import TurnConfig, TurnEngine
from focal.conversation.locks import ConversationLocks, InMemoryConversationLocks
from focal.conversation.stores.inmemory import InMemorySessionStore
from focal.conversation.stores.redis import RedisSessionStore
from focal.conversation.stores.redis_locks import RedisConversationLocks
from focal.models import utc_now
from focal.providers.llm.base import GenerationRequest, LLMResponse
from focal.providers.llm.scripted import ScriptedLLMProvider, ScriptedReply
from focal.providers.llm.types import ToolCall
from focal.tools.http import HttpToolExecutor
from tests.support import new_tenant
from tests.tool_server import ToolServer
from tests.unit.turn.support import TurnStack
from tests.unit.turn.tool_support import activate, http_tool, lookup_order

RETURN_RULE = ("i want to return my order", "Create a return label for the customer's order.")
LABEL_PARAMETERS: dict[str, Any] = {
    "type": "object",
    "properties": {"order_number": {"type": "string"}},
    "required": ["order_number"],
}
ENQUEUE = TurnConfig(concurrency="enqueue", enqueue_wait_seconds=10, enqueue_max_attempts=3)


class InterruptedLLM(ScriptedLLMProvider):
    """Scripted; ``before[n]`` is awaited just before the n-th call (counted over the test) is
    answered: an operator's write between a turn's read of the session and its save."""

    def __init__(self) -> None:
        super().__init__()
        self.before: dict[int, Callable[[], Awaitable[None]]] = {}

    async def _generate(self, request: GenerationRequest) -> LLMResponse:
        hook = self.before.pop(len(self.calls) + 1, None)
        if hook is not None:
            await hook()
        return await super()._generate(request)


@dataclass
class Rerun:
    stack: TurnStack
    engine: TurnEngine
    llm: InterruptedLLM
    tenant: UUID

    def operator_write(self, session_id: UUID, written_at: list[datetime] | None = None) -> Any:
        """A write to the session that takes no lock (as ``PATCH /v1/sessions/{id}/variables``)."""

        async def write() -> None:
            session = await self.stack.session_store.get(self.tenant, session_id)
            assert session is not None
            session.variables["operator_note"] = "checked by Eve"
            await self.stack.session_store.save(session)
            if written_at is not None:
                written_at.append(utc_now())

        return write


def _rerun(llm: InterruptedLLM, executor: HttpToolExecutor, sessions: Any, locks: ConversationLocks) -> Rerun:
    stack = TurnStack(llm=llm, tool_executor=executor, session_store=sessions)
    return Rerun(stack, stack.engine(ENQUEUE, conversation_locks=locks), llm, new_tenant())


@pytest.fixture
def memory_rerun(executor: HttpToolExecutor) -> Rerun:
    return _rerun(InterruptedLLM(), executor, InMemorySessionStore(), InMemoryConversationLocks())


@pytest_asyncio.fixture
async def redis_rerun(executor: HttpToolExecutor, redis_client: Redis) -> Rerun:
    prefix = f"rerun-{uuid4().hex[:8]}"
    sessions = RedisSessionStore(redis_client, key_prefix=prefix)
    return _rerun(
        InterruptedLLM(), executor, sessions, RedisConversationLocks(redis_client, key_prefix=prefix)
    )


@pytest.fixture(params=["memory_rerun", pytest.param("redis_rerun", marks=pytest.mark.redis)])
def rerun(request: pytest.FixtureRequest) -> Rerun:
    run: Rerun = request.getfixturevalue(request.param)
    return run


def call(arguments: Any, call_id: str) -> ToolCall:
    return ToolCall(id=call_id, name="create_label", arguments=arguments)


async def _returns_agent(run: Rerun, shop: ToolServer) -> tuple[Agent, UUID]:
    """An agent whose return rule offers ``create_label`` (POST /labels), and an open session."""
    stack = run.stack
    agent = await stack.agent(run.tenant)
    await stack.rule(agent, *RETURN_RULE, attached_tool_ids=["create_label"])
    label = http_tool(
        run.tenant, "create_label", f"{shop.url}/labels", method="POST", parameters=LABEL_PARAMETERS
    )
    await activate(stack.config_store, agent, label)
    run.llm.enqueue("Hello!")
    opened = await stack.turn(agent, "hello", engine=run.engine)
    return agent, opened.session_id


async def test_a_turn_run_again_reuses_the_call_its_lost_run_made(rerun: Rerun, shop: ToolServer) -> None:
    agent, session_id = await _returns_agent(rerun, shop)
    order = {"order_number": "FD-10234"}
    rerun.llm.enqueue(
        ScriptedReply(tool_calls=[call(order, "lost_1")]),
        "Never recorded: this run loses its save.",
        ScriptedReply(tool_calls=[call(order, "kept_1")]),
        "Your return label is ready.",
    )
    rerun.llm.before[3] = rerun.operator_write(session_id)  # after run 1's call, before its save

    result = await rerun.stack.turn(agent, RETURN_RULE[0], session_id=session_id, engine=rerun.engine)

    assert result.response == "Your return label is ready."
    assert shop.labels == [{"label_id": "LBL-1", "order_number": "FD-10234"}]  # one label
    assert shop.paths() == ["/labels"]
    assert len(rerun.llm.calls) == 5  # the second run asked the model again, twice
    (round_,) = rerun.llm.calls[4].tool_rounds
    assert '"label_id":"LBL-1"' in round_.results[0].content.replace(" ", "")  # the answer used it
    assert not round_.results[0].is_error
    session = await rerun.stack.session_store.get(rerun.tenant, session_id)
    assert session is not None and session.variables["operator_note"] == "checked by Eve"
    (turn,) = [t for t in await _turns(rerun, session_id) if t.turn_number == 2]
    (executed,) = turn.tools_executed
    assert (executed["call_id"], executed["status"], executed["http_status"]) == ("kept_1", "ok", 201)
    assert executed["reused"] is True and executed["result"]["label_id"] == "LBL-1"
    events = await rerun.stack.audit_store.list_events(rerun.tenant, event_type="tool_called")
    assert [(e.event_data["name"], e.event_data["reused"]) for e in events] == [("create_label", True)]


async def test_a_run_that_asks_other_arguments_makes_that_call(rerun: Rerun, shop: ToolServer) -> None:
    agent, session_id = await _returns_agent(rerun, shop)
    rerun.llm.enqueue(
        ScriptedReply(tool_calls=[call({"order_number": "FD-10234"}, "lost_1")]),
        "Never recorded.",
        ScriptedReply(tool_calls=[call({"order_number": "FD-10235"}, "kept_1")]),
        "Your return label for FD-10235 is ready.",
    )
    rerun.llm.before[3] = rerun.operator_write(session_id)

    await rerun.stack.turn(agent, RETURN_RULE[0], session_id=session_id, engine=rerun.engine)

    assert [label["order_number"] for label in shop.labels] == ["FD-10234", "FD-10235"]
    (turn,) = [t for t in await _turns(rerun, session_id) if t.turn_number == 2]
    # The lost run's call happened too: the record lists it after the answering run's own calls.
    assert [
        (t["call_id"], t["arguments"], t["reused"], t["not_repeated"], t["result"]["label_id"])
        for t in turn.tools_executed
    ] == [
        ("kept_1", {"order_number": "FD-10235"}, False, False, "LBL-2"),
        ("lost_1", {"order_number": "FD-10234"}, False, True, "LBL-1"),
    ]
    events = await rerun.stack.audit_store.list_events(rerun.tenant, event_type="tool_called")
    assert sorted((e.event_data["call_id"], e.event_data["not_repeated"]) for e in events) == [
        ("kept_1", False),
        ("lost_1", True),
    ]


async def test_every_run_of_a_message_reuses_the_first_runs_calls(rerun: Rerun, shop: ToolServer) -> None:
    """Two lost runs, the same call asked twice in one round: the third run reuses both and makes
    only the call it is the first to ask for."""
    agent, session_id = await _returns_agent(rerun, shop)
    same = {"order_number": "FD-10234"}
    other = {"order_number": "FD-10235"}
    rerun.llm.enqueue(
        ScriptedReply(tool_calls=[call(same, "a1"), call(same, "a2")]),
        "Lost once.",
        ScriptedReply(tool_calls=[call(same, "b1")]),
        "Lost twice.",
        ScriptedReply(tool_calls=[call(same, "c1"), call(same, "c2"), call(other, "c3")]),
        "Your labels are ready.",
    )
    rerun.llm.before[3] = rerun.operator_write(session_id)
    rerun.llm.before[5] = rerun.operator_write(session_id)

    await rerun.stack.turn(agent, RETURN_RULE[0], session_id=session_id, engine=rerun.engine)

    # Run 1 asked for two labels of FD-10234 (both made), run 2 reused one, run 3 both.
    assert [label["order_number"] for label in shop.labels] == ["FD-10234", "FD-10234", "FD-10235"]
    (turn,) = [t for t in await _turns(rerun, session_id) if t.turn_number == 2]
    assert [(t["call_id"], t["reused"], t["not_repeated"]) for t in turn.tools_executed] == [
        ("c1", True, False),
        ("c2", True, False),
        ("c3", False, False),
    ]
    assert sorted(t["result"]["label_id"] for t in turn.tools_executed) == ["LBL-1", "LBL-2", "LBL-3"]


async def test_a_resolver_is_called_once_and_its_value_is_as_old_as_the_call(
    rerun: Rerun, shop: ToolServer
) -> None:
    stack, tenant = rerun.stack, rerun.tenant
    agent = await stack.agent(tenant)
    await activate(stack.config_store, agent, lookup_order(tenant, shop.url))
    for variable in (
        Variable(tenant_id=tenant, agent_id=agent.id, name="order_number", default_value="FD-10234"),
        Variable(
            tenant_id=tenant,
            agent_id=agent.id,
            name="order",
            resolver_tool_id="lookup_order",
            cache_ttl_seconds=60,
        ),
    ):
        await stack.config_store.save_variable(variable)
    await stack.rule(agent, "status of my order", "Tell the customer their {order.item} is {order.status}.")
    rerun.llm.enqueue("Hello!")
    opened = await stack.turn(agent, "hello there", engine=rerun.engine)
    assert shop.requests == []  # no rule needed {order}
    written_at: list[datetime] = []
    rerun.llm.enqueue("Never recorded.", "Your kettle is delivered.")
    rerun.llm.before[2] = rerun.operator_write(opened.session_id, written_at)  # after the resolver

    result = await stack.turn(agent, "status of my order", session_id=opened.session_id, engine=rerun.engine)

    assert result.response == "Your kettle is delivered."
    assert shop.paths() == ["/orders/FD-10234"]
    assert "kettle" in rerun.llm.calls[-1].prompt  # the second run's answer had the value
    session = await stack.session_store.get(tenant, opened.session_id)
    assert session is not None and session.variables["order"]["item"] == "kettle"
    # Set as of the first run's call, which came before the operator's write: the TTL counts
    # from when the tool answered, not from the run that reused it.
    assert session.variables_set_at["order"] < written_at[0]
    (turn,) = [t for t in await _turns(rerun, opened.session_id) if t.turn_number == 2]
    assert [(t["source"], t["status"], t["reused"]) for t in turn.tools_executed] == [
        ("resolver", "ok", True)
    ]


async def _turns(run: Rerun, session_id: UUID) -> list[Any]:
    return list(await run.stack.audit_store.list_turns_by_session(run.tenant, session_id))
