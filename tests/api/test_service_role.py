"""The service run as a role that owns no table (the production setup of the audit guarantee).

Migrations ran as the owner; ``focal db grant`` gave the service role DML on the ordinary tables and
only SELECT/INSERT on the audit tables. The whole service works through it: start-up checks,
configuration, chat turns (sessions, profiles, memory, audit), reads and soft deletes, ``/ready``.
"""

from __future__ import annotations

from uuid import UUID, uuid4

import asyncpg
import pytest

from focal.api.app import create_app
from focal.bootstrap import open_services
from focal.db.roles import grant_service_role
from focal.demo import DEMO_CONVERSATION, load_demo_agent
from focal.demo_shop import DemoShop
from focal.settings import Settings
from tests.api.conftest import JWT_SECRET, asgi_client, bearer
from tests.integration.stores.service_role import ServiceRole, owner_dsn, service_role
from tests.support import TEST_EMBEDDING_DIMENSIONS

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

__all__ = ["owner_dsn", "service_role"]  # fixtures


async def test_the_whole_service_runs_as_a_role_with_append_only_audit_access(
    demo_shop: DemoShop, owner_dsn: str, service_role: ServiceRole, redis_url: str
) -> None:
    await grant_service_role(owner_dsn, service_role.name)
    settings = Settings.load(
        storage="external",
        database={"url": service_role.dsn, "pool_min_size": 1, "pool_max_size": 4},
        redis={"url": redis_url, "key_prefix": f"svcrole{uuid4().hex[:8]}"},
        embedding={"provider": "hashing", "dimensions": TEST_EMBEDDING_DIMENSIONS},
        llm={"provider": "offline"},
        auth={"jwt_secret": JWT_SECRET},
    )
    tenant = uuid4()
    headers = bearer(tenant)
    async with open_services(settings) as services:
        pool = services.checks.pool
        assert pool is not None and await pool.fetchval("SELECT current_user") == service_role.name
        agent = await load_demo_agent(services, tenant, demo_shop)
        async with asgi_client(create_app(settings, services=services)) as client:
            assert (await client.get("/ready")).json()["checks"] == {
                "postgres": "ok",
                "schema": "ok",
                "redis": "ok",
            }
            session_id = None
            for number, message in enumerate(DEMO_CONVERSATION[:3], start=1):
                body = {"channel": "WEB", "user_channel_id": "visitor", "message": message}
                if session_id is not None:
                    body["session_id"] = session_id
                answer = await client.post(f"/v1/agents/{agent.id}/chat", json=body, headers=headers)
                assert answer.status_code == 200, answer.text
                assert answer.json()["turn_number"] == number
                session_id = answer.json()["session_id"]
            turns = (await client.get(f"/v1/sessions/{session_id}/turns", headers=headers)).json()["items"]
            assert [turn["user_message"] for turn in turns] == DEMO_CONVERSATION[:3]
            assert await services.audit_store.list_events(tenant)  # events were appended too
            profile = await services.profile_store.get_by_channel_identity(tenant, "WEB", "visitor")
            assert profile is not None
            patched = await client.patch(
                f"/v1/agents/{agent.id}", json={"description": "edited"}, headers=headers
            )
            assert patched.status_code == 200, patched.text
            assert (await client.delete(f"/v1/agents/{agent.id}", headers=headers)).status_code == 204

        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
            await pool.execute("UPDATE turn_records SET user_message = 'rewritten' WHERE session_id = $1",
                               UUID(session_id))  # fmt: skip
