"""PostgreSQL-only behaviour of the ConfigStore: the schema's own guarantees and the vector index.

The contract suite (tests/contract/test_config_store_*.py) proves the store behaves like the
in-memory one; this module proves what only the database can: constraints that hold even for raw
SQL, the HNSW index and its storage, filtered search through the index (iterative scan), the
halfvec path for large dimensions, and revision 0002's downgrade.
"""

from __future__ import annotations

import json
import math
import random
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from focal.alignment.models import Agent, Rule
from focal.alignment.stores.postgres import PostgresConfigStore
from focal.alignment.stores.postgres_search import (
    SETTINGS_SQL,
    SIZED_EXACT_SQL,
    candidate_limit,
    ef_search,
    index_sql,
)
from focal.db.migrate import downgrade, upgrade
from focal.db.pool import create_pool, register_vector_codecs
from focal.errors import ConflictError
from tests.conftest import DatabaseFactory
from tests.support import TEST_EMBEDDING_DIMENSIONS, cosine, exact_score, new_tenant, normalized, unit_vector

pytestmark = pytest.mark.postgres

_EMBEDDING_STORAGE_SQL = (
    "SELECT attstorage::text FROM pg_attribute WHERE attrelid = 'rules'::regclass AND attname = 'embedding'"
)
CONFIG_TABLES = {
    "agents",
    "rules",
    "scenarios",
    "templates",
    "variables",
    "tool_activations",
    "migration_plans",
    "scenario_archives",
}


@pytest.fixture
def store(pg_pool: asyncpg.Pool) -> PostgresConfigStore:
    return PostgresConfigStore(pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)


async def _raw_row(pool: asyncpg.Pool, table: str, row_id: UUID) -> dict[str, Any]:
    record = await pool.fetchrow(f"SELECT * FROM {table} WHERE id = $1", row_id)
    assert record is not None
    return dict(record)


async def _insert_agent(pool: asyncpg.Pool, tenant_id: UUID, name: str) -> UUID:
    agent_id = uuid4()
    await pool.execute(
        "INSERT INTO agents (id, tenant_id, name) VALUES ($1, $2, $3)", agent_id, tenant_id, name
    )
    return agent_id


# --- conflicts through the store leave the other row untouched --------------------------------


async def test_cross_tenant_upserts_are_conflicts_and_leave_the_owner_row_unchanged(
    store: PostgresConfigStore, pg_pool: asyncpg.Pool
) -> None:
    owner_tenant, intruder_tenant = new_tenant(), new_tenant()
    owner = Agent(tenant_id=owner_tenant, name="owner")
    intruder_agent = Agent(tenant_id=intruder_tenant, name="intruder")
    await store.save_agent(owner)
    await store.save_agent(intruder_agent)
    rule = Rule(
        tenant_id=owner_tenant,
        agent_id=owner.id,
        name="r",
        condition_text="c",
        action_text="a",
        embedding=unit_vector(1),
        embedding_model="test-model",
    )
    await store.save_rule(rule)
    agent_before, rule_before = (
        await _raw_row(pg_pool, "agents", owner.id),
        await _raw_row(pg_pool, "rules", rule.id),
    )

    with pytest.raises(ConflictError):
        await store.save_agent(owner.model_copy(update={"tenant_id": intruder_tenant, "name": "hijacked"}))
    with pytest.raises(ConflictError):
        await store.save_rule(
            rule.model_copy(
                update={"tenant_id": intruder_tenant, "agent_id": intruder_agent.id, "name": "hijacked"}
            )
        )

    assert await _raw_row(pg_pool, "agents", owner.id) == agent_before
    assert await _raw_row(pg_pool, "rules", rule.id) == rule_before


async def test_unique_violation_through_the_store_is_a_conflict_and_changes_nothing(
    store: PostgresConfigStore, pg_pool: asyncpg.Pool
) -> None:
    tenant = new_tenant()
    first, second = Agent(tenant_id=tenant, name="first"), Agent(tenant_id=tenant, name="second")
    await store.save_agent(first)
    await store.save_agent(second)
    second_before = await _raw_row(pg_pool, "agents", second.id)
    with pytest.raises(ConflictError):  # renaming onto a live name: the partial unique index refuses
        await store.save_agent(second.model_copy(update={"name": "first"}))
    assert await _raw_row(pg_pool, "agents", second.id) == second_before


