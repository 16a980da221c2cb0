"""Revision 0008 (hard constraints) on a real PostgreSQL: the database refuses checks on a rule
that is no hard constraint, and the downgrade keeps the audit trail unless forced."""

from __future__ import annotations

from uuid import uuid4

import asyncpg
import pytest

from focal.alignment.models import Agent
from focal.alignment.stores.postgres import PostgresConfigStore
from focal.audit.models import CheckedConstraint
from focal.audit.stores.postgres import PostgresAuditStore
from focal.db.migrate import current, downgrade, history, upgrade
from focal.db.pool import create_pool
from focal.errors import SchemaVersionError
from tests.contract.audit_backends import make_turn
from tests.support import TEST_EMBEDDING_DIMENSIONS, DatabaseFactory, new_tenant

pytestmark = pytest.mark.postgres

REVISION = "0008"


def below_revision() -> str:
    """The revision under 0008, whatever the chain (revisions are re-chained when branches merge)."""
    (info,) = [info for info in history() if info.revision == REVISION]
    assert info.down_revision is not None
    return info.down_revision


async def test_the_database_refuses_checks_on_a_plain_rule(database_factory: DatabaseFactory) -> None:
    dsn = await database_factory(dimensions=TEST_EMBEDDING_DIMENSIONS)
    pool = await create_pool(dsn)
    try:
        store = PostgresConfigStore(pool, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        agent = Agent(tenant_id=new_tenant(), name="a")
        await store.save_agent(agent)
        with pytest.raises(asyncpg.CheckViolationError, match="rules_checks_need_hard_constraint_check"):
            await pool.execute(
                "INSERT INTO rules (id, tenant_id, agent_id, name, condition_text, action_text, "
                "forbid_patterns) VALUES ($1, $2, $3, 'r', 'c', 'a', '[\"x\"]'::jsonb)",
                uuid4(),
                agent.tenant_id,
                agent.id,
            )
    finally:
        await pool.close()


async def test_downgrade_keeps_checked_turn_records_unless_forced(database_factory: DatabaseFactory) -> None:
    dsn = await database_factory(dimensions=TEST_EMBEDDING_DIMENSIONS)
    pool = await create_pool(dsn)
    try:
        unchecked = make_turn(new_tenant())
        await PostgresAuditStore(pool).save_turn(unchecked)
    finally:
        await pool.close()
    head = await current(dsn)
    # a turn record with no checked constraint loses nothing: the downgrade runs, and back up
    await downgrade(dsn, below_revision())
    await upgrade(dsn, head or "head", embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)

    pool = await create_pool(dsn)
    try:
        checked = make_turn(new_tenant(), constraints_checked=[CheckedConstraint(rule_id=uuid4(), name="c")])
        await PostgresAuditStore(pool).save_turn(checked)
    finally:
        await pool.close()
    with pytest.raises(SchemaVersionError, match="--force"):
        await downgrade(dsn, below_revision())
    assert await current(dsn) == head  # refused: nothing changed

    await downgrade(dsn, below_revision(), force=True)
    assert await current(dsn) == below_revision()
