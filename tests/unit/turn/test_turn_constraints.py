"""Hard constraints in the turn pipeline, with a scripted model: always on, checked on every
candidate answer, regenerated, replaced by a FALLBACK template or the safe message."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from focal.alignment.models import Agent, Rule, Scope, TemplateMode
from focal.alignment.turn import TurnConfig, TurnResult
from focal.alignment.turn.prompt import CONSTRAINTS_HEADER, CORRECTIONS_HEADER
from focal.audit.models import AuditEvent, CheckedConstraint, TurnRecord
from focal.errors import ConfigurationError, ProviderUnavailableError
from focal.providers.llm.scripted import ScriptedLLMProvider, ScriptedReply
from tests.unit.turn.support import StepSpec, TurnStack

PROMISE = "You get a full refund of 100 EUR today."
COMPLIANT = "We will inspect the item first, then tell you what we can do."
NO_PROMISE = "Never promise a refund before the item is inspected."


@pytest.fixture
def llm() -> ScriptedLLMProvider:
    return ScriptedLLMProvider()


@pytest.fixture
def stack(llm: ScriptedLLMProvider) -> TurnStack:
    return TurnStack(llm=llm)


async def no_refund_promises(stack: TurnStack, agent: Agent, **fields: Any) -> Rule:
    """A GLOBAL hard constraint whose condition no test message resembles: it applies unmatched."""
    values: dict[str, Any] = {
        "is_hard_constraint": True,
        "forbid_patterns": [r"(?i)\bfull refund\b"],
        "name": "no refund promises",
    }
    values.update(fields)
    return await stack.rule(agent, "warranty legal terms paragraph", NO_PROMISE, **values)


async def record_and_events(
    stack: TurnStack, tenant: UUID, result: TurnResult
) -> tuple[TurnRecord, list[AuditEvent]]:
    record = await stack.audit_store.get_turn(tenant, result.turn_id)
    assert record is not None
    return record, await stack.audit_store.list_events(tenant, session_id=result.session_id)


def kinds(events: list[AuditEvent]) -> list[str]:
    return [e.event_type for e in events if e.event_type != "rule_matched"]


async def test_violating_then_compliant_answer_returns_the_second_one(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    constraint = await no_refund_promises(stack, agent)
    llm.enqueue(PROMISE, COMPLIANT)

    result = await stack.turn(agent, "My blender broke, what now?")

    assert result.response == COMPLIANT
    assert result.matched_rules == []  # the constraint applied without matching
    assert [call.operation for call in llm.calls] == ["generate", "generate"]
    first, second = (call.prompt for call in llm.calls)
    assert f"{CONSTRAINTS_HEADER}\n- {NO_PROMISE}" in first and CORRECTIONS_HEADER not in first
    assert f"{CORRECTIONS_HEADER}\n- {NO_PROMISE} (your answer matches the forbidden pattern" in second
    assert result.usage.total_tokens == 30  # both calls are paid for

    record, events = await record_and_events(stack, tenant, result)
    assert record.assistant_response == COMPLIANT
    assert record.constraints_checked == [
        CheckedConstraint(rule_id=constraint.id, name="no refund promises", patterns=1, judged=False)
    ]
    assert [(f.rule_id, f.attempt, f.source) for f in record.constraints_failed] == [
        (constraint.id, 1, "llm")
    ]
    assert record.context_extracted["constraint_outcome"] == "regenerated"
    assert kinds(events) == ["constraint_violation", "response_regenerated"]
    violation = events[0].event_data
    assert violation["rule_id"] == str(constraint.id) and "full refund" in violation["reasons"][0]
    assert events[1].event_data["violated"] == [str(constraint.id)]


async def test_violating_twice_falls_back_to_the_fallback_template(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    constraint = await no_refund_promises(stack, agent)
    fallback = await stack.template(agent, "A colleague will get back to you.", TemplateMode.FALLBACK)
    llm.enqueue(PROMISE, "Sure, a FULL REFUND it is.")

    result = await stack.turn(agent, "My blender broke, what now?")

    assert (result.response, result.template_id) == ("A colleague will get back to you.", fallback.id)
    assert len(llm.calls) == 2 and llm.remaining == 0
    record, events = await record_and_events(stack, tenant, result)
    assert [(f.attempt, f.source) for f in record.constraints_failed] == [(1, "llm"), (2, "llm")]
    assert record.context_extracted["constraint_outcome"] == "fallback_template"
    assert kinds(events) == [
        "constraint_violation",
        "response_regenerated",
        "constraint_violation",
        "template_used",
    ]
    assert record.constraints_failed[0].rule_id == constraint.id


async def test_without_a_compliant_fallback_the_safe_message_answers(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent)
    await stack.template(agent, "Fine, a full refund then.", TemplateMode.FALLBACK)  # breaks it too
    llm.enqueue(PROMISE, PROMISE)
    config = TurnConfig(constraint_safe_message="Let me check that with a colleague.")

    result = await stack.turn(agent, "My blender broke, what now?", config=config)

    assert (result.response, result.template_id) == ("Let me check that with a colleague.", None)
    record, events = await record_and_events(stack, tenant, result)
    assert [f.source for f in record.constraints_failed] == ["llm", "llm", "fallback_template"]
    assert record.context_extracted["constraint_outcome"] == "safe_message"
    assert kinds(events)[-1] == "safe_message_used"
    assert "template_used" not in kinds(events)


async def test_constraint_retries_bound_the_regenerations(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent)
    llm.enqueue(PROMISE, PROMISE, PROMISE, COMPLIANT)

    none = await stack.turn(agent, "My blender broke", config=TurnConfig(constraint_retries=0), user="a")
    assert len(llm.calls) == 1 and none.response == TurnConfig().constraint_safe_message

    two = await stack.turn(agent, "My blender broke", config=TurnConfig(constraint_retries=2), user="b")
    assert len(llm.calls) == 4 and two.response == COMPLIANT


async def test_a_violating_exclusive_template_is_never_sent(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    """A template's variables are rendered at turn time, where the write-time check cannot look."""
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent)
    await stack.variable(agent, "offer", "a full refund")
    exclusive = await stack.template(agent, "We offer {offer}.", TemplateMode.EXCLUSIVE)
    await stack.rule(agent, "broken blender help", "Answer.", attached_template_ids=[exclusive.id])
    fallback = await stack.template(agent, "A colleague will call you.", TemplateMode.FALLBACK)

    result = await stack.turn(agent, "broken blender help")

    assert (result.response, result.template_id) == ("A colleague will call you.", fallback.id)
    assert llm.calls == []  # an EXCLUSIVE turn does not fall to the LLM
    record, _ = await record_and_events(stack, tenant, result)
    assert [f.source for f in record.constraints_failed] == ["template"]


