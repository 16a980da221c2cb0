"""The demo agent holds a sensible conversation with the offline providers."""

from __future__ import annotations

from uuid import UUID

import httpx
import pytest

from focal.alignment.turn import TurnEngine, TurnRequest, TurnResult
from focal.bootstrap import FocalServices
from focal.conversation.models import Channel
from focal.demo import DEMO_AGENT_NAME, DEMO_CONVERSATION, LABEL_TOOL, LOOKUP_TOOL, load_demo_agent
from focal.demo_shop import DemoShop
from focal.errors import ConfigurationError, ProviderUnavailableError
from focal.providers.llm.offline import OfflineLLMProvider
from focal.settings import Settings
from focal.tools.http import HttpToolExecutor
from tests.support import new_tenant
from tests.unit.turn.support import RecordingLLM, TurnStack


def _services(stack: TurnStack) -> FocalServices:
    assert stack.tool_executor is not None
    return FocalServices(
        settings=Settings(storage="memory"),
        config_store=stack.config_store,
        memory_store=stack.memory_store,
        session_store=stack.session_store,
        audit_store=stack.audit_store,
        profile_store=stack.profile_store,
        llm_provider=stack.llm,
        embedding_provider=stack.embedder,
        tool_executor=stack.tool_executor,
    )


async def _converse(
    engine: TurnEngine, tenant: UUID, agent_id: UUID, messages: list[str]
) -> list[TurnResult]:
    results: list[TurnResult] = []
    session_id = None
    for message in messages:
        request = TurnRequest(
            tenant_id=tenant,
            agent_id=agent_id,
            channel=Channel.WEB,
            user_channel_id="demo-visitor",
            message=message,
            session_id=session_id,
        )
        result = await engine.run(request)
        session_id = result.session_id
        results.append(result)
    return results


async def test_demo_conversation_with_the_offline_providers(
    tenant: UUID, demo_shop: DemoShop, executor: HttpToolExecutor
):
    stack = TurnStack(llm=OfflineLLMProvider(), tool_executor=executor)
    services = _services(stack)
    agent = await load_demo_agent(services, tenant, demo_shop)
    assert (await load_demo_agent(services, tenant, demo_shop)).id == agent.id  # idempotent: reused by name
    agents, total = await stack.config_store.get_agents(tenant)
    assert total == 1 and agents[0].name == DEMO_AGENT_NAME

    results = await _converse(TurnEngine.from_services(services), tenant, agent.id, DEMO_CONVERSATION)
    for message, result in zip(DEMO_CONVERSATION, results, strict=True):
        step = result.scenario.step_name if result.scenario else "-"
        rules = ", ".join(m.name for m in result.matched_rules) or "-"
        print(f"customer: {message}\n  agent: {result.response}\n  [rules: {rules}; step: {step}]")

    rules = [[m.name for m in r.matched_rules] for r in results]
    steps = [r.scenario.step_name if r.scenario else None for r in results]
    assert rules[0] == ["Greet"]
    assert results[0].response.startswith("Hello and welcome to Focal Demo Store!")
    assert rules[1] == ["Shipping cost"]
    assert results[1].response == "Shipping is free for orders above 50 EUR; below that it costs 4.90 EUR."
    assert steps == [
        None,
        None,
        "Ask for the order number",
        "Ask for the reason",
        "Confirm the return",
        "Return registered",
        None,
    ]
    assert results[2].response.startswith("I can help you return an item. What is your order number?")
    # the order number was collected, and the order looked up in the shop by the resolver tool
    assert results[3].response.startswith(
        "Thank you. I found order FD-10234: your electric kettle, delivered on 2024-05-02."
    )
    assert "(damaged)" in results[4].response and "within 30 days" in results[4].response
    assert results[5].scenario is not None and results[5].scenario.finished
    assert results[5].response.startswith("Done! The return label for order FD-10234 is on its way")
    # the label really exists in the shop, and the turn record says which tool made it
    assert list(demo_shop.labels.values()) == [
        {
            "label_id": "RL-00001",
            "order_number": "FD-10234",
            "return_reason": "damaged",
            "item": "electric kettle",
        }
    ]
    turns = await stack.audit_store.list_turns_by_session(tenant, results[0].session_id)
    called = [[(t["name"], t["source"], t["status"]) for t in turn.tools_executed] for turn in turns]
    assert called == [[], [], [], [(LOOKUP_TOOL, "resolver", "ok")], [], [(LABEL_TOOL, "model", "ok")], []]
    assert turns[5].tools_executed[0]["result"]["label_id"] == "RL-00001"
    assert rules[6] == ["Human handover"]
    assert "support@focal-demo.example" in results[6].response and results[6].template_id is not None
    assert len({r.session_id for r in results}) == 1

    session = await stack.session_store.get(tenant, results[0].session_id)
    assert session is not None and session.active_scenario_id is None
    assert [v.step_name for v in session.step_history] == steps[2:6]
    assert (session.variables["order_number"], session.variables["return_reason"]) == ("FD-10234", "damaged")


