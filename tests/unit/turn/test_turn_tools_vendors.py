"""The tool loop of a whole turn through the real Anthropic and OpenAI SDKs, against the loopback
vendor fakes, calling a real loopback tool server: tool_use / tool_calls out, the results back in
the vendor's shape, parallel calls in one round."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr

from focal.providers.llm.anthropic import AnthropicProvider
from focal.providers.llm.base import LLMProvider
from focal.providers.llm.openai import OpenAIProvider
from focal.tools.http import HttpToolExecutor
from tests.support import new_tenant
from tests.tool_server import ToolServer
from tests.unit.providers.fake_vendor import (
    FAST_RETRIES,
    FakeVendor,
    FakeVendorServer,
    Reply,
    anthropic_message,
    anthropic_tool_calls,
    openai_completion,
    openai_tool_calls,
)
from tests.unit.turn.support import TurnStack
from tests.unit.turn.tool_support import activate, lookup_order


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeVendor]:
    vendor = FakeVendor()
    server = FakeVendorServer(vendor)
    server.start()
    yield vendor
    server.stop()


@dataclass(frozen=True)
class Vendor:
    name: str
    path: str
    build: Callable[[FakeVendor], LLMProvider]
    tool_calls: Callable[..., dict[str, Any]]
    text: Callable[[str], dict[str, Any]]


VENDORS = [
    Vendor(
        "anthropic",
        "/v1/messages",
        lambda f: AnthropicProvider(
            api_key=SecretStr("sk-ant-test"),
            model="claude-fake",
            base_url=f.anthropic_url,
            retry_policy=FAST_RETRIES,
        ),
        anthropic_tool_calls,
        lambda text: anthropic_message(text),
    ),
    Vendor(
        "openai",
        "/v1/chat/completions",
        lambda f: OpenAIProvider(
            api_key=SecretStr("sk-test"), model="gpt-fake", base_url=f.openai_url, retry_policy=FAST_RETRIES
        ),
        openai_tool_calls,
        lambda text: openai_completion(text),
    ),
]


def _tool_results(vendor: Vendor, body: dict[str, Any]) -> dict[str, str]:
    """call id -> result text the second request carried back to the model."""
    if vendor.name == "anthropic":
        blocks = body["messages"][-1]["content"]
        return {b["tool_use_id"]: b["content"] for b in blocks if b["type"] == "tool_result"}
    return {m["tool_call_id"]: m["content"] for m in body["messages"] if m["role"] == "tool"}


@pytest.mark.parametrize("vendor", VENDORS, ids=[v.name for v in VENDORS])
async def test_parallel_tool_calls_round_trip_through_the_sdk(
    vendor: Vendor, fake: FakeVendor, shop: ToolServer, executor: HttpToolExecutor
) -> None:
    fake.reset()
    provider = vendor.build(fake)
    stack = TurnStack(llm=provider, tool_executor=executor)
    try:
        tenant = new_tenant()
        agent = await stack.agent(tenant, system_prompt="You are the shop's assistant.")
        await stack.rule(
            agent, "where is my order status", "Look orders up.", attached_tool_ids=["lookup_order"]
        )
        await activate(stack.config_store, agent, lookup_order(tenant, shop.url))
        fake.enqueue(
            Reply(
                body=vendor.tool_calls(
                    [
                        ("call_a", "lookup_order", {"order_number": "FD-10234"}),
                        ("call_b", "lookup_order", {"order_number": "FD-10235"}),
                    ]
                )
            ),
            Reply(body=vendor.text("The kettle was delivered; the toaster is on its way.")),
        )

        result = await stack.turn(agent, "where is my order status? FD-10234 and FD-10235")

        assert result.response == "The kettle was delivered; the toaster is on its way."
        assert sorted(shop.paths()) == ["/orders/FD-10234", "/orders/FD-10235"]
        first, second = [r.body for r in fake.requests if r.path == vendor.path]
        names = [t["name"] if vendor.name == "anthropic" else t["function"]["name"] for t in first["tools"]]
        assert names == ["lookup_order"]
        results = _tool_results(vendor, second)
        assert set(results) == {"call_a", "call_b"}
        assert json.loads(results["call_a"])["item"] == "kettle"
        assert json.loads(results["call_b"])["item"] == "toaster"
        (turn,) = await stack.audit_store.list_turns_by_session(tenant, result.session_id)
        assert [(t["call_id"], t["status"]) for t in turn.tools_executed] == [
            ("call_a", "ok"),
            ("call_b", "ok"),
        ]
    finally:
        await provider.aclose()