async def test_a_compliant_exclusive_template_is_checked_and_sent(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent)
    exclusive = await stack.template(agent, "We will inspect it.", TemplateMode.EXCLUSIVE)
    await stack.rule(agent, "broken blender help", "Answer.", attached_template_ids=[exclusive.id])

    result = await stack.turn(agent, "broken blender help")

    assert (result.response, result.template_id, llm.calls) == ("We will inspect it.", exclusive.id, [])
    record, _ = await record_and_events(stack, tenant, result)
    assert record.context_extracted["constraint_outcome"] == "passed"
    assert len(record.constraints_checked) == 1 and record.constraints_failed == []


async def test_require_patterns_and_disabled_constraints(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    signed = await stack.rule(
        agent,
        "signature policy",
        "End every answer with the shop's name.",
        is_hard_constraint=True,
        require_patterns=[r"Focal Shop\.?$"],
    )
    await no_refund_promises(stack, agent, enabled=False)  # disabled: never applies
    llm.enqueue("A full refund, sure.", "A full refund, sure. Focal Shop.")

    result = await stack.turn(agent, "My blender broke")

    assert result.response == "A full refund, sure. Focal Shop."
    record, _ = await record_and_events(stack, tenant, result)
    assert [c.rule_id for c in record.constraints_checked] == [signed.id]
    assert "does not match the required pattern" in record.constraints_failed[0].reasons[0]


async def test_scoped_constraints_apply_only_inside_their_scope(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    scenario = await stack.scenario(
        agent, "Return an item", "return an item", [StepSpec("ask"), StepSpec("done", is_terminal=True)]
    )
    await no_refund_promises(stack, agent, scope=Scope.SCENARIO, scope_id=scenario.id)
    llm.enqueue(PROMISE, PROMISE, COMPLIANT)

    outside = await stack.turn(agent, "hello there", user="outside")
    assert outside.response == PROMISE and outside.scenario is None  # no constraint applies here

    inside = await stack.turn(agent, "I want to return an item", user="inside")
    assert inside.scenario is not None and inside.response == COMPLIANT
    assert len(llm.calls) == 3


async def test_judge_verdicts_trigger_regeneration(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    judged = await no_refund_promises(
        stack, agent, forbid_patterns=[], judge_instructions="Fail any answer that promises money back."
    )
    llm.enqueue(
        "We'll send the money right back to you.",
        ScriptedReply(
            structured={"verdicts": [{"number": 1, "violated": True, "explanation": "money back"}]}
        ),
        COMPLIANT,
        ScriptedReply(structured={"verdicts": [{"number": 1, "violated": False, "explanation": "ok"}]}),
    )

    result = await stack.turn(agent, "My blender broke")

    assert result.response == COMPLIANT
    operations = [call.operation for call in llm.calls]
    assert operations == ["generate", "generate_structured", "generate", "generate_structured"]
    judge_call = llm.calls[1]
    assert "Fail any answer that promises money back." in judge_call.prompt
    assert "We'll send the money right back to you." in judge_call.prompt
    assert "the judge found: money back" in llm.calls[2].prompt
    assert result.usage.total_tokens == 60  # two answers and two verdicts
    record, events = await record_and_events(stack, tenant, result)
    assert record.constraints_checked[0] == CheckedConstraint(
        rule_id=judged.id, name="no refund promises", patterns=0, judged=True
    )
    assert kinds(events).count("constraint_judged") == 2


@pytest.mark.parametrize(
    "verdict",
    [
        ScriptedReply(error=ProviderUnavailableError("judge down", provider="scripted")),
        ScriptedReply(structured={"verdicts": []}),  # no verdict for the constraint
        # an explanation no store could keep in the audit trail: not a reason to refuse the turn
        ScriptedReply(structured={"verdicts": [{"number": 1, "violated": True, "explanation": "a\x00b"}]}),
    ],
)
async def test_an_answer_the_judge_cannot_judge_is_not_sent(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID, verdict: ScriptedReply
) -> None:
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent, judge_instructions="No money promises.")
    fallback = await stack.template(agent, "A colleague will call you.", TemplateMode.FALLBACK)
    llm.enqueue(COMPLIANT, verdict)

    result = await stack.turn(agent, "My blender broke")

    assert result.template_id == fallback.id  # fails closed, and asking again cannot help
    assert [call.operation for call in llm.calls] == ["generate", "generate_structured"]
    record, _ = await record_and_events(stack, tenant, result)
    (failure,) = record.constraints_failed
    assert "judge" in failure.reasons[0]


async def test_a_judge_that_answers_both_ways_for_one_constraint_fails_closed(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    """Two verdicts for one number, "violated" then "kept": the answer is not sent (the last
    verdict used to win, so the order of the judge's list decided)."""
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent, forbid_patterns=[], judge_instructions="No money promises.")
    fallback = await stack.template(agent, "A colleague will call you.", TemplateMode.FALLBACK)
    both_ways = {
        "verdicts": [
            {"number": 1, "violated": True, "explanation": "promises money"},
            {"number": 1, "violated": False, "explanation": "fine"},
        ]
    }
    llm.enqueue("We'll send the money right back.", ScriptedReply(structured=both_ways))
    llm.enqueue("We'll send the money right back.", ScriptedReply(structured=both_ways))

    result = await stack.turn(agent, "My blender broke")

    assert result.template_id == fallback.id
    record, _ = await record_and_events(stack, tenant, result)
    assert record.constraints_failed and "promises money" in record.constraints_failed[0].reasons[0]


async def test_judge_setting_off_checks_patterns_only(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent, judge_instructions="No money promises.")
    llm.enqueue(COMPLIANT)

    result = await stack.turn(agent, "My blender broke", config=TurnConfig(constraint_judge=False))

    assert result.response == COMPLIANT and len(llm.calls) == 1
    record, _ = await record_and_events(stack, tenant, result)
    assert record.constraints_checked[0].judged is False


async def test_a_provider_failure_while_regenerating_falls_back(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent)
    fallback = await stack.template(agent, "A colleague will call you.", TemplateMode.FALLBACK)
    llm.enqueue(PROMISE, ScriptedReply(error=ProviderUnavailableError("down", provider="scripted")))

    result = await stack.turn(agent, "My blender broke")

    assert result.template_id == fallback.id
    _, events = await record_and_events(stack, tenant, result)
    assert "provider_error" in kinds(events) and "response_regenerated" in kinds(events)


async def test_a_violating_fallback_after_a_provider_failure_gives_the_safe_message(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent)
    await stack.template(agent, "Down, but a full refund is yours.", TemplateMode.FALLBACK)
    llm.enqueue(ScriptedReply(error=ProviderUnavailableError("down", provider="scripted")))

    result = await stack.turn(agent, "My blender broke")

    assert result.response == TurnConfig().constraint_safe_message
    _, events = await record_and_events(stack, tenant, result)
    assert {"provider_error", "constraint_violation", "safe_message_used"} <= set(kinds(events))


async def test_a_safe_message_that_breaks_a_constraint_refuses_the_turn_and_writes_nothing(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    await no_refund_promises(stack, agent)
    llm.enqueue("Hi!")
    await stack.turn(agent, "hello", user="alice")
    before = await stack.stored_state(agent, ["alice"])
    llm.enqueue(PROMISE, PROMISE)
    config = TurnConfig(constraint_safe_message="Here is a full refund.")

    with pytest.raises(ConfigurationError, match="FOCAL_TURN__CONSTRAINT_SAFE_MESSAGE"):
        await stack.turn(agent, "My blender broke", config=config, user="alice")

    assert await stack.stored_state(agent, ["alice"]) == before


async def test_without_constraints_nothing_changes_in_the_record(
    stack: TurnStack, llm: ScriptedLLMProvider, tenant: UUID
) -> None:
    agent = await stack.agent(tenant)
    llm.enqueue(PROMISE)

    result = await stack.turn(agent, "My blender broke")

    assert result.response == PROMISE
    record, events = await record_and_events(stack, tenant, result)
    assert (record.constraints_checked, record.constraints_failed) == ([], [])
    assert "constraint_outcome" not in record.context_extracted
    assert kinds(events) == []
