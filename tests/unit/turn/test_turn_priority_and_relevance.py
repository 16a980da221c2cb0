"""Rule priority that means something (priority before score, hard constraints first and never
counted against max_rules) and the optional relevance check of matched rules."""

from __future__ import annotations

from uuid import UUID

import pytest
from structlog.testing import capture_logs

from focal.alignment.models import Agent, Rule
from focal.alignment.turn import TurnConfig
from focal.alignment.turn.relevance import RelevanceVerdict
from focal.errors import ProviderUnavailableError
from focal.providers.llm.scripted import ScriptedLLMProvider, ScriptedReply
from tests.unit.turn.support import TurnStack

MESSAGE = "how do I track my parcel delivery order status"
FAQ_CONDITIONS = [
    "track my parcel delivery order status",
    "how do I track my parcel delivery",
    "track parcel delivery order status",
    "how do I track my order status",
    "track my delivery order status",
]


@pytest.fixture
def llm() -> ScriptedLLMProvider:
    return ScriptedLLMProvider()


@pytest.fixture
def stack(llm: ScriptedLLMProvider) -> TurnStack:
    return TurnStack(llm=llm)


async def test_a_matched_priority_100_rule_is_not_crowded_out_by_better_scoring_faq_rules(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    faqs = [await stack.rule(agent, c, f"FAQ {n}.", name=f"faq {n}") for n, c in enumerate(FAQ_CONDITIONS)]
    urgent = await stack.rule(
        agent, "order status question", "Check for delivery incidents first.", priority=100
    )
    llm.enqueue("Here is your tracking link.")

    result = await stack.turn(agent, MESSAGE, config=TurnConfig(max_rules=5))

    scores = {m.rule_id: m.score for m in result.matched_rules}
    assert result.matched_rules[0].rule_id == urgent.id
    assert len(result.matched_rules) == 5  # the priority rule plus the four best FAQ rules
    assert all(scores[urgent.id] < score for score in scores.values() if score != scores[urgent.id])
    dropped = [faq for faq in faqs if faq.id not in scores]
    assert len(dropped) == 1  # the lowest-scoring FAQ rule made room
    assert "- Check for delivery incidents first." in llm.calls[0].prompt


async def test_matched_hard_constraints_come_first_and_do_not_count_against_max_rules(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    for n, condition in enumerate(FAQ_CONDITIONS):
        await stack.rule(agent, condition, f"FAQ {n}.", name=f"faq {n}")
    constraint = await stack.rule(
        agent, "order status question", "Never guess a delivery date.", is_hard_constraint=True, priority=-50
    )
    llm.enqueue("Here is your tracking link.")

    result = await stack.turn(agent, MESSAGE, config=TurnConfig(max_rules=5))

    assert result.matched_rules[0].rule_id == constraint.id
    assert len(result.matched_rules) == 6  # five FAQ rules and the constraint on top
    prompt = llm.calls[0].prompt
    assert "Hard constraints (never break these):\n- Never guess a delivery date." in prompt
    assert "- Never guess a delivery date." not in prompt.split("Hard constraints")[0]  # not a rule line


REFUND_NEGATED = "I do NOT want a refund, where is my parcel?"


async def refund_and_parcel(stack: TurnStack, tenant: UUID) -> tuple[Agent, Rule, Rule]:
    agent = await stack.agent(tenant)
    refund = await stack.rule(
        agent, "I want a refund for my parcel", "Start the refund process.", priority=10
    )
    parcel = await stack.rule(agent, "where is my parcel", "Give the tracking link.")
    return agent, refund, parcel


async def test_relevance_check_drops_a_negated_match_and_the_next_rule_takes_its_place(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent, refund, parcel = await refund_and_parcel(stack, tenant)
    guard = await stack.rule(
        agent, "refund parcel", "Never promise money.", is_hard_constraint=True, name="no promises"
    )
    llm.enqueue(
        ScriptedReply(
            structured={"rules": [{"number": 1, "applies": False}, {"number": 2, "applies": True}]},
            usage=ScriptedReply().usage,
        ),
        "Here is your tracking link.",
    )
    config = TurnConfig(max_rules=1, relevance_check=True)

    result = await stack.turn(agent, REFUND_NEGATED, config=config)

    check, answer = llm.calls
    assert (check.operation, check.schema) == ("generate_structured", RelevanceVerdict)
    assert "1. I want a refund for my parcel\n2. where is my parcel" in check.prompt  # priority order
    assert "refund parcel" not in check.prompt  # hard constraints are not asked about
    assert f"Customer: {REFUND_NEGATED}" in check.prompt
    assert [m.rule_id for m in result.matched_rules] == [guard.id, parcel.id]
    assert "Start the refund process." not in answer.prompt
    assert "- Give the tracking link." in answer.prompt
    assert result.usage.total_tokens == 30  # the check's tokens count too
    session = await stack.session_store.get(tenant, result.session_id)
    assert session is not None and str(refund.id) not in session.rule_fires
    (event,) = await stack.audit_store.list_events(
        tenant, session_id=result.session_id, event_type="relevance_checked"
    )
    assert event.event_data["dropped"] == [{"rule_id": str(refund.id), "name": refund.name}]
    assert event.event_data["asked"] == [str(refund.id), str(parcel.id)]


async def test_without_the_relevance_check_the_negated_match_fires(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent, refund, _ = await refund_and_parcel(stack, tenant)
    llm.enqueue("Refund started.")

    result = await stack.turn(agent, REFUND_NEGATED, config=TurnConfig(max_rules=1))

    assert [m.rule_id for m in result.matched_rules] == [refund.id]
    assert [call.operation for call in llm.calls] == ["generate"]  # off by default: no extra call


async def test_a_failed_relevance_check_keeps_the_candidates_and_says_so(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent, refund, _ = await refund_and_parcel(stack, tenant)
    llm.enqueue(ScriptedReply(error=ProviderUnavailableError("overloaded", provider="scripted")), "Ok.")

    with capture_logs() as logs:
        result = await stack.turn(agent, REFUND_NEGATED, config=TurnConfig(max_rules=1, relevance_check=True))

    assert [m.rule_id for m in result.matched_rules] == [refund.id]
    assert any(log["event"] == "relevance_check_failed" for log in logs)
    (event,) = await stack.audit_store.list_events(
        tenant, session_id=result.session_id, event_type="relevance_checked"
    )
    assert event.event_data["dropped"] == [] and "overloaded" in str(event.event_data["error"])


async def test_relevance_check_is_not_called_when_nothing_matched(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent, _, _ = await refund_and_parcel(stack, tenant)
    llm.enqueue("Hello!")

    result = await stack.turn(agent, "good morning", config=TurnConfig(relevance_check=True))

    assert result.matched_rules == [] and [call.operation for call in llm.calls] == ["generate"]