async def test_demo_order_step_waits_for_an_order_number(
    tenant: UUID, demo_shop: DemoShop, executor: HttpToolExecutor
):
    stack = TurnStack(llm=OfflineLLMProvider(), tool_executor=executor)
    agent = await load_demo_agent(_services(stack), tenant, demo_shop)
    start = await stack.turn(agent, "I would like to return an item")
    waiting = await stack.turn(agent, "My order number is lost somewhere", session_id=start.session_id)
    assert waiting.scenario is not None and waiting.scenario.step_name == "Ask for the order number"
    assert waiting.response.startswith("I can help you return an item. What is your order number?")
    assert demo_shop.labels == {}


async def test_the_demo_needs_a_served_shop(tenant: UUID, executor: HttpToolExecutor):
    stack = TurnStack(llm=OfflineLLMProvider(), tool_executor=executor)
    with pytest.raises(ConfigurationError, match="demo shop"):
        await load_demo_agent(_services(stack), tenant, DemoShop())


async def test_demo_shop_refuses_requests_without_its_key(demo_shop: DemoShop):
    assert demo_shop.url is not None
    async with httpx.AsyncClient(base_url=demo_shop.url) as client:
        assert (await client.get("/orders/FD-10234")).status_code == 401
        keyed = {"X-Shop-Key": demo_shop.api_key}
        assert (await client.get("/orders/FD-10234", headers=keyed)).json()["item"] == "electric kettle"
        assert (await client.get("/orders/FD-99999", headers=keyed)).status_code == 404


async def test_demo_agent_refund_question_and_fallback(
    tenant: UUID, demo_shop: DemoShop, executor: HttpToolExecutor
):
    stack = TurnStack(llm=OfflineLLMProvider(), tool_executor=executor)
    agent = await load_demo_agent(_services(stack), tenant, demo_shop)

    refund = await stack.turn(agent, "When do I get my money back?")
    assert {m.name for m in refund.matched_rules} == {"Refund timing", "No refund promises"}
    assert refund.response == "Refunds are paid within 14 days after we receive the returned item."

    stack.llm = RecordingLLM(fail_with=ProviderUnavailableError("down"))
    failed = await stack.turn(agent, "Which payment methods do you accept?", user="another")
    assert failed.response.startswith("Sorry, I cannot answer right now.")
    assert [m.name for m in failed.matched_rules] == ["Payment methods"]


async def test_demo_agents_are_per_tenant(demo_shop: DemoShop, executor: HttpToolExecutor):
    stack = TurnStack(llm=OfflineLLMProvider(), tool_executor=executor)
    first, second = new_tenant(), new_tenant()
    a = await load_demo_agent(_services(stack), first, demo_shop)
    b = await load_demo_agent(_services(stack), second, demo_shop)
    assert a.id != b.id and (a.tenant_id, b.tenant_id) == (first, second)
