"""The tool loop in a whole turn: in-memory stores, the scripted model, a real loopback tool server
called through the real ``HttpToolExecutor`` (no mock of the client)."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import pytest
from structlog.testing import capture_logs

from focal.alignment.models import Agent, TemplateMode
from focal.conversation.models import Session
from focal.conversation.stores.inmemory import InMemorySessionStore
from focal.errors import ConflictError, ProviderUnavailableError
from focal.providers.llm.scripted import ScriptedLLMProvider, ScriptedReply
from focal.providers.llm.types import ToolCall
from focal.settings import ToolsSettings
from focal.tools.http import HttpToolExecutor
from tests.support import new_tenant
from tests.tool_server import ToolServer
from tests.unit.turn.support import TurnStack
from tests.unit.turn.tool_support import API_KEY, activate, http_tool, lookup_order

ORDER_RULE = ("where is my order status", "Look the order up and tell the customer its status.")


def call(name: str, arguments: Any, call_id: str = "c1") -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=arguments)


@pytest.fixture
def model() -> ScriptedLLMProvider:
    return ScriptedLLMProvider()


@pytest.fixture
def tools_stack(model: ScriptedLLMProvider, executor: HttpToolExecutor) -> TurnStack:
    return TurnStack(llm=model, tool_executor=executor)


async def _agent_with_lookup(stack: TurnStack, tenant: UUID, shop: ToolServer, **rule: Any) -> Agent:
    agent = await stack.agent(tenant)
    await stack.rule(agent, *ORDER_RULE, attached_tool_ids=["lookup_order"], **rule)
    await activate(stack.config_store, agent, lookup_order(tenant, shop.url))
    return agent


async def _record(stack: TurnStack, agent: Agent, session_id: UUID) -> Any:
    (turn,) = await stack.audit_store.list_turns_by_session(agent.tenant_id, session_id)
    return turn


async def test_a_matching_turn_makes_exactly_one_call_and_records_it(
    tools_stack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer
) -> None:
    tenant = new_tenant()
    agent = await _agent_with_lookup(tools_stack, tenant, shop)
    model.enqueue(
        ScriptedReply(text="Let me look.", tool_calls=[call("lookup_order", {"order_number": "FD-10234"})]),
        "Your kettle was delivered.",
    )

    result = await tools_stack.turn(agent, "where is my order status? FD-10234")

    # what the model said before its call is part of the answer the customer gets
    assert result.response == "Let me look.\n\nYour kettle was delivered."
    assert shop.paths() == ["/orders/FD-10234"]
    assert shop.requests[0]["headers"]["x-api-key"] == API_KEY
    first, second = model.calls
    assert [t.name for t in first.tools] == ["lookup_order"] and first.tool_choice == "auto"
    (round_,) = second.tool_rounds
    assert round_.text == "Let me look." and not round_.results[0].is_error
    assert '"item":"kettle"' in round_.results[0].content.replace(" ", "")
    turn = await _record(tools_stack, agent, result.session_id)
    (executed,) = turn.tools_executed
    assert executed["name"] == "lookup_order" and executed["status"] == "ok"
    assert executed["arguments"] == {"order_number": "FD-10234"} and executed["http_status"] == 200
    assert executed["result"]["item"] == "kettle" and executed["latency_ms"] > 0
    assert result.usage.total_tokens == 30  # both requests counted
    events = await tools_stack.audit_store.list_events(tenant, event_type="tool_called")
    assert [(e.event_data["name"], e.event_data["status"]) for e in events] == [("lookup_order", "ok")]


async def test_no_call_for_an_unmatched_rule_a_deactivated_tool_or_another_tenants_tool(
    tools_stack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer
) -> None:
    tenant = new_tenant()
    agent = await _agent_with_lookup(tools_stack, tenant, shop)
    model.enqueue("Hello there.")
    await tools_stack.turn(agent, "good morning to you", user="unmatched")
    assert model.calls[-1].tools == ()  # the rule did not match: nothing offered

    deactivated = await tools_stack.agent(tenant)
    await tools_stack.rule(deactivated, *ORDER_RULE, attached_tool_ids=["lookup_order"])
    await activate(tools_stack.config_store, deactivated, lookup_order(tenant, shop.url), enabled=False)
    model.enqueue("I cannot look that up.")
    refused = await tools_stack.turn(deactivated, "where is my order status FD-10234", user="deactivated")
    assert model.calls[-1].tools == ()

    # Another tenant defines lookup_order; this tenant only activates the name: nothing to offer.
    other = new_tenant()
    await tools_stack.config_store.save_tool_definition(lookup_order(other, shop.url))
    mine = new_tenant()
    borrower = await tools_stack.agent(mine)
    await tools_stack.rule(borrower, *ORDER_RULE, attached_tool_ids=["lookup_order"])
    from focal.alignment.models import ToolActivation

    await tools_stack.config_store.save_tool_activation(
        ToolActivation(tenant_id=mine, agent_id=borrower.id, tool_id="lookup_order")
    )
    model.enqueue("No tools here.")
    await tools_stack.turn(borrower, "where is my order status FD-10234", user="borrower")
    assert model.calls[-1].tools == ()
    assert shop.requests == []
    assert refused.response == "I cannot look that up."


async def test_a_call_to_a_tool_that_was_not_offered_is_refused_and_never_sent(
    tools_stack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer
) -> None:
    tenant = new_tenant()
    agent = await _agent_with_lookup(tools_stack, tenant, shop)
    other = http_tool(tenant, "create_label", f"{shop.url}/labels", method="POST")
    await activate(tools_stack.config_store, agent, other)  # activated, but attached to nothing
    model.enqueue(
        ScriptedReply(
            tool_calls=[call("create_label", {}), call("lookup_order", {"order_number": "FD-1"}, "c2")]
        ),
        "Sorry.",
    )
    result = await tools_stack.turn(agent, "where is my order status")
    assert shop.requests == []
    turn = await _record(tools_stack, agent, result.session_id)
    assert [(t["name"], t["status"]) for t in turn.tools_executed] == [
        ("create_label", "invalid"),
        ("lookup_order", "invalid"),
    ]
    results = model.calls[1].tool_rounds[0].results
    assert all(r.is_error for r in results)
    assert "not available" in results[0].content and "invalid arguments" in results[1].content


async def test_a_timeout_is_recorded_and_the_turn_still_answers(
    tools_stack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer
) -> None:
    tenant = new_tenant()
    agent = await tools_stack.agent(tenant)
    await tools_stack.rule(agent, *ORDER_RULE, attached_tool_ids=["slow_lookup"])
    await activate(
        tools_stack.config_store, agent, http_tool(tenant, "slow_lookup", f"{shop.url}/slow", timeout=0.3)
    )
    model.enqueue(ScriptedReply(tool_calls=[call("slow_lookup", {})]), "The system is slow; try later.")

    result = await tools_stack.turn(agent, "where is my order status")

    assert result.response == "The system is slow; try later."
    turn = await _record(tools_stack, agent, result.session_id)
    (executed,) = turn.tools_executed
    assert executed["status"] == "timeout" and "0.3 s" in executed["error"]
    assert model.calls[1].tool_rounds[0].results[0].is_error


async def test_calls_of_one_round_run_concurrently(
    tools_stack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer
) -> None:
    tenant = new_tenant()
    agent = await tools_stack.agent(tenant)
    pair = http_tool(
        tenant,
        "pair",
        f"{shop.url}/together/2",
        timeout=3,
        parameters={"type": "object", "properties": {"n": {"type": "integer"}}},
    )
    await tools_stack.rule(agent, *ORDER_RULE, attached_tool_ids=["pair"])
    await activate(tools_stack.config_store, agent, pair)
    # Each request is answered only once both are in flight: run one after the other, the first
    # would time out.
    model.enqueue(
        ScriptedReply(tool_calls=[call("pair", {"n": 1}, "a"), call("pair", {"n": 2}, "b")]), "Both done."
    )
    result = await tools_stack.turn(agent, "where is my order status")
    turn = await _record(tools_stack, agent, result.session_id)
    assert [(t["call_id"], t["status"]) for t in turn.tools_executed] == [("a", "ok"), ("b", "ok")]
    assert sorted(r["query"]["n"] for r in shop.requests) == ["1", "2"]


async def test_rounds_are_bounded_then_the_model_must_answer(
    model: ScriptedLLMProvider, executor: HttpToolExecutor, shop: ToolServer
) -> None:
    stack = TurnStack(llm=model, tool_executor=executor, tools=ToolsSettings(max_rounds=2))
    tenant = new_tenant()
    agent = await _agent_with_lookup(stack, tenant, shop)
    for n in (1, 2):
        model.enqueue(ScriptedReply(tool_calls=[call("lookup_order", {"order_number": "FD-10234"}, f"r{n}")]))
    model.enqueue("Done looking.")
    result = await stack.turn(agent, "where is my order status")
    assert result.response == "Done looking."
    assert [c.tool_choice for c in model.calls] == ["auto", "auto", "none"]
    assert len(model.calls[-1].tool_rounds) == 2 and len(shop.requests) == 2


async def test_a_tool_failure_then_a_model_failure_is_answered_by_the_fallback(
    tools_stack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer
) -> None:
    tenant = new_tenant()
    agent = await _agent_with_lookup(tools_stack, tenant, shop)
    await tools_stack.template(agent, "Sorry, try again later.", TemplateMode.FALLBACK)
    model.enqueue(
        ScriptedReply(tool_calls=[call("lookup_order", {"order_number": "FD-99999"})]),
        ScriptedReply(error=ProviderUnavailableError("down", provider="scripted")),
    )
    result = await tools_stack.turn(agent, "where is my order status")
    assert result.response == "Sorry, try again later."
    turn = await _record(tools_stack, agent, result.session_id)
    (executed,) = turn.tools_executed
    assert (executed["status"], executed["http_status"]) == ("error", 404)
    kinds = [e.event_type for e in await tools_stack.audit_store.list_events(tenant)]
    assert "tool_called" in kinds and "provider_error" in kinds


async def test_unstorable_results_are_recorded_cleaned_and_large_ones_cut(
    model: ScriptedLLMProvider, executor: HttpToolExecutor, shop: ToolServer
) -> None:
    stack = TurnStack(llm=model, tool_executor=executor, tools=ToolsSettings(record_result_bytes=256))
    tenant = new_tenant()
    agent = await stack.agent(tenant)
    await stack.rule(agent, *ORDER_RULE, attached_tool_ids=["weird", "lookup_order"])
    await activate(stack.config_store, agent, http_tool(tenant, "weird", f"{shop.url}/weird"))
    await activate(stack.config_store, agent, lookup_order(tenant, shop.url))
    model.enqueue(
        ScriptedReply(
            tool_calls=[call("weird", {}, "w"), call("lookup_order", {"order_number": "FD-10235"}, "l")]
        ),
        "Done.",
    )
    result = await stack.turn(agent, "where is my order status")
    turn = await _record(stack, agent, result.session_id)
    weird, order = turn.tools_executed
    assert weird["status"] == "ok" and weird["result"] == {"text": "a\ufffdb", "score": None}
    assert order["result"]["item"] == "toaster"


async def test_the_secret_is_in_no_record_event_or_log_line(
    tools_stack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = new_tenant()
    agent = await tools_stack.agent(tenant)
    await tools_stack.rule(agent, *ORDER_RULE, attached_tool_ids=["echo_key", "lookup_order"])
    await activate(tools_stack.config_store, agent, http_tool(tenant, "echo_key", f"{shop.url}/echo-key"))
    await activate(tools_stack.config_store, agent, lookup_order(tenant, shop.url))
    model.enqueue(
        ScriptedReply(
            tool_calls=[call("echo_key", {}, "e"), call("lookup_order", {"order_number": "FD-10234"}, "l")]
        ),
        "Done.",
    )
    caplog.set_level(logging.DEBUG)
    with capture_logs() as logs:
        result = await tools_stack.turn(agent, "where is my order status")
    assert shop.requests[0]["headers"]["x-api-key"] == API_KEY  # it was sent to the tool's own URL
    turn = await _record(tools_stack, agent, result.session_id)
    assert turn.tools_executed[0]["result"] == {"you_sent": "[redacted]"}
    events = await tools_stack.audit_store.list_events(tenant)
    session = await tools_stack.session_store.get(tenant, result.session_id)
    dumps = [
        turn.model_dump_json(),
        *(e.model_dump_json() for e in events),
        session.model_dump_json() if session else "",
    ]
    assert all(API_KEY not in text for text in dumps)
    assert all(API_KEY not in repr(m.tool_rounds) for m in model.calls)
    assert logs and all(API_KEY not in repr(line) for line in logs)
    assert all(API_KEY not in record.getMessage() for record in caplog.records)


class _SessionSavedMeanwhile(InMemorySessionStore):
    """A session store where another turn saves the session between this turn's read and write."""

    async def save(self, session: Session) -> Session:
        if session.turn_count == 2:  # this turn's save: a concurrent turn got there first
            raise ConflictError("session changed since it was read")
        return await super().save(session)


