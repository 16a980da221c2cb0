"""Fixtures for HTTP tests: an app on in-memory stores and offline providers, clients with tokens.

``api`` gives an ``ApiHarness``: ``client`` (httpx.AsyncClient over ASGITransport, no auth),
``auth(tenant)`` headers, ``tenant`` (a fresh tenant with its headers in ``headers``) and
``services`` (to seed or inspect stores directly). ``backend_api`` gives the same on the
in-memory stores and on PostgreSQL + Redis (``external_settings``), with the settings overrides
of ``api_overrides``.
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
from focal.bootstrap import FocalServices, build_memory_services, open_services
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


def external_settings(
    database_url: str | None, redis_url: str | None, *, prefix: str | None = None, **overrides: object
) -> Settings:
    """Settings on PostgreSQL + Redis (``storage=external``), Redis keys under their own prefix."""
    values: dict[str, object] = {
        "storage": "external",
        "database": {"url": database_url, "pool_min_size": 1, "pool_max_size": 4},
        "redis": {
            "url": redis_url,
            "key_prefix": prefix or f"apitest{uuid4().hex[:8]}",
            "max_connections": 8,
        },
        "embedding": {"provider": "hashing", "dimensions": TEST_EMBEDDING_DIMENSIONS},
        "llm": {"provider": "offline"},
        "auth": {"jwt_secret": JWT_SECRET},
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


@pytest.fixture
def api_overrides() -> dict[str, object]:
    """Settings overrides of ``backend_api``; a module overrides this fixture to change them."""
    return {}


@pytest_asyncio.fixture
async def memory_api(api_overrides: dict[str, object]) -> AsyncIterator[ApiHarness]:
    settings = memory_settings(**api_overrides)
    services = build_memory_services(settings)
    app = create_app(settings, services=services)
    tenant_id = uuid4()
    async with asgi_client(app) as client:
        yield ApiHarness(app, client, services, tenant_id, bearer(tenant_id))


@pytest_asyncio.fixture
async def postgres_api(
    pg_dsn: str, redis_url: str, api_overrides: dict[str, object]
) -> AsyncIterator[ApiHarness]:
    settings = external_settings(pg_dsn, redis_url, **api_overrides)
    async with open_services(settings) as services:
        app = create_app(settings, services=services)
        tenant_id = uuid4()  # a fresh tenant: the shared database holds other tests' data
        async with asgi_client(app) as client:
            yield ApiHarness(app, client, services, tenant_id, bearer(tenant_id))


@pytest.fixture(
    params=["memory_api", pytest.param("postgres_api", marks=[pytest.mark.postgres, pytest.mark.redis])]
)
def backend_api(request: pytest.FixtureRequest) -> ApiHarness:
    """An ``ApiHarness`` on the in-memory stores, then on PostgreSQL + Redis."""
    harness: ApiHarness = request.getfixturevalue(request.param)
    return harness


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
