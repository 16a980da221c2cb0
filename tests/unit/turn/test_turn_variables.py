"""Variables in whole turns: extraction (pattern, structured output), gating, update policies,
resolvers with a cache TTL against a real loopback tool server, profile persistence, rendering."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import pytest

from focal.alignment.models import (
    Agent,
    Scenario,
    ScenarioStep,
    StepTransition,
    TemplateMode,
    Variable,
    VariableUpdatePolicy,
)
from focal.alignment.turn.variables import apply_policy
from focal.providers.llm.scripted import ScriptedLLMProvider, ScriptedReply
from focal.tools.http import HttpToolExecutor
from tests.support import new_tenant
from tests.tool_server import ToolServer
from tests.unit.turn.support import TurnStack
from tests.unit.turn.tool_support import activate, lookup_order

ORDER_PATTERN = r"FD-\d{5}"


@pytest.fixture
def model() -> ScriptedLLMProvider:
    return ScriptedLLMProvider()


@pytest.fixture
def vstack(model: ScriptedLLMProvider, executor: HttpToolExecutor) -> TurnStack:
    return TurnStack(llm=model, tool_executor=executor)


async def _variable(stack: TurnStack, agent: Agent, name: str, **fields: Any) -> Variable:
    variable = Variable(tenant_id=agent.tenant_id, agent_id=agent.id, name=name, **fields)
    await stack.config_store.save_variable(variable)
    return variable


async def _returns_scenario(
    stack: TurnStack, agent: Agent, collects: tuple[str, ...] = ("order_number",), **ask_fields: Any
) -> Scenario:
    """ask (collects order_number) --"order number given"--> reason --"reason given"--> done."""
    ask, reason, done = uuid4(), uuid4(), uuid4()
    embed = stack.embedder.embed
    asked = await stack.template(agent, "What is your order number?", TemplateMode.EXCLUSIVE)
    why = await stack.template(agent, "Why is {order_number} coming back?", TemplateMode.EXCLUSIVE)
    finished = await stack.template(
        agent, "Return of {order_number}: {return_reason}.", TemplateMode.EXCLUSIVE
    )
    steps = [
        ScenarioStep(
            id=ask,
            name="ask",
            collects_fields=list(collects),
            template_ids=[asked.id],
            transitions=[
                StepTransition(
                    to_step_id=reason,
                    condition_text="my order number is",
                    condition_embedding=await embed("my order number is"),
                )
            ],
            **ask_fields,
        ),
        ScenarioStep(
            id=reason,
            name="reason",
            collects_fields=["return_reason"],
            template_ids=[why.id],
            transitions=[
                StepTransition(
                    to_step_id=done,
                    condition_text="it arrived broken damaged",
                    condition_embedding=await embed("it arrived broken damaged"),
                )
            ],
        ),
        ScenarioStep(id=done, name="done", is_terminal=True, template_ids=[finished.id]),
    ]
    scenario = Scenario(
        tenant_id=agent.tenant_id,
        agent_id=agent.id,
        name="Returns",
        entry_step_id=ask,
        entry_condition_text="return an item",
        entry_embedding=await embed("return an item"),
        embedding_model=stack.embedder.model_id,
        steps=steps,
    )
    await stack.config_store.save_scenario(scenario)
    return scenario


async def _session(stack: TurnStack, agent: Agent, session_id: UUID) -> Any:
    session = await stack.session_store.get(agent.tenant_id, session_id)
    assert session is not None
    return session


async def test_extraction_by_pattern_gates_the_step_until_the_field_is_filled(
    vstack: TurnStack, model: ScriptedLLMProvider
) -> None:
    agent = await vstack.agent(new_tenant())
    await _variable(vstack, agent, "order_number", extraction_pattern=ORDER_PATTERN)
    await _variable(vstack, agent, "return_reason", extraction_pattern=r"(damaged|broken|wrong item)")
    await _returns_scenario(vstack, agent)

    entered = await vstack.turn(agent, "I want to return an item")
    assert entered.response == "What is your order number?"
    gated = await vstack.turn(agent, "my order number is somewhere", session_id=entered.session_id)
    assert gated.scenario is not None and gated.scenario.step_name == "ask"  # the transition matched, gated
    assert gated.response == "What is your order number?"
    events = await vstack.audit_store.list_events(agent.tenant_id, event_type="step_gated")
    assert [e.event_data["missing_fields"] for e in events] == [["order_number"]]

    moved = await vstack.turn(agent, "my order number is FD-10234", session_id=entered.session_id)
    assert moved.scenario is not None and moved.scenario.step_name == "reason"
    assert moved.response == "Why is FD-10234 coming back?"
    session = await _session(vstack, agent, entered.session_id)
    assert session.variables == {"order_number": "FD-10234"}
    assert session.variables_set_at["order_number"] >= session.created_at

    done = await vstack.turn(agent, "it arrived broken", session_id=entered.session_id)
    assert done.response == "Return of FD-10234: broken."
    assert model.calls == []  # every answer came from EXCLUSIVE templates, rendered with the values


async def test_the_step_arrived_at_takes_its_fields_from_the_same_message(vstack: TurnStack) -> None:
    agent = await vstack.agent(new_tenant())
    await _variable(vstack, agent, "order_number", extraction_pattern=ORDER_PATTERN)
    await _returns_scenario(vstack, agent)
    first = await vstack.turn(agent, "return an item, order FD-10235")
    session = await _session(vstack, agent, first.session_id)
    assert session.variables["order_number"] == "FD-10235"


async def test_extraction_by_structured_output(vstack: TurnStack, model: ScriptedLLMProvider) -> None:
    agent = await vstack.agent(new_tenant())
    await _variable(vstack, agent, "order_number", extraction_pattern=ORDER_PATTERN, extract_with_llm=True)
    await _returns_scenario(vstack, agent)
    entered = await vstack.turn(agent, "I want to return an item")
    # The pattern finds nothing in the words; the model reads it; its value must still fit the pattern.
    model.enqueue(ScriptedReply(structured={"order_number": "it is FD-10236"}))
    moved = await vstack.turn(
        agent, "my order number is ef dee one oh two three six", session_id=entered.session_id
    )
    (asked,) = model.calls
    assert asked.operation == "generate_structured" and "order_number" in asked.prompt
    assert moved.scenario is not None and moved.scenario.step_name == "reason"
    assert (await _session(vstack, agent, entered.session_id)).variables["order_number"] == "FD-10236"
    assert moved.usage.total_tokens == 15  # the extraction request is counted

    model.enqueue(ScriptedReply(structured={"order_number": "no idea"}))
    other = await vstack.turn(agent, "I want to return an item", user="bob")
    gated = await vstack.turn(agent, "my order number is lost", user="bob", session_id=other.session_id)
    assert gated.scenario is not None and gated.scenario.step_name == "ask"


async def test_structured_extraction_takes_any_variable_name(
    vstack: TurnStack, model: ScriptedLLMProvider
) -> None:
    """Variable names may start with "_" or be a pydantic model's own names ("model_config",
    "json"): the extraction request's schema must still carry them, not crash the turn."""
    agent = await vstack.agent(new_tenant())
    names = ("_ref", "model_config", "json", "model_dump")
    for name in names:
        await _variable(vstack, agent, name, extract_with_llm=True)
    await _returns_scenario(vstack, agent, collects=names)
    entered = await vstack.turn(agent, "I want to return an item")
    model.enqueue(ScriptedReply(structured={name: f"value of {name}" for name in names}))
    moved = await vstack.turn(agent, "my order number is the one I gave", session_id=entered.session_id)
    (asked,) = model.calls
    assert asked.operation == "generate_structured" and all(name in asked.prompt for name in names)
    assert moved.scenario is not None and moved.scenario.step_name == "reason"
    session = await _session(vstack, agent, entered.session_id)
    assert session.variables == {name: f"value of {name}" for name in names}


