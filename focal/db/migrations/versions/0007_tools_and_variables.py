"""Tool definitions and variable sources.

Revision ID: 0007
Revises: 0006

- ``tool_definitions``: a tenant's tools (name unique among the tenant's live definitions, the
  JSON Schema of the parameters, the kind and its HTTP call spec as JSONB), revisioned and
  soft-deleted like the other config tables. Names use the "C" collation and the tool id pattern.
- ``tool_definition_secrets``: the write-only secret of a definition, in a table of its own with
  no constraint a written value could break, so that no PostgreSQL error detail (which quotes a
  refused row, and is logged) can ever carry a secret. Removed with its definition.
- ``variables`` gains its sources and policies: ``extraction_pattern``, ``extract_with_llm``,
  ``cache_ttl_seconds`` (>= 1, NULL: never expires) and ``persist_to_profile``. Existing
  variables keep their behaviour (no extraction, no expiry, no profile writes).

The downgrade drops the two tables (every definition and secret is lost) and the four columns.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TOOL_NAME_PATTERN = "^[a-z][a-z0-9_]{0,63}$"


def upgrade() -> None:
    op.execute(
        f"""
        CREATE TABLE tool_definitions (
            id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            name text COLLATE "C" NOT NULL CHECK (name ~ '{TOOL_NAME_PATTERN}'),
            description text NOT NULL DEFAULT '',
            parameters jsonb NOT NULL CHECK (jsonb_typeof(parameters) = 'object'),
            kind text NOT NULL CHECK (kind IN ('http')),
            http jsonb NOT NULL CHECK (jsonb_typeof(http) = 'object'),
            revision integer NOT NULL DEFAULT 1 CHECK (revision >= 1),
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now(),
            deleted_at timestamptz,
            CONSTRAINT tool_definitions_tenant_id_id_key UNIQUE (tenant_id, id)
        )
        """
    )
    op.execute(
        "CREATE UNIQUE INDEX tool_definitions_live_name_key ON tool_definitions (tenant_id, name) "
        "WHERE deleted_at IS NULL"
    )
    op.execute(
        """
        CREATE TABLE tool_definition_secrets (
            definition_id uuid PRIMARY KEY,
            tenant_id uuid NOT NULL,
            secret text NOT NULL,
            CONSTRAINT tool_definition_secrets_definition_fkey FOREIGN KEY (tenant_id, definition_id)
                REFERENCES tool_definitions (tenant_id, id) ON DELETE CASCADE
        )
        """
    )
    op.execute(
        "ALTER TABLE variables "
        "ADD COLUMN extraction_pattern text, "
        "ADD COLUMN extract_with_llm boolean NOT NULL DEFAULT false, "
        "ADD COLUMN cache_ttl_seconds integer CONSTRAINT variables_cache_ttl_seconds_check "
        "CHECK (cache_ttl_seconds >= 1), "
        "ADD COLUMN persist_to_profile boolean NOT NULL DEFAULT false"
    )


def downgrade() -> None:
    op.execute(
        "ALTER TABLE variables DROP COLUMN persist_to_profile, DROP COLUMN cache_ttl_seconds, "
        "DROP COLUMN extract_with_llm, DROP COLUMN extraction_pattern"
    )
    op.execute("DROP TABLE tool_definition_secrets")
    op.execute("DROP TABLE tool_definitions")