async def test_a_turn_refused_after_its_tool_call_writes_nothing_but_the_call_was_made(
    model: ScriptedLLMProvider, executor: HttpToolExecutor, shop: ToolServer
) -> None:
    stack = TurnStack(llm=model, tool_executor=executor, session_store=_SessionSavedMeanwhile())
    tenant = new_tenant()
    agent = await _agent_with_lookup(stack, tenant, shop)
    model.enqueue("Hello.")
    first = await stack.turn(agent, "hello")
    before = await stack.stored_state(agent, ["alice"])
    model.enqueue(
        ScriptedReply(tool_calls=[call("lookup_order", {"order_number": "FD-10234"})]), "Delivered."
    )
    with capture_logs() as logs, pytest.raises(ConflictError):
        await stack.turn(agent, "where is my order status", session_id=first.session_id)
    assert shop.paths() == ["/orders/FD-10234"]  # the outside world saw the call ...
    assert await stack.stored_state(agent, ["alice"]) == before  # ... the stores saw nothing
    assert [line["tool"] for line in logs if line["event"] == "tool_call"] == ["lookup_order"]  # the log did


async def test_a_regenerated_answer_reuses_the_tool_rounds_and_calls_nothing_again(
    tools_stack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer
) -> None:
    tenant = new_tenant()
    agent = await _agent_with_lookup(tools_stack, tenant, shop)
    await tools_stack.rule(
        agent,
        "never promise refunds",
        "Never promise a refund.",
        is_hard_constraint=True,
        forbid_patterns=[r"(?i)\brefund\b"],
    )
    model.enqueue(
        ScriptedReply(tool_calls=[call("lookup_order", {"order_number": "FD-10234"})]),
        "It was delivered; you get a refund.",  # violates the constraint: regenerated
        "Your kettle was delivered.",
    )

    result = await tools_stack.turn(agent, "where is my order status? FD-10234")

    assert result.response == "Your kettle was delivered."
    assert shop.paths() == ["/orders/FD-10234"]  # called once, not again for the regeneration
    first, second, regenerated = model.calls
    assert first.tool_choice == "auto" and first.tool_rounds == ()
    assert regenerated.tool_choice == "none"
    assert regenerated.tool_rounds == second.tool_rounds and len(regenerated.tool_rounds) == 1
    turn = await _record(tools_stack, agent, result.session_id)
    assert [c["name"] for c in turn.tools_executed] == ["lookup_order"]
