"""Streaming chat through the real Anthropic and OpenAI SDKs against the loopback vendor fake,
whose streams are sent chunk by chunk with a delay, on PostgreSQL + Redis.

A real HTTP server (the app on a loopback socket) and a real streaming client: the first delta
reaches the client before the vendor has sent its last chunk, the deltas join to ``done.response``,
and a client that disconnects mid-answer closes the vendor stream and leaves no trace in any store.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import pytest_asyncio

from focal.api.app import create_app
from focal.bootstrap import FocalServices, build_services
from focal.conversation.models import Channel
from focal.providers.llm.anthropic import AnthropicProvider
from focal.providers.llm.base import LLMProvider
from focal.providers.llm.openai import OpenAIProvider
from focal.settings import Settings
from tests.api.conftest import JWT_SECRET, bearer
from tests.api.sse_support import Event, read_events
from tests.loopback import serve_in_this_loop
from tests.unit.providers.fake_vendor import (
    FAST_RETRIES,
    FakeVendor,
    FakeVendorServer,
    Reply,
    anthropic_stream,
    openai_stream,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

CHUNKS = [f"part{i} " for i in range(8)] + ["end."]
CHUNK_DELAY = 0.03


@pytest.fixture(scope="module")
def vendor() -> Iterator[FakeVendor]:
    fake = FakeVendor()
    server = FakeVendorServer(fake)
    server.start()
    yield fake
    server.stop()


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def services(database_factory: Any, redis_url: str) -> AsyncIterator[FocalServices]:
    settings = Settings.load(
        storage="external",
        database={"url": await database_factory(dimensions=8)},
        redis={"url": redis_url, "key_prefix": f"stream{uuid4().hex[:8]}"},
        auth={"jwt_secret": JWT_SECRET},
        embedding={"provider": "hashing", "dimensions": 8},
    )
    built, stack = await build_services(settings)
    async with stack:
        yield built


VENDORS: dict[str, tuple[Callable[[FakeVendor], LLMProvider], Callable[..., list[str]]]] = {
    "anthropic": (
        lambda fake: AnthropicProvider(
            api_key="sk-ant-test", model="claude-fake", base_url=fake.anthropic_url, retry_policy=FAST_RETRIES
        ),
        anthropic_stream,
    ),
    "openai": (
        lambda fake: OpenAIProvider(
            api_key="sk-test", model="gpt-fake", base_url=fake.openai_url, retry_policy=FAST_RETRIES
        ),
        openai_stream,
    ),
}


@pytest_asyncio.fixture(params=sorted(VENDORS), loop_scope="session")
async def served(
    request: pytest.FixtureRequest, services: FocalServices, vendor: FakeVendor
) -> AsyncIterator[tuple[str, FocalServices, Callable[..., list[str]], FakeVendor]]:
    build, stream = VENDORS[request.param]
    vendor.reset()
    provider, previous = build(vendor), services.llm_provider
    services.llm_provider = provider
    try:
        async with serve_in_this_loop(create_app(services.settings, services=services)) as url:
            yield url, services, stream, vendor
    finally:
        services.llm_provider = previous
        await provider.aclose()


async def _agent(client: httpx.AsyncClient, headers: dict[str, str]) -> str:
    response = await client.post("/v1/agents", json={"name": "streamer"}, headers=headers)
    assert response.status_code == 201
    agent_id: str = response.json()["id"]
    return agent_id


def _chat(agent_id: str, user: str) -> dict[str, Any]:
    return {"channel": "WEB", "user_channel_id": user, "message": "Tell me everything", "stream": True}


async def test_the_first_delta_arrives_before_the_vendor_sent_its_last_chunk(served: Any) -> None:
    url, _, stream, vendor = served
    tenant = uuid4()
    vendor.enqueue(Reply(stream=stream(CHUNKS), chunk_delay=CHUNK_DELAY))
    events: list[Event] = []
    first_delta_at = 0.0
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        agent_id = await _agent(client, bearer(tenant))
        async with client.stream(
            "POST", f"/v1/agents/{agent_id}/chat", json=_chat(agent_id, "u1"), headers=bearer(tenant)
        ) as response:
            assert response.status_code == 200
            async for event in read_events(response):
                if not events:
                    first_delta_at = time.monotonic()  # the fake records time.monotonic() too
                events.append(event)
    record = vendor.streams[-1]
    assert record.completed and first_delta_at < record.sent_at[-1]
    assert [e.name for e in events][-1] == "done" and len(events) > 2
    joined = "".join(e.data["text"] for e in events if e.name == "delta")
    assert joined == events[-1].data["response"] == "".join(CHUNKS).strip()


async def test_a_client_that_disconnects_closes_the_vendor_stream_and_leaves_no_trace(served: Any) -> None:
    url, services, stream, vendor = served
    tenant = uuid4()
    vendor.enqueue(Reply(stream=stream(CHUNKS * 5), chunk_delay=CHUNK_DELAY))
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        agent_id = await _agent(client, bearer(tenant))
        async with client.stream(
            "POST", f"/v1/agents/{agent_id}/chat", json=_chat(agent_id, "u2"), headers=bearer(tenant)
        ) as response:
            first = await anext(read_events(response))
            assert first.name == "delta"
    record = vendor.streams[-1]
    for _ in range(300):
        if record.cancelled:
            break
        await asyncio.sleep(0.01)
    assert record.cancelled and not record.completed
    assert await services.session_store.list_by_agent(tenant, UUID(agent_id)) == []
    assert await services.session_store.get_by_channel(tenant, Channel.WEB, "u2") is None
    assert await services.audit_store.list_turns_by_tenant(tenant) == []
    assert await services.audit_store.list_events(tenant) == []
    assert await services.profile_store.get_by_channel_identity(tenant, Channel.WEB, "u2") is None