# --- the schema holds on its own, for raw SQL too ---------------------------------------------


async def test_database_refuses_a_duplicate_live_agent_name_but_not_a_deleted_one(
    pg_pool: asyncpg.Pool,
) -> None:
    tenant = new_tenant()
    first = await _insert_agent(pg_pool, tenant, "Support")
    with pytest.raises(asyncpg.UniqueViolationError):
        await _insert_agent(pg_pool, tenant, "Support")
    await _insert_agent(pg_pool, new_tenant(), "Support")  # other tenant: allowed
    await pg_pool.execute("UPDATE agents SET deleted_at = now() WHERE id = $1", first)
    await _insert_agent(pg_pool, tenant, "Support")  # the deleted agent's name is free
    live = await pg_pool.fetchval(
        "SELECT count(*) FROM agents WHERE tenant_id = $1 AND name = 'Support' AND deleted_at IS NULL", tenant
    )
    assert live == 1


async def test_database_refuses_duplicate_live_variables_and_tool_activations(pg_pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    agent_id = await _insert_agent(pg_pool, tenant, "agent")
    insert_variable = "INSERT INTO variables (id, tenant_id, agent_id, name) VALUES ($1, $2, $3, 'city')"
    await pg_pool.execute(insert_variable, uuid4(), tenant, agent_id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await pg_pool.execute(insert_variable, uuid4(), tenant, agent_id)
    insert_activation = (
        "INSERT INTO tool_activations (id, tenant_id, agent_id, tool_id) VALUES ($1, $2, $3, 'crm')"
    )
    await pg_pool.execute(insert_activation, uuid4(), tenant, agent_id)
    with pytest.raises(asyncpg.UniqueViolationError):
        await pg_pool.execute(insert_activation, uuid4(), tenant, agent_id)


async def test_children_can_only_reference_an_agent_of_their_own_tenant(pg_pool: asyncpg.Pool) -> None:
    tenant, other = new_tenant(), new_tenant()
    foreign_agent = await _insert_agent(pg_pool, other, "theirs")
    with pytest.raises(asyncpg.ForeignKeyViolationError):  # composite FK (tenant_id, agent_id)
        await pg_pool.execute(
            "INSERT INTO rules (id, tenant_id, agent_id, name, condition_text, action_text) "
            "VALUES ($1, $2, $3, 'r', 'c', 'a')",
            uuid4(),
            tenant,
            foreign_agent,
        )


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("priority", 101),
        ("priority", -101),
        ("scope", "SIDEWAYS"),
        ("scope", "STEP"),  # STEP without a scope_id
        ("cooldown_turns", -1),
        ("name", ""),
        ("name", "n" * 256),
    ],
)
async def test_database_checks_rule_enums_and_ranges(
    pg_pool: asyncpg.Pool, column: str, value: object
) -> None:
    tenant = new_tenant()
    agent_id = await _insert_agent(pg_pool, tenant, "agent")
    values: dict[str, object] = {"name": "r", "condition_text": "c", "action_text": "a", column: value}
    placeholders = ", ".join(f"${n}" for n in range(4, len(values) + 4))
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_pool.execute(
            f"INSERT INTO rules (id, tenant_id, agent_id, {', '.join(values)}) "
            f"VALUES ($1, $2, $3, {placeholders})",
            uuid4(),
            tenant,
            agent_id,
            *values.values(),
        )


