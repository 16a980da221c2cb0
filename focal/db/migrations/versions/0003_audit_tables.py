"""Audit tables: turn_records and audit_events, append-only at the database level.

Revision ID: 0003
Revises: 0002

``audit_events.turn_id`` is deliberately not a foreign key: an event may be written before the
turn it belongs to. A trigger refuses UPDATE, DELETE and TRUNCATE on both tables (SQLSTATE
``42501``, insufficient_privilege), so no role can rewrite the trail with those statements, raw
SQL included; erasure, when it is needed, gets its own explicit and logged path (a later revision).

The trigger binds every role, but the tables' owner (and any superuser) can still disable it,
alter or drop the tables: run the service as a role that does not own them (``focal db grant``).
The downgrade drops the trail, so it refuses while the tables hold rows unless forced
(``focal db downgrade REV --force``).
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

from focal.db.migrations_support import refuse_to_drop_audit_rows

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

AUDIT_TABLES = ("turn_records", "audit_events")


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE turn_records (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            agent_id uuid NOT NULL,
            session_id uuid NOT NULL,
            turn_number integer NOT NULL CHECK (turn_number >= 1),
            user_message text NOT NULL,
            assistant_response text NOT NULL,
            context_extracted jsonb NOT NULL,
            rules_matched jsonb NOT NULL,
            scenario_state jsonb NOT NULL,
            tools_executed jsonb NOT NULL,
            token_usage jsonb NOT NULL,
            latency_ms double precision NOT NULL CHECK (latency_ms >= 0),
            created_at timestamptz NOT NULL,
            CONSTRAINT turn_records_session_turn_key UNIQUE (tenant_id, session_id, turn_number)
        )
        """
    )
    # Session listing uses the unique index above (tenant_id, session_id, turn_number).
    op.execute(
        "CREATE INDEX turn_records_tenant_created_idx ON turn_records (tenant_id, created_at DESC, id)"
    )
    op.execute(
        """
        CREATE TABLE audit_events (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            session_id uuid,
            turn_id uuid,
            event_type text NOT NULL CHECK (char_length(event_type) BETWEEN 1 AND 100),
            event_data jsonb NOT NULL,
            created_at timestamptz NOT NULL
        )
        """
    )
    op.execute("CREATE INDEX audit_events_tenant_created_idx ON audit_events (tenant_id, created_at, id)")
    op.execute(
        "CREATE INDEX audit_events_tenant_session_idx "
        "ON audit_events (tenant_id, session_id, created_at, id) WHERE session_id IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX audit_events_tenant_type_idx ON audit_events (tenant_id, event_type, created_at, id)"
    )
    op.execute(
        "CREATE INDEX audit_events_tenant_turn_idx "
        "ON audit_events (tenant_id, turn_id) WHERE turn_id IS NOT NULL"
    )
    op.execute(
        """
        CREATE FUNCTION focal_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'table % is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END
        $$
        """
    )
    for table in AUDIT_TABLES:
        op.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION focal_audit_append_only()"
        )
        op.execute(
            f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            "FOR EACH STATEMENT EXECUTE FUNCTION focal_audit_append_only()"
        )


def downgrade() -> None:
    refuse_to_drop_audit_rows(AUDIT_TABLES)
    # Dropping a table drops its triggers; the function goes last, once nothing uses it.
    op.execute("DROP TABLE IF EXISTS audit_events")
    op.execute("DROP TABLE IF EXISTS turn_records")
    op.execute("DROP FUNCTION IF EXISTS focal_audit_append_only()")
