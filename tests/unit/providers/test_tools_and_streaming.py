"""Tool calling and streaming through the real ``anthropic`` and ``openai`` SDKs against the fake.

Each behaviour is written once and run for both vendors: what goes on the wire (tool definitions,
the replayed tool rounds) and what comes back (neutral ``ToolCall`` objects, ``TextDelta`` events
then one ``StreamDone``), plus the streaming edge cases a turn relies on: the first delta reaches
the caller before the vendor sent the last one, a consumer that stops reading closes the vendor
connection, an error before the first event is retried, and one after it ends the stream with a
Focal error.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from pydantic import SecretStr

from focal.errors import ProviderInputError, ProviderUnavailableError, RateLimitError
from focal.providers.llm.anthropic import AnthropicProvider
from focal.providers.llm.base import LLMProvider, StreamDone, TextDelta
from focal.providers.llm.openai import OpenAIProvider
from focal.providers.llm.types import ToolCall, ToolResult, ToolRound, ToolSpec
from tests.unit.providers.fake_vendor import (
    FAST_RETRIES,
    FakeVendor,
    Reply,
    anthropic_error,
    anthropic_stream,
    anthropic_tool_calls,
    openai_error,
    openai_stream,
    openai_tool_calls,
)

LOOKUP = ToolSpec(
    name="lookup_order",
    description="Find an order by its number.",
    parameters={
        "type": "object",
        "properties": {"order_id": {"type": "string", "pattern": "^FD-[0-9]+$"}},
        "required": ["order_id"],
    },
)


@dataclass(frozen=True)
class Vendor:
    """How one vendor's replies are shaped, so each test is written once for both."""

    name: str
    build: Callable[[FakeVendor], LLMProvider]
    tool_calls: Callable[..., dict[str, Any]]
    stream: Callable[..., list[str]]
    rate_limited: Reply
    stream_error: dict[str, Any]


VENDORS = [
    Vendor(
        name="anthropic",
        build=lambda fake: AnthropicProvider(
            api_key=SecretStr("sk-ant-test"),
            model="claude-haiku-4-5",
            base_url=fake.anthropic_url,
            timeout_seconds=5,
            retry_policy=FAST_RETRIES,
        ),
        tool_calls=anthropic_tool_calls,
        stream=anthropic_stream,
        rate_limited=anthropic_error(429, "rate_limit_error", "slow down", {"retry-after-ms": "1"}),
        stream_error={"type": "overloaded_error", "message": "Overloaded"},
    ),
    Vendor(
        name="openai",
        build=lambda fake: OpenAIProvider(
            api_key=SecretStr("sk-test"),
            model="gpt-4o-mini",
            base_url=fake.openai_url,
            timeout_seconds=5,
            retry_policy=FAST_RETRIES,
        ),
        tool_calls=openai_tool_calls,
        stream=openai_stream,
        rate_limited=openai_error(429, "rate_limit_exceeded", "slow down", {"retry-after-ms": "1"}),
        stream_error={"message": "The server had an error", "type": "server_error"},
    ),
]


@pytest.fixture(params=VENDORS, ids=[v.name for v in VENDORS])
def shape(request: pytest.FixtureRequest) -> Vendor:
    vendor: Vendor = request.param
    return vendor


@pytest_asyncio.fixture(loop_scope="session")
async def provider(shape: Vendor, vendor: FakeVendor) -> AsyncIterator[LLMProvider]:
    instance = shape.build(vendor)
    yield instance
    await instance.aclose()


def _sent_tool_names(shape: Vendor, body: dict[str, Any]) -> list[str]:
    if shape.name == "anthropic":
        return [tool["name"] for tool in body["tools"]]
    return [tool["function"]["name"] for tool in body["tools"]]


async def test_tool_calls_come_back_as_neutral_calls(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    vendor.enqueue(
        Reply(
            body=shape.tool_calls([("c1", "lookup_order", {"order_id": "FD-1"}), ("c2", "lookup_order", {})])
        )
    )

    response = await provider.generate("Where is FD-1?", tools=[LOOKUP])

    assert response.finish_reason == "tool_use"
    assert response.tool_calls == (
        ToolCall(id="c1", name="lookup_order", arguments={"order_id": "FD-1"}),
        ToolCall(id="c2", name="lookup_order", arguments={}),
    )
    body = vendor.requests[-1].body
    assert _sent_tool_names(shape, body) == ["lookup_order"]
    expected_choice = {"type": "auto"} if shape.name == "anthropic" else "auto"
    assert body["tool_choice"] == expected_choice


async def test_openai_arguments_that_are_not_json_stay_text(vendor: FakeVendor) -> None:
    provider = VENDORS[1].build(vendor)
    vendor.enqueue(Reply(body=openai_tool_calls([("c1", "lookup_order", "{not json")])))
    try:
        response = await provider.generate("Where is FD-1?", tools=[LOOKUP])
    finally:
        await provider.aclose()
    assert response.tool_calls[0].arguments == "{not json"


async def test_tool_rounds_are_replayed_in_the_vendor_shape(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    round_ = ToolRound(
        text="Let me look.",
        calls=(ToolCall(id="c1", name="lookup_order", arguments={"order_id": "FD-1"}),),
        results=(ToolResult(call_id="c1", name="lookup_order", content="timed out", is_error=True),),
    )
    await provider.generate("Where is FD-1?", tools=[LOOKUP], tool_rounds=[round_], tool_choice="none")

    body = vendor.requests[-1].body
    if shape.name == "anthropic":
        assert body["tool_choice"] == {"type": "none"}
        assert body["messages"][1:] == [
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me look."},
                    {"type": "tool_use", "id": "c1", "name": "lookup_order", "input": {"order_id": "FD-1"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "c1", "content": "timed out", "is_error": True}
                ],
            },
        ]
    else:
        assert body["tool_choice"] == "none"
        assert body["messages"][1:] == [
            {
                "role": "assistant",
                "content": "Let me look.",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "lookup_order", "arguments": '{"order_id": "FD-1"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "ERROR: timed out"},
        ]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tools": [ToolSpec(name="bad name", parameters={"type": "object"})]},
        {"tools": [LOOKUP, LOOKUP]},
        {"tools": [ToolSpec(name="t", parameters={"type": "string"})]},
        {"tool_rounds": [ToolRound(calls=(ToolCall(id="a", name="t"),), results=())], "tools": [LOOKUP]},
        {"tool_rounds": [ToolRound(calls=(ToolCall(id="a", name="t"),), results=())]},
        {"tool_choice": "required"},
    ],
)
async def test_bad_tool_arguments_are_refused_before_any_request(
    vendor: FakeVendor, provider: LLMProvider, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ProviderInputError):
        await provider.generate("Hi", **kwargs)
    with pytest.raises(ProviderInputError):
        async for _ in provider.stream("Hi", **kwargs):
            pass
    assert vendor.requests == []


