"""PostgreSQL-only: how revision 0006 stores config rows, and its conversion of existing data.

- scenario rows keep their steps as JSONB without transition embeddings, and the embeddings in a
  bytea in pgvector's own binary format (what ``vector_send`` produces), stored EXTERNAL;
- the database refuses a tool id outside the pattern even for raw SQL;
- upgrading converts existing scenarios and archives (embeddings out of the JSON) and refuses to
  run while a tool id is outside the pattern; downgrading puts the embeddings back.
"""

from __future__ import annotations

import json
import struct
from uuid import UUID, uuid4

import asyncpg
import pytest

from focal.alignment.models import Agent, Scenario, ScenarioStep, StepTransition
from focal.alignment.stores.postgres import PostgresConfigStore
from focal.db.migrate import current, downgrade, upgrade
from focal.db.pool import create_pool
from focal.errors import SchemaVersionError
from focal.validation import float32
from tests.conftest import DatabaseFactory
from tests.support import TEST_EMBEDDING_DIMENSIONS, new_tenant, normalized

pytestmark = pytest.mark.postgres

BEFORE, REVISION = "0005", "0006"


def _two_step_scenario(tenant: UUID, agent_id: UUID, vector: list[float]) -> Scenario:
    a, b = uuid4(), uuid4()
    return Scenario(
        tenant_id=tenant,
        agent_id=agent_id,
        name="binary",
        entry_step_id=a,
        embedding_model="test-model",
        steps=[
            ScenarioStep(
                id=a,
                name="a",
                transitions=[
                    StepTransition(to_step_id=b, condition_text="with", condition_embedding=vector),
                    StepTransition(to_step_id=a, condition_text="without"),
                ],
            ),
            ScenarioStep(id=b, name="b"),
        ],
    )


