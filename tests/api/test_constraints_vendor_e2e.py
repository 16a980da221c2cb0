"""Hard constraints and the relevance check through the real SDKs: ``POST /chat`` with the OpenAI
and Anthropic providers pointed at the loopback vendor fake (tests/unit/providers/fake_vendor.py),
on the in-memory stores. The enforcement path is the one the scripted tests cover; here every
call crosses the vendors' wire formats (plain generation, structured output by JSON schema for
OpenAI and by a forced tool call for Anthropic)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import pytest_asyncio

from focal.alignment.turn.prompt import CORRECTIONS_HEADER
from focal.api.app import create_app
from focal.bootstrap import FocalServices, build_memory_services
from focal.providers.llm.anthropic import AnthropicProvider
from tests.api.conftest import asgi_client, bearer, memory_settings
from tests.unit.providers.fake_vendor import (
    FakeVendor,
    FakeVendorServer,
    Reply,
    anthropic_message,
    anthropic_tool_use,
    openai_completion,
)

NO_REFUND = {
    "name": "no refund promises",
    "condition_text": "warranty legal terms",
    "action_text": "Never promise a refund before the item is inspected.",
    "is_hard_constraint": True,
    "forbid_patterns": [r"(?i)\bfull refund\b"],
}


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor()
    server = FakeVendorServer(fake)
    server.start()
    yield fake
    server.stop()


class Harness:
    def __init__(self, client: httpx.AsyncClient, services: FocalServices, vendor: FakeVendor) -> None:
        self.client, self.services, self.vendor = client, services, vendor
        self.tenant_id = uuid4()
        self.headers = bearer(self.tenant_id)

    async def post(self, url: str, body: dict[str, Any]) -> Any:
        response = await self.client.post(url, json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        return response.json()

    async def chat(self, agent_id: str, message: str) -> Any:
        body = {"channel": "WEB", "user_channel_id": f"u-{uuid4().hex[:6]}", "message": message}
        response = await self.client.post(f"/v1/agents/{agent_id}/chat", json=body, headers=self.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def turn_and_events(self, chat: Any) -> tuple[dict[str, Any], list[str]]:
        turns = await self.client.get(f"/v1/sessions/{chat['session_id']}/turns", headers=self.headers)
        (turn,) = turns.json()["items"]
        events = await self.services.audit_store.list_events(
            self.tenant_id, session_id=UUID(chat["session_id"])
        )
        return turn, [e.event_type for e in events if e.event_type != "rule_matched"]

    def requests(self, path: str) -> list[Any]:
        return [r.body for r in self.vendor.requests if r.path == path]


@pytest_asyncio.fixture
async def openai_harness(vendor: FakeVendor) -> AsyncIterator[Harness]:
    vendor.reset()
    settings = memory_settings(
        llm={"provider": "openai", "model": "gpt-fake", "base_url": vendor.openai_url, "max_attempts": 1},
        openai_api_key="sk-test-not-a-real-key",
        turn={"relevance_check": True},
    )
    services = build_memory_services(settings)
    async with asgi_client(create_app(settings, services=services)) as client:
        yield Harness(client, services, vendor)
    await services.llm_provider.aclose()


@pytest_asyncio.fixture
async def anthropic_harness(vendor: FakeVendor) -> AsyncIterator[Harness]:
    vendor.reset()
    settings = memory_settings(
        llm={
            "provider": "anthropic",
            "model": "claude-fake",
            "base_url": vendor.anthropic_url,
            "max_attempts": 1,
        },
        anthropic_api_key="sk-ant-test",
    )
    services = build_memory_services(settings)
    assert isinstance(services.llm_provider, AnthropicProvider)
    async with asgi_client(create_app(settings, services=services)) as client:
        yield Harness(client, services, vendor)
    await services.llm_provider.aclose()


async def test_openai_violating_then_compliant_and_a_relevance_check(openai_harness: Harness) -> None:
    h = openai_harness
    agent = await h.post("/v1/agents", {"name": "shop"})
    base = f"/v1/agents/{agent['id']}"
    constraint = await h.post(f"{base}/rules", NO_REFUND)
    refund = await h.post(
        f"{base}/rules",
        {
            "name": "refund",
            "condition_text": "I want a refund for my parcel",
            "action_text": "Start a refund.",
        },
    )
    h.vendor.enqueue(
        Reply(body=openai_completion(json.dumps({"rules": [{"number": 1, "applies": False}]}))),
        Reply(body=openai_completion("Sure, a full refund of 100 EUR today.")),
        Reply(body=openai_completion("We will inspect the parcel first.")),
    )

    chat = await h.chat(agent["id"], "I do NOT want a refund for my parcel, just information.")

    assert chat["response"] == "We will inspect the parcel first."
    assert chat["matched_rules"] == []  # the negated match was dropped; the constraint is unmatched
    check, first, second = h.requests("/v1/chat/completions")
    assert check["response_format"]["json_schema"]["name"] == "RelevanceVerdict"
    assert "1. I want a refund for my parcel" in check["messages"][-1]["content"]
    assert "Start a refund." not in first["messages"][-1]["content"]
    assert NO_REFUND["action_text"] in first["messages"][-1]["content"]
    assert CORRECTIONS_HEADER not in first["messages"][-1]["content"]
    assert CORRECTIONS_HEADER in second["messages"][-1]["content"]
    assert chat["usage"]["total_tokens"] == 3 * 18  # the check and both answers

    turn, events = await h.turn_and_events(chat)
    assert [f["rule_id"] for f in turn["constraints_failed"]] == [constraint["id"]]
    assert [c["rule_id"] for c in turn["constraints_checked"]] == [constraint["id"]]
    assert turn["context_extracted"]["constraint_outcome"] == "regenerated"
    assert events == ["relevance_checked", "constraint_violation", "response_regenerated"]
    assert refund["id"] not in json.dumps(turn["rules_matched"])


async def test_anthropic_violating_twice_falls_back_with_a_judge_over_tool_use(
    anthropic_harness: Harness,
) -> None:
    h = anthropic_harness
    agent = await h.post("/v1/agents", {"name": "shop"})
    base = f"/v1/agents/{agent['id']}"
    await h.post(f"{base}/rules", {**NO_REFUND, "judge_instructions": "Fail any promise of money."})
    fallback = await h.post(
        f"{base}/templates", {"name": "fallback", "text": "A colleague will call you.", "mode": "FALLBACK"}
    )
    verdict = {"verdicts": [{"number": 1, "violated": True, "explanation": "promises money back"}]}
    h.vendor.enqueue(
        Reply(body=anthropic_message("A full refund, today!")),  # fails the pattern: no judge call
        Reply(body=anthropic_message("We'll wire the money back tonight.")),  # passes it: judged
        Reply(body=anthropic_tool_use("JudgeVerdict", verdict)),
    )

    chat = await h.chat(agent["id"], "My blender broke, what now?")

    assert (chat["response"], chat["template_id"]) == ("A colleague will call you.", fallback["id"])
    first, second, judge = h.requests("/v1/messages")
    assert CORRECTIONS_HEADER in second["messages"][-1]["content"]
    assert judge["tool_choice"]["name"] == "JudgeVerdict"
    assert "Fail any promise of money." in judge["messages"][-1]["content"]
    assert "We'll wire the money back tonight." in judge["messages"][-1]["content"]
    turn, events = await h.turn_and_events(chat)
    reasons = [f["reasons"][0] for f in turn["constraints_failed"]]
    assert "forbidden pattern" in reasons[0] and "the judge found: promises money back" in reasons[1]
    assert events == [
        "constraint_violation",
        "response_regenerated",
        "constraint_judged",
        "constraint_violation",
        "template_used",
    ]
    assert turn["context_extracted"]["constraint_outcome"] == "fallback_template"
    assert first["messages"][-1]["content"].count(NO_REFUND["action_text"]) == 1
