"""Checks every real LLM provider must pass, written once; each vendor's module runs them with its
own provider (and skips them, like its other tests, without its API key)."""

from __future__ import annotations

from focal.providers.llm.base import LLMProvider, StreamDone, TextDelta
from focal.providers.llm.types import ToolResult, ToolRound, ToolSpec

WEATHER = ToolSpec(
    name="get_weather",
    description="The current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
QUESTION = "What is the weather in Paris? Use the tool."


async def check_tool_call_round_trip(provider: LLMProvider) -> None:
    first = await provider.generate(QUESTION, tools=[WEATHER], max_tokens=200)
    assert first.finish_reason == "tool_use" and first.tool_calls
    call = first.tool_calls[0]
    assert call.name == "get_weather" and "paris" in str(call.arguments).lower()
    round_ = ToolRound(
        text=first.content,
        calls=first.tool_calls,
        results=tuple(ToolResult(call_id=c.id, name=c.name, content="Sunny, 21 C") for c in first.tool_calls),
    )
    second = await provider.generate(QUESTION, tools=[WEATHER], tool_rounds=[round_], max_tokens=200)
    assert "21" in second.content


async def check_stream_deltas_join_to_the_response(provider: LLMProvider) -> None:
    events = [e async for e in provider.stream("Say hello in three words.", max_tokens=30)]
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas and isinstance(events[-1], StreamDone)
    assert events[-1].response.content == "".join(deltas)
    assert events[-1].response.usage.completion_tokens > 0
