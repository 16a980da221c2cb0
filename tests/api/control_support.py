"""Fixtures and helpers of the session-control API tests: an app on in-memory stores whose LLM is
a ``ScriptedLLMProvider`` (every call recorded), with webhooks allowed over http to loopback and
retried fast."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest_asyncio

from focal.api.app import create_app
from focal.bootstrap import FocalServices, build_memory_services
from focal.providers.llm.base import LLMMessage, LLMResponse
from focal.providers.llm.scripted import ScriptedLLMProvider
from tests.api.conftest import asgi_client, bearer, memory_settings

DIMENSIONS = 1536  # the hashing embedder's default: few collisions, so matches are lexical
FAST_WEBHOOKS = {
    "allow_http": True,
    "backoff_base_seconds": 0.01,
    "backoff_cap_seconds": 0.02,
    "max_attempts": 3,
    "timeout_seconds": 5,
}
HANDOFF_CONDITION = "talk to a human person agent operator please"


class GatedLLM(ScriptedLLMProvider):
    """A scripted LLM whose calls wait for ``release`` (when ``gated``); ``entered`` is set as a
    call arrives, so a test knows a turn is in flight without sleeping."""

    def __init__(self, replies: Sequence[str] = ()) -> None:
        super().__init__(replies)
        self.gated = False
        self.arrived = 0  # calls that reached the provider (``calls`` records them once released)
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def generate(self, prompt: str, **kwargs: Any) -> LLMResponse:
        self.arrived += 1
        self.entered.set()
        if self.gated:
            await self.release.wait()
        return await super().generate(prompt, **kwargs)


@dataclass
class ControlApi:
    client: httpx.AsyncClient
    services: FocalServices
    llm: GatedLLM
    tenant_id: UUID
    headers: dict[str, str]

    async def agent(self, **fields: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/v1/agents", json={"name": f"shop-{uuid4().hex[:6]}", **fields}, headers=self.headers
        )
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def rule(self, agent_id: str, **fields: Any) -> dict[str, Any]:
        body = {"name": f"rule-{uuid4().hex[:6]}", "action_text": "Say something helpful.", **fields}
        response = await self.client.post(f"/v1/agents/{agent_id}/rules", json=body, headers=self.headers)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def chat(
        self,
        agent_id: str,
        message: str,
        *,
        user: str = "visitor-1",
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> httpx.Response:
        body = {"channel": "WEB", "user_channel_id": user, "message": message, **extra}
        return await self.client.post(
            f"/v1/agents/{agent_id}/chat", json=body, headers={**self.headers, **(headers or {})}
        )

    async def turns(self, session_id: str) -> list[dict[str, Any]]:
        response = await self.client.get(f"/v1/sessions/{session_id}/turns", headers=self.headers)
        assert response.status_code == 200, response.text
        return list(response.json()["items"])

    async def events(self, event_type: str) -> list[Any]:
        return await self.services.audit_store.list_events(self.tenant_id, event_type=event_type)


def history_of(call: Any) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in call.history if isinstance(m, LLMMessage)]


@asynccontextmanager
async def open_control_api(**overrides: Any) -> AsyncIterator[ControlApi]:
    """A ``ControlApi`` on settings with ``overrides`` (e.g. ``turn={"concurrency": "enqueue"}``)."""
    webhooks = {**FAST_WEBHOOKS, **overrides.pop("webhooks", {})}
    settings = memory_settings(
        embedding={"provider": "hashing", "dimensions": DIMENSIONS}, webhooks=webhooks, **overrides
    )
    services = build_memory_services(settings)
    llm = GatedLLM()
    services.llm_provider = llm
    app = create_app(settings, services=services)
    tenant_id = uuid4()
    try:
        async with asgi_client(app) as client:
            yield ControlApi(client, services, llm, tenant_id, bearer(tenant_id))
    finally:
        assert services.webhooks is not None
        await services.webhooks.aclose()


@pytest_asyncio.fixture
async def control_api() -> AsyncIterator[ControlApi]:
    async with open_control_api() as api:
        yield api
