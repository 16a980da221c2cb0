"""End to end over HTTP: the chat endpoint on PostgreSQL + Redis with the real OpenAI SDK provider
pointed at the loopback vendor fake, everything built by ``build_services`` from ``Settings``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import pytest_asyncio

from focal.api.app import create_app
from focal.bootstrap import FocalServices, build_services
from focal.conversation.models import Channel
from focal.demo import DEMO_CONVERSATION, LABEL_TOOL, load_demo_agent
from focal.demo_shop import DemoShop
from focal.providers.llm.anthropic import AnthropicProvider
from focal.providers.llm.base import GenerationRequest, LLMProvider, LLMResponse, ModelT, StreamEvent
from focal.settings import Settings
from tests.api.conftest import JWT_SECRET, asgi_client, bearer
from tests.unit.providers.fake_vendor import (
    FakeVendor,
    FakeVendorServer,
    Reply,
    anthropic_error,
    anthropic_message,
    openai_completion,
    openai_error,
    openai_tool_calls,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

DIMENSIONS = 1536


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor()
    server = FakeVendorServer(fake)
    server.start()
    yield fake
    server.stop()


@dataclass
class E2E:
    client: httpx.AsyncClient
    services: FocalServices
    vendor: FakeVendor
    tenant_id: UUID
    headers: dict[str, str]

    async def chat(self, agent_id: object, message: str, **extra: Any) -> httpx.Response:
        body = {"channel": "WHATSAPP", "user_channel_id": "+4915100000", "message": message, **extra}
        return await self.client.post(f"/v1/agents/{agent_id}/chat", json=body, headers=self.headers)

    def llm_requests(self) -> list[dict[str, Any]]:
        return [r.body for r in self.vendor.requests if r.path == "/v1/chat/completions"]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def e2e_services(
    database_factory: Any, redis_url: str, vendor: FakeVendor
) -> AsyncIterator[FocalServices]:
    dsn = await database_factory(dimensions=DIMENSIONS)
    settings = Settings.load(
        storage="external",
        database={"url": dsn},
        redis={"url": redis_url, "key_prefix": f"chate2e{uuid4().hex[:8]}"},
        auth={"jwt_secret": JWT_SECRET},
        embedding={"provider": "hashing", "dimensions": DIMENSIONS},
        llm={"provider": "openai", "model": "gpt-fake", "base_url": vendor.openai_url, "max_attempts": 1},
        openai_api_key="sk-test-not-a-real-key",
    )
    services, stack = await build_services(settings)
    async with stack:
        yield services


@pytest_asyncio.fixture
async def e2e(e2e_services: FocalServices, vendor: FakeVendor) -> AsyncIterator[E2E]:
    vendor.reset()
    real_llm = e2e_services.llm_provider
    app = create_app(e2e_services.settings, services=e2e_services)
    tenant_id = uuid4()
    async with asgi_client(app) as client:
        yield E2E(client, e2e_services, vendor, tenant_id, bearer(tenant_id))
    e2e_services.llm_provider = real_llm


async def test_conversation_memory_and_failures_on_postgres_and_redis(e2e: E2E):
    client, headers = e2e.client, e2e.headers
    agent = (
        await client.post(
            "/v1/agents",
            json={
                "name": "shop",
                "system_prompt": "You are the shop's assistant.",
                "max_tokens": 200,
                "temperature": 0.1,
            },
            headers=headers,
        )
    ).json()
    await client.post(
        f"/v1/agents/{agent['id']}/rules",
        json={
            "name": "shipping",
            "condition_text": "how much shipping cost",
            "action_text": "Shipping is free above 50 EUR.",
        },
        headers=headers,
    )
    e2e.vendor.enqueue(
        Reply(body=openai_completion("Shipping is free above 50 EUR.", prompt_tokens=40, completion_tokens=8))
    )

    first = await e2e.chat(agent["id"], "How much is shipping for my blender?")
    assert first.status_code == 200, first.text
    data = first.json()
    assert data["response"] == "Shipping is free above 50 EUR."
    assert [m["name"] for m in data["matched_rules"]] == ["shipping"]
    assert data["usage"] == {"prompt_tokens": 40, "completion_tokens": 8, "total_tokens": 48}
    (sent,) = e2e.llm_requests()
    assert sent["model"] == "gpt-fake" and sent["max_tokens"] == 200 and sent["temperature"] == 0.1
    assert sent["messages"][0] == {"role": "system", "content": "You are the shop's assistant."}
    assert "Rules to follow:\n- Shipping is free above 50 EUR." in sent["messages"][-1]["content"]

    second = await e2e.chat(agent["id"], "and for a kettle?", session_id=data["session_id"])
    assert second.status_code == 200 and second.json()["turn_number"] == 2
    history = [(m["role"], m["content"]) for m in e2e.llm_requests()[-1]["messages"][1:-1]]
    assert history == [
        ("user", "How much is shipping for my blender?"),
        ("assistant", "Shipping is free above 50 EUR."),
    ]

    # the vendor fails and there is no FALLBACK template: 503, and nothing is written
    session_before = await e2e.services.session_store.get(e2e.tenant_id, UUID(data["session_id"]))
    events_before = await e2e.services.audit_store.list_events(e2e.tenant_id)
    e2e.vendor.enqueue(openai_error(500, None, "boom"), openai_error(500, None, "boom"))
    failed = await e2e.chat(agent["id"], "and for a toaster?", session_id=data["session_id"])
    assert failed.status_code == 503, failed.text
    newcomer = await e2e.client.post(
        f"/v1/agents/{agent['id']}/chat",
        json={"channel": "SMS", "user_channel_id": "+3300000", "message": "and for a toaster?"},
        headers=headers,
    )
    assert newcomer.status_code == 503, newcomer.text
    session_after = await e2e.services.session_store.get(e2e.tenant_id, UUID(data["session_id"]))
    assert session_after == session_before
    assert await e2e.services.audit_store.list_events(e2e.tenant_id) == events_before
    assert (
        await e2e.services.profile_store.get_by_channel_identity(e2e.tenant_id, Channel.SMS, "+3300000")
        is None
    )
    assert await e2e.services.session_store.get_by_channel(e2e.tenant_id, Channel.SMS, "+3300000") is None

    # a message, or a model answer, that PostgreSQL cannot store: refused before anything is written
    nul_message = await e2e.chat(agent["id"], "and for a \x00 toaster?", session_id=data["session_id"])
    assert nul_message.status_code == 422 and "NUL" in nul_message.json()["error"]["message"]
    e2e.vendor.enqueue(Reply(body=openai_completion("Free\x00 shipping.")))
    nul_answer = await e2e.chat(agent["id"], "and for a toaster?", session_id=data["session_id"])
    assert nul_answer.status_code == 502, nul_answer.text
    assert await e2e.services.session_store.get(e2e.tenant_id, UUID(data["session_id"])) == session_before
    assert await e2e.services.audit_store.list_events(e2e.tenant_id) == events_before

    turns = (await client.get(f"/v1/sessions/{data['session_id']}/turns", headers=headers)).json()["items"]
    assert [t["turn_number"] for t in turns] == [1, 2]
    assert turns[0]["context_extracted"]["timings_ms"]["embed_answer"] >= 0

    # a new session for the same customer recalls the first one from PostgreSQL
    assert (await client.delete(f"/v1/sessions/{data['session_id']}", headers=headers)).status_code == 204
    later = await e2e.chat(agent["id"], "my blender question again")
    assert later.status_code == 200 and later.json()["session_id"] != data["session_id"]
    prompt = e2e.llm_requests()[-1]["messages"][-1]["content"]
    assert "the customer said: How much is shipping for my blender?" in prompt

    # another customer of the same tenant recalls nothing of it
    other = await client.post(
        f"/v1/agents/{agent['id']}/chat",
        json={
            "channel": "WHATSAPP",
            "user_channel_id": "+4915199999",
            "message": "my blender question again",
        },
        headers=headers,
    )
    assert other.status_code == 200
    assert "blender?" not in e2e.llm_requests()[-1]["messages"][-1]["content"]


async def test_demo_scenario_creates_the_label_through_the_vendors_tool_call(demo_shop: DemoShop, e2e: E2E):
    agent = await load_demo_agent(e2e.services, e2e.tenant_id, demo_shop)
    arguments = {"order_number": "FD-10234", "return_reason": "damaged"}
    e2e.vendor.enqueue(
        Reply(body=openai_tool_calls([("call_label", LABEL_TOOL, arguments)])),
        Reply(body=openai_completion("Your return label is on its way.")),
    )
    session_id = None
    steps: list[str | None] = []
    for message in DEMO_CONVERSATION[2:6]:
        response = await e2e.chat(agent.id, message, **({"session_id": session_id} if session_id else {}))
        assert response.status_code == 200, response.text
        session_id = response.json()["session_id"]
        scenario = response.json()["scenario"]
        steps.append(scenario["step_name"] if scenario else None)
    assert steps == [
        "Ask for the order number",
        "Ask for the reason",
        "Confirm the return",
        "Return registered",
    ]
    # The first three answers came from EXCLUSIVE step templates; the last step offered the tool.
    first, second = e2e.llm_requests()
    assert [t["function"]["name"] for t in first["tools"]] == [LABEL_TOOL]
    assert "- order_number: FD-10234" in first["messages"][-1]["content"]  # the Known values
    (result,) = [m for m in second["messages"] if m["role"] == "tool"]
    assert json.loads(result["content"])["label_id"] == "RL-00001"
    assert demo_shop.labels["FD-10234"]["return_reason"] == "damaged"
    assert response.json()["response"] == "Your return label is on its way."
    assert session_id is not None
    session = await e2e.services.session_store.get(e2e.tenant_id, UUID(session_id))
    assert session is not None and session.active_scenario_id is None and len(session.step_history) == 4
    events = await e2e.services.audit_store.list_events(e2e.tenant_id, session_id=UUID(session_id))
    assert [e.event_type for e in events if e.event_type != "rule_matched"].count("template_used") == 3
    called = [(e.event_data["name"], e.event_data["source"]) for e in events if e.event_type == "tool_called"]
    assert called == [("demo_lookup_order", "resolver"), (LABEL_TOOL, "model")]
    turns = await e2e.services.audit_store.list_turns_by_session(e2e.tenant_id, UUID(session_id))
    assert turns[-1].tools_executed[0]["result"]["label_id"] == "RL-00001"  # on PostgreSQL


class _Rendezvous(LLMProvider):
    """Delegates to the real provider once ``parties`` calls are waiting: both turns read the session
    before either saves it, whatever the scheduling."""

    def __init__(self, inner: LLMProvider, parties: int) -> None:
        self._inner, self._parties, self._waiting = inner, parties, 0
        self._all_arrived = asyncio.Event()

    @property
    def model_id(self) -> str:
        return self._inner.model_id

    async def _generate(self, request: GenerationRequest) -> LLMResponse:
        self._waiting += 1
        if self._waiting >= self._parties:
            self._all_arrived.set()
        await asyncio.wait_for(self._all_arrived.wait(), timeout=10)
        return await self._inner._generate(request)

    async def generate_structured(
        self, prompt: str, schema: type[ModelT], *, system_prompt: str | None = None, max_tokens: int = 1024
    ) -> tuple[ModelT, LLMResponse]:
        raise NotImplementedError

    def _stream(self, request: GenerationRequest) -> AsyncIterator[StreamEvent]:
        raise NotImplementedError


async def test_concurrent_turns_on_one_session_on_redis(e2e: E2E):
    agent = (await e2e.client.post("/v1/agents", json={"name": "racy"}, headers=e2e.headers)).json()
    first = (await e2e.chat(agent["id"], "hello")).json()
    e2e.services.llm_provider = _Rendezvous(e2e.services.llm_provider, parties=2)

    responses = await asyncio.gather(
        e2e.chat(agent["id"], "first racer", session_id=first["session_id"]),
        e2e.chat(agent["id"], "second racer", session_id=first["session_id"]),
    )

    assert sorted(r.status_code for r in responses) == [200, 409]
    winner = next(r.json() for r in responses if r.status_code == 200)
    turns = (await e2e.client.get(f"/v1/sessions/{first['session_id']}/turns", headers=e2e.headers)).json()[
        "items"
    ]
    assert [t["id"] for t in turns] == [first["turn_id"], winner["turn_id"]]
    query = await e2e.services.embedding_provider.embed("racer")
    episodes = await e2e.services.memory_store.vector_search_episodes(
        query, e2e.tenant_id, UUID(agent["id"]), min_score=-1.0, limit=100
    )
    assert {e.metadata["turn_id"] for e, _ in episodes} == {first["turn_id"], winner["turn_id"]}


async def test_the_anthropic_provider_answers_and_a_fallback_covers_its_overload(
    demo_shop: DemoShop, e2e: E2E
):
    provider = AnthropicProvider(
        api_key="sk-ant-test", model="claude-fake", base_url=e2e.vendor.anthropic_url, max_attempts=1
    )
    e2e.services.llm_provider = provider
    try:
        agent = await load_demo_agent(e2e.services, e2e.tenant_id, demo_shop)
        e2e.vendor.enqueue(
            Reply(body=anthropic_message("Welcome to the shop!", input_tokens=30, output_tokens=4))
        )
        first = await e2e.chat(agent.id, "Hello!")
        assert first.status_code == 200, first.text
        assert (first.json()["response"], first.json()["usage"]["total_tokens"]) == (
            "Welcome to the shop!",
            34,
        )
        (sent,) = [r.body for r in e2e.vendor.requests if r.path == "/v1/messages"]
        assert sent["system"].startswith("You are the customer support assistant of Focal Demo Store")
        assert (
            "Suggested responses:\n- Hello and welcome to Focal Demo Store!"
            in sent["messages"][-1]["content"]
        )

        # 529 overloaded: the demo agent's FALLBACK template answers and the turn is recorded
        e2e.vendor.enqueue(anthropic_error(529, "overloaded_error", "Overloaded"))
        second = await e2e.chat(
            agent.id, "Which payment methods do you accept?", session_id=first.json()["session_id"]
        )
        assert second.status_code == 200, second.text
        assert second.json()["response"].startswith("Sorry, I cannot answer right now.")
        events = await e2e.services.audit_store.list_events(
            e2e.tenant_id, session_id=UUID(first.json()["session_id"]), event_type="provider_error"
        )
        assert [e.event_data["error"] for e in events] == ["ProviderUnavailableError"]
    finally:
        await provider.aclose()
