"""Fixtures for HTTP tests: an app on in-memory stores and offline providers, clients with tokens.

``api`` gives an ``ApiHarness``: ``client`` (httpx.AsyncClient over ASGITransport, no auth),
``auth(tenant)`` headers, ``tenant`` (a fresh tenant with its headers in ``headers``) and
``services`` (to seed or inspect stores directly).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from focal.api.app import create_app
from focal.api.auth import mint_token
from focal.bootstrap import FocalServices, build_memory_services
from focal.demo_shop import DemoShop
from focal.settings import Settings
from tests.demo_support import running_demo_shop
from tests.support import TEST_EMBEDDING_DIMENSIONS

JWT_SECRET = "test-secret-long-enough-for-hs256-and-hs512-0123456789abcdefghijklmnop"


def memory_settings(**overrides: object) -> Settings:
    values: dict[str, object] = {
        "storage": "memory",
        "auth": {"jwt_secret": JWT_SECRET},
        "embedding": {"provider": "hashing", "dimensions": TEST_EMBEDDING_DIMENSIONS},
        "llm": {"provider": "offline"},
    }
    values.update(overrides)
    return Settings.load(**values)


def bearer(tenant_id: UUID, secret: str = JWT_SECRET, ttl_seconds: int = 600) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(secret, tenant_id, ttl_seconds)}"}


@dataclass
class ApiHarness:
    app: FastAPI
    client: httpx.AsyncClient
    services: FocalServices
    tenant_id: UUID
    headers: dict[str, str]


def asgi_client(app: FastAPI, *, raise_app_exceptions: bool = True) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, base_url="http://focal.test")


async def define_tool(client: httpx.AsyncClient, headers: dict[str, str], name: str) -> dict[str, Any]:
    """Define a tool ``name`` in the caller's tenant (activations need a definition)."""
    response = await client.post(
        "/v1/tools",
        json={"name": name, "http": {"url_template": f"https://tools.example/{name}"}},
        headers=headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest_asyncio.fixture
async def api() -> AsyncIterator[ApiHarness]:
    settings = memory_settings()
    services = build_memory_services(settings)
    app = create_app(settings, services=services)
    tenant_id = uuid4()
    async with asgi_client(app) as client:
        yield ApiHarness(app, client, services, tenant_id, bearer(tenant_id))


@pytest.fixture(scope="session")
def demo_shop_server() -> Iterator[DemoShop]:
    with running_demo_shop() as shop:
        yield shop


@pytest.fixture
def demo_shop(demo_shop_server: DemoShop) -> DemoShop:
    """The demo shop (``focal.demo_shop``) on loopback, its labels cleared."""
    demo_shop_server.labels.clear()
    return demo_shop_server