@pytest.mark.parametrize(
    ("sql", "value"),
    [
        ("INSERT INTO agents (id, tenant_id, name, temperature) VALUES ($1, $2, 'a', $3)", 2.01),
        ("INSERT INTO agents (id, tenant_id, name, temperature) VALUES ($1, $2, 'a', $3)", -0.01),
        (
            "INSERT INTO migration_plans (id, tenant_id, scenario_id, from_version, to_version, status) "
            "VALUES ($1, $2, gen_random_uuid(), 1, 2, $3)",
            "SHIPPED",
        ),
        (
            "INSERT INTO migration_plans (id, tenant_id, scenario_id, from_version, to_version) "
            "VALUES ($1, $2, gen_random_uuid(), 3, $3)",
            2,
        ),
    ],
    ids=["temperature-high", "temperature-low", "plan-status", "plan-backwards"],
)
async def test_database_checks_agent_and_plan_values(pg_pool: asyncpg.Pool, sql: str, value: object) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_pool.execute(sql, uuid4(), new_tenant(), value)


async def test_template_mode_and_variable_policy_are_checked(pg_pool: asyncpg.Pool) -> None:
    tenant = new_tenant()
    agent_id = await _insert_agent(pg_pool, tenant, "agent")
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_pool.execute(
            "INSERT INTO templates (id, tenant_id, agent_id, name, text, mode) "
            "VALUES ($1, $2, $3, 't', 'x', 'LOUD')",
            uuid4(),
            tenant,
            agent_id,
        )
    with pytest.raises(asyncpg.CheckViolationError):
        await pg_pool.execute(
            "INSERT INTO variables (id, tenant_id, agent_id, name, update_policy) "
            "VALUES ($1, $2, $3, 'v', 'OVERWRITE')",
            uuid4(),
            tenant,
            agent_id,
        )


# --- the vector index -------------------------------------------------------------------------


async def test_rule_embeddings_have_an_hnsw_cosine_index_and_plain_storage(pg_pool: asyncpg.Pool) -> None:
    indexdef = await pg_pool.fetchval(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'rules' AND indexname = 'rules_embedding_hnsw_idx'"
    )
    assert indexdef is not None
    assert "USING hnsw (embedding vector_cosine_ops)" in indexdef
    storage = await pg_pool.fetchval(_EMBEDDING_STORAGE_SQL)
    assert storage == "p"


def _unit(values: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in values))
    return [v / norm for v in values]


async def test_filtered_search_through_the_index_matches_an_exact_computation(
    database_factory: DatabaseFactory,
) -> None:
    """400 rules of other tenants sit right next to the query; the 60 rules searched for are
    farther away. An index scan that filters afterwards finds none of them among its first
    candidates; iterative scan keeps going and must return the exact top 10. A database of its
    own: in the rules table every test of the worker shares, the HNSW graph (and with it what an
    approximate scan finds) would vary from run to run."""
    pg_pool = await create_pool(await database_factory(), min_size=1, max_size=2)
    try:
        await _filtered_search_through_the_index(pg_pool)
    finally:
        await pg_pool.close()