@pytest.mark.parametrize(
    ("policy", "current", "new", "expected"),
    [
        (VariableUpdatePolicy.REPLACE, "a", "b", "b"),
        (VariableUpdatePolicy.APPEND, None, "a", ["a"]),
        (VariableUpdatePolicy.APPEND, "a", "b", ["a", "b"]),
        (VariableUpdatePolicy.APPEND, ["a"], ["b", "c"], ["a", "b", "c"]),
        (VariableUpdatePolicy.MERGE, {"a": 1, "b": 1}, {"b": 2, "c": 3}, {"a": 1, "b": 2, "c": 3}),
        (VariableUpdatePolicy.MERGE, "text", {"a": 1}, {"a": 1}),
    ],
)
def test_update_policies(policy: VariableUpdatePolicy, current: Any, new: Any, expected: Any) -> None:
    assert apply_policy(current, new, policy) == expected


async def test_append_across_turns(vstack: TurnStack) -> None:
    agent = await vstack.agent(new_tenant())
    await _variable(
        vstack,
        agent,
        "order_number",
        extraction_pattern=ORDER_PATTERN,
        update_policy=VariableUpdatePolicy.APPEND,
    )
    await _returns_scenario(vstack, agent)
    entered = await vstack.turn(agent, "return an item FD-10001")
    await vstack.turn(agent, "my order number is FD-10002", session_id=entered.session_id)
    session = await _session(vstack, agent, entered.session_id)
    assert session.variables["order_number"] == ["FD-10001", "FD-10002"]


