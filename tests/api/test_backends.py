"""The app on the real backends: PostgreSQL + pgvector and Redis, built by ``focal.bootstrap``.

Also: readiness (503 naming the failing dependency), the schema-version refusal at start-up, and
two app instances on one PostgreSQL and one Redis used interchangeably (no state in a process).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest
import redis.asyncio as redis_asyncio

from focal.alignment.models import Agent
from focal.api.app import create_app
from focal.bootstrap import ReadinessChecks, build_memory_services, build_services, open_services
from focal.conversation.models import Channel, Session
from focal.db.embedded import free_port
from focal.db.migrate import upgrade
from focal.db.pool import create_pool
from focal.errors import ConfigurationError, SchemaVersionError, StoreConnectionError
from focal.settings import Settings
from tests.api.conftest import asgi_client, bearer, external_settings, memory_settings
from tests.conftest import DatabaseFactory
from tests.integration.stores.redis_cluster import redis_cluster_nodes
from tests.support import TEST_EMBEDDING_DIMENSIONS

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

__all__ = ["redis_cluster_nodes"]  # a session fixture, started only by the test that asks for it


@pytest.fixture
async def api_database(database_factory: DatabaseFactory) -> str:
    return await database_factory()


async def test_crud_round_trip_on_postgres_and_redis(api_database: str, redis_url: str) -> None:
    settings = external_settings(api_database, redis_url)
    tenant = uuid4()
    headers = bearer(tenant)
    app = create_app(settings)
    async with open_services(settings) as services:
        app.state.services = services  # the lifespan is exercised by the two-instance test below
        async with asgi_client(app) as client:
            agent = (await client.post("/v1/agents", json={"name": "pg agent"}, headers=headers)).json()
            base = f"/v1/agents/{agent['id']}"
            rule = await client.post(
                f"{base}/rules",
                json={"name": "r", "condition_text": "refund please", "action_text": "explain"},
                headers=headers,
            )
            assert rule.status_code == 201
            stored = await services.config_store.get_rule(tenant, UUID(rule.json()["id"]))
            assert stored is not None and stored.embedding is not None and len(stored.embedding) == 8
            patched = await client.patch(
                f"{base}/rules/{rule.json()['id']}", json={"priority": 9}, headers=headers
            )
            assert patched.json()["priority"] == 9
            duplicate = await client.post("/v1/agents", json={"name": "pg agent"}, headers=headers)
            assert duplicate.status_code == 409

            session = await services.session_store.save(
                Session(
                    tenant_id=tenant, agent_id=UUID(agent["id"]), channel=Channel.API, user_channel_id="c1"
                )
            )
            got = await client.get(f"/v1/sessions/{session.session_id}", headers=headers)
            assert got.json()["user_channel_id"] == "c1"
            assert (
                await client.get(f"/v1/sessions/{session.session_id}", headers=bearer(uuid4()))
            ).status_code == 404

            ready = await client.get("/ready")
            assert ready.status_code == 200
            assert ready.json()["checks"] == {"postgres": "ok", "schema": "ok", "redis": "ok"}

            assert (await client.delete(base, headers=headers)).status_code == 204
            assert (await client.get(f"{base}/rules", headers=headers)).status_code == 404
            assert (await client.get("/v1/agents", headers=headers)).json()["total"] == 0


async def _lifespan_app(settings: Settings) -> AsyncIterator[Any]:
    """An app whose lifespan builds (and on exit closes) its own pool and Redis client."""
    app = create_app(settings)
    async with app.router.lifespan_context(app), asgi_client(app) as client:
        yield app, client


async def test_two_instances_share_one_postgres_and_one_redis(api_database: str, redis_url: str) -> None:
    prefix = f"shared{uuid4().hex[:8]}"
    tenant = uuid4()
    headers = bearer(tenant)
    first_cm = _lifespan_app(external_settings(api_database, redis_url, prefix=prefix))
    second_cm = _lifespan_app(external_settings(api_database, redis_url, prefix=prefix))
    (first_app, first), (second_app, second) = await first_cm.__anext__(), await second_cm.__anext__()
    try:
        assert first_app.state.services.checks.pool is not second_app.state.services.checks.pool
        agent = (await first.post("/v1/agents", json={"name": "shared"}, headers=headers)).json()
        url = f"/v1/agents/{agent['id']}"
        assert (await second.get(url, headers=headers)).json()["name"] == "shared"
        await second.patch(url, json={"description": "edited elsewhere"}, headers=headers)
        assert (await first.get(url, headers=headers)).json()["description"] == "edited elsewhere"

        agent_id = UUID(agent["id"])
        session = await first_app.state.services.session_store.save(
            Session(tenant_id=tenant, agent_id=agent_id, channel=Channel.WEB, user_channel_id="x")
        )
        listed = (await second.get(f"{url}/sessions", headers=headers)).json()["items"]
        assert [item["session_id"] for item in listed] == [str(session.session_id)]
        assert (await second.delete(f"/v1/sessions/{session.session_id}", headers=headers)).status_code == 204
        assert (await first.get(f"/v1/sessions/{session.session_id}", headers=headers)).status_code == 404
    finally:
        for cm in (first_cm, second_cm):
            with pytest.raises(StopAsyncIteration):
                await cm.__anext__()
    pool = first_app.state.services.checks.pool
    assert pool.is_closing()  # the lifespan closed what it built


async def test_schema_behind_refuses_to_start(database_factory: DatabaseFactory, redis_url: str) -> None:
    dsn = await database_factory(migrate=False)
    await upgrade(dsn, "0001", embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    with pytest.raises(SchemaVersionError, match="run `focal db upgrade`"):
        await build_services(external_settings(dsn, redis_url))


async def test_schema_ahead_refuses_to_start(api_database: str, redis_url: str) -> None:
    connection = await asyncpg.connect(api_database)
    try:
        await connection.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    finally:
        await connection.close()
    with pytest.raises(SchemaVersionError, match="newer Focal"):
        await build_services(external_settings(api_database, redis_url))


@pytest.mark.parametrize(
    ("database", "redis_", "missing"),
    [
        (None, "redis://127.0.0.1:1/0", "FOCAL_DATABASE_URL"),
        ("postgresql://x@127.0.0.1:1/x", None, "FOCAL_REDIS_URL"),
    ],
)
async def test_external_needs_both_urls(database: str | None, redis_: str | None, missing: str) -> None:
    with pytest.raises(ConfigurationError, match=missing):
        await build_services(external_settings(database, redis_))


async def test_embedded_storage_is_not_built_silently() -> None:
    settings = memory_settings(storage="embedded")
    with pytest.raises(ConfigurationError, match="focal serve"):
        await build_services(settings)


async def test_unreachable_redis_fails_start_up_and_closes_the_pool(api_database: str) -> None:
    settings = external_settings(api_database, f"redis://127.0.0.1:{free_port()}/0")
    with pytest.raises(StoreConnectionError, match="cannot connect to Redis"):
        await build_services(settings)


async def _ready(checks: ReadinessChecks) -> Any:
    settings = memory_settings()
    services = build_memory_services(settings)
    services.checks = checks
    async with asgi_client(create_app(settings, services=services)) as client:
        return await client.get("/ready")


async def test_ready_is_503_with_a_closed_pool(pg_dsn: str) -> None:
    pool = await create_pool(pg_dsn, min_size=1, max_size=1)
    await pool.close()
    response = await _ready(ReadinessChecks(pool=pool, timeout_seconds=1.0))
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "not_ready"
    assert error["message"].startswith("not ready: postgres:")
    assert error["details"]["checks"]["postgres"] != "ok"


async def test_ready_is_503_with_unreachable_redis(pg_pool: asyncpg.Pool) -> None:
    client = redis_asyncio.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.5)
    try:
        response = await _ready(ReadinessChecks(pool=pg_pool, redis=client, timeout_seconds=2.0))
    finally:
        await client.aclose()
    assert response.status_code == 503
    checks = response.json()["error"]["details"]["checks"]
    assert (checks["postgres"], checks["schema"]) == ("ok", "ok")
    assert checks["redis"] != "ok"
    assert "redis:" in response.json()["error"]["message"]


async def test_ready_is_503_when_the_schema_moves_ahead(api_database: str, redis_url: str) -> None:
    settings = external_settings(api_database, redis_url)
    async with open_services(settings) as services:
        pool = services.checks.pool
        assert pool is not None
        await pool.execute("UPDATE alembic_version SET version_num = '9999_from_the_future'")
        async with asgi_client(create_app(settings, services=services)) as client:
            response = await client.get("/ready")
    assert response.status_code == 503
    assert response.json()["error"]["details"]["checks"]["schema"].startswith(
        "the database schema is at 9999"
    )


async def test_ready_with_memory_stores_is_ok() -> None:
    response = await _ready(ReadinessChecks())
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {}}


async def test_redis_cluster_sessions(api_database: str, redis_cluster_nodes: list[tuple[str, int]]) -> None:
    host, port = redis_cluster_nodes[0]
    settings = external_settings(api_database, f"redis://{host}:{port}/0")
    settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"cluster": True})})
    tenant = uuid4()
    async with open_services(settings) as services:
        agent = Agent(tenant_id=tenant, name="clustered")
        await services.config_store.save_agent(agent)
        session = await services.session_store.save(
            Session(tenant_id=tenant, agent_id=agent.id, channel=Channel.SMS, user_channel_id="+1")
        )
        async with asgi_client(create_app(settings, services=services)) as client:
            got = await client.get(f"/v1/sessions/{session.session_id}", headers=bearer(tenant))
            assert got.json()["user_channel_id"] == "+1"
            assert (await client.get("/ready")).json()["checks"]["redis"] == "ok"