async def _filtered_search_through_the_index(pg_pool: asyncpg.Pool) -> None:
    rng = random.Random(20261126)
    query = unit_vector(0)
    writer = PostgresConfigStore(pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    tenants = [new_tenant() for _ in range(10)]
    agents = [Agent(tenant_id=t, name="agent") for t in tenants]
    for agent in agents:
        await writer.save_agent(agent)
    target = agents[0]
    expected: list[tuple[UUID, float]] = []
    for index in range(460):
        mine = index < 60
        owner = target if mine else agents[1 + index % 9]
        lead = rng.uniform(0.1, 1.0) if mine else 8.0
        vector = _unit([lead, *(rng.uniform(-1, 1) for _ in range(TEST_EMBEDDING_DIMENSIONS - 1))])
        rule = Rule(
            tenant_id=owner.tenant_id,
            agent_id=owner.id,
            name=f"r{index}",
            condition_text="c",
            action_text="a",
            embedding=vector,
            embedding_model="test-model",
        )
        await writer.save_rule(rule)
        if mine:
            expected.append((rule.id, exact_score(query, vector)))
    expected.sort(key=lambda pair: (-pair[1], pair[0]))

    # the store on its index plan (every scope "too large" for the exact one) and on its exact plan
    indexed = PostgresConfigStore(
        pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS, exact_scan_max_rows=0
    )
    for store in (indexed, writer):
        hits = await store.vector_search_rules(query, target.tenant_id, target.id, min_score=-1.0)
        assert [(rule.id, score) for rule, score in hits] == expected[:10]

    # The index query alone yields every candidate it asks for (so the store did not need its
    # exact fallback), through the HNSW index; without iterative scan it loses them.
    arguments = (
        query,
        target.tenant_id,
        target.id,
        None,
        True,
        [],
        [],
        [],
        -2.0,
        candidate_limit(10),
        10,
        0.0,
    )
    async with pg_pool.acquire() as connection, connection.transaction():
        await connection.execute(SETTINGS_SQL, str(ef_search(10)))
        plan = await connection.fetchval(
            f"EXPLAIN (FORMAT JSON) {index_sql(TEST_EMBEDDING_DIMENSIONS)}", *arguments
        )
        assert "rules_embedding_hnsw_idx" in json.dumps(plan)
        found = await connection.fetch(index_sql(TEST_EMBEDDING_DIMENSIONS), *arguments)
        assert found[0]["found"] == candidate_limit(10)
        await connection.execute("SET LOCAL hnsw.iterative_scan = off")
        without = await connection.fetch(index_sql(TEST_EMBEDDING_DIMENSIONS), *arguments)
    assert without[0]["found"] < 10


async def test_rule_search_that_comes_back_short_is_answered_exactly(pg_dsn: str) -> None:
    """A small agent behind many closer rules of other tenants: the HNSW scan stops after
    ``hnsw.max_scan_tuples`` (20,000 by default, 300 here) before it reaches the agent's rules,
    and the store answers with its exact plan instead of the few rows found."""
    pool = await asyncpg.create_pool(
        pg_dsn,
        min_size=1,
        max_size=1,
        init=register_vector_codecs,
        server_settings={"hnsw.max_scan_tuples": "300"},
    )
    try:
        store = PostgresConfigStore(pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        rng = random.Random(19)
        query = unit_vector(0)
        others = [Agent(tenant_id=new_tenant(), name="other") for _ in range(4)]
        target = Agent(tenant_id=new_tenant(), name="target")
        for agent in (*others, target):
            await store.save_agent(agent)
        for index in range(400):
            owner = others[index % 4]
            vector = _unit([8.0, *(rng.uniform(-1, 1) for _ in range(TEST_EMBEDDING_DIMENSIONS - 1))])
            await store.save_rule(
                Rule(
                    tenant_id=owner.tenant_id,
                    agent_id=owner.id,
                    name=f"o{index}",
                    condition_text="c",
                    action_text="a",
                    embedding=vector,
                    embedding_model="m",
                )
            )
        mine = []
        for index in range(30):
            vector = _unit(
                [rng.uniform(0.1, 1.0), *(rng.uniform(-1, 1) for _ in range(TEST_EMBEDDING_DIMENSIONS - 1))]
            )
            rule = Rule(
                tenant_id=target.tenant_id,
                agent_id=target.id,
                name=f"m{index}",
                condition_text="c",
                action_text="a",
                embedding=vector,
                embedding_model="m",
            )
            await store.save_rule(rule)
            mine.append((exact_score(query, vector), rule.id))
        mine.sort(key=lambda pair: (-pair[0], pair[1]))
        indexed = PostgresConfigStore(
            pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS, exact_scan_max_rows=0
        )
        arguments = (
            query,
            target.tenant_id,
            target.id,
            None,
            True,
            [],
            [],
            [],
            -2.0,
            candidate_limit(5),
            5,
            0.0,
        )
        async with pool.acquire() as connection, connection.transaction():
            await connection.execute(SETTINGS_SQL, str(ef_search(5)))
            found = await connection.fetch(index_sql(TEST_EMBEDDING_DIMENSIONS), *arguments)
        assert found[0]["found"] < 5  # the defect: the index scan alone came back short
        hits = await indexed.vector_search_rules(query, target.tenant_id, target.id, limit=5, min_score=-1.0)
        assert [(rule.id, score) for rule, score in hits] == [(i, score) for score, i in mine[:5]]
    finally:
        await pool.close()


async def test_rule_search_scores_a_large_scope_only_through_the_index(pg_pool: asyncpg.Pool) -> None:
    """The exact plan's statement counts the scope first and does not scan a scope above
    ``exact_scan_max_rows`` (the index plan takes it): its cost stays bounded."""
    tenant = new_tenant()
    store = PostgresConfigStore(
        pg_pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS, exact_scan_max_rows=3
    )
    agent = Agent(tenant_id=tenant, name="agent")
    await store.save_agent(agent)
    for index in range(5):
        await store.save_rule(
            Rule(
                tenant_id=tenant,
                agent_id=agent.id,
                name=f"r{index}",
                condition_text="c",
                action_text="a",
                embedding=normalized([1.0, index]),
                embedding_model="m",
            )
        )
    arguments = (unit_vector(0), tenant, agent.id, None, True, [], [], [], -2.0, 26, 10, 0.0)
    for cap, scanned in ((4, False), (6, True)):
        plan = await pg_pool.fetch(f"EXPLAIN (ANALYZE, COSTS OFF) {SIZED_EXACT_SQL}", *arguments, cap)
        text = "\n".join(row[0] for row in plan)
        assert ("One-Time Filter" in text) and (
            ("never executed" not in text.split("One-Time Filter")[1]) is scanned
        ), text
    hits = await store.vector_search_rules(unit_vector(0), tenant, agent.id, min_score=-1.0)
    assert [rule.name for rule, _ in hits] == [f"r{index}" for index in range(5)]


# --- migrations -------------------------------------------------------------------------------


async def _config_tables(dsn: str) -> set[str]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename = ANY($1::text[])",
            list(CONFIG_TABLES),
        )
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def test_revision_0002_upgrades_and_downgrades_cleanly(database_factory: DatabaseFactory) -> None:
    dsn = await database_factory(migrate=False)
    await upgrade(dsn, "0002", embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
    assert await _config_tables(dsn) == CONFIG_TABLES
    await downgrade(dsn, "0001")
    assert await _config_tables(dsn) == set()
    await upgrade(dsn, "0002", embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)  # and again, from scratch
    assert await _config_tables(dsn) == CONFIG_TABLES


async def test_large_dimensions_use_a_halfvec_index_and_still_search_exactly(
    database_factory: DatabaseFactory,
) -> None:
    dimensions = 2048
    dsn = await database_factory(migrate=False)
    await upgrade(dsn, "head", embedding_dimensions=dimensions)  # the store needs the head schema
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        indexdef = await pool.fetchval(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'rules_embedding_hnsw_idx'"
        )
        assert "halfvec(2048)" in indexdef and "halfvec_cosine_ops" in indexdef
        storage = await pool.fetchval(_EMBEDDING_STORAGE_SQL)
        assert storage == "e"  # too large for PLAIN in a heap page: out of line, uncompressed
        store = PostgresConfigStore(pool, embedding_dimensions=dimensions)
        tenant = new_tenant()
        agent = Agent(tenant_id=tenant, name="big")
        await store.save_agent(agent)
        vectors = {
            name: normalized([1.0, weight], dimensions)
            for name, weight in (("a", 0.1), ("b", 1.0), ("c", 3.0))
        }
        for name, vector in vectors.items():
            await store.save_rule(
                Rule(
                    tenant_id=tenant,
                    agent_id=agent.id,
                    name=name,
                    condition_text="c",
                    action_text="a",
                    embedding=vector,
                    embedding_model="test-model",
                )
            )
        query = normalized([1.0, 0.05], dimensions)
        hits = await store.vector_search_rules(query, tenant, agent.id)
        assert [rule.name for rule, _ in hits] == ["a", "b", "c"]
        for rule, score in hits:
            assert score == pytest.approx(cosine(vectors[rule.name], query), abs=1e-5)  # full precision
    finally:
        await pool.close()