async def test_resolver_runs_when_a_template_needs_it_and_honours_its_ttl(
    vstack: TurnStack, model: ScriptedLLMProvider, shop: ToolServer
) -> None:
    tenant = new_tenant()
    agent = await vstack.agent(tenant)
    await activate(vstack.config_store, agent, lookup_order(tenant, shop.url))
    await _variable(vstack, agent, "order_number", extraction_pattern=ORDER_PATTERN)
    await _variable(
        vstack,
        agent,
        "order",
        resolver_tool_id="lookup_order",
        cache_ttl_seconds=60,
        update_policy=VariableUpdatePolicy.MERGE,
    )
    status = await vstack.template(
        agent, "Order {order_number}: your {order.item} is {order.status}.", TemplateMode.EXCLUSIVE
    )
    await vstack.rule(agent, "status of my order", "Tell the status.", attached_template_ids=[status.id])
    await vstack.rule(agent, "hello there", "Greet.")
    model.enqueue("Hello!")

    greeted = await vstack.turn(agent, "hello there")  # no template needs {order}: no call
    assert shop.requests == []

    session = await _session(vstack, agent, greeted.session_id)
    session.variables["order_number"] = "FD-10234"
    await vstack.session_store.save(session)
    first = await vstack.turn(agent, "status of my order", session_id=greeted.session_id)
    assert first.response == "Order FD-10234: your kettle is delivered."
    assert shop.paths() == ["/orders/FD-10234"]
    again = await vstack.turn(agent, "status of my order please", session_id=greeted.session_id)
    assert again.response == first.response and len(shop.requests) == 1  # cached within the TTL

    session = await _session(vstack, agent, greeted.session_id)
    session.variables_set_at["order"] -= timedelta(seconds=61)  # the cached value is now too old
    await vstack.session_store.save(session)
    await vstack.turn(agent, "status of my order now", session_id=greeted.session_id)
    assert len(shop.requests) == 2
    turns = await vstack.audit_store.list_turns_by_session(tenant, greeted.session_id)
    assert [[(t["source"], t["status"]) for t in turn.tools_executed] for turn in turns] == [
        [],
        [("resolver", "ok")],
        [],
        [("resolver", "ok")],
    ]


async def test_a_resolver_waits_for_its_required_arguments(vstack: TurnStack, shop: ToolServer) -> None:
    tenant = new_tenant()
    agent = await vstack.agent(tenant)
    await activate(vstack.config_store, agent, lookup_order(tenant, shop.url))
    await _variable(vstack, agent, "order", resolver_tool_id="lookup_order")
    status = await vstack.template(agent, "Your {order.item}.", TemplateMode.EXCLUSIVE)
    await vstack.rule(agent, "status of my order", "Tell the status.", attached_template_ids=[status.id])
    result = await vstack.turn(agent, "status of my order")
    assert result.response == "Your {order.item}." and shop.requests == []


async def test_values_persist_to_the_profile_with_history(vstack: TurnStack) -> None:
    tenant = new_tenant()
    agent = await vstack.agent(tenant)
    await _variable(vstack, agent, "order_number", extraction_pattern=ORDER_PATTERN, persist_to_profile=True)
    await _returns_scenario(vstack, agent)
    first = await vstack.turn(agent, "return an item FD-10001")
    await vstack.turn(agent, "my order number is FD-10002", session_id=first.session_id)
    session = await _session(vstack, agent, first.session_id)
    history = await vstack.profile_store.get_field_history(
        tenant, session.customer_profile_id, "order_number"
    )
    assert [f.field_value for f in history] == ["FD-10001", "FD-10002"]
    assert history[0].valid_to is not None and history[1].valid_to is None
    assert history[1].source.value == "EXTRACTED"


async def test_the_prompt_lists_known_values(vstack: TurnStack, model: ScriptedLLMProvider) -> None:
    agent = await vstack.agent(new_tenant())
    await _variable(vstack, agent, "store_name", default_value="Demo Store")
    await vstack.rule(agent, "opening hours", "Give the opening hours.")
    model.enqueue("We open at nine.")
    first = await vstack.turn(agent, "opening hours?")
    session = await _session(vstack, agent, first.session_id)
    session.variables["order"] = {"item": "kettle"}
    await vstack.session_store.save(session)
    model.enqueue("Still nine.")
    await vstack.turn(agent, "opening hours again?", session_id=first.session_id)
    prompt = model.calls[-1].prompt
    assert 'Known values:\n- order: {"item": "kettle"}\n- store_name: Demo Store' in prompt
