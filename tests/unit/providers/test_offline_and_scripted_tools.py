"""Tool calling and streaming of the offline provider (deterministic) and the scripted one (tests)."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import BaseModel

from focal.errors import ProviderInputError, ProviderUnavailableError
from focal.providers.llm.base import StreamDone, TextDelta
from focal.providers.llm.offline import OfflineLLMProvider
from focal.providers.llm.scripted import ScriptedLLMProvider, ScriptedReply, ScriptExhaustedError
from focal.providers.llm.types import ToolCall, ToolResult, ToolRound, ToolSpec

LOOKUP = ToolSpec(
    name="lookup_order",
    description="Find an order.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^FD-[0-9]+$"}},
        "required": ["order_id"],
    },
)
LABEL = ToolSpec(
    name="create_return_label",
    parameters={
        "type": "object",
        "properties": {
            "order_id": {"type": "string", "pattern": "^FD-[0-9]+$"},
            "reason": {"type": "string", "enum": ["damaged", "wrong item", "changed mind"]},
            "quantity": {"type": "integer"},
        },
        "required": ["order_id", "reason"],
    },
)
STATUS = ToolSpec(name="shop_status")  # no parameters: always callable


def prompt(message: str, known: dict[str, str] | None = None) -> str:
    lines = ["Rules to follow:", "- Help with returns.", ""]
    if known:
        lines += ["Known values:", *(f"- {k}: {v}" for k, v in known.items()), ""]
    return "\n".join([*lines, f"Customer: {message}"])


async def test_offline_calls_a_tool_whose_arguments_the_message_fills() -> None:
    response = await OfflineLLMProvider().generate(prompt("Where is order FD-10234?"), tools=[LOOKUP, LABEL])

    assert response.finish_reason == "tool_use"
    assert response.tool_calls == (
        ToolCall(id="offline_1_1", name="lookup_order", arguments={"order_id": "FD-10234"}),
    )


async def test_offline_fills_from_known_values_and_enums_and_coerces_types() -> None:
    message = prompt("It arrived damaged", known={"order_id": "FD-7", "quantity": "2"})
    response = await OfflineLLMProvider().generate(message, tools=[LABEL])

    assert response.tool_calls == (
        ToolCall(
            id="offline_1_1",
            name="create_return_label",
            arguments={"order_id": "FD-7", "reason": "damaged", "quantity": 2},
        ),
    )


async def test_offline_answers_in_text_when_no_tool_can_be_filled() -> None:
    response = await OfflineLLMProvider().generate(prompt("Hello there"), tools=[LOOKUP, LABEL])
    assert response.tool_calls == ()
    assert response.finish_reason == "stop"
    assert response.content == "Help with returns."


async def test_offline_calls_each_tool_once_then_answers_and_reports_failures() -> None:
    provider = OfflineLLMProvider()
    first = await provider.generate(prompt("FD-1 please"), tools=[LOOKUP, STATUS])
    assert [call.name for call in first.tool_calls] == ["lookup_order", "shop_status"]
    results = (
        ToolResult(call_id=first.tool_calls[0].id, name="lookup_order", content="timed out", is_error=True),
        ToolResult(call_id=first.tool_calls[1].id, name="shop_status", content='{"open": true}'),
    )
    round_ = ToolRound(calls=first.tool_calls, results=results)

    second = await provider.generate(prompt("FD-1 please"), tools=[LOOKUP, STATUS], tool_rounds=[round_])

    assert second.tool_calls == ()
    assert second.content == "Help with returns. I could not complete lookup_order: timed out."


async def test_offline_never_calls_tools_with_tool_choice_none() -> None:
    response = await OfflineLLMProvider().generate(prompt("FD-1"), tools=[LOOKUP], tool_choice="none")
    assert response.tool_calls == ()


async def test_offline_streams_word_by_word() -> None:
    events = [e async for e in OfflineLLMProvider().stream(prompt("Hi"))]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["Help ", "with ", "returns."]
    assert isinstance(events[-1], StreamDone)
    assert events[-1].response.content == "".join(deltas)


async def test_scripted_replies_in_order_and_records_the_calls() -> None:
    call = ToolCall(id="c1", name="lookup_order", arguments={"order_id": "FD-1"})
    provider = ScriptedLLMProvider(["first", ScriptedReply(tool_calls=[call])])

    one = await provider.generate("a", system_prompt="sys")
    two = await provider.generate("b", tools=[LOOKUP])

    assert (one.content, one.finish_reason) == ("first", "stop")
    assert (two.tool_calls, two.finish_reason) == ((call,), "tool_use")
    assert [(c.operation, c.prompt, c.system_prompt) for c in provider.calls] == [
        ("generate", "a", "sys"),
        ("generate", "b", None),
    ]
    assert provider.calls[1].tools == (LOOKUP,)
    with pytest.raises(ScriptExhaustedError):
        await provider.generate("c")


async def test_scripted_validates_arguments_like_a_vendor() -> None:
    provider = ScriptedLLMProvider(["never used"])
    with pytest.raises(ProviderInputError):
        await provider.generate("  ")
    assert provider.remaining == 1 and provider.calls == []


async def test_scripted_raises_its_error() -> None:
    provider = ScriptedLLMProvider([ScriptedReply(error=ProviderUnavailableError("down"))])
    with pytest.raises(ProviderUnavailableError):
        await provider.generate("a")


async def test_scripted_stream_chunks_hold_and_failure_after_chunks() -> None:
    hold = asyncio.Event()
    provider = ScriptedLLMProvider(
        [
            ScriptedReply(text="one two", chunks=["one", " two"], hold=hold),
            ScriptedReply(text="a b c", fail_after_chunks=2, error=ProviderUnavailableError("cut")),
        ]
    )
    events = provider.stream("x")
    assert await anext(events) == TextDelta(text="one")
    pending = asyncio.ensure_future(anext(events))
    await asyncio.sleep(0)
    assert not pending.done()  # held after the first chunk
    hold.set()
    assert await pending == TextDelta(text=" two")
    done = await anext(events)
    assert isinstance(done, StreamDone) and done.response.content == "one two"

    seen = []
    with pytest.raises(ProviderUnavailableError):
        async for event in provider.stream("y"):
            seen.append(event)
    assert seen == [TextDelta(text="a "), TextDelta(text="b ")]


class Verdict(BaseModel):
    compliant: bool
    reason: str


async def test_scripted_structured() -> None:
    provider = ScriptedLLMProvider(
        [ScriptedReply(structured={"compliant": False, "reason": "refund promised"})]
    )
    verdict, response = await provider.generate_structured("judge this", Verdict)
    assert verdict == Verdict(compliant=False, reason="refund promised")
    assert provider.calls[0].schema is Verdict
    assert response.content == verdict.model_dump_json()
