"""PostgresAuditStore behaviour only PostgreSQL has: the append-only trigger, constraint
translation, the schema of revision 0003 and its downgrade."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from uuid import uuid4

import asyncpg
import pytest

from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.postgres import PostgresAuditStore
from focal.db.migrate import downgrade, upgrade
from focal.errors import ConflictError
from tests.support import TEST_EMBEDDING_DIMENSIONS, new_tenant

pytestmark = pytest.mark.postgres

DatabaseFactory = Callable[..., Awaitable[str]]
AUDIT_TABLES = ("turn_records", "audit_events")


def make_turn(tenant_id: object, **kw: object) -> TurnRecord:
    values: dict[str, object] = {
        "tenant_id": tenant_id,
        "agent_id": uuid4(),
        "session_id": uuid4(),
        "turn_number": 1,
        "user_message": "hi",
        "assistant_response": "hello",
    }
    values.update(kw)
    return TurnRecord.model_validate(values)


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE turn_records SET assistant_response = 'rewritten' WHERE id = $1",
        "DELETE FROM turn_records WHERE id = $1",
        "UPDATE audit_events SET event_type = 'rewritten' WHERE turn_id = $1",
        "DELETE FROM audit_events WHERE turn_id = $1",
    ],
)
async def test_database_refuses_update_and_delete(pg_pool: asyncpg.Pool, statement: str) -> None:
    store = PostgresAuditStore(pg_pool)
    tenant = new_tenant()
    turn = make_turn(tenant)
    event = AuditEvent(tenant_id=tenant, turn_id=turn.id, event_type="turn.saved")
    await store.save_turn(turn)
    await store.save_event(event)
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await pg_pool.execute(statement, turn.id)
    assert await store.get_turn(tenant, turn.id) == turn
    assert await store.get_event(tenant, event.id) == event


@pytest.mark.parametrize("table", AUDIT_TABLES)
async def test_database_refuses_truncate(pg_pool: asyncpg.Pool, table: str) -> None:
    async with pg_pool.acquire() as connection:
        # Rolled back whatever happens, so a broken trigger could not empty the shared database.
        transaction = connection.transaction()
        await transaction.start()
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await connection.execute(f"TRUNCATE {table}")
        finally:
            await transaction.rollback()


async def test_unique_violations_are_translated_to_conflicts(pg_pool: asyncpg.Pool) -> None:
    store = PostgresAuditStore(pg_pool)
    tenant, other = new_tenant(), new_tenant()
    turn = make_turn(tenant)
    await store.save_turn(turn)
    with pytest.raises(ConflictError) as same_turn_number:
        await store.save_turn(make_turn(tenant, session_id=turn.session_id))
    assert isinstance(same_turn_number.value.__cause__, asyncpg.UniqueViolationError)
    with pytest.raises(ConflictError) as cross_tenant:
        await store.save_turn(make_turn(other, id=turn.id))
    assert isinstance(cross_tenant.value.__cause__, asyncpg.UniqueViolationError)
    event = AuditEvent(tenant_id=tenant, event_type="x")
    await store.save_event(event)
    with pytest.raises(ConflictError) as event_clash:
        await store.save_event(AuditEvent(id=event.id, tenant_id=other, event_type="x"))
    assert isinstance(event_clash.value.__cause__, asyncpg.UniqueViolationError)
    assert await store.get_turn(other, turn.id) is None


async def test_every_model_field_has_its_own_column(pg_pool: asyncpg.Pool) -> None:
    for table, model in (("turn_records", TurnRecord), ("audit_events", AuditEvent)):
        columns = {
            row["column_name"]: row["data_type"]
            for row in await pg_pool.fetch(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = $1", table
            )
        }
        assert set(columns) == set(model.model_fields), table
        assert columns["created_at"] == "timestamp with time zone"
    turn_columns = await pg_pool.fetch(
        "SELECT column_name FROM information_schema.columns "
        "WHERE table_name = 'turn_records' AND data_type = 'jsonb'"
    )
    assert {r["column_name"] for r in turn_columns} == {
        "context_extracted",
        "rules_matched",
        "scenario_state",
        "tools_executed",
        "token_usage",
        "constraints_checked",  # revision 0008
        "constraints_failed",
    }


async def test_every_index_starts_with_tenant_id(pg_pool: asyncpg.Pool) -> None:
    rows = await pg_pool.fetch(
        "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE tablename = ANY($1::text[])",
        list(AUDIT_TABLES),
    )
    secondary = [r for r in rows if not r["indexname"].endswith("_pkey")]
    assert len(secondary) >= 5
    for row in secondary:
        assert "(tenant_id," in row["indexdef"], row["indexdef"]
    assert any(
        r["indexname"] == "turn_records_session_turn_key"
        and "UNIQUE" in r["indexdef"]
        and "(tenant_id, session_id, turn_number)" in r["indexdef"]
        for r in rows
    )
    # turn_id is deliberately not a foreign key: events may precede their turn.
    foreign_keys = await pg_pool.fetchval(
        "SELECT count(*) FROM pg_constraint WHERE conrelid = 'audit_events'::regclass AND contype = 'f'"
    )
    assert foreign_keys == 0


async def test_downgrade_to_0002_drops_tables_triggers_and_function(
    database_factory: DatabaseFactory,
) -> None:
    dsn = await database_factory()
    await downgrade(dsn, "0002")
    connection = await asyncpg.connect(dsn)
    try:
        tables = await connection.fetchval(
            "SELECT count(*) FROM pg_tables WHERE tablename = ANY($1::text[])", list(AUDIT_TABLES)
        )
        functions = await connection.fetchval(
            "SELECT count(*) FROM pg_proc WHERE proname = 'focal_audit_append_only'"
        )
        assert (tables, functions) == (0, 0)
        await upgrade(dsn, "0003", embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        triggers = await connection.fetchval(
            "SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%append_only' OR tgname LIKE '%no_truncate'"
        )
        assert triggers == 4
    finally:
        await connection.close()
