"""Rule retrieval (scopes, fires, cooldown) and the answer (EXCLUSIVE, SUGGEST, FALLBACK, LLM prompt)."""

from __future__ import annotations

from uuid import UUID

import pytest

from focal.alignment.models import Scope, TemplateMode
from focal.alignment.turn import TurnConfig
from focal.alignment.turn.respond import render_template
from focal.errors import ProviderUnavailableError, RateLimitError
from focal.providers.llm.scripted import ScriptedLLMProvider
from tests.unit.turn.support import RecordingLLM, StepSpec, TurnStack


async def test_llm_gets_system_prompt_rules_and_agent_settings(
    stack: TurnStack, llm: RecordingLLM, tenant: UUID
):
    agent = await stack.agent(
        tenant, system_prompt="You are the shop assistant.", max_tokens=321, temperature=0.2
    )
    rule = await stack.rule(
        agent, "where is my order delivery status", "Give the tracking link for the order."
    )
    await stack.rule(agent, "opening hours of the shop", "Say we are open 9 to 5.")

    result = await stack.turn(agent, "Where is my order?")

    assert [m.rule_id for m in result.matched_rules] == [rule.id]
    assert result.response == "An answer from the model." and result.template_id is None
    assert result.usage.total_tokens == 15
    (call,) = llm.calls
    assert call["system_prompt"] == "You are the shop assistant."
    assert (call["max_tokens"], call["temperature"]) == (321, 0.2)
    assert "Rules to follow:\n- Give the tracking link for the order." in call["prompt"]
    assert "open 9 to 5" not in call["prompt"]
    assert call["prompt"].splitlines()[-1] == "Customer: Where is my order?"


async def test_hard_constraints_get_their_own_section(stack: TurnStack, llm: RecordingLLM, tenant: UUID):
    agent = await stack.agent(tenant)
    await stack.rule(
        agent, "refund money back", "Never promise a refund before inspection.", is_hard_constraint=True
    )
    await stack.rule(agent, "refund money back policy", "Explain the refund policy.")

    await stack.turn(agent, "Can I get my money back as a refund?")

    prompt = llm.calls[0]["prompt"]
    assert "Rules to follow:\n- Explain the refund policy." in prompt
    assert "Hard constraints (never break these):\n- Never promise a refund before inspection." in prompt


