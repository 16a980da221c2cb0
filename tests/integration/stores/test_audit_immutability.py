"""What protects the audit trail, proven on a real PostgreSQL.

- ``focal db downgrade`` below the audit revision refuses while the audit tables hold rows, unless
  ``--force``; the refusal changes nothing (the whole run is one transaction).
- ``focal db grant --role R`` gives a service role DML on the other tables and only SELECT/INSERT
  on the audit tables; that role cannot UPDATE, DELETE, TRUNCATE, disable the triggers, rewrite a
  column, drop the tables or downgrade, because it neither owns them nor is a superuser.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit
from uuid import uuid4

import asyncpg
import pytest
from typer.testing import CliRunner

from focal.audit.models import AuditEvent, TurnRecord
from focal.audit.stores.postgres import PostgresAuditStore
from focal.db.cli import db_app
from focal.db.migrate import current, downgrade, head_revision, upgrade
from focal.db.pool import create_pool
from focal.db.roles import grant_service_role
from focal.errors import ConfigurationError, SchemaVersionError
from tests.integration.stores.service_role import ServiceRole, admin_execute, dsn_as, owner_dsn, service_role
from tests.integration.stores.test_migrations import SCHEMA_FINGERPRINT, fetch_column
from tests.support import TEST_EMBEDDING_DIMENSIONS, DatabaseFactory

pytestmark = pytest.mark.postgres

__all__ = ["owner_dsn", "service_role"]  # fixtures

AUDIT_TABLES = ("turn_records", "audit_events")
AUDIT_ROWS = (
    "SELECT id::text || ' ' || user_message FROM turn_records UNION ALL SELECT id::text FROM audit_events"
)


async def write_audit_rows(dsn: str) -> None:
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        store = PostgresAuditStore(pool)
        tenant = uuid4()
        turn = TurnRecord(
            tenant_id=tenant, agent_id=uuid4(), session_id=uuid4(), turn_number=1,
            user_message="hello", assistant_response="hi",
        )  # fmt: skip
        await store.save_turn(turn)
        await store.save_event(AuditEvent(tenant_id=tenant, turn_id=turn.id, event_type="rule_matched"))
    finally:
        await pool.close()


async def test_downgrade_past_the_audit_tables_refuses_while_they_hold_rows(
    database_factory: DatabaseFactory,
) -> None:
    dsn = await database_factory()
    await write_audit_rows(dsn)
    before, rows = await fetch_column(dsn, SCHEMA_FINGERPRINT), await fetch_column(dsn, AUDIT_ROWS)
    for target in ("0002", "base"):
        with pytest.raises(
            SchemaVersionError, match="turn_records has 1 rows, audit_events has 1 rows"
        ) as caught:
            await downgrade(dsn, target)
        assert "--force" in str(caught.value)
        assert await current(dsn) == head_revision()  # the revisions above 0003 were restored too
        assert await fetch_column(dsn, SCHEMA_FINGERPRINT) == before
        assert await fetch_column(dsn, AUDIT_ROWS) == rows

    await downgrade(dsn, "0003")  # above the audit revision: the trail is not touched
    assert await fetch_column(dsn, AUDIT_ROWS) == rows

    runner = CliRunner()
    refused = await asyncio.to_thread(runner.invoke, db_app, ["downgrade", "0002", "--database-url", dsn])
    assert refused.exit_code == 1 and "refusing to downgrade past the audit tables" in refused.output
    assert await current(dsn) == "0003"
    forced = await asyncio.to_thread(
        runner.invoke, db_app, ["downgrade", "0002", "--database-url", dsn, "--force"]
    )
    assert forced.exit_code == 0, forced.output
    assert forced.stdout.splitlines()[-1] == "schema at 0002"
    assert await fetch_column(dsn, "SELECT to_regclass('turn_records')::text") == [None]


async def test_service_role_may_append_to_the_audit_trail_but_not_rewrite_it(
    owner_dsn: str, service_role: ServiceRole
) -> None:
    granted = await asyncio.to_thread(
        CliRunner().invoke, db_app, ["grant", "--role", service_role.name, "--database-url", owner_dsn]
    )
    assert granted.exit_code == 0, granted.output
    assert "SELECT, INSERT only (audit, append-only): audit_events, turn_records" in granted.stdout

    await write_audit_rows(service_role.dsn)  # INSERT and the store's reads work as the service role
    rows = await fetch_column(owner_dsn, AUDIT_ROWS)
    assert len(rows) == 2
    before = await fetch_column(owner_dsn, SCHEMA_FINGERPRINT)
    forbidden = {
        "UPDATE turn_records SET user_message = 'rewritten'": "permission denied",
        "DELETE FROM audit_events": "permission denied",
        "TRUNCATE turn_records": "permission denied",
        "ALTER TABLE turn_records DISABLE TRIGGER ALL": "must be owner",
        "ALTER TABLE turn_records DISABLE TRIGGER turn_records_append_only": "must be owner",
        "ALTER TABLE turn_records ALTER COLUMN user_message TYPE text USING 'rewritten'": "must be owner",
        "DROP TABLE audit_events": "must be owner",
        "UPDATE alembic_version SET version_num = '0002'": "permission denied",
        "CREATE TABLE shadow_turns (id int)": "permission denied for schema",
    }
    connection = await asyncpg.connect(service_role.dsn)
    try:
        for statement, reason in forbidden.items():
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match=reason):
                await connection.execute(statement)
        # The other tables are the service's to change: DML works on them.
        await connection.execute("DELETE FROM rules WHERE false")
    finally:
        await connection.close()
    with pytest.raises(SchemaVersionError, match="must be owner"):
        await downgrade(service_role.dsn, "0002", force=True)
    assert await fetch_column(owner_dsn, AUDIT_ROWS) == rows
    assert await fetch_column(owner_dsn, SCHEMA_FINGERPRINT) == before
    assert await current(owner_dsn) == head_revision()


async def _privileges(dsn: str, role: str) -> list[str]:
    return await fetch_column(
        dsn,
        "SELECT table_name || ':' || privilege_type FROM information_schema.role_table_grants "
        f"WHERE grantee = '{role}' ORDER BY 1",
    )


async def test_grant_refuses_roles_that_could_lift_the_restriction(
    owner_dsn: str, service_role: ServiceRole
) -> None:
    with pytest.raises(ConfigurationError, match="does not exist: create it first"):
        await grant_service_role(owner_dsn, "focal_no_such_role")
    superuser = str(urlsplit(owner_dsn).username)
    with pytest.raises(ConfigurationError, match="is a superuser"):
        await grant_service_role(owner_dsn, superuser)

    await admin_execute(owner_dsn, f"ALTER TABLE entities OWNER TO {service_role.name}")
    with pytest.raises(ConfigurationError, match=r"owns .*entities"):
        await grant_service_role(owner_dsn, service_role.name)
    await admin_execute(owner_dsn, f"ALTER TABLE entities OWNER TO {superuser}")

    # PUBLIC may update an audit table: the role would inherit it, so nothing is granted at all.
    await admin_execute(owner_dsn, "GRANT UPDATE ON turn_records TO PUBLIC")
    with pytest.raises(ConfigurationError, match="UPDATE on turn_records through PUBLIC"):
        await grant_service_role(owner_dsn, service_role.name)
    assert await _privileges(owner_dsn, service_role.name) == []
    await admin_execute(owner_dsn, "REVOKE UPDATE ON turn_records FROM PUBLIC")

    granted = await grant_service_role(owner_dsn, service_role.name)
    assert sorted(granted.append_only) == sorted(AUDIT_TABLES)
    assert "alembic_version" in granted.read_only and "rules" in granted.read_write
    privileges = await _privileges(owner_dsn, service_role.name)
    assert [p for p in privileges if p.split(":")[0] in AUDIT_TABLES] == [
        "audit_events:INSERT", "audit_events:SELECT", "turn_records:INSERT", "turn_records:SELECT",
    ]  # fmt: skip
    assert await grant_service_role(owner_dsn, service_role.name) == granted  # idempotent
    assert await _privileges(owner_dsn, service_role.name) == privileges

    await downgrade(owner_dsn, "0004")  # tables missing: a grant now would not cover the head's
    with pytest.raises(SchemaVersionError, match="focal db upgrade"):
        await grant_service_role(owner_dsn, service_role.name)


async def test_the_documented_production_setup_works_without_a_superuser_at_run_time(
    database_factory: DatabaseFactory,
) -> None:
    """docs/production.md: a superuser creates the roles, the database and the extension once;
    the owner (no superuser) migrates and grants; the service appends but cannot rewrite."""
    admin_dsn = await database_factory(migrate=False)
    database = urlsplit(admin_dsn).path.lstrip("/")
    owner, service = f"focal_owner_{uuid4().hex[:8]}", f"focal_service_{uuid4().hex[:8]}"
    owner_password, service_password = uuid4().hex, uuid4().hex
    await admin_execute(
        admin_dsn,
        f"CREATE ROLE {owner} LOGIN PASSWORD '{owner_password}'",
        f"CREATE ROLE {service} LOGIN PASSWORD '{service_password}'",
        f'ALTER DATABASE "{database}" OWNER TO {owner}',
        "CREATE EXTENSION IF NOT EXISTS vector",
    )
    as_owner, as_service = (
        dsn_as(admin_dsn, owner, owner_password),
        dsn_as(admin_dsn, service, service_password),
    )
    try:
        await upgrade(as_owner, embedding_dimensions=TEST_EMBEDDING_DIMENSIONS)
        assert await current(as_owner) == head_revision()
        runner = CliRunner()
        granted = await asyncio.to_thread(
            runner.invoke, db_app, ["grant", "--role", service, "--database-url", as_owner]
        )
        assert granted.exit_code == 0, granted.output
        await write_audit_rows(as_service)
        connection = await asyncpg.connect(as_service)
        try:
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
                await connection.execute("ALTER TABLE audit_events DISABLE TRIGGER ALL")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied"):
                await connection.execute("DELETE FROM turn_records")
        finally:
            await connection.close()
        assert len(await fetch_column(as_owner, AUDIT_ROWS)) == 2
    finally:
        await admin_execute(
            admin_dsn,
            f'ALTER DATABASE "{database}" OWNER TO {urlsplit(admin_dsn).username}',
            f"REASSIGN OWNED BY {owner} TO {urlsplit(admin_dsn).username}",
            f"DROP OWNED BY {service}",
            f"DROP OWNED BY {owner}",
            f"DROP ROLE {service}",
            f"DROP ROLE {owner}",
        )