async def test_scenario_rows_keep_steps_without_embeddings_and_the_vectors_in_binary(
    pg_pool: asyncpg.Pool,
) -> None:
    store = PostgresConfigStore(pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    tenant = new_tenant()
    agent = Agent(tenant_id=tenant, name="owner")
    await store.save_agent(agent)
    vector = normalized([0.5, 0.25, 1.0])
    scenario = _two_step_scenario(tenant, agent.id, vector)
    await store.save_scenario(scenario)

    row = await pg_pool.fetchrow(
        "SELECT steps::text AS steps, transition_embeddings, revision FROM scenarios WHERE id = $1",
        scenario.id,
    )
    assert row is not None and row["revision"] == 1
    assert "condition_embedding" not in row["steps"]
    assert [len(step["transitions"]) for step in json.loads(row["steps"])] == [2, 0]
    # pgvector's binary format, byte for byte: what vector_send makes of the vector, then an empty entry.
    sent = await pg_pool.fetchval("SELECT vector_send($1::vector)", vector)
    assert row["transition_embeddings"] == sent + struct.pack(">HH", 0, 0)
    assert len(sent) == 4 + 4 * TEST_EMBEDDING_DIMENSIONS
    storage = await pg_pool.fetchval(
        "SELECT attstorage::text FROM pg_attribute "
        "WHERE attrelid = 'scenarios'::regclass AND attname = 'transition_embeddings'"
    )
    assert storage == "e"  # out of line, not compressed

    await store.archive_scenario_version(tenant, scenario)
    archived = await pg_pool.fetchrow(
        "SELECT scenario::text AS scenario, transition_embeddings FROM scenario_archives "
        "WHERE scenario_id = $1",
        scenario.id,
    )
    assert archived is not None and "condition_embedding" not in archived["scenario"]
    assert archived["transition_embeddings"] == row["transition_embeddings"]


async def test_database_refuses_a_tool_id_outside_the_pattern(pg_pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    agent_id = uuid4()
    await pg_pool.execute("INSERT INTO agents (id, tenant_id, name) VALUES ($1, $2, 'a')", agent_id, tenant)
    insert = "INSERT INTO tool_activations (id, tenant_id, agent_id, tool_id) VALUES ($1, $2, $3, $4)"
    for bad in ("a/b", "Upper", "1x", "x" * 65, "x-y"):
        with pytest.raises(asyncpg.CheckViolationError):
            await pg_pool.execute(insert, uuid4(), tenant, agent_id, bad)
    await pg_pool.execute(insert, uuid4(), tenant, agent_id, "x" * 64)


def _old_format_steps(a: UUID, b: UUID, vector: list[float]) -> str:
    """Steps as revision 0005 stored them: transition embeddings inside the JSON."""
    step = {
        "description": None,
        "rule_ids": [],
        "template_ids": [],
        "is_terminal": False,
        "collects_fields": [],
    }
    return json.dumps(
        [
            {
                **step,
                "id": str(a),
                "name": "a",
                "transitions": [
                    {
                        "to_step_id": str(b),
                        "condition_text": "with",
                        "condition_embedding": vector,
                        "priority": 0,
                    },
                    {
                        "to_step_id": str(a),
                        "condition_text": "without",
                        "condition_embedding": None,
                        "priority": 1,
                    },
                ],
            },
            {**step, "id": str(b), "name": "b", "transitions": []},
        ]
    )


async def test_revision_0006_moves_existing_embeddings_out_of_the_json_and_back(
    database_factory: DatabaseFactory,
) -> None:
    dsn = await database_factory(migrate=False)
    await upgrade(dsn, BEFORE, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    tenant, agent_id, scenario_id, a, b = new_tenant(), uuid4(), uuid4(), uuid4(), uuid4()
    vector = normalized([0.3, 0.1, 0.9])  # float64 values, as the JSON kept them
    steps = _old_format_steps(a, b, vector)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO agents (id, tenant_id, name) VALUES ($1, $2, 'a')", agent_id, tenant
        )
        await connection.execute(
            "INSERT INTO scenarios (id, tenant_id, agent_id, name, entry_step_id, steps) "
            "VALUES ($1, $2, $3, 's', $4, $5::jsonb)",
            scenario_id,
            tenant,
            agent_id,
            a,
            steps,
        )
        snapshot = {"id": str(scenario_id), "tenant_id": str(tenant), "agent_id": str(agent_id), "name": "s"}
        snapshot |= {"version": 1, "entry_step_id": str(a), "steps": json.loads(steps)}
        snapshot |= {"created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z"}
        await connection.execute(
            "INSERT INTO scenario_archives (tenant_id, scenario_id, version, scenario) "
            "VALUES ($1, $2, 1, $3::jsonb)",
            tenant,
            scenario_id,
            json.dumps(snapshot),
        )
    finally:
        await connection.close()

    await upgrade(dsn, REVISION, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        store = PostgresConfigStore(pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        for loaded in (
            await store.get_scenario(tenant, scenario_id),
            await store.get_archived_scenario(tenant, scenario_id, 1),
        ):
            assert loaded is not None and loaded.revision == 1
            first, second = loaded.steps
            assert [t.condition_embedding for t in first.transitions] == [float32(vector), None]
            assert [t.priority for t in first.transitions] == [0, 1] and second.transitions == []
        assert "condition_embedding" not in await pool.fetchval("SELECT steps::text FROM scenarios")
        assert "condition_embedding" not in await pool.fetchval(
            "SELECT scenario::text FROM scenario_archives"
        )
    finally:
        await pool.close()

    await downgrade(dsn, BEFORE)
    connection = await asyncpg.connect(dsn)
    try:
        restored = json.loads(await connection.fetchval("SELECT steps::text FROM scenarios"))
        archived = json.loads(await connection.fetchval("SELECT scenario::text FROM scenario_archives"))
        columns = await connection.fetchval(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE column_name IN ('revision', 'transition_embeddings') AND table_schema = 'public'"
        )
    finally:
        await connection.close()
    for document in (restored, archived["steps"]):
        embeddings = [t["condition_embedding"] for t in document[0]["transitions"]]
        assert embeddings == [float32(vector), None]
    assert columns == 0


async def test_revision_0006_refuses_tool_ids_outside_the_pattern_and_changes_nothing(
    database_factory: DatabaseFactory,
) -> None:
    dsn = await database_factory(migrate=False)
    await upgrade(dsn, BEFORE, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    tenant, agent_id = new_tenant(), uuid4()
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO agents (id, tenant_id, name) VALUES ($1, $2, 'a')", agent_id, tenant
        )
        for tool_id in ("crm/lookup", "lookup_order"):
            await connection.execute(
                "INSERT INTO tool_activations (id, tenant_id, agent_id, tool_id) VALUES ($1, $2, $3, $4)",
                uuid4(),
                tenant,
                agent_id,
                tool_id,
            )
    finally:
        await connection.close()
    with pytest.raises(SchemaVersionError, match="crm/lookup"):
        await upgrade(dsn, REVISION, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert await current(dsn) == BEFORE
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("DELETE FROM tool_activations WHERE tool_id = 'crm/lookup'")
    finally:
        await connection.close()
    await upgrade(dsn, REVISION, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert await current(dsn) == REVISION