async def test_step_scoped_rule_matches_only_in_its_step(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    scenario = await stack.scenario(
        agent,
        "Return an item",
        "return an item",
        [
            StepSpec("ask order number", transitions=[("done", "yes confirmed")]),
            StepSpec("done", is_terminal=True),
        ],
    )
    ask_step = scenario.steps[0]
    step_rule = await stack.rule(
        agent,
        "order number format digits",
        "Order numbers have five digits.",
        scope=Scope.STEP,
        scope_id=ask_step.id,
    )
    scenario_rule = await stack.rule(
        agent,
        "order number format digits",
        "Mention the return window.",
        scope=Scope.SCENARIO,
        scope_id=scenario.id,
    )

    outside = await stack.turn(agent, "what order number format, digits?", user="bob")
    assert outside.scenario is None
    assert outside.matched_rules == []

    entered = await stack.turn(agent, "I want to return an item", user="carol")
    assert entered.scenario is not None and entered.scenario.step_id == ask_step.id
    inside = await stack.turn(
        agent, "what order number format, digits?", user="carol", session_id=entered.session_id
    )
    assert inside.scenario is not None and inside.scenario.step_id == ask_step.id
    assert {m.rule_id for m in inside.matched_rules} == {step_rule.id, scenario_rule.id}


async def test_max_fires_per_session_is_honoured(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    rule = await stack.rule(agent, "hello hi greeting", "Greet the customer.", max_fires_per_session=2)

    fired = [bool((await stack.turn(agent, "hello hi")).matched_rules) for _ in range(3)]
    assert fired == [True, True, False]
    other_session = await stack.turn(agent, "hello hi", user="someone-else")
    assert [m.rule_id for m in other_session.matched_rules] == [rule.id]  # counted per session


async def test_cooldown_turns_are_honoured(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    await stack.rule(agent, "hello hi greeting", "Greet the customer.", cooldown_turns=2)

    fired = [bool((await stack.turn(agent, "hello hi")).matched_rules) for _ in range(5)]
    # fires at turn 1, sleeps through turns 2-3, fires at 4, sleeps at 5
    assert fired == [True, False, False, True, False]


async def test_top_k_ordered_by_priority_then_score(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    low = await stack.rule(agent, "shipping cost", "Low priority.", priority=-5, name="low")
    high = await stack.rule(agent, "shipping cost", "High priority.", priority=50, name="high")
    best = await stack.rule(agent, "what is the shipping cost", "Exact match.", name="best")
    plain = await stack.rule(agent, "shipping cost", "Same priority, lower score.", name="plain")
    await stack.rule(agent, "unrelated opening hours", "Never matches.")
    config = TurnConfig(max_rules=3, rule_candidates=10)

    result = await stack.turn(agent, "what is the shipping cost", config=config)

    # priority first (high beats the better-scoring best), then score among equal priorities
    assert [m.rule_id for m in result.matched_rules] == [high.id, best.id, plain.id]
    scores = {m.rule_id: m.score for m in result.matched_rules}
    assert scores[best.id] > scores[high.id] and scores[best.id] > scores[plain.id]
    assert low.id not in scores  # the lowest priority is the one cut


async def test_rules_of_another_embedding_model_never_match(stack: TurnStack, tenant: UUID):
    agent = await stack.agent(tenant)
    rule = await stack.rule(agent, "hello hi greeting", "Greet.")
    rule.embedding_model = "some-other-model"
    await stack.config_store.save_rule(rule)

    assert (await stack.turn(agent, "hello hi")).matched_rules == []


async def test_exclusive_template_of_a_rule_bypasses_the_llm(
    stack: TurnStack, llm: RecordingLLM, tenant: UUID
):
    agent = await stack.agent(tenant)
    await stack.variable(agent, "store_name", "Focal Shop")
    template = await stack.template(
        agent, "Call {store_name} at {phone}, {customer_name}.", TemplateMode.EXCLUSIVE, name="call us"
    )
    await stack.rule(agent, "speak to a human agent", "Hand over.", attached_template_ids=[template.id])

    result = await stack.turn(agent, "I want to speak to a human agent")

    assert llm.calls == []
    assert result.template_id == template.id
    # agent default for store_name, placeholders without a value stay as written
    assert result.response == "Call Focal Shop at {phone}, {customer_name}."
    assert result.usage.total_tokens == 0
    events = await stack.audit_store.list_events(
        tenant, session_id=result.session_id, event_type="template_used"
    )
    assert [e.event_data["template_id"] for e in events] == [str(template.id)]


async def test_exclusive_template_of_the_current_step_bypasses_the_llm(
    stack: TurnStack, llm: RecordingLLM, tenant: UUID
):
    agent = await stack.agent(tenant)
    ask = await stack.template(agent, "What is your order number?", TemplateMode.EXCLUSIVE)
    await stack.scenario(
        agent, "Return an item", "return an item", [StepSpec("ask", template_ids=[ask.id]), StepSpec("end")]
    )

    result = await stack.turn(agent, "I want to return an item")

    assert (result.response, result.template_id, llm.calls) == ("What is your order number?", ask.id, [])


async def test_suggest_templates_are_offered_to_the_llm_rendered(
    stack: TurnStack, llm: RecordingLLM, tenant: UUID
):
    agent = await stack.agent(tenant)
    await stack.variable(agent, "store_name", "Focal Shop")
    suggest = await stack.template(agent, "Welcome to {store_name}!", TemplateMode.SUGGEST)
    await stack.rule(agent, "hello hi greeting", "Greet.", attached_template_ids=[suggest.id])

    result = await stack.turn(agent, "hello hi")

    assert result.template_id is None
    assert "Suggested responses:\n- Welcome to Focal Shop!" in llm.calls[0]["prompt"]


@pytest.mark.parametrize(
    "error", [ProviderUnavailableError("down"), RateLimitError("slow down", retry_after=3)]
)
async def test_fallback_template_answers_when_the_provider_fails(
    stack: TurnStack, tenant: UUID, error: Exception
):
    stack.llm = RecordingLLM(fail_with=error)  # type: ignore[arg-type]
    agent = await stack.agent(tenant)
    await stack.variable(agent, "store_name", "Focal Shop")
    fallback = await stack.template(agent, "{store_name} is busy, please retry.", TemplateMode.FALLBACK)
    await stack.template(
        agent,
        "Scoped fallback, not agent-level.",
        TemplateMode.FALLBACK,
        scope=Scope.SCENARIO,
        scope_id=agent.id,
        name="aaa-scoped",
    )

    result = await stack.turn(agent, "hello there")

    assert (result.response, result.template_id) == ("Focal Shop is busy, please retry.", fallback.id)
    events = await stack.audit_store.list_events(tenant, session_id=result.session_id)
    kinds = [e.event_type for e in events]
    assert "provider_error" in kinds and "template_used" in kinds
    provider_event = next(e for e in events if e.event_type == "provider_error")
    assert provider_event.event_data["error"] == type(error).__name__
    assert (await stack.session_store.get(tenant, result.session_id)) is not None


async def test_fallback_attached_to_a_matched_rule_wins_over_the_agent_one(stack: TurnStack, tenant: UUID):
    stack.llm = RecordingLLM(fail_with=ProviderUnavailableError("down"))
    agent = await stack.agent(tenant)
    await stack.template(agent, "Agent-level fallback.", TemplateMode.FALLBACK)
    attached = await stack.template(agent, "Tracking is at /track.", TemplateMode.FALLBACK)
    await stack.rule(agent, "where is my order", "Track it.", attached_template_ids=[attached.id])

    result = await stack.turn(agent, "where is my order")

    assert (result.response, result.template_id) == ("Tracking is at /track.", attached.id)


@pytest.mark.parametrize("answer", ["Refunds take\x00 5 days.", "Refunds take \ud83d days."])
async def test_an_answer_no_store_can_keep_is_a_provider_failure_a_fallback_covers(
    stack: TurnStack, tenant: UUID, answer: str
):
    stack.llm = ScriptedLLMProvider([answer])
    agent = await stack.agent(tenant)
    fallback = await stack.template(agent, "Sorry, please ask again.", TemplateMode.FALLBACK)

    result = await stack.turn(agent, "how long do refunds take")

    assert (result.response, result.template_id, result.turn_number) == (
        "Sorry, please ask again.",
        fallback.id,
        1,
    )
    events = await stack.audit_store.list_events(tenant, session_id=result.session_id)
    (provider_event,) = [e for e in events if e.event_type == "provider_error"]
    assert provider_event.event_data["error"] == "InvalidResponseError"
    assert "cannot be stored" in str(provider_event.event_data["message"])


def test_render_template_never_raises():
    assert render_template("Hi {name}, {x} {{y}} {0} {", {"name": "Ann"}, {"x": 3}) == "Hi Ann, 3 {{y}} {0} {"
    assert render_template("{a}", {"a": None}, {"a": "default"}) == "default"
    assert render_template("{a}", {}, {}) == "{a}"
