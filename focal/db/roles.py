"""``grant_service_role``: the privileges ``focal serve`` needs, for a role that does not own the schema.

Why a separate role: the audit tables' trigger refuses UPDATE, DELETE and TRUNCATE for every
role, but the tables' owner (and a superuser) can ``ALTER TABLE ... DISABLE TRIGGER``, rewrite a
column with ``ALTER COLUMN ... TYPE ... USING`` or drop the tables. Only a role that is neither
can be held to append-only. So in production migrations run as the owner, and the service as a
role that gets exactly this (in the schema Focal migrates, the connection's current schema):

- ``USAGE`` on the schema (and no ``CREATE``);
- ``SELECT, INSERT, UPDATE, DELETE`` on every other table (config, profile, memory, ...), and
  ``USAGE, SELECT`` on the schema's sequences;
- only ``SELECT, INSERT`` on the audit tables, found in the catalog as the tables carrying the
  append-only trigger (``focal_audit_append_only``), so a later append-only table is covered too;
- only ``SELECT`` on ``alembic_version`` (the start-up and readiness schema check reads it).

Every grant of the role on those tables is replaced (``REVOKE ALL`` first), in one transaction.
The grant refuses a role that could lift the restriction: a superuser, or the owner of a table
(or a member of the owner's role). It then verifies the end state, including privileges the role
gets through ``PUBLIC`` or other roles, and rolls back if an audit table is still writable.

Tables created by later migrations get no privileges by themselves: run the grant again after
every ``focal db upgrade`` (it is idempotent). It refuses a schema that is not at head.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from focal.db.migrate import ensure_schema_at_head
from focal.db.pool import describe_dsn
from focal.errors import ConfigurationError, StoreConnectionError

__all__ = ["AUDIT_TRIGGER_FUNCTION", "ServiceGrant", "grant_service_role"]

AUDIT_TRIGGER_FUNCTION = "focal_audit_append_only"
READ_WRITE: tuple[str, ...] = ("SELECT", "INSERT", "UPDATE", "DELETE")
APPEND_ONLY: tuple[str, ...] = ("SELECT", "INSERT")
READ_ONLY: tuple[str, ...] = ("SELECT",)
# What must stay impossible for the service role on an audit table, whatever the source of the grant.
FORBIDDEN_ON_AUDIT = ("UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

_RELATIONS_SQL = """
SELECT c.relname, c.relkind, pg_has_role($1, c.relowner, 'MEMBER') AS owned,
       EXISTS (SELECT 1 FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid
                WHERE t.tgrelid = c.oid AND NOT t.tgisinternal AND p.proname = $2) AS append_only
  FROM pg_class c
 WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm')
 ORDER BY c.relname
"""


@dataclass(frozen=True)
class ServiceGrant:
    """What ``grant_service_role`` granted, per kind of table."""

    role: str
    schema: str
    read_write: list[str]
    append_only: list[str]
    read_only: list[str]


def quote_identifier(name: str) -> str:
    """``name`` as a PostgreSQL identifier (double-quoted; inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


async def grant_service_role(owner_dsn: str, role: str) -> ServiceGrant:
    """Grant ``role`` what the service needs on the schema at ``owner_dsn`` (see the module docstring).

    ``owner_dsn`` connects as the schema's owner (or a superuser). ``ConfigurationError`` names
    the problem when the role is missing, may lift the audit restriction, or would keep
    write access to an audit table; ``SchemaVersionError`` when the schema is not at head.
    """
    await ensure_schema_at_head(owner_dsn)
    try:
        connection = await asyncpg.connect(owner_dsn)
    except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StoreConnectionError(
            f"cannot connect to PostgreSQL at {describe_dsn(owner_dsn)}: {exc}"
        ) from exc
    try:
        async with connection.transaction():
            return await _grant(connection, role)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise ConfigurationError(
            f"cannot grant to {role!r}: {exc}; run `focal db grant` as the owner of the schema's tables"
        ) from exc
    finally:
        await connection.close()


async def _grant(connection: asyncpg.Connection, role: str) -> ServiceGrant:
    found = await connection.fetchrow("SELECT rolsuper FROM pg_roles WHERE rolname = $1", role)
    if found is None:
        raise ConfigurationError(
            f"role {role!r} does not exist: create it first, e.g. CREATE ROLE {quote_identifier(role)} "
            "LOGIN PASSWORD '...'"
        )
    if found["rolsuper"]:
        raise ConfigurationError(
            f"role {role!r} is a superuser: it could disable the audit triggers; use a role without SUPERUSER"
        )
    schema = str(await connection.fetchval("SELECT current_schema()"))
    relations = await connection.fetch(_RELATIONS_SQL, role, AUDIT_TRIGGER_FUNCTION)
    owned = [row["relname"] for row in relations if row["owned"]]
    if owned:
        raise ConfigurationError(
            f"role {role!r} owns (or is a member of the role owning) {', '.join(owned)}: an owner can "
            "disable the audit triggers, alter or drop the tables; use a role that owns nothing in the schema"
        )
    grantee = quote_identifier(role)
    read_write: list[str] = []
    append_only: list[str] = []
    read_only: list[str] = []
    await connection.execute(f"GRANT USAGE ON SCHEMA {quote_identifier(schema)} TO {grantee}")
    await connection.execute(f"REVOKE CREATE ON SCHEMA {quote_identifier(schema)} FROM {grantee}")
    for row in relations:
        name, kind = str(row["relname"]), row["relkind"]
        if row["append_only"]:
            privileges, bucket = APPEND_ONLY, append_only
        elif name == "alembic_version" or kind in ("v", "m"):
            privileges, bucket = READ_ONLY, read_only
        else:
            privileges, bucket = READ_WRITE, read_write
        table = f"{quote_identifier(schema)}.{quote_identifier(name)}"
        await connection.execute(f"REVOKE ALL ON {table} FROM {grantee}")
        await connection.execute(f"GRANT {', '.join(privileges)} ON {table} TO {grantee}")
        bucket.append(name)
    await connection.execute(
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {quote_identifier(schema)} TO {grantee}"
    )
    await _verify_append_only(connection, role, schema, append_only)
    return ServiceGrant(role, schema, read_write, append_only, read_only)


async def _verify_append_only(
    connection: asyncpg.Connection, role: str, schema: str, tables: list[str]
) -> None:
    """Refuse when ``role`` still has a forbidden privilege on an audit table (via PUBLIC or a role)."""
    leaks = []
    for table in tables:
        qualified = f"{quote_identifier(schema)}.{quote_identifier(table)}"
        for privilege in FORBIDDEN_ON_AUDIT:
            if await connection.fetchval(
                "SELECT has_table_privilege($1, $2, $3)", role, qualified, privilege
            ):
                leaks.append(f"{privilege} on {table}")
    if leaks:
        raise ConfigurationError(
            f"role {role!r} would keep {', '.join(leaks)} through PUBLIC or another role it belongs to: "
            "revoke those grants, then run `focal db grant` again (nothing was granted)"
        )