async def test_stream_yields_deltas_then_the_full_response(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    vendor.enqueue(Reply(stream=shape.stream(["Your order ", "FD-1 ", "is on its way."])))

    events = [event async for event in provider.stream("Where is FD-1?")]

    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert deltas == ["Your order ", "FD-1 ", "is on its way."]
    assert isinstance(events[-1], StreamDone) and sum(isinstance(e, StreamDone) for e in events) == 1
    response = events[-1].response
    assert response.content == "".join(deltas)
    assert response.finish_reason == "stop"
    assert response.usage.total_tokens > 0
    assert vendor.requests[-1].body["stream"] is True


async def test_stream_reports_tool_calls_in_the_final_response(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    vendor.enqueue(Reply(stream=shape.stream([], tool_calls=[("c1", "lookup_order", {"order_id": "FD-7"})])))

    events = [event async for event in provider.stream("Where is FD-7?", tools=[LOOKUP])]

    assert not [e for e in events if isinstance(e, TextDelta)]
    done = events[-1]
    assert isinstance(done, StreamDone)
    assert done.response.finish_reason == "tool_use"
    assert done.response.tool_calls == (
        ToolCall(id="c1", name="lookup_order", arguments={"order_id": "FD-7"}),
    )


async def test_first_delta_arrives_before_the_last_chunk_is_sent(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    vendor.enqueue(Reply(stream=shape.stream(["one ", "two ", "three"]), chunk_delay=0.05))
    loop = asyncio.get_running_loop()
    first_delta_at = None
    async for event in provider.stream("Count"):
        if isinstance(event, TextDelta) and first_delta_at is None:
            # The fake's clock is time.monotonic(), like the loop's default clock.
            first_delta_at = loop.time()
    record = vendor.streams[-1]
    assert record.completed
    assert first_delta_at is not None and first_delta_at < record.sent_at[-1]


async def test_a_consumer_that_stops_reading_closes_the_vendor_stream(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    chunks = [f"word{i} " for i in range(40)]
    vendor.enqueue(Reply(stream=shape.stream(chunks), chunk_delay=0.02))

    events = provider.stream("Talk a lot")
    first = await anext(events)
    assert isinstance(first, TextDelta)
    await events.aclose()  # what a cancelled turn does

    record = vendor.streams[-1]
    for _ in range(200):  # the server notices the closed connection at its next write
        if record.cancelled:
            break
        await asyncio.sleep(0.01)
    assert record.cancelled and not record.completed
    assert len(record.sent_at) < len(chunks)


async def test_an_error_before_the_first_event_is_retried(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    vendor.enqueue(shape.rate_limited, Reply(stream=shape.stream(["fine"])))

    events = [event async for event in provider.stream("Hi")]

    assert [e.text for e in events if isinstance(e, TextDelta)] == ["fine"]
    assert len(vendor.requests) == 2


async def test_a_rate_limit_that_persists_is_raised(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    vendor.enqueue(shape.rate_limited, shape.rate_limited, shape.rate_limited)
    with pytest.raises(RateLimitError):
        async for _ in provider.stream("Hi"):
            pass


async def test_an_error_event_mid_stream_is_provider_unavailable(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    vendor.enqueue(Reply(stream=shape.stream(["Half an ", "answer"], error=shape.stream_error)))
    seen: list[str] = []
    with pytest.raises(ProviderUnavailableError):
        async for event in provider.stream("Hi"):
            if isinstance(event, TextDelta):
                seen.append(event.text)
    assert seen == ["Half an ", "answer"]
    assert len(vendor.requests) == 1  # text was handed out: never re-sent


async def test_a_connection_cut_mid_stream_is_provider_unavailable(
    shape: Vendor, vendor: FakeVendor, provider: LLMProvider
) -> None:
    vendor.enqueue(Reply(stream=shape.stream(["Half an ", "answer", " and more"]), abort_after=3))
    with pytest.raises(ProviderUnavailableError):
        async for _ in provider.stream("Hi"):
            pass
    assert len(vendor.requests) == 1
